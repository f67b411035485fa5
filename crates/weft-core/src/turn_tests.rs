//! Synthetic-history tests of the turn engine: happy paths and the error paths.

use crate::history::{event, event_with_id, kind};
use crate::turn::*;
use crate::{InstanceMeta, RuntimeStatus};
use weft_proto::durabletask::{
    CompleteWorkflowAction, CreateChildWorkflowAction, CreateTimerAction, EventRaisedEvent,
    ExecutionResumedEvent, ExecutionStartedEvent, ExecutionSuspendedEvent,
    ExecutionTerminatedEvent, HistoryEvent, OrchestrationStatus, ParentInstanceInfo,
    ScheduleTaskAction, TaskCompletedEvent, TimerFiredEvent, WorkflowAction, WorkflowInstance,
    WorkflowResponse, WorkflowVersion, WorkflowVersionNotAvailableAction, history_event::EventType,
    workflow_action::WorkflowActionType,
};

pub(crate) const NOW: i64 = 1_700_000_000_000_000;

pub(crate) fn meta(status: RuntimeStatus) -> InstanceMeta {
    let (mut m, _) = new_instance(
        "wf-1",
        "order",
        None,
        Some("1".into()),
        None,
        "exec-0".into(),
        "app",
        NOW,
    );
    m.status = status;
    m
}

pub(crate) fn started() -> HistoryEvent {
    new_instance(
        "wf-1",
        "order",
        None,
        Some("1".into()),
        None,
        "exec-0".into(),
        "app",
        NOW,
    )
    .1
}

pub(crate) fn inbox(events: Vec<HistoryEvent>) -> Vec<InboxItem> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| InboxItem {
            seq: i as i64 + 10,
            event,
            generation: None,
        })
        .collect()
}

pub(crate) fn dispatch(p: Prepared) -> PendingTurn {
    match p {
        Prepared::Dispatch(t) => t,
        other => panic!("expected a dispatch, got {other:?}"),
    }
}

pub(crate) fn ctx_apply(
    meta: &InstanceMeta,
    history: &[HistoryEvent],
    turn: &PendingTurn,
    actions: Vec<WorkflowAction>,
) -> Result<TurnOutcome, TurnError> {
    let mut n = 0;
    let mut new_id = || {
        n += 1;
        format!("exec-{n}")
    };
    let mut ctx = TurnContext {
        inherited: None,
        app_id: "app",
        now: NOW + 5,
        new_id: &mut new_id,
    };
    let resp = WorkflowResponse {
        instance_id: meta.instance_id.clone(),
        actions,
        ..Default::default()
    };
    apply_response(meta, history, turn, &resp, &mut ctx)
}

pub(crate) fn action(id: i32, t: WorkflowActionType) -> WorkflowAction {
    WorkflowAction {
        id,
        workflow_action_type: Some(t),
        router: None,
    }
}

pub(crate) fn schedule(id: i32, name: &str) -> WorkflowAction {
    action(
        id,
        WorkflowActionType::ScheduleTask(ScheduleTaskAction {
            name: name.into(),
            input: Some("\"x\"".into()),
            ..Default::default()
        }),
    )
}

pub(crate) fn complete(id: i32, status: OrchestrationStatus, result: &str) -> WorkflowAction {
    action(
        id,
        WorkflowActionType::CompleteWorkflow(CompleteWorkflowAction {
            workflow_status: status as i32,
            result: Some(result.into()),
            ..Default::default()
        }),
    )
}

pub(crate) fn kinds(evs: &[HistoryEvent]) -> Vec<&'static str> {
    evs.iter().map(kind).collect()
}

/// A first turn (start → schedule activity) committed, as history.
pub(crate) fn first_turn_history() -> Vec<HistoryEvent> {
    let m = meta(RuntimeStatus::Pending);
    let turn = dispatch(prepare_turn(&m, &[], &inbox(vec![started()]), NOW));
    ctx_apply(&m, &[], &turn, vec![schedule(1, "add")])
        .unwrap()
        .append
}

