//! Conformance cases with several writers: fenced races between two handles, concurrent reminder
//! claimers, parallel checkpoints and group commit.

use std::collections::HashSet;
use std::sync::Arc;

use weft_core::RuntimeStatus;

use super::{Fixture, all, create, empty_cp, raised, row};
use crate::{Reminder, Store, StoreError};

/// Two handles (two sidecars) load the same instance and both try to commit a turn: exactly one
/// wins, the loser changes nothing (issue 3, acceptance 4).
pub async fn racing_handles_exactly_one_wins<F: Fixture>(fx: &F) {
    let a = Arc::new(fx.handle().await);
    let b = Arc::new(fx.handle().await);
    create(a.as_ref(), "race").await;
    for round in 0..20 {
        let ma = row(a.as_ref(), "race").await;
        let mb = row(b.as_ref(), "race").await;
        assert_eq!(ma.version, mb.version);
        let mut ca = empty_cp(&ma);
        ca.append = vec![raised("a", round)];
        ca.meta.custom_status = Some("a".into());
        let mut cb = empty_cp(&mb);
        cb.append = vec![raised("b", round)];
        cb.meta.custom_status = Some("b".into());
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let a = a.clone();
                async move { a.checkpoint(ca).await }
            }),
            tokio::spawn({
                let b = b.clone();
                async move { b.checkpoint(cb).await }
            })
        );
        let (ra, rb) = (ra.expect("join"), rb.expect("join"));
        let winner = match (&ra, &rb) {
            (Ok(()), Err(StoreError::Conflict { .. })) => "a",
            (Err(StoreError::Conflict { .. }), Ok(())) => "b",
            other => panic!("round {round}: expected exactly one winner, got {other:?}"),
        };
        let l = b.load("race").await.unwrap().unwrap();
        assert_eq!(l.meta.version, ma.version + 1);
        assert_eq!(l.meta.custom_status.as_deref(), Some(winner));
        assert_eq!(
            l.history.len(),
            round as usize + 1,
            "only the winner appended"
        );
        assert_eq!(l.history.last().unwrap(), &raised(winner, round));
    }
}

/// Several handles claim the same due reminders at once: no reminder is handed out twice while
/// its lease runs, and together they claim all of them.
pub async fn reminder_claims_never_overlap<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "rc").await;
    let m = row(&s, "rc").await;
    let mut cp = empty_cp(&m);
    cp.new_reminders = (0..60)
        .map(|i| Reminder {
            id: 0,
            instance_id: "rc".into(),
            generation: m.generation,
            due_at: 100 + i,
            event: raised("t", i as i32),
        })
        .collect();
    s.checkpoint(cp).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let h = Arc::new(fx.handle().await);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = h
                    .claim_due_reminders(&all(), 1_000, 10_000, 7)
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|r| r.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("join"));
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "a reminder was claimed twice while leased"
    );
    assert_eq!(all.len(), 60, "every due reminder was claimed");

    // concurrent fires of one reminder: exactly one delivers
    let a = Arc::new(fx.handle().await);
    let b = Arc::new(fx.handle().await);
    let id = all[0];
    let before = s.read_inbox("rc").await.unwrap().len();
    let (ra, rb) = tokio::join!(
        tokio::spawn({
            let a = a.clone();
            async move { a.fire_reminder(id, None).await.unwrap() }
        }),
        tokio::spawn({
            let b = b.clone();
            async move { b.fire_reminder(id, None).await.unwrap() }
        })
    );
    assert!(
        ra.expect("join") ^ rb.expect("join"),
        "exactly one fire succeeds"
    );
    assert_eq!(s.read_inbox("rc").await.unwrap().len(), before + 1);
}

