//! Single-handle conformance cases: history, inbox, fencing, reminders, outbox, activities,
//! purge, listing, reuse policies and payload fidelity.

use weft_core::RuntimeStatus;

use super::{
    Fixture, create, create_req, empty_cp, meta, now, raised, row, started, task_completed,
};
use crate::{
    ActivityTask, CreateOutcome, ListFilter, Outbound, Reminder, ReusePolicy, Store, StoreError,
};

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
        s.instances_with_inbox().await.unwrap(),
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
    assert!(s.pending_activities().await.unwrap().is_empty());
    assert_eq!(s.next_reminder_due().await.unwrap(), None);
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
    assert_eq!(s.next_reminder_due().await.unwrap(), Some(100));

    assert!(
        s.claim_due_reminders(50, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "none due yet"
    );
    let got = s.claim_due_reminders(150, 1_000, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].due_at, got[0].event.clone()),
        (100, raised("timer", 100))
    );
    assert_eq!(got[0].instance_id, "r");
    assert!(
        other
            .claim_due_reminders(150, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased: another claimer gets nothing"
    );
    let got2 = other.claim_due_reminders(500, 1_000, 10).await.unwrap();
    assert_eq!(got2.iter().map(|r| r.due_at).collect::<Vec<_>>(), vec![200]);
    // the first claimer crashed: after its lease ran out the reminder is claimable again
    let again = other.claim_due_reminders(1_001, 2_000, 10).await.unwrap();
    assert_eq!(
        again.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![got[0].id, got2[0].id]
    );
    // limit is honoured
    let one = s.claim_due_reminders(3_000, 4_000, 1).await.unwrap();
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
    let got = s.claim_due_reminders(10, 20, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(s.fire_reminder(got[0].id).await.unwrap());
    assert!(
        !s.fire_reminder(got[0].id).await.unwrap(),
        "second fire is a no-op"
    );
    assert!(!s.fire_reminder(987_654_321).await.unwrap());
    let inbox = s.read_inbox("fr").await.unwrap();
    assert_eq!(inbox.len(), inbox0 + 1);
    assert_eq!(inbox.last().unwrap().event, raised("fired", 3));
    assert_eq!(s.next_reminder_due().await.unwrap(), None);
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
    assert_eq!(s.next_reminder_due().await.unwrap(), Some(SENTINEL));
    assert!(
        s.claim_due_reminders(now(), now() + 1_000_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let got = s.claim_due_reminders(SENTINEL, i64::MAX, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].due_at, SENTINEL);
}

pub async fn outbound_deliver_and_create<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "parent").await;
    create(&s, "peer").await;
    let m = row(&s, "parent").await;
    let mut child = create_req("child", ReusePolicy::Error);
    child.meta.parent_instance_id = Some("parent".into());
    let mut cp = empty_cp(&m);
    cp.append = vec![raised("turn", 0)];
    cp.outbound = vec![
        Outbound::Deliver {
            instance_id: "peer".into(),
            event: raised("hello", 1),
        },
        Outbound::Deliver {
            instance_id: "missing".into(),
            event: raised("dropped", 2),
        },
        Outbound::Create {
            create: child,
            on_conflict: Some(("parent".into(), raised("child-failed", 3))),
        },
    ];
    s.checkpoint(cp).await.unwrap();
    let peer = s.read_inbox("peer").await.unwrap();
    assert_eq!(peer.last().unwrap().event, raised("hello", 1));
    assert!(s.get_instance("missing").await.unwrap().is_none());
    assert!(
        s.read_inbox("missing").await.unwrap().is_empty(),
        "delivery to nobody is dropped"
    );
    let c = s
        .load("child")
        .await
        .unwrap()
        .expect("child created with the parent's turn");
    assert_eq!(c.meta.parent_instance_id.as_deref(), Some("parent"));
    assert_eq!(c.inbox.len(), 1);
    assert_eq!(c.inbox[0].event, started("wf"));
    assert!(
        s.read_inbox("parent")
            .await
            .unwrap()
            .iter()
            .all(|e| e.event != raised("child-failed", 3))
    );
}

