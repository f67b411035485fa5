//! Conformance cases for ownership scopes: background scans return only the rows of the given
//! app's instances in the given buckets (what one sidecar owns).

use std::collections::BTreeSet;

use weft_core::RuntimeStatus;
use weft_core::bucket::bucket_of;

use super::{APP, Fixture, all, create_req, empty_cp, pending, row};
use crate::{ActivityTask, Reminder, ReusePolicy, Scope, Store};

/// Creates `id` for `app` with an inbox event (its start), one pending activity and one
/// reminder due at 100; every third instance is STALLED.
async fn populate<S: Store>(s: &S, id: &str, app: &str, stalled: bool) {
    let mut req = create_req(id, ReusePolicy::Error);
    req.meta.app_id = app.to_string();
    s.create_instance(req).await.unwrap();
    let m = row(s, id).await;
    let mut cp = empty_cp(&m);
    if stalled {
        cp.meta.status = RuntimeStatus::Stalled;
    }
    cp.new_activities = vec![ActivityTask {
        app_id: String::new(),
        claim: 0,
        instance_id: id.to_string(),
        generation: m.generation,
        task_id: 1,
        request: vec![1],
    }];
    cp.new_reminders = vec![Reminder {
        id: 0,
        instance_id: id.to_string(),
        generation: m.generation,
        due_at: 100,
        event: super::raised("t", 1),
    }];
    s.checkpoint(cp).await.unwrap();
}

pub async fn scans_return_only_the_given_buckets<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let ids: Vec<String> = (0..24).map(|i| format!("scoped-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        populate(&s, id, APP, i % 3 == 0).await;
    }
    // Another app's instances, their buckets in the scope: never part of APP's scans.
    populate(&s, "foreign-0", "other-app", true).await;
    populate(&s, "foreign-1", "other-app", true).await;

    // The scope: the buckets of every other instance (plus the foreign ones' buckets).
    let mut buckets: BTreeSet<i32> = ids.iter().step_by(2).map(|id| bucket_of(id)).collect();
    buckets.insert(bucket_of("foreign-0"));
    buckets.insert(bucket_of("foreign-1"));
    let scope = Scope {
        app_id: APP.to_string(),
        buckets: buckets.iter().copied().collect(),
        epochs: None,
    };
    let inside: BTreeSet<String> = ids
        .iter()
        .filter(|id| buckets.contains(&bucket_of(id)))
        .cloned()
        .collect();
    assert!(inside.len() >= 12 && inside.len() < ids.len());

    let with_inbox: BTreeSet<String> = s
        .instances_with_inbox(&scope)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(with_inbox, inside);
    let acts: BTreeSet<String> = pending(&s, &scope)
        .await
        .into_iter()
        .map(|a| a.instance_id)
        .collect();
    assert_eq!(acts, inside);
    let stalled: BTreeSet<String> = s
        .stalled_instances(&scope, 100)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let want_stalled: BTreeSet<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, id)| i % 3 == 0 && inside.contains(*id))
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(stalled, want_stalled);
    assert_eq!(s.next_reminder_due(&scope).await.unwrap(), Some(100));
    let claimed: BTreeSet<String> = s
        .claim_due_reminders(&scope, 200, 1_000, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.instance_id)
        .collect();
    assert_eq!(claimed, inside);

    // The rest of the buckets hold the rest; no bucket at all holds nothing.
    let rest = Scope {
        app_id: APP.to_string(),
        buckets: (0..i32::from(weft_core::bucket::BUCKETS))
            .filter(|b| !buckets.contains(b))
            .collect(),
        epochs: None,
    };
    let outside: BTreeSet<String> = s
        .instances_with_inbox(&rest)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(outside.len() + inside.len(), ids.len());
    assert!(outside.is_disjoint(&inside));
    let none = Scope {
        app_id: APP.to_string(),
        buckets: vec![],
        epochs: None,
    };
    assert!(s.instances_with_inbox(&none).await.unwrap().is_empty());
    assert!(pending(&s, &none).await.is_empty());
    assert_eq!(s.next_reminder_due(&none).await.unwrap(), None);
    assert!(
        s.claim_due_reminders(&none, 5_000, 6_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The whole app: everything of APP, nothing of the other app.
    assert_eq!(pending(&s, &all()).await.len(), ids.len());
    let other = Scope::all("other-app");
    assert_eq!(s.stalled_instances(&other, 100).await.unwrap().len(), 2);
}

/// The app an instance was created for is stored and read back.
pub async fn instances_record_their_app<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let mut req = create_req("apped", ReusePolicy::Error);
    req.meta.app_id = "billing".into();
    s.create_instance(req).await.unwrap();
    assert_eq!(row(&s, "apped").await.app_id, "billing");
    let m = row(&s, "apped").await;
    s.checkpoint(empty_cp(&m)).await.unwrap();
    assert_eq!(row(&s, "apped").await.app_id, "billing");
}

