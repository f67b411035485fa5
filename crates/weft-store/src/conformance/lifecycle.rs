//! Single-handle conformance cases: outbox, activities, purge, listing, reuse policies, scheduled
//! starts and payload fidelity.

use weft_core::RuntimeStatus;

use super::{
    Fixture, all, create, create_req, empty_cp, now, pending, raised, row, started, task_completed,
};
use crate::{
    ActivityTask, CreateOutcome, ListFilter, Outbound, Reminder, ReusePolicy, Store, StoreError,
};

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
            execution_id: None,
            event: raised("hello", 1),
        },
        Outbound::Deliver {
            instance_id: "missing".into(),
            execution_id: None,
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
    let conflict = s.read_inbox("p").await.unwrap();
    let conflict = conflict
        .iter()
        .find(|e| e.event == raised("child-failed", 4))
        .unwrap();
    assert_eq!(
        conflict.generation,
        Some(m.generation),
        "addressed to the parent's execution that started the child"
    );
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
        app_id: String::new(),
        claim: 0,
        instance_id: "a".into(),
        generation: m.generation,
        task_id: 1,
        request: b"\x0a\x03req".to_vec(),
    };
    let mut cp = empty_cp(&m);
    cp.new_activities = vec![task.clone()];
    s.checkpoint(cp).await.unwrap();
    assert_eq!(pending(&s, &all()).await, vec![task]);
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
    assert!(pending(&s, &all()).await.is_empty());
}

pub async fn cancel_pending_drops_old_work<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "c").await;
    let m = row(&s, "c").await;
    let act = |task_id, generation| ActivityTask {
        app_id: String::new(),
        claim: 0,
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
    assert_eq!(pending(&s, &all()).await, vec![act(1, g1)]);
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), Some(20));

    // terminal: everything goes
    let m = row(&s, "c").await;
    let mut cp = empty_cp(&m);
    cp.meta.status = RuntimeStatus::Terminated;
    cp.cancel_pending = true;
    s.checkpoint(cp).await.unwrap();
    assert!(pending(&s, &all()).await.is_empty());
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), None);
}

pub async fn purge_removes_everything<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "p").await;
    create(&s, "keep").await;
    let m = row(&s, "p").await;
    let mut cp = empty_cp(&m);
    cp.append = vec![raised("h", 0)];
    cp.new_activities = vec![ActivityTask {
        app_id: String::new(),
        claim: 0,
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
    // Still running, so only a forced purge takes it (see `purge_refuses_active_instances`).
    assert!(s.purge("p", true, None).await.unwrap());
    assert!(s.get_instance("p").await.unwrap().is_none());
    assert!(s.load("p").await.unwrap().is_none());
    assert!(s.get_history("p").await.unwrap().is_none());
    assert!(s.read_inbox("p").await.unwrap().is_empty());
    assert!(pending(&s, &all()).await.is_empty());
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), None);
    assert_eq!(
        s.instances_with_inbox(&all()).await.unwrap(),
        vec!["keep".to_string()]
    );
    assert!(
        !s.purge("p", false, None).await.unwrap(),
        "second purge finds nothing"
    );
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
        app_id: String::new(),
        claim: 0,
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
    assert!(pending(&s, &all()).await.is_empty(), "old tasks wiped");
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
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), Some(at));
    assert!(
        s.claim_due_reminders(&all(), now(), now() + 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let due = s.claim_due_reminders(&all(), at, at + 1, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].instance_id, "later");
    assert_eq!(due[0].event, started("wf"));
    assert!(s.fire_reminder(due[0].id, None).await.unwrap());
    let inbox = s.read_inbox("later").await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].event, started("wf"));

    // a scheduled time already past starts at once
    let mut req = create_req("past", ReusePolicy::Error);
    req.meta.scheduled_start_at = Some(now() - 1_000_000);
    s.create_instance(req).await.unwrap();
    assert_eq!(s.read_inbox("past").await.unwrap().len(), 1);
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), None);
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
            app_id: String::new(),
            claim: 0,
            instance_id: id.into(),
            generation: m.generation,
            task_id: 1,
            request: vec![],
        }];
        s.checkpoint(cp).await.unwrap();
    }
    let done = |id: &str| crate::ActivityCompletion {
        claim: None,
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
    assert!(pending(&s, &all()).await.is_empty());
    assert!(s.complete_activity_batch(vec![]).await.is_empty());
}