pub async fn outbound_create_conflict_delivers_on_conflict<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "p").await;
    create(&s, "busy").await; // active, so creating it again conflicts
    create(&s, "done").await;
    let d = row(&s, "done").await;
    let mut fin = empty_cp(&d);
    fin.meta.status = RuntimeStatus::Completed;
    fin.append = vec![raised("x", 0)];
    s.checkpoint(fin).await.unwrap();
    let busy_before = s.load("busy").await.unwrap().unwrap();

    let m = row(&s, "p").await;
    let mut cp = empty_cp(&m);
    let mut again = create_req("done", ReusePolicy::Error);
    again.meta.execution_id = "second".into();
    cp.outbound = vec![
        Outbound::Create {
            create: create_req("busy", ReusePolicy::Error),
            on_conflict: Some(("p".into(), raised("child-failed", 4))),
        },
        Outbound::Create {
            create: again,
            on_conflict: Some(("p".into(), raised("not-sent", 5))),
        },
    ];
    s.checkpoint(cp).await.unwrap();
    let p_inbox: Vec<_> = s
        .read_inbox("p")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert!(p_inbox.contains(&raised("child-failed", 4)));
    assert!(!p_inbox.contains(&raised("not-sent", 5)));
    let busy_after = s.load("busy").await.unwrap().unwrap();
    assert_eq!(busy_after.meta, busy_before.meta, "active target untouched");
    assert_eq!(busy_after.inbox.len(), busy_before.inbox.len());
    let done = s.load("done").await.unwrap().unwrap();
    assert_eq!(done.meta.execution_id, "second", "terminal target replaced");
    assert_eq!(done.meta.status, RuntimeStatus::Pending);
    assert!(done.history.is_empty());
    assert!(
        done.meta.version > d.version,
        "versions keep rising across re-creation"
    );
}

pub async fn complete_activity_once<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "a").await;
    let m = row(&s, "a").await;
    let task = ActivityTask {
        instance_id: "a".into(),
        generation: m.generation,
        task_id: 1,
        request: b"\x0a\x03req".to_vec(),
    };
    let mut cp = empty_cp(&m);
    cp.new_activities = vec![task.clone()];
    s.checkpoint(cp).await.unwrap();
    assert_eq!(s.pending_activities().await.unwrap(), vec![task]);
    let inbox0 = s.read_inbox("a").await.unwrap().len();
    assert!(
        !s.complete_activity("a", 1, m.generation + 1, task_completed(1))
            .await
            .unwrap(),
        "wrong generation"
    );
    assert!(
        !s.complete_activity("a", 2, m.generation, task_completed(2))
            .await
            .unwrap(),
        "wrong task"
    );
    assert!(
        s.complete_activity("a", 1, m.generation, task_completed(1))
            .await
            .unwrap()
    );
    assert!(
        !s.complete_activity("a", 1, m.generation, task_completed(1))
            .await
            .unwrap(),
        "duplicate"
    );
    let inbox = s.read_inbox("a").await.unwrap();
    assert_eq!(inbox.len(), inbox0 + 1, "exactly one result delivered");
    assert_eq!(inbox.last().unwrap().event, task_completed(1));
    assert!(s.pending_activities().await.unwrap().is_empty());
}

pub async fn cancel_pending_drops_old_work<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "c").await;
    let m = row(&s, "c").await;
    let act = |task_id, generation| ActivityTask {
        instance_id: "c".into(),
        generation,
        task_id,
        request: vec![task_id as u8],
    };
    let rem = |due_at, generation| Reminder {
        id: 0,
        instance_id: "c".into(),
        generation,
        due_at,
        event: raised("t", 0),
    };
    let mut cp = empty_cp(&m);
    cp.new_activities = vec![act(1, m.generation), act(2, m.generation)];
    cp.new_reminders = vec![rem(10, m.generation)];
    s.checkpoint(cp).await.unwrap();

    // continue-as-new with cancel: old generation's work goes, the new turn's work stays
    let m = row(&s, "c").await;
    let g1 = m.generation + 1;
    let mut cp = empty_cp(&m);
    cp.meta.generation = g1;
    cp.reset_history = true;
    cp.cancel_pending = true;
    cp.new_activities = vec![act(1, g1)];
    cp.new_reminders = vec![rem(20, g1)];
    s.checkpoint(cp).await.unwrap();
    assert_eq!(s.pending_activities().await.unwrap(), vec![act(1, g1)]);
    assert_eq!(s.next_reminder_due().await.unwrap(), Some(20));

    // terminal: everything goes
    let m = row(&s, "c").await;
    let mut cp = empty_cp(&m);
    cp.meta.status = RuntimeStatus::Terminated;
    cp.cancel_pending = true;
    s.checkpoint(cp).await.unwrap();
    assert!(s.pending_activities().await.unwrap().is_empty());
    assert_eq!(s.next_reminder_due().await.unwrap(), None);
}

