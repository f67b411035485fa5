//! Group-commit conformance: a batch of checkpoints, creations or activity results must leave
//! exactly the rows the same operations leave one by one (set-based backends have new failure
//! shapes: a fence lost in the middle of a batch, members of many instances in one statement).

use weft_core::RuntimeStatus;

use super::{Fixture, all, create, create_req, empty_cp, now, pending, raised, row, started};
use crate::{
    ActivityTask, Checkpoint, CreateOutcome, Outbound, Reminder, ReusePolicy, Store, StoreError,
};

const MEMBERS: [&str; 8] = ["w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7"];

/// A fixed due time in the past, so reminders can be claimed (and compared) at once.
const DUE: i64 = 1_000_000;

fn task(id: &str, generation: i64, task_id: i32) -> ActivityTask {
    ActivityTask {
        app_id: String::new(),
        claim: 0,
        instance_id: id.into(),
        generation,
        task_id,
        request: format!("req-{task_id}-{generation}").into_bytes(),
    }
}

fn timer(id: &str, generation: i64, n: i32) -> Reminder {
    Reminder {
        id: 0,
        instance_id: id.into(),
        generation,
        due_at: DUE + i64::from(n),
        event: raised("timer", n),
    }
}

/// The same starting state under prefix `p`: eight instances with inbox entries, `w2` advanced
/// once (so the checkpoint built from the row read here loses its fence), `w3` and `w4` with
/// pending work of generation 0.
async fn setup<S: Store>(s: &S, p: &str) -> Vec<crate::InstanceMeta> {
    for m in MEMBERS {
        let id = format!("{p}{m}");
        create(s, &id).await;
        for k in 0..2 {
            assert!(s.append_inbox(&id, raised("in", k)).await.unwrap());
        }
    }
    for m in ["w3", "w4"] {
        let id = format!("{p}{m}");
        let mut cp = empty_cp(&row(s, &id).await);
        cp.new_activities = vec![task(&id, 0, 7)];
        cp.new_reminders = vec![timer(&id, 0, 70)];
        s.checkpoint(cp).await.unwrap();
    }
    let mut rows = Vec::new();
    for m in MEMBERS {
        rows.push(row(s, &format!("{p}{m}")).await);
    }
    s.checkpoint(empty_cp(&rows[2])).await.unwrap(); // w2's row is now stale
    rows
}

