//! Synthetic-history tests of what keeps executions apart: continue-as-new event order across
//! generations, events addressed to another generation, and which action IDs must be unique.

use crate::history::event;
use crate::turn::*;
use crate::turn_tests::{
    NOW, action, complete, ctx_apply, dispatch, first_turn_history, inbox, kinds, meta, schedule,
    started,
};
use crate::{InstanceMeta, RuntimeStatus};
use weft_proto::durabletask::{
    CompleteWorkflowAction, CreateTimerAction, EventRaisedEvent, HistoryEvent, OrchestrationStatus,
    TaskFailedEvent, TaskFailureDetails, TerminateWorkflowAction, TimerFiredEvent, WorkflowAction,
    history_event::EventType, workflow_action::WorkflowActionType,
};

fn raised(n: i32) -> HistoryEvent {
    event(
        NOW,
        EventType::EventRaised(EventRaisedEvent {
            name: "item".into(),
            input: Some(n.to_string()),
        }),
    )
}

fn raised_value(e: &HistoryEvent) -> Option<i32> {
    match &e.event_type {
        Some(EventType::EventRaised(r)) => r.input.as_deref().and_then(|v| v.parse().ok()),
        _ => None,
    }
}

/// A durable inbox as the stores keep it: arrival order, stamped deliveries.
#[derive(Default)]
struct Inbox {
    items: Vec<InboxItem>,
    next_seq: i64,
}

impl Inbox {
    fn push(&mut self, event: HistoryEvent, generation: Option<i64>) {
        self.next_seq += 1;
        self.items.push(InboxItem {
            seq: self.next_seq,
            event,
            generation,
        });
    }

    /// Commits a turn: consumes what it saw and takes its deliveries to this instance.
    fn commit(&mut self, out: &TurnOutcome) {
        self.items.retain(|i| !out.consumed.contains(&i.seq));
        for e in &out.effects {
            if let Effect::Deliver {
                execution_id,
                event,
                ..
            } = e
            {
                // The store stamps a delivery for the current execution with its generation.
                let generation = execution_id.as_ref().map(|x| {
                    assert_eq!(x, &out.meta.execution_id);
                    out.meta.generation
                });
                self.push(event.clone(), generation);
            }
        }
    }
}

/// The workflow of the issue, as the Python SDK runs it: wait for one `item`, then continue as
/// new with `save_events=True`, carrying the items it received and did not consume, in order.
fn answer(turn: &PendingTurn, seen: &mut Vec<i32>) -> Vec<WorkflowAction> {
    let items: Vec<i32> = turn.new_events.iter().filter_map(raised_value).collect();
    let Some((first, rest)) = items.split_first() else {
        return vec![]; // still waiting
    };
    seen.push(*first);
    vec![action(
        1,
        WorkflowActionType::CompleteWorkflow(CompleteWorkflowAction {
            workflow_status: OrchestrationStatus::ContinuedAsNew as i32,
            result: Some("[]".into()),
            carryover_events: rest.iter().map(|n| raised(*n)).collect(),
            ..Default::default()
        }),
    )]
}

/// Runs the workflow with five events raised back to back; `arrivals[t]` of them arrive while
/// the `t`-th dispatched turn is with the worker (one more whenever the workflow idles). Returns the order in which the workflow consumed them.
fn run_generations(arrivals: &[usize]) -> Vec<i32> {
    let mut m = meta(RuntimeStatus::Pending);
    let mut history: Vec<HistoryEvent> = Vec::new();
    let mut inbox = Inbox::default();
    inbox.push(started(), Some(0));
    let mut next_event = 1;
    let mut seen = Vec::new();
    let mut dispatched = 0;
    for _ in 0..40 {
        let turn = match prepare_turn(&m, &history, &inbox.items, NOW) {
            Prepared::Dispatch(turn) => turn,
            Prepared::Idle { consumed } => {
                if consumed.is_empty() && next_event > 5 {
                    break;
                }
                inbox.items.retain(|i| !consumed.contains(&i.seq));
                // Nothing to do until the next event is raised.
                if next_event <= 5 {
                    inbox.push(raised(next_event), None);
                    next_event += 1;
                }
                continue;
            }
            Prepared::Direct(_) => panic!("nothing terminates here"),
        };
        for _ in 0..arrivals.get(dispatched).copied().unwrap_or(0) {
            if next_event <= 5 {
                inbox.push(raised(next_event), None);
                next_event += 1;
            }
        }
        dispatched += 1;
        let actions = answer(&turn, &mut seen);
        let out = ctx_apply(&m, &history, &turn, actions).expect("valid answer");
        inbox.commit(&out);
        if out.reset_history {
            history.clear();
        }
        history.extend(out.append.clone());
        m = InstanceMeta {
            version: m.version + 1,
            ..out.meta
        };
    }
    assert!(inbox.items.is_empty(), "left over: {:?}", inbox.items);
    seen
}

#[test]
fn continue_as_new_keeps_event_order_across_generations() {
    // Each schedule has events arriving while continue-as-new turns are in flight, so carried
    // events and newer inbox events meet in the next generation's first turn.
    for arrivals in [
        vec![2, 1, 2],
        vec![3, 2],
        vec![2, 2, 1],
        vec![5],
        vec![2, 1, 1, 1],
        vec![1, 1, 1, 1, 1],
        vec![0, 0, 3, 2],
    ] {
        assert_eq!(
            run_generations(&arrivals),
            [1, 2, 3, 4, 5],
            "arrivals per turn: {arrivals:?}"
        );
    }
}

