//! Unit tests of `CheckpointPlan::of` on synthetic checkpoints (no database).

use weft_core::RuntimeStatus;
use weft_core::bucket::bucket_of;

use super::*;
use crate::ActivityTask;
use crate::codec::encode_event;
use crate::conformance::{create_req, empty_cp, meta, raised, task_completed};

fn cp() -> Checkpoint {
    let mut m = meta("wf-1", "wf");
    m.version = 7;
    m.generation = 3;
    empty_cp(&m)
}

fn reminder(id: &str, generation: i64) -> Reminder {
    Reminder {
        id: 0,
        instance_id: id.into(),
        generation,
        due_at: 99,
        event: raised("t", 1),
    }
}

fn task(id: &str, task_id: i32) -> ActivityTask {
    ActivityTask {
        app_id: String::new(),
        instance_id: id.into(),
        generation: 3,
        task_id,
        request: vec![task_id as u8],
        claim: 5, // ignored: new tasks start at claim 0
    }
}

#[test]
fn an_empty_turn_only_updates_the_row() {
    let cp = cp();
    let p = CheckpointPlan::of(&cp);
    assert_eq!(p.id, "wf-1");
    assert_eq!(p.expected_version, 7);
    assert_eq!(p.row, MetaRow::of(&cp.meta));
    assert_eq!(p.row.status, RuntimeStatus::Running.code());
    assert_eq!(p.row.input, Some("\"input of wf-1\"".as_bytes()));
    assert!(!p.reset_history);
    assert!(p.append.is_empty() && p.consume.is_empty() && p.fold.is_empty());
    assert_eq!(p.cancel_below, None);
    assert!(p.schedule.is_empty() && p.remind.is_empty() && p.outbound.is_empty());
    assert!(p.is_local());
}

#[test]
fn rows_are_encoded_in_order_with_their_buckets() {
    let mut cp = cp();
    cp.reset_history = true;
    cp.append = vec![raised("a", 1), task_completed(2)];
    cp.consumed_inbox = vec![4, 9];
    cp.completed_activities = vec![(2, 3, Some(1)), (6, 2, None)];
    cp.new_activities = vec![task("wf-1", 8)];
    cp.new_reminders = vec![reminder("wf-1", 3)];
    let p = CheckpointPlan::of(&cp);
    assert!(p.reset_history);
    assert_eq!(p.generation(), 3);
    assert_eq!(
        p.append,
        vec![
            encode_event(&raised("a", 1)),
            encode_event(&task_completed(2))
        ]
    );
    assert_eq!(p.consume, &[4, 9]);
    let folded = |task_id, generation, claim| FoldedTask {
        task_id,
        generation,
        claim,
    };
    assert_eq!(p.fold, vec![folded(2, 3, Some(1)), folded(6, 2, None)]);
    let bucket = bucket_of("wf-1");
    assert_eq!(
        p.schedule,
        vec![TaskRow {
            instance_id: "wf-1",
            task_id: 8,
            generation: 3,
            request: &[8],
            bucket,
            app_id: "",
        }]
    );
    assert_eq!(
        p.remind,
        vec![ReminderRow {
            instance_id: "wf-1".into(),
            generation: 3,
            due_at: 99,
            event: encode_event(&raised("t", 1)),
            bucket,
        }]
    );
    assert!(p.is_local());
}

#[test]
fn cancellation_keeps_the_current_generation_unless_terminal() {
    let mut cp = cp();
    cp.cancel_pending = true;
    assert_eq!(CheckpointPlan::of(&cp).cancel_below, Some(3));
    cp.meta.status = RuntimeStatus::Completed;
    assert_eq!(CheckpointPlan::of(&cp).cancel_below, Some(i64::MAX));
    cp.cancel_pending = false;
    assert_eq!(CheckpointPlan::of(&cp).cancel_below, None);
}

#[test]
fn creates_replace_only_with_terminate_and_answer_conflicts_to_this_execution() {
    let mut cp = cp();
    let child = |policy| Outbound::Create {
        create: create_req("child", policy),
        on_conflict: Some(("wf-1".into(), raised("failed", 3))),
    };
    cp.outbound = vec![
        child(ReusePolicy::Error),
        child(ReusePolicy::Ignore),
        child(ReusePolicy::Terminate),
        Outbound::Create {
            create: create_req("other-child", ReusePolicy::Error),
            on_conflict: Some(("elsewhere".into(), raised("x", 4))),
        },
    ];
    let p = CheckpointPlan::of(&cp);
    let policies: Vec<ReusePolicy> = p
        .outbound
        .iter()
        .map(|o| match o {
            Outgoing::Create { create, .. } => create.policy,
            Outgoing::Deliver(_) => panic!("a create became a delivery"),
        })
        .collect();
    use ReusePolicy::{Ignore, Terminate};
    assert_eq!(policies, vec![Ignore, Ignore, Terminate, Ignore]);
    let Outgoing::Create { on_conflict, .. } = &p.outbound[0] else {
        unreachable!()
    };
    assert_eq!(
        on_conflict.as_ref(),
        Some(&Delivery {
            target: "wf-1",
            execution_id: Some("wf-1-exec"),
            event: encode_event(&raised("failed", 3)),
            bucket: bucket_of("wf-1"),
        })
    );
    let Outgoing::Create { on_conflict, .. } = &p.outbound[3] else {
        unreachable!()
    };
    assert_eq!(on_conflict.as_ref().map(|d| d.execution_id), Some(None));
    assert!(!p.is_local());
    assert_eq!(p.deliveries().count(), 0);
}

#[test]
fn deliveries_keep_their_order_and_execution() {
    let mut cp = cp();
    cp.outbound = vec![
        Outbound::Deliver {
            instance_id: "a".into(),
            execution_id: Some("a-exec".into()),
            event: raised("x", 1),
        },
        Outbound::Deliver {
            instance_id: "b".into(),
            execution_id: None,
            event: raised("y", 2),
        },
    ];
    let p = CheckpointPlan::of(&cp);
    let got: Vec<(&str, Option<&str>, i32)> = p
        .deliveries()
        .map(|d| (d.target, d.execution_id, d.bucket))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a", Some("a-exec"), bucket_of("a")),
            ("b", None, bucket_of("b"))
        ]
    );
    assert!(p.is_local());
}

#[test]
fn work_filed_under_another_instance_is_not_local() {
    let mut cp = cp();
    cp.new_activities = vec![task("other", 1)];
    assert!(!CheckpointPlan::of(&cp).is_local());
    let mut cp = self::cp();
    cp.new_reminders = vec![reminder("other", 0)];
    assert!(!CheckpointPlan::of(&cp).is_local());
}
