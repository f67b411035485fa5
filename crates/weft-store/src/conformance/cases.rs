//! Single-handle conformance cases: history, inbox, fencing and reminders.

use weft_core::RuntimeStatus;

use super::{Fixture, all, create, create_req, empty_cp, meta, now, pending, raised, row, started};
use crate::{ActivityTask, InboxEntry, Outbound, Reminder, ReusePolicy, Store, StoreError};

pub async fn history_append_and_read<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    assert!(
        s.get_history("h").await.unwrap().is_none(),
        "unknown instance has no history"
    );
    let v0 = create(&s, "h").await;
    let loaded = s.load("h").await.unwrap().unwrap();
    assert_eq!(loaded.meta.version, v0);
    assert!(loaded.history.is_empty());
    assert_eq!(loaded.inbox.len(), 1, "the start event waits in the inbox");
    assert_eq!(loaded.inbox[0].event, started("wf"));

    let mut cp = empty_cp(&loaded.meta);
    cp.append = vec![raised("a", 0), raised("b", 1)];
    cp.consumed_inbox = vec![loaded.inbox[0].seq];
    s.checkpoint(cp).await.unwrap();
    let m = row(&s, "h").await;
    assert_eq!(m.version, v0 + 1, "a checkpoint bumps the version by one");
    assert_eq!(m.status, RuntimeStatus::Running);

    let mut cp = empty_cp(&m);
    cp.append = (2..40).map(|i| raised("c", i)).collect();
    s.checkpoint(cp).await.unwrap();
    let l = s.load("h").await.unwrap().unwrap();
    assert!(l.inbox.is_empty());
    let ids: Vec<i32> = l.history.iter().map(|e| e.event_id).collect();
    assert_eq!(
        ids,
        (0..40).collect::<Vec<_>>(),
        "history keeps append order"
    );
    assert_eq!(s.get_history("h").await.unwrap().unwrap(), l.history);
}

pub async fn history_reset_starts_new_generation<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "g").await;
    let m = row(&s, "g").await;
    let mut cp = empty_cp(&m);
    cp.append = vec![raised("old", 0), raised("old", 1)];
    s.checkpoint(cp).await.unwrap();

    // continue-as-new: new generation, history restarts
    let m = row(&s, "g").await;
    let mut cp = empty_cp(&m);
    cp.meta.generation = m.generation + 1;
    cp.reset_history = true;
    cp.append = vec![raised("new", 0)];
    s.checkpoint(cp).await.unwrap();
    let l = s.load("g").await.unwrap().unwrap();
    assert_eq!(l.meta.generation, m.generation + 1);
    assert_eq!(l.history, vec![raised("new", 0)]);

    let mut cp = empty_cp(&l.meta);
    cp.append = vec![raised("new", 1)];
    s.checkpoint(cp).await.unwrap();
    assert_eq!(
        s.get_history("g").await.unwrap().unwrap(),
        vec![raised("new", 0), raised("new", 1)]
    );
}

pub async fn inbox_batch_reads_match_single_reads<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "i").await;
    create(&s, "j").await;
    for n in 1..=2 {
        assert!(s.append_inbox("i", raised("e", n)).await.unwrap());
    }
    assert!(s.append_inbox("j", raised("f", 7)).await.unwrap());
    let (i, j) = (
        s.read_inbox("i").await.unwrap(),
        s.read_inbox("j").await.unwrap(),
    );
    assert_eq!((i.len(), j.len()), (3, 2));
    let ids = ["j", "nobody", "i", "j"].map(String::from).to_vec();
    let batch = s.read_inbox_batch(ids).await.unwrap();
    let seqs = |v: &[InboxEntry]| {
        v.iter()
            .map(|e| (e.seq, e.event.clone()))
            .collect::<Vec<_>>()
    };
    let got: Vec<_> = batch.iter().map(|v| seqs(v)).collect();
    assert_eq!(got, vec![seqs(&j), vec![], seqs(&i), seqs(&j)]);
    assert!(s.read_inbox_batch(Vec::new()).await.unwrap().is_empty());
}