pub async fn purge_removes_everything<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "p").await;
    create(&s, "keep").await;
    let m = row(&s, "p").await;
    let mut cp = empty_cp(&m);
    cp.append = vec![raised("h", 0)];
    cp.new_activities = vec![ActivityTask {
        instance_id: "p".into(),
        generation: m.generation,
        task_id: 1,
        request: vec![],
    }];
    cp.new_reminders = vec![Reminder {
        id: 0,
        instance_id: "p".into(),
        generation: m.generation,
        due_at: 5,
        event: raised("t", 1),
    }];
    s.checkpoint(cp).await.unwrap();
    assert!(s.purge("p").await.unwrap());
    assert!(s.get_instance("p").await.unwrap().is_none());
    assert!(s.load("p").await.unwrap().is_none());
    assert!(s.get_history("p").await.unwrap().is_none());
    assert!(s.read_inbox("p").await.unwrap().is_empty());
    assert!(s.pending_activities().await.unwrap().is_empty());
    assert_eq!(s.next_reminder_due().await.unwrap(), None);
    assert_eq!(
        s.instances_with_inbox().await.unwrap(),
        vec!["keep".to_string()]
    );
    assert!(!s.purge("p").await.unwrap(), "second purge finds nothing");
    assert!(s.get_instance("keep").await.unwrap().is_some());
    // the ID is free again
    assert_eq!(
        s.create_instance(create_req("p", ReusePolicy::Error))
            .await
            .unwrap(),
        CreateOutcome::Created
    );
}

