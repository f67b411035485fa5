//! Conformance cases that keep executions apart: inbox rows stamped with the generation they are
//! for, generation and version sequences that survive re-creation and purge, and a purge that
//! refuses active instances and leaves nothing behind for a re-created one.

use weft_core::{InstanceMeta, RuntimeStatus};

use super::{Fixture, all, create, create_req, empty_cp, now, raised, row, task_completed};
use crate::{ActivityTask, CreateOutcome, Outbound, Reminder, ReusePolicy, Store, StoreError};

/// `(event name, generation)` of each inbox entry, in order (the start event shows as "start").
async fn stamps<S: Store>(s: &S, id: &str) -> Vec<(String, Option<i64>)> {
    use weft_proto::durabletask::history_event::EventType;
    s.read_inbox(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let name = match &e.event.event_type {
                Some(EventType::EventRaised(r)) => r.name.clone(),
                Some(EventType::ExecutionStarted(_)) => "start".into(),
                Some(EventType::TaskCompleted(_)) => "result".into(),
                _ => "other".into(),
            };
            (name, e.generation)
        })
        .collect()
}

/// Ends the instance (status Completed) through a checkpoint.
async fn finish<S: Store>(s: &S, id: &str) -> InstanceMeta {
    let m = row(s, id).await;
    let mut cp = empty_cp(&m);
    cp.meta.status = RuntimeStatus::Completed;
    cp.cancel_pending = true;
    s.checkpoint(cp).await.unwrap();
    row(s, id).await
}

pub async fn inbox_rows_name_their_generation<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "x").await;
    create(&s, "peer").await;
    assert_eq!(stamps(&s, "x").await, [("start".into(), Some(0))]);
    let m = row(&s, "x").await;
    let mut cp = empty_cp(&m);
    cp.consumed_inbox = s
        .read_inbox("x")
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    cp.new_activities = vec![ActivityTask {
        app_id: String::new(),
        claim: 0,
        instance_id: "x".into(),
        generation: 0,
        task_id: 1,
        request: vec![],
    }];
    cp.new_reminders = vec![Reminder {
        id: 0,
        instance_id: "x".into(),
        generation: 0,
        due_at: 5,
        event: raised("fired", 2),
    }];
    s.checkpoint(cp).await.unwrap();

    assert!(s.append_inbox("x", raised("client", 0)).await.unwrap());
    assert!(
        s.complete_activity("x", 1, 0, task_completed(1))
            .await
            .unwrap()
    );
    let due = s
        .claim_due_reminders(&all(), 10, now() + 60_000_000, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert!(s.fire_reminder(due[0].id, None).await.unwrap());
    // A child result addressed to x's current execution, and one to an execution x never had.
    let p = row(&s, "peer").await;
    let mut cp = empty_cp(&p);
    cp.outbound = vec![
        Outbound::Deliver {
            instance_id: "x".into(),
            execution_id: Some("x-exec".into()),
            event: raised("for-gen-0", 3),
        },
        Outbound::Deliver {
            instance_id: "x".into(),
            execution_id: Some("someone-else".into()),
            event: raised("misaddressed", 4),
        },
    ];
    s.checkpoint(cp).await.unwrap();
    let gen0 = vec![
        ("client".to_string(), None),
        ("result".into(), Some(0)),
        ("fired".into(), Some(0)),
        ("for-gen-0".into(), Some(0)),
    ];
    assert_eq!(stamps(&s, "x").await, gen0);

    // Continue-as-new while those wait: its own deliveries go to the new execution, and a
    // delivery addressed to the old execution is dropped from now on.
    let m = row(&s, "x").await;
    let mut can = empty_cp(&m);
    can.meta.generation = 1;
    can.meta.execution_id = "x-exec-1".into();
    can.reset_history = true;
    can.cancel_pending = true;
    can.outbound = vec![Outbound::Deliver {
        instance_id: "x".into(),
        execution_id: Some("x-exec-1".into()),
        event: raised("carried", 5),
    }];
    s.checkpoint(can).await.unwrap();
    let p = row(&s, "peer").await;
    let mut late = empty_cp(&p);
    late.outbound = vec![Outbound::Deliver {
        instance_id: "x".into(),
        execution_id: Some("x-exec".into()),
        event: raised("late-for-gen-0", 6),
    }];
    s.checkpoint(late).await.unwrap();
    let mut want = gen0;
    want.push(("carried".into(), Some(1)));
    assert_eq!(
        stamps(&s, "x").await,
        want,
        "old stamps stay for the turn to drop"
    );
    let loaded = s.load("x").await.unwrap().unwrap();
    assert_eq!(loaded.meta.generation, 1);
    assert_eq!(loaded.inbox.len(), 5);
}