/// One turn per member, of every shape a batch may carry.
async fn turns<S: Store>(s: &S, p: &str, rows: &[crate::InstanceMeta]) -> Vec<Checkpoint> {
    let id = |m: &str| format!("{p}{m}");
    let mut cps = Vec::new();
    for (k, m) in rows.iter().enumerate() {
        let mut cp = empty_cp(m);
        let inbox: Vec<i64> = s
            .read_inbox(&m.instance_id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        cp.consumed_inbox = inbox.clone();
        match k {
            0 => {
                cp.append = vec![started("wf"), raised("a", 1), raised("b", 2)];
                cp.new_activities = vec![task(&m.instance_id, 0, 1), task(&m.instance_id, 0, 2)];
                cp.new_reminders = vec![timer(&m.instance_id, 0, 1)];
                cp.outbound = vec![
                    Outbound::Deliver {
                        instance_id: id("w1"),
                        execution_id: None,
                        event: raised("from-w0", 3),
                    },
                    Outbound::Deliver {
                        instance_id: id("nobody"),
                        execution_id: None,
                        event: raised("dropped", 4),
                    },
                ];
            }
            1 => {
                cp.append = vec![raised("c", 1)];
                cp.outbound = vec![
                    Outbound::Deliver {
                        instance_id: id("w0"),
                        execution_id: Some(rows[0].execution_id.clone()),
                        event: raised("stamped", 5),
                    },
                    Outbound::Deliver {
                        instance_id: id("w6"),
                        execution_id: Some("not-its-execution".into()),
                        event: raised("wrong-execution", 6),
                    },
                ];
            }
            2 => {
                // The loser: none of this may land.
                cp.append = vec![raised("lost", 1)];
                cp.new_activities = vec![task(&m.instance_id, 0, 9)];
                cp.new_reminders = vec![timer(&m.instance_id, 0, 9)];
                cp.outbound = vec![Outbound::Deliver {
                    instance_id: id("w1"),
                    execution_id: None,
                    event: raised("lost", 7),
                }];
            }
            3 => {
                // Continue-as-new: new generation, history reset, old work dropped.
                cp.meta.generation = 1;
                cp.meta.execution_id = format!("{}-second", m.instance_id);
                cp.reset_history = true;
                cp.cancel_pending = true;
                cp.append = vec![started("wf")];
                cp.new_activities = vec![task(&m.instance_id, 1, 7)];
                cp.new_reminders = vec![timer(&m.instance_id, 1, 2)];
            }
            4 => {
                cp.meta.status = RuntimeStatus::Completed;
                cp.cancel_pending = true;
                cp.append = vec![raised("done", 1)];
            }
            5 => {
                // A child start rides with the turn (the per-member path on PostgreSQL).
                let mut child = create_req(&id("c5"), ReusePolicy::Error);
                child.meta.parent_instance_id = Some(m.instance_id.clone());
                cp.append = vec![raised("spawn", 1)];
                cp.outbound = vec![
                    Outbound::Create {
                        create: child,
                        on_conflict: Some((m.instance_id.clone(), raised("child-failed", 8))),
                    },
                    Outbound::Create {
                        create: create_req(&id("w6"), ReusePolicy::Error),
                        on_conflict: Some((m.instance_id.clone(), raised("busy", 9))),
                    },
                ];
            }
            6 => cp.consumed_inbox.clear(),
            _ => cp.consumed_inbox.truncate(1),
        }
        cps.push(cp);
    }
    cps
}

/// Everything stored about the world under prefix `p`, printed with the prefix removed (inbox
/// seqs and timestamps, which differ between worlds by construction, left out).
async fn snapshot<S: Store>(s: &S, p: &str, claimed: &[Reminder]) -> Vec<String> {
    let mut out = Vec::new();
    for m in MEMBERS.iter().chain(&["c5", "nobody"]) {
        let id = format!("{p}{m}");
        match s.load(&id).await.unwrap() {
            None => out.push(format!("{m}: none")),
            Some(l) => {
                let r = &l.meta;
                out.push(format!(
                    "{m}: {:?} gen {} v {} exec {} parent {:?}",
                    r.status, r.generation, r.version, r.execution_id, r.parent_instance_id
                ));
                out.push(format!("{m} history: {:?}", l.history));
                let inbox: Vec<_> = l.inbox.iter().map(|e| (&e.event, e.generation)).collect();
                out.push(format!("{m} inbox: {inbox:?}"));
            }
        }
    }
    let tasks: Vec<_> = pending(s, &all())
        .await
        .into_iter()
        .filter(|t| t.instance_id.starts_with(p))
        .collect();
    out.push(format!("tasks: {tasks:?}"));
    let mut timers: Vec<_> = claimed
        .iter()
        .filter(|t| t.instance_id.starts_with(p))
        .map(|t| (&t.instance_id, t.generation, t.due_at, &t.event))
        .collect();
    timers.sort_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
    out.push(format!("timers: {timers:?}"));
    out.into_iter().map(|l| l.replace(p, "")).collect()
}

/// A batch mixing members of many instances with history, inbox consumption, activities,
/// reminders, deliveries (plain, execution-addressed, to nobody), continue-as-new, a terminal
/// turn, child starts and a fence lost in the middle leaves exactly the rows of the same
/// checkpoints committed one at a time, and the loser's writes are nowhere.
pub async fn batch_equals_one_by_one<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let rows = setup(&s, "one-").await;
    let mut single = Vec::new();
    for cp in turns(&s, "one-", &rows).await {
        single.push(s.checkpoint(cp).await);
    }
    let rows = setup(&s, "set-").await;
    let batch = s.checkpoint_batch(turns(&s, "set-", &rows).await).await;
    assert_eq!(batch.len(), MEMBERS.len());
    for (k, (a, b)) in single.iter().zip(&batch).enumerate() {
        if k == 2 {
            assert!(matches!(a, Err(StoreError::Conflict { .. })), "{a:?}");
            assert!(
                matches!(b, Err(StoreError::Conflict { instance_id, .. }) if instance_id == "set-w2"),
                "{b:?}"
            );
        } else {
            assert!(a.is_ok() && b.is_ok(), "member {k}: {a:?} / {b:?}");
        }
    }
    // Both worlds' reminders at once (a claim leases what it returns).
    let claimed = s
        .claim_due_reminders(&all(), now(), now() + 60_000_000, 1000)
        .await
        .unwrap();
    let one = snapshot(&s, "one-", &claimed).await;
    let set = snapshot(&s, "set-", &claimed).await;
    for (a, b) in one.iter().zip(&set) {
        assert_eq!(a, b);
    }
    assert_eq!(one.len(), set.len());
    let all_rows = set.join("\n");
    assert!(
        !all_rows.contains("lost"),
        "a loser's writes landed:\n{all_rows}"
    );
    assert!(all_rows.contains("from-w0") && all_rows.contains("stamped"));
    assert!(!all_rows.contains("wrong-execution") && !all_rows.contains("dropped"));
    assert!(all_rows.contains("child-failed") || all_rows.contains("c5: Pending"));
    assert!(
        all_rows.contains("busy"),
        "an active child target answers on_conflict"
    );
}

