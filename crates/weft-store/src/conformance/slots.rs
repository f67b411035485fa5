//! Conformance cases for cluster-wide concurrency slots (leases) and the retention query.

use weft_core::RuntimeStatus;

use super::{Fixture, create_req, empty_cp, row};
use crate::{ListFilter, ReusePolicy, SlotLease, Store};

const SEC: i64 = 1_000_000;

pub async fn slots_lease_renew_expire_release<F: Fixture>(fx: &F) {
    let a = fx.handle().await;
    let b = fx.handle().await;
    let t0 = 1_000 * SEC;
    // A takes 3 of 4; B gets the last one and no more.
    let got = a
        .acquire_slots("activity", 4, "A", 3, t0, t0 + 10 * SEC)
        .await
        .unwrap();
    assert_eq!(got, vec![0, 1, 2]);
    let got = b
        .acquire_slots("activity", 4, "B", 3, t0, t0 + 10 * SEC)
        .await
        .unwrap();
    assert_eq!(got, vec![3], "only one slot left");
    assert!(
        b.acquire_slots("activity", 4, "B", 1, t0 + SEC, t0 + 11 * SEC)
            .await
            .unwrap()
            .is_empty()
    );
    // Buckets are independent.
    let got = b
        .acquire_slots("activity:charge", 1, "B", 1, t0, t0 + 10 * SEC)
        .await
        .unwrap();
    assert_eq!(got, vec![0]);
    // B renews; A does not (it died). After A's lease ends, B can take A's slots.
    let held = b
        .renew_slots("B", t0 + 5 * SEC, t0 + 20 * SEC)
        .await
        .unwrap();
    assert_eq!(
        held,
        vec![
            SlotLease {
                bucket: "activity".into(),
                slot: 3
            },
            SlotLease {
                bucket: "activity:charge".into(),
                slot: 0
            },
        ]
    );
    assert!(
        b.acquire_slots("activity", 4, "B", 4, t0 + 9 * SEC, t0 + 20 * SEC)
            .await
            .unwrap()
            .is_empty(),
        "A's leases still run"
    );
    let got = b
        .acquire_slots("activity", 4, "B", 4, t0 + 10 * SEC, t0 + 20 * SEC)
        .await
        .unwrap();
    assert_eq!(got, vec![0, 1, 2], "A's ended leases are free");
    // A comes back: its renewal finds nothing, and it cannot steal B's slots.
    assert!(
        a.renew_slots("A", t0 + 11 * SEC, t0 + 21 * SEC)
            .await
            .unwrap()
            .is_empty()
    );
    // Release gives back only the holder's own slots.
    a.release_slots("activity", "A", &[0, 1]).await.unwrap();
    assert!(
        a.acquire_slots("activity", 4, "A", 1, t0 + 12 * SEC, t0 + 22 * SEC)
            .await
            .unwrap()
            .is_empty()
    );
    b.release_slots("activity", "B", &[1, 2]).await.unwrap();
    let got = a
        .acquire_slots("activity", 4, "A", 4, t0 + 12 * SEC, t0 + 22 * SEC)
        .await
        .unwrap();
    assert_eq!(got, vec![1, 2]);
    // A lower limit only hands out slots below it.
    assert!(
        a.acquire_slots("activity", 1, "A", 1, t0 + 12 * SEC, t0 + 22 * SEC)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn racing_slot_acquirers_never_share<F: Fixture>(fx: &F) {
    let t0 = 2_000 * SEC;
    let mut tasks = Vec::new();
    for h in 0..6 {
        let s = fx.handle().await;
        tasks.push(tokio::spawn(async move {
            let holder = format!("H{h}");
            let mut mine = Vec::new();
            for _ in 0..5 {
                mine.extend(
                    s.acquire_slots("workflow", 7, &holder, 2, t0, t0 + 60 * SEC)
                        .await
                        .unwrap(),
                );
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..7).collect::<Vec<u32>>(),
        "every slot leased exactly once"
    );
}

pub async fn list_by_completion_time<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    for (i, status) in [
        RuntimeStatus::Completed,
        RuntimeStatus::Completed,
        RuntimeStatus::Failed,
        RuntimeStatus::Running,
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("R{i}");
        s.create_instance(create_req(&id, ReusePolicy::Error))
            .await
            .unwrap();
        let mut cp = empty_cp(&row(&s, &id).await);
        cp.meta.status = status;
        if status.is_terminal() {
            cp.meta.completed_at = Some(100 + i as i64);
        }
        s.checkpoint(cp).await.unwrap();
    }
    let page = s
        .list_instances(ListFilter {
            statuses: vec![RuntimeStatus::Completed],
            completed_to: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = page.items.iter().map(|m| m.instance_id.as_str()).collect();
    assert_eq!(ids, vec!["R0"], "completed at or before the bound");
    let page = s
        .list_instances(ListFilter {
            completed_to: Some(1_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.items.len(),
        3,
        "rows without a completion time never match"
    );
}