pub(crate) fn task_completed(id: i32, result: &str) -> HistoryEvent {
    event(
        NOW,
        EventType::TaskCompleted(TaskCompletedEvent {
            task_scheduled_id: id,
            result: Some(result.into()),
            ..Default::default()
        }),
    )
}

#[test]
fn first_turn_starts_with_workflow_started_and_schedules_with_action_ids() {
    let m = meta(RuntimeStatus::Pending);
    let turn = dispatch(prepare_turn(&m, &[], &inbox(vec![started()]), NOW));
    assert_eq!(
        kinds(&turn.new_events),
        ["WorkflowStarted", "ExecutionStarted"]
    );
    assert_eq!(turn.new_events[0].event_id, -1);
    let req = work_item("wf-1", &[], &turn);
    assert!(req.past_events.is_empty());
    let out = ctx_apply(&m, &[], &turn, vec![schedule(1, "add"), schedule(2, "mul")]).unwrap();
    assert_eq!(
        kinds(&out.append),
        [
            "WorkflowStarted",
            "ExecutionStarted",
            "TaskScheduled",
            "TaskScheduled"
        ]
    );
    assert_eq!(out.append[2].event_id, 1);
    assert_eq!(out.append[3].event_id, 2);
    assert_eq!(out.meta.status, RuntimeStatus::Running);
    assert_eq!(out.meta.started_at, Some(NOW + 5));
    assert_eq!(out.consumed, vec![10]);
    let tasks: Vec<i32> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::ScheduleActivity { task_id, .. } => Some(*task_id),
            _ => None,
        })
        .collect();
    assert_eq!(tasks, [1, 2]);
    assert_eq!(out.append[2].router.as_ref().unwrap().source_app_id, "app");
}

#[test]
fn completion_sets_output_and_cancels_pending_work() {
    let h = first_turn_history();
    let m = meta(RuntimeStatus::Running);
    let turn = dispatch(prepare_turn(
        &m,
        &h,
        &inbox(vec![task_completed(1, "2")]),
        NOW,
    ));
    assert_eq!(
        kinds(&turn.new_events),
        ["WorkflowStarted", "TaskCompleted"]
    );
    let out = ctx_apply(
        &m,
        &h,
        &turn,
        vec![complete(2, OrchestrationStatus::Completed, "2")],
    )
    .unwrap();
    assert_eq!(out.meta.status, RuntimeStatus::Completed);
    assert_eq!(out.meta.output.as_deref(), Some("2"));
    assert!(out.cancel_pending);
    assert_eq!(kinds(&out.append).last(), Some(&"ExecutionCompleted"));
    assert_eq!(out.append.last().unwrap().event_id, 2);
}

#[test]
fn duplicate_completions_and_timer_fires_are_dropped() {
    let mut h = first_turn_history();
    h.push(task_completed(1, "2"));
    let m = meta(RuntimeStatus::Running);
    let fired = |id| {
        event(
            NOW,
            EventType::TimerFired(TimerFiredEvent {
                fire_at: None,
                timer_id: id,
            }),
        )
    };
    let p = prepare_turn(
        &m,
        &h,
        &inbox(vec![task_completed(1, "again"), fired(7), fired(7)]),
        NOW,
    );
    let turn = dispatch(p);
    assert_eq!(kinds(&turn.new_events), ["WorkflowStarted", "TimerFired"]);
    assert_eq!(
        turn.consumed,
        vec![10, 11, 12],
        "dropped events are consumed too"
    );
    // Only duplicates: nothing to dispatch, but they are removed from the inbox.
    assert_eq!(
        prepare_turn(&m, &h, &inbox(vec![task_completed(1, "again")]), NOW),
        Prepared::Idle { consumed: vec![10] }
    );
}