/// Losers anywhere in a batch (first, middle, last, several) fail alone; the winners commit.
pub async fn batch_losers_anywhere_fail_alone<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let ids: Vec<String> = (0..6).map(|k| format!("l{k}")).collect();
    let mut rows = Vec::new();
    for id in &ids {
        create(&s, id).await;
        rows.push(row(&s, id).await);
    }
    for k in [0, 3, 5] {
        s.checkpoint(empty_cp(&rows[k])).await.unwrap();
    }
    let cps: Vec<Checkpoint> = rows
        .iter()
        .map(|m| {
            let mut cp = empty_cp(m);
            cp.append = vec![raised("turn", 1)];
            cp.new_activities = vec![task(&m.instance_id, 0, 1)];
            cp
        })
        .collect();
    let res = s.checkpoint_batch(cps).await;
    for (k, r) in res.iter().enumerate() {
        if [0, 3, 5].contains(&k) {
            assert!(matches!(r, Err(StoreError::Conflict { .. })), "{k}: {r:?}");
            assert!(s.get_history(&ids[k]).await.unwrap().unwrap().is_empty());
        } else {
            assert!(r.is_ok(), "{k}: {r:?}");
            assert_eq!(
                s.get_history(&ids[k]).await.unwrap().unwrap(),
                vec![raised("turn", 1)]
            );
            assert_eq!(row(&s, &ids[k]).await.version, rows[k].version + 1);
        }
    }
    let tasks: Vec<String> = pending(&s, &all())
        .await
        .into_iter()
        .map(|t| t.instance_id)
        .collect();
    assert_eq!(tasks, ["l1", "l2", "l4"]);
    // Every member losing is an answer too, not an error of the batch.
    let res = s
        .checkpoint_batch(rows.iter().map(empty_cp).collect())
        .await;
    assert!(
        res.iter()
            .all(|r| matches!(r, Err(StoreError::Conflict { .. })))
    );
}

/// `create_instance_batch` answers each request as `create_instance` would: new IDs, a repeat
/// within the batch, active and terminal existing IDs under each policy, a purged ID (its
/// sequences continue) and a scheduled start (a reminder, not an inbox entry).
pub async fn create_batch_answers_each<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "active").await;
    create(&s, "ended").await;
    let mut fin = empty_cp(&row(&s, "ended").await);
    fin.meta.status = RuntimeStatus::Completed;
    s.checkpoint(fin).await.unwrap();
    let ended_before = row(&s, "ended").await;
    create(&s, "gone").await;
    for _ in 0..3 {
        let m = row(&s, "gone").await;
        let mut cp = empty_cp(&m);
        cp.meta.status = RuntimeStatus::Completed;
        s.checkpoint(cp).await.unwrap();
    }
    let gone_before = row(&s, "gone").await;
    assert!(s.purge("gone", false, None).await.unwrap());

    let mut later = create_req("later", ReusePolicy::Error);
    later.meta.scheduled_start_at = Some(now() + 3_600_000_000);
    let reqs = vec![
        create_req("n1", ReusePolicy::Error),
        create_req("active", ReusePolicy::Error),
        create_req("n2", ReusePolicy::Error),
        create_req("n1", ReusePolicy::Error),
        create_req("active", ReusePolicy::Ignore),
        create_req("ended", ReusePolicy::Error),
        create_req("gone", ReusePolicy::Error),
        later,
        create_req("n2", ReusePolicy::Ignore),
    ];
    let res = s.create_instance_batch(reqs).await;
    let res: Vec<String> = res.iter().map(|r| format!("{r:?}")).collect();
    let created = format!("{:?}", Ok::<_, StoreError>(CreateOutcome::Created));
    assert_eq!(res[0], created);
    assert!(res[1].contains("AlreadyExists"), "{}", res[1]);
    assert_eq!(res[2], created);
    assert!(
        res[3].contains("AlreadyExists"),
        "a repeat sees the first: {}",
        res[3]
    );
    assert_eq!(
        res[4],
        format!("{:?}", Ok::<_, StoreError>(CreateOutcome::Existing))
    );
    assert_eq!(
        res[5],
        format!("{:?}", Ok::<_, StoreError>(CreateOutcome::Replaced))
    );
    assert_eq!(res[6], created);
    assert_eq!(res[7], created);
    assert_eq!(
        res[8],
        format!("{:?}", Ok::<_, StoreError>(CreateOutcome::Existing))
    );

    for id in ["n1", "n2"] {
        let l = s.load(id).await.unwrap().unwrap();
        assert_eq!((l.meta.version, l.meta.generation), (1, 0));
        assert_eq!(l.inbox.len(), 1, "{id}: one start event");
        assert_eq!(l.inbox[0].event, started("wf"));
        assert_eq!(l.inbox[0].generation, Some(0));
    }
    let ended = row(&s, "ended").await;
    assert_eq!(ended.status, RuntimeStatus::Pending);
    assert!(ended.version > ended_before.version && ended.generation > ended_before.generation);
    let gone = s.load("gone").await.unwrap().unwrap();
    assert_eq!(
        gone.meta.version,
        gone_before.version + 1,
        "purged sequences continue"
    );
    assert_eq!(gone.meta.generation, gone_before.generation + 1);
    assert_eq!(gone.inbox[0].generation, Some(gone.meta.generation));
    assert!(s.read_inbox("later").await.unwrap().is_empty());
    assert!(s.next_reminder_due(&all()).await.unwrap().is_some());
    let active = s.load("active").await.unwrap().unwrap();
    assert_eq!(active.meta.version, 1, "an active instance is left alone");
    assert!(s.create_instance_batch(vec![]).await.is_empty());
}