/// Checkpoints of different instances from two handles at once all succeed.
pub async fn concurrent_checkpoints_on_different_instances<F: Fixture>(fx: &F) {
    let a = Arc::new(fx.handle().await);
    let b = Arc::new(fx.handle().await);
    let n = 24;
    for i in 0..n {
        create(a.as_ref(), &format!("cc{i}")).await;
    }
    let mut tasks = Vec::new();
    for i in 0..n {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let id = format!("cc{i}");
            for step in 0..3 {
                let m = row(h.as_ref(), &id).await;
                let mut cp = empty_cp(&m);
                cp.append = vec![raised("s", step)];
                h.checkpoint(cp).await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for t in tasks {
        t.await
            .expect("join")
            .expect("checkpoint on its own instance");
    }
    for i in 0..n {
        let h = a.get_history(&format!("cc{i}")).await.unwrap().unwrap();
        assert_eq!(h, vec![raised("s", 0), raised("s", 1), raised("s", 2)]);
    }
}

/// Group commit: one stale member fails alone; the others commit.
pub async fn checkpoint_batch_isolates_a_conflict<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    for id in ["b1", "b2", "b3"] {
        create(&s, id).await;
    }
    let stale = row(&s, "b2").await;
    s.checkpoint(empty_cp(&stale)).await.unwrap();
    let b2_before = s.load("b2").await.unwrap().unwrap();

    let mut cps = Vec::new();
    for id in ["b1", "b2", "b3"] {
        let m = if id == "b2" {
            stale.clone()
        } else {
            row(&s, id).await
        };
        let mut cp = empty_cp(&m);
        cp.meta.status = RuntimeStatus::Completed;
        cp.append = vec![raised(id, 0)];
        cp.consumed_inbox = s
            .read_inbox(id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        cps.push(cp);
    }
    let res = s.checkpoint_batch(cps).await;
    assert_eq!(res.len(), 3);
    assert!(res[0].is_ok(), "{:?}", res[0]);
    assert!(
        matches!(res[1], Err(StoreError::Conflict { .. })),
        "{:?}",
        res[1]
    );
    assert!(res[2].is_ok(), "{:?}", res[2]);
    for id in ["b1", "b3"] {
        let l = s.load(id).await.unwrap().unwrap();
        assert_eq!(l.meta.status, RuntimeStatus::Completed);
        assert_eq!(l.history, vec![raised(id, 0)]);
        assert!(l.inbox.is_empty());
    }
    let b2 = s.load("b2").await.unwrap().unwrap();
    assert_eq!(b2.meta, b2_before.meta);
    assert_eq!(b2.history, b2_before.history);
    assert_eq!(b2.inbox.len(), b2_before.inbox.len());
    assert!(s.checkpoint_batch(vec![]).await.is_empty());
}

/// Several handles start the same instance ID at once (policy Error): exactly one creates it,
/// the others get `AlreadyExists`, and there is exactly one start event.
pub async fn concurrent_creates_one_wins<F: Fixture>(fx: &F) {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let h = Arc::new(fx.handle().await);
        tasks.push(tokio::spawn(async move {
            h.create_instance(super::create_req("dup", crate::ReusePolicy::Error))
                .await
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(crate::CreateOutcome::Created) => created += 1,
            Err(StoreError::AlreadyExists(id)) => assert_eq!(id, "dup"),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(created, 1);
    let s = fx.handle().await;
    assert_eq!(s.read_inbox("dup").await.unwrap().len(), 1);
}

/// Two handles group-commit turns of the same instances, in opposite orders, at the same time:
/// no deadlock surfaces, and each instance's turn is won by exactly one of them.
pub async fn racing_batches_settle_each_instance_once<F: Fixture>(fx: &F) {
    let a = Arc::new(fx.handle().await);
    let b = Arc::new(fx.handle().await);
    let ids: Vec<String> = (0..12).map(|i| format!("rb{i:02}")).collect();
    for id in &ids {
        create(a.as_ref(), id).await;
    }
    for round in 0..5 {
        let mut fwd = Vec::new();
        for id in &ids {
            let mut cp = empty_cp(&row(a.as_ref(), id).await);
            cp.append = vec![raised("a", round)];
            fwd.push(cp);
        }
        let mut rev: Vec<_> = fwd
            .iter()
            .map(|cp| {
                let mut cp = cp.clone();
                cp.append = vec![raised("b", round)];
                cp
            })
            .collect();
        rev.reverse();
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let a = a.clone();
                async move { a.checkpoint_batch(fwd).await }
            }),
            tokio::spawn({
                let b = b.clone();
                async move { b.checkpoint_batch(rev).await }
            })
        );
        let (ra, mut rb) = (ra.expect("join"), rb.expect("join"));
        rb.reverse();
        for (i, (x, y)) in ra.iter().zip(&rb).enumerate() {
            match (x, y) {
                (Ok(()), Err(StoreError::Conflict { .. }))
                | (Err(StoreError::Conflict { .. }), Ok(())) => {}
                other => panic!(
                    "round {round}, {}: expected one winner, got {other:?}",
                    ids[i]
                ),
            }
        }
        for id in &ids {
            let h = a.get_history(id).await.unwrap().unwrap();
            assert_eq!(h.len(), round as usize + 1);
        }
    }
}