pub async fn list_paging_and_filters<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let base = 1_000_000;
    for i in 0..25 {
        let id = format!("L{i:02}");
        let mut req = create_req(&id, ReusePolicy::Error);
        req.meta.name = if i % 2 == 0 { "even" } else { "odd" }.into();
        req.meta.created_at = base + i;
        s.create_instance(req).await.unwrap();
        if i % 5 == 0 {
            let mut cp = empty_cp(&row(&s, &id).await);
            cp.meta.status = RuntimeStatus::Completed;
            s.checkpoint(cp).await.unwrap();
        }
    }
    let ids = |p: &crate::InstancePage| {
        p.items
            .iter()
            .map(|m| m.instance_id.clone())
            .collect::<Vec<_>>()
    };
    let all = s.list_instances(ListFilter::default()).await.unwrap();
    assert_eq!(all.items.len(), 25);
    assert_eq!(all.next, None, "a short page has no next");
    let expected: Vec<String> = (0..25).map(|i| format!("L{i:02}")).collect();
    assert_eq!(ids(&all), expected);

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list_instances(ListFilter {
                after: after.clone(),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(ids(&page));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, expected, "paging visits every row once, in order");

    let done = s
        .list_instances(ListFilter {
            statuses: vec![RuntimeStatus::Completed],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&done), vec!["L00", "L05", "L10", "L15", "L20"]);
    let mixed = s
        .list_instances(ListFilter {
            statuses: vec![RuntimeStatus::Completed, RuntimeStatus::Pending],
            name: Some("odd".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(mixed.items.len(), 12);
    assert!(mixed.items.iter().all(|m| m.name == "odd"));
    let range = s
        .list_instances(ListFilter {
            created_from: Some(base + 3),
            created_to: Some(base + 6),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&range),
        vec!["L03", "L04", "L05", "L06"],
        "created range is inclusive"
    );
    let exact = s
        .list_instances(ListFilter {
            limit: 5,
            after: Some("L19".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&exact), vec!["L20", "L21", "L22", "L23", "L24"]);
    assert_eq!(exact.next.as_deref(), Some("L24"), "a full page sets next");
    let empty = s
        .list_instances(ListFilter {
            after: Some("L24".into()),
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(empty.items.is_empty() && empty.next.is_none());
}

pub async fn create_reuse_policies<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    assert_eq!(
        s.create_instance(create_req("u", ReusePolicy::Error))
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    let first = s.load("u").await.unwrap().unwrap();
    assert_eq!(first.meta.status, RuntimeStatus::Pending);
    match s.create_instance(create_req("u", ReusePolicy::Error)).await {
        Err(StoreError::AlreadyExists(id)) => assert_eq!(id, "u"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let mut ignored = create_req("u", ReusePolicy::Ignore);
    ignored.meta.execution_id = "ignored".into();
    assert_eq!(
        s.create_instance(ignored).await.unwrap(),
        CreateOutcome::Existing
    );
    let same = s.load("u").await.unwrap().unwrap();
    assert_eq!(same.meta, first.meta);
    assert_eq!(same.inbox.len(), 1, "ignore adds no second start event");

    // give the active instance some state, then replace it
    let mut cp = empty_cp(&same.meta);
    cp.append = vec![raised("h", 0)];
    cp.new_activities = vec![ActivityTask {
        instance_id: "u".into(),
        generation: 0,
        task_id: 3,
        request: vec![],
    }];
    s.checkpoint(cp).await.unwrap();
    let mut term = create_req("u", ReusePolicy::Terminate);
    term.meta.execution_id = "second".into();
    assert_eq!(
        s.create_instance(term).await.unwrap(),
        CreateOutcome::Replaced
    );
    let second = s.load("u").await.unwrap().unwrap();
    assert_eq!(second.meta.execution_id, "second");
    assert!(second.history.is_empty(), "old history wiped");
    assert_eq!(second.inbox.len(), 1);
    assert!(
        s.pending_activities().await.unwrap().is_empty(),
        "old tasks wiped"
    );
    assert!(
        second.meta.version > first.meta.version + 1,
        "version keeps rising"
    );

    // terminal instance: even policy Error replaces it
    let mut cp = empty_cp(&second.meta);
    cp.meta.status = RuntimeStatus::Failed;
    s.checkpoint(cp).await.unwrap();
    let mut third = create_req("u", ReusePolicy::Error);
    third.meta.execution_id = "third".into();
    assert_eq!(
        s.create_instance(third).await.unwrap(),
        CreateOutcome::Replaced
    );
    assert_eq!(row(&s, "u").await.execution_id, "third");
}

pub async fn scheduled_start_becomes_reminder<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let at = now() + 3_600_000_000;
    let mut req = create_req("later", ReusePolicy::Error);
    req.meta.scheduled_start_at = Some(at);
    s.create_instance(req).await.unwrap();
    assert_eq!(row(&s, "later").await.scheduled_start_at, Some(at));
    assert!(
        s.read_inbox("later").await.unwrap().is_empty(),
        "not started yet"
    );
    assert_eq!(s.next_reminder_due().await.unwrap(), Some(at));
    assert!(
        s.claim_due_reminders(now(), now() + 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let due = s.claim_due_reminders(at, at + 1, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].instance_id, "later");
    assert_eq!(due[0].event, started("wf"));
    assert!(s.fire_reminder(due[0].id).await.unwrap());
    let inbox = s.read_inbox("later").await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].event, started("wf"));

    // a scheduled time already past starts at once
    let mut req = create_req("past", ReusePolicy::Error);
    req.meta.scheduled_start_at = Some(now() - 1_000_000);
    s.create_instance(req).await.unwrap();
    assert_eq!(s.read_inbox("past").await.unwrap().len(), 1);
    assert_eq!(s.next_reminder_due().await.unwrap(), None);
}

pub async fn payloads_round_trip_exactly<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let big = "x".repeat(3 * 1024 * 1024);
    let mut req = create_req("pay", ReusePolicy::Error);
    req.meta.input = Some("{\"emoji\":\"🧵\",\"nul\":\"\\u0000\",\"raw\":\"\u{0}\"}".into());
    req.meta.custom_status = Some(String::new());
    s.create_instance(req.clone()).await.unwrap();
    let m = row(&s, "pay").await;
    assert_eq!(m.input, req.meta.input);
    assert_eq!(m.custom_status, Some(String::new()), "empty is not absent");
    assert_eq!(m.output, None);
    let mut cp = empty_cp(&m);
    cp.meta.output = Some(big.clone());
    cp.meta.failure = Some(vec![0, 255, 1, 254]);
    cp.meta.completed_at = Some(now());
    cp.meta.status = RuntimeStatus::Failed;
    cp.append = vec![raised(&big, 1)];
    s.checkpoint(cp.clone()).await.unwrap();
    let back = row(&s, "pay").await;
    assert_eq!(
        back,
        crate::InstanceMeta {
            version: m.version + 1,
            ..cp.meta.clone()
        }
    );
    assert_eq!(
        s.get_history("pay").await.unwrap().unwrap(),
        vec![raised(&big, 1)]
    );
}

pub async fn complete_activity_batch_answers_each<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    for id in ["ba", "bb"] {
        create(&s, id).await;
        let m = row(&s, id).await;
        let mut cp = empty_cp(&m);
        cp.new_activities = vec![ActivityTask {
            instance_id: id.into(),
            generation: m.generation,
            task_id: 1,
            request: vec![],
        }];
        s.checkpoint(cp).await.unwrap();
    }
    let done = |id: &str| crate::ActivityCompletion {
        instance_id: id.into(),
        task_id: 1,
        generation: 0,
        event: task_completed(1),
    };
    let res = s
        .complete_activity_batch(vec![done("bb"), done("ba"), done("bb"), done("nobody")])
        .await;
    let res: Vec<bool> = res.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(
        res,
        vec![true, true, false, false],
        "a duplicate in the batch is refused"
    );
    for id in ["ba", "bb"] {
        let inbox = s.read_inbox(id).await.unwrap();
        assert_eq!(
            inbox
                .iter()
                .filter(|e| e.event == task_completed(1))
                .count(),
            1
        );
    }
    assert!(s.pending_activities().await.unwrap().is_empty());
    assert!(s.complete_activity_batch(vec![]).await.is_empty());
}