#[test]
fn resume_of_a_running_instance_is_dropped_and_suspend_resume_change_status() {
    let h = first_turn_history();
    let m = meta(RuntimeStatus::Running);
    let resume = || {
        event(
            NOW,
            EventType::ExecutionResumed(ExecutionResumedEvent::default()),
        )
    };
    let suspend = || {
        event(
            NOW,
            EventType::ExecutionSuspended(ExecutionSuspendedEvent::default()),
        )
    };
    assert_eq!(
        prepare_turn(&m, &h, &inbox(vec![resume()]), NOW),
        Prepared::Idle { consumed: vec![10] }
    );
    let turn = dispatch(prepare_turn(&m, &h, &inbox(vec![suspend()]), NOW));
    let out = ctx_apply(&m, &h, &turn, vec![]).unwrap();
    assert_eq!(out.meta.status, RuntimeStatus::Suspended);
    let sm = meta(RuntimeStatus::Suspended);
    let turn = dispatch(prepare_turn(&sm, &h, &inbox(vec![resume()]), NOW));
    assert_eq!(
        ctx_apply(&sm, &h, &turn, vec![]).unwrap().meta.status,
        RuntimeStatus::Running
    );
}

#[test]
fn events_for_a_finished_instance_are_dropped() {
    let m = meta(RuntimeStatus::Completed);
    let raised = event(
        NOW,
        EventType::EventRaised(EventRaisedEvent {
            name: "x".into(),
            input: None,
        }),
    );
    assert_eq!(
        prepare_turn(&m, &[], &inbox(vec![raised]), NOW),
        Prepared::Idle { consumed: vec![10] }
    );
}

#[test]
fn error_paths_unknown_action_duplicate_ids_completed_instance() {
    let h = first_turn_history();
    let m = meta(RuntimeStatus::Running);
    let turn = dispatch(prepare_turn(
        &m,
        &h,
        &inbox(vec![task_completed(1, "2")]),
        NOW,
    ));
    let unknown = WorkflowAction {
        id: 2,
        workflow_action_type: None,
        router: None,
    };
    assert_eq!(
        ctx_apply(&m, &h, &turn, vec![unknown]),
        Err(TurnError::UnknownAction(2))
    );
    // id 1 is the TaskScheduled already in history.
    assert_eq!(
        ctx_apply(&m, &h, &turn, vec![schedule(1, "again")]),
        Err(TurnError::DuplicateActionId(1))
    );
    assert_eq!(
        ctx_apply(&m, &h, &turn, vec![schedule(3, "a"), schedule(3, "b")]),
        Err(TurnError::DuplicateActionId(3))
    );
    assert!(matches!(
        ctx_apply(&m, &h, &turn, vec![schedule(3, "")]),
        Err(TurnError::InvalidAction { id: 3, .. })
    ));
    // Duplicate completion: the instance is already finished.
    let done = meta(RuntimeStatus::Completed);
    assert_eq!(
        ctx_apply(
            &done,
            &h,
            &turn,
            vec![complete(2, OrchestrationStatus::Completed, "x")]
        ),
        Err(TurnError::AlreadyCompleted("wf-1".into()))
    );
    let failed = fail_turn(&m, &h, &turn, &TurnError::UnknownAction(2), NOW);
    assert_eq!(failed.meta.status, RuntimeStatus::Failed);
    assert!(
        decode_failure(failed.meta.failure.as_deref())
            .unwrap()
            .error_message
            .contains("unknown action")
    );
}

#[test]
fn actions_after_completion_are_ignored() {
    let h = first_turn_history();
    let m = meta(RuntimeStatus::Running);
    let turn = dispatch(prepare_turn(
        &m,
        &h,
        &inbox(vec![task_completed(1, "2")]),
        NOW,
    ));
    let out = ctx_apply(
        &m,
        &h,
        &turn,
        vec![
            complete(2, OrchestrationStatus::Completed, "2"),
            schedule(3, "late"),
        ],
    )
    .unwrap();
    assert!(
        out.effects
            .iter()
            .all(|e| !matches!(e, Effect::ScheduleActivity { .. }))
    );
    assert_eq!(kinds(&out.append).last(), Some(&"ExecutionCompleted"));
}