pub async fn recreation_continues_generation_and_version<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "r").await;
    // Two continue-as-new turns, then the end.
    let m = row(&s, "r").await;
    let mut cp = empty_cp(&m);
    cp.meta.generation = 2;
    s.checkpoint(cp).await.unwrap();
    let first = finish(&s, "r").await;
    assert_eq!(first.generation, 2);

    // Replaced (terminal): both sequences continue.
    let out = s
        .create_instance(create_req("r", ReusePolicy::Error))
        .await
        .unwrap();
    assert_eq!(out, CreateOutcome::Replaced);
    let second = row(&s, "r").await;
    assert_eq!(
        second.generation, 3,
        "re-creation does not reset the generation"
    );
    assert!(second.version > first.version);
    assert_eq!(stamps(&s, "r").await, [("start".into(), Some(3))]);

    // Purged, then created again: still continuing.
    let ended = finish(&s, "r").await;
    assert!(s.purge("r", false, None).await.unwrap());
    assert!(s.get_instance("r").await.unwrap().is_none());
    let out = s
        .create_instance(create_req("r", ReusePolicy::Error))
        .await
        .unwrap();
    assert_eq!(out, CreateOutcome::Created);
    let third = row(&s, "r").await;
    assert_eq!(third.generation, 4, "purge does not reset the generation");
    assert!(
        third.version > ended.version,
        "no ABA: {} after {}",
        third.version,
        ended.version
    );
    assert_eq!(stamps(&s, "r").await, [("start".into(), Some(4))]);
    // A stale owner of the purged instance is fenced out of the new one.
    let mut stale = empty_cp(&ended);
    stale.meta.status = RuntimeStatus::Running;
    assert!(matches!(
        s.checkpoint(stale).await,
        Err(StoreError::Conflict { .. })
    ));

    // A scheduled start after a purge: its reminder is for the new generation.
    finish(&s, "r").await;
    assert!(s.purge("r", false, None).await.unwrap());
    let mut later = create_req("r", ReusePolicy::Error);
    later.meta.scheduled_start_at = Some(now() + 3_600_000_000);
    s.create_instance(later).await.unwrap();
    assert_eq!(row(&s, "r").await.generation, 5);
    let due = s
        .claim_due_reminders(&all(), now() + 7_200_000_000, now() + 7_300_000_000, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].generation, 5);
    assert!(s.fire_reminder(due[0].id, None).await.unwrap());
    assert_eq!(stamps(&s, "r").await, [("start".into(), Some(5))]);
}

pub async fn purge_refuses_active_instances<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "a").await;
    let before = s.load("a").await.unwrap().unwrap();
    assert!(matches!(
        s.purge("a", false, None).await,
        Err(StoreError::NotTerminal(id)) if id == "a"
    ));
    let m = row(&s, "a").await;
    s.checkpoint(empty_cp(&m)).await.unwrap(); // Running
    assert!(matches!(
        s.purge("a", false, None).await,
        Err(StoreError::NotTerminal(_))
    ));
    let after = s
        .load("a")
        .await
        .unwrap()
        .expect("refused purge changes nothing");
    assert_eq!(after.inbox.len(), before.inbox.len());
    assert!(
        s.purge("a", true, None).await.unwrap(),
        "force purges anyway"
    );
    assert!(s.get_instance("a").await.unwrap().is_none());

    create(&s, "b").await;
    finish(&s, "b").await;
    assert!(s.purge("b", false, None).await.unwrap());
    assert!(!s.purge("b", false, None).await.unwrap());
}

pub async fn purge_racing_deliveries_leaves_no_orphans<F: Fixture>(fx: &F) {
    let a = fx.handle().await;
    let b = std::sync::Arc::new(fx.handle().await);
    for round in 0..15 {
        let id = format!("race-{round}");
        create(&a, &id).await;
        finish(&a, &id).await;
        // Another process raises events as fast as it can while this one purges.
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let raiser = {
            let (b, id) = (b.clone(), id.clone());
            tokio::spawn(async move {
                let mut first = Some(first_tx);
                // Bounded: SQLite may let the raiser hold the write lock for a while.
                for i in 0..300 {
                    if !b.append_inbox(&id, raised("racing", i)).await.unwrap() {
                        return;
                    }
                    if let Some(tx) = first.take() {
                        let _ = tx.send(());
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        first_rx.await.expect("the raiser started");
        assert!(a.purge(&id, false, None).await.unwrap());
        raiser.await.unwrap();
        assert!(
            a.read_inbox(&id).await.unwrap().is_empty(),
            "round {round}: an event raised during the purge outlived it"
        );
        create(&a, &id).await;
        let inbox = a.load(&id).await.unwrap().unwrap().inbox;
        assert_eq!(
            inbox.len(),
            1,
            "round {round}: the re-created instance inherited {} old events",
            inbox.len() - 1
        );
    }
}