#[test]
fn events_addressed_to_another_generation_are_dropped() {
    // Generation 1 scheduled task 1 and timer 2, like generation 0 before it.
    let mut m = meta(RuntimeStatus::Running);
    m.generation = 1;
    let h = first_turn_history();
    let fired = |id| {
        event(
            NOW,
            EventType::TimerFired(TimerFiredEvent {
                fire_at: None,
                timer_id: id,
            }),
        )
    };
    let items = vec![
        InboxItem {
            seq: 1,
            event: crate::turn_tests::task_completed(1, "\"from gen 0\""),
            generation: Some(0),
        },
        InboxItem {
            seq: 2,
            event: fired(2),
            generation: Some(0),
        },
        InboxItem {
            seq: 3,
            event: raised(7),
            generation: None,
        },
        InboxItem {
            seq: 4,
            event: crate::turn_tests::task_completed(1, "\"from gen 1\""),
            generation: Some(1),
        },
    ];
    let turn = dispatch(prepare_turn(&m, &h, &items, NOW));
    assert_eq!(
        kinds(&turn.new_events),
        ["WorkflowStarted", "EventRaised", "TaskCompleted"]
    );
    assert!(matches!(
        &turn.new_events[2].event_type,
        Some(EventType::TaskCompleted(c)) if c.result.as_deref() == Some("\"from gen 1\"")
    ));
    assert_eq!(turn.consumed, [1, 2, 3, 4], "stale events are consumed too");

    // Only stale events: nothing for a worker, but they are cleared away.
    let stale = &items[..2];
    assert_eq!(
        prepare_turn(&m, &h, stale, NOW),
        Prepared::Idle {
            consumed: vec![1, 2]
        }
    );
}

fn failed(id: i32) -> HistoryEvent {
    event(
        NOW,
        EventType::TaskFailed(TaskFailedEvent {
            task_scheduled_id: id,
            failure_details: Some(TaskFailureDetails {
                error_type: "ValueError".into(),
                error_message: "always".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    )
}

/// Applies one turn with the given inbox and actions to `(meta, history)`.
fn step(
    m: &mut InstanceMeta,
    h: &mut Vec<HistoryEvent>,
    events: Vec<HistoryEvent>,
    actions: Vec<WorkflowAction>,
) -> Result<TurnOutcome, TurnError> {
    let turn = dispatch(prepare_turn(m, h, &inbox(events), NOW));
    let out = ctx_apply(m, h, &turn, actions)?;
    h.extend(out.append.clone());
    *m = out.meta.clone();
    Ok(out)
}

#[test]
fn a_completion_may_reuse_an_earlier_timer_id() {
    // durabletask-dapr's activity retry: task 1 fails, retry timer 2, task 3 fails; the SDK's
    // replay (its retry deadline is wall-clock time) then gives up at task 1 and completes with
    // the next sequence number, 2 — the timer's ID. daprd accepts that; so does Weft.
    let mut m = meta(RuntimeStatus::Running);
    let mut h = first_turn_history();
    let timer = action(
        2,
        WorkflowActionType::CreateTimer(CreateTimerAction {
            fire_at: Some(timestamp(NOW + 1_000_000)),
            ..Default::default()
        }),
    );
    step(&mut m, &mut h, vec![failed(1)], vec![timer]).unwrap();
    let fired = event(
        NOW,
        EventType::TimerFired(TimerFiredEvent {
            fire_at: None,
            timer_id: 2,
        }),
    );
    step(&mut m, &mut h, vec![fired], vec![schedule(3, "boom")]).unwrap();

    // IDs that name history events stay unique: a second timer 2 or task 3 is refused.
    let again = |a| {
        let (mut m, mut h) = (m.clone(), h.clone());
        step(&mut m, &mut h, vec![failed(3)], vec![a])
    };
    assert_eq!(
        again(schedule(2, "x")),
        Err(TurnError::DuplicateActionId(2))
    );
    assert_eq!(
        again(schedule(3, "x")),
        Err(TurnError::DuplicateActionId(3))
    );
    // Terminating another instance writes no history event here: its ID needs no uniqueness.
    let term = action(
        1,
        WorkflowActionType::TerminateWorkflow(TerminateWorkflowAction {
            instance_id: "other".into(),
            ..Default::default()
        }),
    );
    assert!(again(term).is_ok());

    let mut fail = complete(2, OrchestrationStatus::Failed, "");
    if let Some(WorkflowActionType::CompleteWorkflow(c)) = &mut fail.workflow_action_type {
        c.result = None;
        c.failure_details = Some(TaskFailureDetails {
            error_type: "TaskFailedError".into(),
            error_message: "Activity task #1 failed: always".into(),
            ..Default::default()
        });
    }
    let out = step(&mut m, &mut h, vec![failed(3)], vec![fail]).expect("accepted as daprd does");
    assert_eq!(out.meta.status, RuntimeStatus::Failed);
    assert_eq!(
        decode_failure(out.meta.failure.as_deref())
            .unwrap()
            .error_type,
        "TaskFailedError"
    );
    let done = out.append.last().unwrap();
    assert_eq!(kinds(std::slice::from_ref(done)), ["ExecutionCompleted"]);
    assert_eq!(done.event_id, 2, "numbered with the action's ID, as daprd");
}