pub async fn inbox_append_read_consume<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    assert!(!s.append_inbox("nobody", raised("x", 1)).await.unwrap());
    assert!(s.read_inbox("nobody").await.unwrap().is_empty());
    create(&s, "i").await;
    for n in 1..=3 {
        assert!(s.append_inbox("i", raised("e", n)).await.unwrap());
    }
    let inbox = s.read_inbox("i").await.unwrap();
    assert_eq!(inbox.len(), 4);
    assert!(
        inbox.windows(2).all(|w| w[0].seq < w[1].seq),
        "seqs increase"
    );
    assert_eq!(inbox[0].event, started("wf"));
    assert_eq!(inbox[3].event, raised("e", 3));
    assert_eq!(
        s.instances_with_inbox(&all()).await.unwrap(),
        vec!["i".to_string()]
    );

    let mut cp = empty_cp(&row(&s, "i").await);
    cp.consumed_inbox = vec![inbox[0].seq, inbox[1].seq];
    s.checkpoint(cp).await.unwrap();
    let rest = s.read_inbox("i").await.unwrap();
    assert_eq!(
        rest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![inbox[2].seq, inbox[3].seq]
    );
    // an event arriving after the turn read the inbox is not consumed by it
    assert!(s.append_inbox("i", raised("late", 9)).await.unwrap());
    let mut cp = empty_cp(&row(&s, "i").await);
    cp.consumed_inbox = vec![inbox[2].seq, inbox[3].seq];
    s.checkpoint(cp).await.unwrap();
    let rest = s.read_inbox("i").await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].event, raised("late", 9));
    assert!(rest[0].seq > inbox[3].seq);
}

pub async fn fencing_conflict_changes_nothing<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "f").await;
    create(&s, "other").await;
    let stale = row(&s, "f").await;
    let mut cp = empty_cp(&stale);
    cp.append = vec![raised("ok", 0)];
    s.checkpoint(cp).await.unwrap();

    let before = s.load("f").await.unwrap().unwrap();
    let other_before = s.read_inbox("other").await.unwrap();
    let mut bad = empty_cp(&stale);
    bad.meta.status = RuntimeStatus::Completed;
    bad.meta.output = Some("stale".into());
    bad.reset_history = true;
    bad.append = vec![raised("stale", 5)];
    bad.consumed_inbox = before.inbox.iter().map(|e| e.seq).collect();
    bad.new_activities = vec![ActivityTask {
        app_id: String::new(),
        claim: 0,
        instance_id: "f".into(),
        generation: stale.generation,
        task_id: 7,
        request: vec![1, 2, 3],
    }];
    bad.new_reminders = vec![Reminder {
        id: 0,
        instance_id: "f".into(),
        generation: stale.generation,
        due_at: 5,
        event: raised("timer", 8),
    }];
    bad.cancel_pending = true;
    bad.outbound = vec![
        Outbound::Deliver {
            instance_id: "other".into(),
            execution_id: None,
            event: raised("leak", 1),
        },
        Outbound::Create {
            create: create_req("zombie", ReusePolicy::Error),
            on_conflict: None,
        },
    ];
    match s.checkpoint(bad).await {
        Err(StoreError::Conflict {
            instance_id,
            expected,
        }) => {
            assert_eq!(instance_id, "f");
            assert_eq!(expected, stale.version);
        }
        other => panic!("stale checkpoint must conflict, got {other:?}"),
    }
    let after = s.load("f").await.unwrap().unwrap();
    assert_eq!(after.meta, before.meta, "row unchanged");
    assert_eq!(after.history, before.history, "history unchanged");
    assert_eq!(
        after.inbox.iter().map(|e| e.seq).collect::<Vec<_>>(),
        before.inbox.iter().map(|e| e.seq).collect::<Vec<_>>(),
        "inbox unchanged"
    );
    assert!(pending(&s, &all()).await.is_empty());
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), None);
    assert_eq!(
        s.read_inbox("other").await.unwrap().len(),
        other_before.len()
    );
    assert!(
        s.get_instance("zombie").await.unwrap().is_none(),
        "no zombie child"
    );
}