#[test]
fn sentinel_timer_is_recorded_but_never_scheduled() {
    let h = first_turn_history();
    let m = meta(RuntimeStatus::Running);
    let turn = dispatch(prepare_turn(
        &m,
        &h,
        &inbox(vec![task_completed(1, "2")]),
        NOW,
    ));
    let forever = prost_types::Timestamp {
        seconds: crate::time::SENTINEL_SECONDS,
        nanos: 999_999_999,
    };
    let soon = timestamp(NOW + 1_000_000);
    let timer = |id, at| {
        action(
            id,
            WorkflowActionType::CreateTimer(CreateTimerAction {
                fire_at: Some(at),
                ..Default::default()
            }),
        )
    };
    let out = ctx_apply(&m, &h, &turn, vec![timer(2, forever), timer(3, soon)]).unwrap();
    assert_eq!(kinds(&out.append)[2..], ["TimerCreated", "TimerCreated"]);
    let timers: Vec<_> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Timer { due_at, event } => Some((*due_at, event.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].0, NOW + 1_000_000);
    assert!(matches!(
        timers[0].1.event_type,
        Some(EventType::TimerFired(TimerFiredEvent { timer_id: 3, .. }))
    ));
}

#[test]
fn continue_as_new_resets_history_and_requeues_start_and_carried_events() {
    let h = first_turn_history();
    let m = meta(RuntimeStatus::Running);
    let turn = dispatch(prepare_turn(
        &m,
        &h,
        &inbox(vec![task_completed(1, "2")]),
        NOW,
    ));
    let carried = event(
        NOW,
        EventType::EventRaised(EventRaisedEvent {
            name: "e".into(),
            input: Some("1".into()),
        }),
    );
    let can = action(
        2,
        WorkflowActionType::CompleteWorkflow(CompleteWorkflowAction {
            workflow_status: OrchestrationStatus::ContinuedAsNew as i32,
            result: Some("42".into()),
            carryover_events: vec![carried],
            ..Default::default()
        }),
    );
    let out = ctx_apply(&m, &h, &turn, vec![can]).unwrap();
    assert!(out.reset_history && out.append.is_empty() && out.cancel_pending);
    assert_eq!(out.meta.generation, 1);
    assert_eq!(out.meta.status, RuntimeStatus::Running);
    assert_eq!(out.meta.input.as_deref(), Some("42"));
    assert_ne!(out.meta.execution_id, m.execution_id);
    let delivered: Vec<_> = out
        .effects
        .iter()
        .map(|e| match e {
            Effect::Deliver {
                instance_id,
                execution_id,
                event,
            } => {
                assert_eq!(execution_id.as_ref(), Some(&out.meta.execution_id));
                (instance_id.as_str(), kind(event))
            }
            o => panic!("{o:?}"),
        })
        .collect();
    assert_eq!(
        delivered,
        [("wf-1", "ExecutionStarted"), ("wf-1", "EventRaised")]
    );
    // The next turn puts ExecutionStarted first even behind an event queued during the turn.
    let late = event(
        NOW,
        EventType::EventRaised(EventRaisedEvent {
            name: "late".into(),
            input: None,
        }),
    );
    let mut items = inbox(vec![late]);
    items.extend(out.effects.iter().enumerate().map(|(i, e)| match e {
        Effect::Deliver { event, .. } => InboxItem {
            seq: 20 + i as i64,
            event: event.clone(),
            generation: Some(out.meta.generation),
        },
        _ => unreachable!(),
    }));
    let next = dispatch(prepare_turn(&out.meta, &[], &items, NOW));
    assert_eq!(
        kinds(&next.new_events),
        [
            "WorkflowStarted",
            "ExecutionStarted",
            "EventRaised",
            "EventRaised"
        ]
    );
    let names: Vec<_> = next
        .new_events
        .iter()
        .filter_map(|e| match &e.event_type {
            Some(EventType::EventRaised(r)) => Some(r.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        names,
        ["e", "late"],
        "carried events first, then the late one"
    );
}

#[test]
fn child_workflows_start_atomically_and_report_to_the_parent() {
    let h = first_turn_history();
    let m = meta(RuntimeStatus::Running);
    let turn = dispatch(prepare_turn(
        &m,
        &h,
        &inbox(vec![task_completed(1, "2")]),
        NOW,
    ));
    let child = action(
        2,
        WorkflowActionType::CreateChildWorkflow(CreateChildWorkflowAction {
            instance_id: String::new(),
            name: "sub".into(),
            input: Some("5".into()),
            ..Default::default()
        }),
    );
    let out = ctx_apply(&m, &h, &turn, vec![child]).unwrap();
    let Some(Effect::StartInstance {
        meta: cm,
        start_event,
        on_conflict,
    }) = out.effects.first()
    else {
        panic!("{:?}", out.effects)
    };
    assert_eq!(cm.instance_id, "wf-1:0002");
    assert_eq!(cm.parent_instance_id.as_deref(), Some("wf-1"));
    assert_eq!(on_conflict.as_ref().unwrap().0, "wf-1");
    let Some(EventType::ExecutionStarted(s)) = &start_event.event_type else {
        panic!()
    };
    assert_eq!(s.parent_instance.as_ref().unwrap().task_scheduled_id, 2);

    // The child finishing delivers ChildWorkflowInstanceCompleted{taskScheduledId: 2} to wf-1.
    let child_start = start_event.clone();
    let turn = dispatch(prepare_turn(cm, &[], &inbox(vec![child_start]), NOW));
    let out = ctx_apply(
        cm,
        &[],
        &turn,
        vec![complete(1, OrchestrationStatus::Completed, "10")],
    )
    .unwrap();
    let Some(Effect::Deliver {
        instance_id,
        execution_id,
        event,
    }) = out.effects.last()
    else {
        panic!()
    };
    assert_eq!(instance_id, "wf-1");
    assert_eq!(
        execution_id.as_deref(),
        Some("exec-0"),
        "addressed to the parent's execution that started the child"
    );
    assert!(
        matches!(&event.event_type, Some(EventType::ChildWorkflowInstanceCompleted(c)) if c.task_scheduled_id == 2 && c.result.as_deref() == Some("10"))
    );
}

#[test]
fn terminate_is_forced_and_recursive() {
    let m = meta(RuntimeStatus::Running);
    let mut h = first_turn_history();
    let created = event_with_id(
        2,
        NOW,
        EventType::ChildWorkflowInstanceCreated(
            weft_proto::durabletask::ChildWorkflowInstanceCreatedEvent {
                instance_id: "kid".into(),
                name: "sub".into(),
                ..Default::default()
            },
        ),
    );
    h.push(created);
    let term = event(
        NOW,
        EventType::ExecutionTerminated(ExecutionTerminatedEvent {
            input: Some("\"bye\"".into()),
            recurse: true,
        }),
    );
    let turn = dispatch(prepare_turn(&m, &h, &inbox(vec![term]), NOW));
    // A worker that returns nothing still ends the instance.
    let out = ctx_apply(&m, &h, &turn, vec![]).unwrap();
    assert_eq!(out.meta.status, RuntimeStatus::Terminated);
    assert_eq!(out.meta.output.as_deref(), Some("\"bye\""));
    assert!(out.effects.iter().any(|e| matches!(e, Effect::Deliver { instance_id, event, .. } if instance_id == "kid" && kind(event) == "ExecutionTerminated")));
}

#[test]
fn terminating_a_never_started_instance_needs_no_worker() {
    let m = meta(RuntimeStatus::Pending);
    let term = event(
        NOW,
        EventType::ExecutionTerminated(ExecutionTerminatedEvent::default()),
    );
    let Prepared::Direct(out) = prepare_turn(&m, &[], &inbox(vec![started(), term]), NOW) else {
        panic!()
    };
    assert_eq!(out.meta.status, RuntimeStatus::Terminated);
    assert_eq!(out.consumed, vec![10, 11]);
}

#[test]
fn events_before_a_scheduled_start_wait_in_the_inbox() {
    let m = meta(RuntimeStatus::Pending);
    let raised = event(
        NOW,
        EventType::EventRaised(EventRaisedEvent {
            name: "x".into(),
            input: None,
        }),
    );
    assert_eq!(
        prepare_turn(&m, &[], &inbox(vec![raised]), NOW),
        Prepared::Idle { consumed: vec![] }
    );
}

#[test]
fn version_is_recorded_and_a_missing_version_stalls() {
    let m = meta(RuntimeStatus::Pending);
    let turn = dispatch(prepare_turn(&m, &[], &inbox(vec![started()]), NOW));
    let mut new_id = || "x".to_string();
    let mut ctx = TurnContext {
        inherited: None,
        app_id: "app",
        now: NOW,
        new_id: &mut new_id,
    };
    let resp = WorkflowResponse {
        instance_id: "wf-1".into(),
        version: Some(WorkflowVersion {
            patches: vec!["p1".into()],
            name: Some("v2".into()),
        }),
        ..Default::default()
    };
    let out = apply_response(&m, &[], &turn, &resp, &mut ctx).unwrap();
    let Some(EventType::WorkflowStarted(ws)) = &out.append[0].event_type else {
        panic!()
    };
    assert_eq!(ws.version.as_ref().unwrap().patches, ["p1"]);

    let h = out.append;
    let rm = InstanceMeta {
        status: RuntimeStatus::Running,
        ..m
    };
    let turn = dispatch(prepare_turn(
        &rm,
        &h,
        &inbox(vec![task_completed(1, "1")]),
        NOW,
    ));
    let resp = WorkflowResponse {
        instance_id: "wf-1".into(),
        actions: vec![action(
            -1,
            WorkflowActionType::WorkflowVersionNotAvailable(WorkflowVersionNotAvailableAction {}),
        )],
        ..Default::default()
    };
    let out = apply_response(&rm, &h, &turn, &resp, &mut ctx).unwrap();
    assert_eq!(out.meta.status, RuntimeStatus::Stalled);
    assert_eq!(kinds(&out.append), ["ExecutionStalled"]);
    assert!(
        out.consumed.is_empty(),
        "a stalled turn keeps its events for a later worker"
    );
    // Patches that contradict history stall too.
    let resp = WorkflowResponse {
        instance_id: "wf-1".into(),
        version: Some(WorkflowVersion {
            patches: vec![],
            name: None,
        }),
        ..Default::default()
    };
    assert_eq!(
        apply_response(&rm, &h, &turn, &resp, &mut ctx)
            .unwrap()
            .meta
            .status,
        RuntimeStatus::Stalled
    );
}

#[test]
fn child_failure_reports_failed_with_details_to_parent() {
    let parent = ParentInstanceInfo {
        task_scheduled_id: 4,
        workflow_instance: Some(WorkflowInstance {
            instance_id: "p".into(),
            execution_id: None,
        }),
        ..Default::default()
    };
    let (cm, start) = new_instance(
        "p:0004",
        "sub",
        None,
        None,
        Some(parent),
        "e".into(),
        "app",
        NOW,
    );
    let turn = dispatch(prepare_turn(&cm, &[], &inbox(vec![start]), NOW));
    let fail = action(
        1,
        WorkflowActionType::CompleteWorkflow(CompleteWorkflowAction {
            workflow_status: OrchestrationStatus::Failed as i32,
            failure_details: Some(crate::history::failure("ValueError", "boom")),
            ..Default::default()
        }),
    );
    let out = ctx_apply(&cm, &[], &turn, vec![fail]).unwrap();
    assert_eq!(out.meta.status, RuntimeStatus::Failed);
    assert_eq!(
        decode_failure(out.meta.failure.as_deref())
            .unwrap()
            .error_type,
        "ValueError"
    );
    let Some(Effect::Deliver { event, .. }) = out.effects.last() else {
        panic!()
    };
    assert!(
        matches!(&event.event_type, Some(EventType::ChildWorkflowInstanceFailed(f)) if f.task_scheduled_id == 4 && f.failure_details.as_ref().unwrap().error_message == "boom")
    );
    let _ = ExecutionStartedEvent::default();
}

#[test]
fn a_stalled_instance_is_terminated_without_a_worker() {
    let h = first_turn_history();
    let m = meta(RuntimeStatus::Stalled);
    let term = event(
        NOW,
        EventType::ExecutionTerminated(ExecutionTerminatedEvent {
            input: Some("\"x\"".into()),
            recurse: false,
        }),
    );
    let Prepared::Direct(out) =
        prepare_turn(&m, &h, &inbox(vec![task_completed(1, "2"), term]), NOW)
    else {
        panic!()
    };
    assert_eq!(out.meta.status, RuntimeStatus::Terminated);
    assert_eq!(
        kinds(&out.append),
        [
            "WorkflowStarted",
            "ExecutionTerminated",
            "ExecutionCompleted"
        ]
    );
    assert_eq!(out.consumed, vec![10, 11]);
}

#[test]
fn terminating_a_child_no_worker_ran_tells_the_parent() {
    let parent = ParentInstanceInfo {
        task_scheduled_id: 3,
        workflow_instance: Some(WorkflowInstance {
            instance_id: "p".into(),
            execution_id: None,
        }),
        ..Default::default()
    };
    let (cm, start) = new_instance(
        "p:0003",
        "sub",
        None,
        None,
        Some(parent),
        "e".into(),
        "app",
        NOW,
    );
    let term = event(
        NOW,
        EventType::ExecutionTerminated(ExecutionTerminatedEvent::default()),
    );
    let Prepared::Direct(out) = prepare_turn(&cm, &[], &inbox(vec![start, term]), NOW) else {
        panic!()
    };
    assert!(
        out.append.is_empty(),
        "nothing ran, so no history is written"
    );
    let Some(Effect::Deliver {
        instance_id, event, ..
    }) = out.effects.last()
    else {
        panic!("{:?}", out.effects)
    };
    assert_eq!(instance_id, "p");
    assert!(
        matches!(&event.event_type, Some(EventType::ChildWorkflowInstanceFailed(f)) if f.task_scheduled_id == 3)
    );
}

/// Found by the fuzzer (`crates/weft-fuzz`, target `core`): a negative action ID was left out
/// of the uniqueness check against history, so two turns could each schedule a task -1 and
/// one `TaskCompleted` for -1 would answer either.
#[test]
fn a_negative_scheduling_id_already_in_history_is_refused() {
    let m = meta(RuntimeStatus::Running);
    let h = first_turn_history();
    let turn = dispatch(prepare_turn(
        &m,
        &h,
        &inbox(vec![task_completed(1, "2")]),
        NOW,
    ));
    let first = ctx_apply(&m, &h, &turn, vec![schedule(-1, "a")]).expect("first -1 is new");
    let mut h2 = h.clone();
    h2.extend(first.append);
    let turn2 = dispatch(prepare_turn(
        &m,
        &h2,
        &inbox(vec![task_completed(-1, "3")]),
        NOW,
    ));
    assert_eq!(
        ctx_apply(&m, &h2, &turn2, vec![schedule(-1, "b")]),
        Err(TurnError::DuplicateActionId(-1))
    );
}