/// The instance's inbox, emptied by a turn; the new row version.
async fn drain<S: Store>(s: &S, id: &str) {
    let m = row(s, id).await;
    let mut cp = empty_cp(&m);
    cp.consumed_inbox = s
        .read_inbox(id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    s.checkpoint(cp).await.unwrap();
}

/// Whether a scan of just `id`'s bucket finds inbox rows for it.
async fn found<S: Store>(s: &S, id: &str) -> bool {
    let scope = Scope {
        app_id: APP.to_string(),
        buckets: vec![bucket_of(id)],
        epochs: None,
    };
    s.instances_with_inbox(&scope)
        .await
        .unwrap()
        .iter()
        .any(|x| x == id)
}

/// Every path that writes an inbox row stamps it with the instance's bucket, so the owner's
/// recovery scan finds it (a result written by a sidecar that then died is otherwise never
/// driven by the new owner).
pub async fn every_inbox_write_is_found_in_its_bucket<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let with_task = |id: &'static str| {
        let s = &s;
        async move {
            s.create_instance(create_req(id, ReusePolicy::Error))
                .await
                .unwrap();
            let m = row(s, id).await;
            let mut cp = empty_cp(&m);
            cp.consumed_inbox = s
                .read_inbox(id)
                .await
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect();
            cp.new_activities = vec![ActivityTask {
                app_id: String::new(),
                claim: 0,
                instance_id: id.to_string(),
                generation: m.generation,
                task_id: 1,
                request: vec![1],
            }];
            cp.new_reminders = vec![Reminder {
                id: 0,
                instance_id: id.to_string(),
                generation: m.generation,
                due_at: 100,
                event: super::raised("t", 1),
            }];
            s.checkpoint(cp).await.unwrap();
            assert!(!found(s, id).await, "{id}: inbox drained");
            m.generation
        }
    };

    // A created instance (its start event).
    s.create_instance(create_req("ib-created", ReusePolicy::Error))
        .await
        .unwrap();
    assert!(found(&s, "ib-created").await, "created");

    // A raised event.
    let id = "ib-raised";
    with_task(id).await;
    assert!(s.append_inbox(id, super::raised("e", -1)).await.unwrap());
    assert!(found(&s, id).await, "raised event");

    // An activity result, alone and batched.
    let id = "ib-result";
    let g = with_task(id).await;
    assert!(
        s.complete_activity(id, 1, g, super::task_completed(1))
            .await
            .unwrap()
    );
    assert!(found(&s, id).await, "activity result");
    let id = "ib-batched";
    let g = with_task(id).await;
    let r = s
        .complete_activity_batch(vec![crate::ActivityCompletion {
            claim: None,
            instance_id: id.to_string(),
            task_id: 1,
            generation: g,
            event: super::task_completed(1),
        }])
        .await;
    assert!(matches!(r.as_slice(), [Ok(true)]), "{r:?}");
    assert!(found(&s, id).await, "batched activity result");

    // A fired timer.
    let id = "ib-timer";
    with_task(id).await;
    let scope = Scope {
        app_id: APP.to_string(),
        buckets: vec![bucket_of(id)],
        epochs: None,
    };
    let due = s.claim_due_reminders(&scope, 200, 1_000, 10).await.unwrap();
    let mine = due.iter().find(|r| r.instance_id == id).expect("claimed");
    assert!(s.fire_reminder(mine.id, None).await.unwrap());
    assert!(found(&s, id).await, "fired timer");

    // Delivered by another instance's turn (a child's result), and a child it creates.
    let id = "ib-delivered";
    with_task(id).await;
    s.create_instance(create_req("ib-sender", ReusePolicy::Error))
        .await
        .unwrap();
    drain(&s, "ib-sender").await;
    let m = row(&s, "ib-sender").await;
    let mut cp = empty_cp(&m);
    cp.outbound = vec![
        crate::Outbound::Deliver {
            instance_id: id.to_string(),
            execution_id: None,
            event: super::raised("child", -1),
        },
        crate::Outbound::Create {
            create: create_req("ib-child", ReusePolicy::Error),
            on_conflict: None,
        },
    ];
    s.checkpoint(cp).await.unwrap();
    assert!(found(&s, id).await, "delivered event");
    assert!(found(&s, "ib-child").await, "created child");
}