pub async fn checkpoint_unknown_instance_conflicts<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let cp = empty_cp(&meta("ghost", "wf"));
    assert!(matches!(
        s.checkpoint(cp).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(s.get_instance("ghost").await.unwrap().is_none());
}

pub async fn reminders_claim_and_lease<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let other = fx.handle().await;
    create(&s, "r").await;
    let m = row(&s, "r").await;
    let mut cp = empty_cp(&m);
    cp.new_reminders = [100, 200]
        .into_iter()
        .map(|due_at| Reminder {
            id: 0,
            instance_id: "r".into(),
            generation: m.generation,
            due_at,
            event: raised("timer", due_at as i32),
        })
        .collect();
    s.checkpoint(cp).await.unwrap();
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), Some(100));

    assert!(
        s.claim_due_reminders(&all(), 50, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "none due yet"
    );
    let got = s.claim_due_reminders(&all(), 150, 1_000, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].due_at, got[0].event.clone()),
        (100, raised("timer", 100))
    );
    assert_eq!(got[0].instance_id, "r");
    assert!(
        other
            .claim_due_reminders(&all(), 150, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased: another claimer gets nothing"
    );
    let got2 = other
        .claim_due_reminders(&all(), 500, 1_000, 10)
        .await
        .unwrap();
    assert_eq!(got2.iter().map(|r| r.due_at).collect::<Vec<_>>(), vec![200]);
    // the first claimer crashed: after its lease ran out the reminder is claimable again
    let again = other
        .claim_due_reminders(&all(), 1_001, 2_000, 10)
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![got[0].id, got2[0].id]
    );
    // limit is honoured
    let one = s
        .claim_due_reminders(&all(), 3_000, 4_000, 1)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
}

pub async fn fire_reminder_is_idempotent<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "fr").await;
    let m = row(&s, "fr").await;
    let inbox0 = s.read_inbox("fr").await.unwrap().len();
    let mut cp = empty_cp(&m);
    cp.new_reminders = vec![Reminder {
        id: 0,
        instance_id: "fr".into(),
        generation: m.generation,
        due_at: 10,
        event: raised("fired", 3),
    }];
    s.checkpoint(cp).await.unwrap();
    let got = s.claim_due_reminders(&all(), 10, 20, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(s.fire_reminder(got[0].id, None).await.unwrap());
    assert!(
        !s.fire_reminder(got[0].id, None).await.unwrap(),
        "second fire is a no-op"
    );
    assert!(!s.fire_reminder(987_654_321, None).await.unwrap());
    let inbox = s.read_inbox("fr").await.unwrap();
    assert_eq!(inbox.len(), inbox0 + 1);
    assert_eq!(inbox.last().unwrap().event, raised("fired", 3));
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), None);
}

pub async fn far_future_reminder_is_storable<F: Fixture>(fx: &F) {
    const SENTINEL: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
    let s = fx.handle().await;
    create(&s, "ff").await;
    let m = row(&s, "ff").await;
    let mut cp = empty_cp(&m);
    cp.new_reminders = vec![Reminder {
        id: 0,
        instance_id: "ff".into(),
        generation: m.generation,
        due_at: SENTINEL,
        event: raised("never", 1),
    }];
    s.checkpoint(cp).await.unwrap();
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), Some(SENTINEL));
    assert!(
        s.claim_due_reminders(&all(), now(), now() + 1_000_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let got = s
        .claim_due_reminders(&all(), SENTINEL, i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].due_at, SENTINEL);
}
