//! How a turn ends an execution: completion, continue-as-new, forced termination, stalls,
//! and new instances.

use super::rules::capitalize;
use super::*;

/// Fails an instance whose worker returned something unusable, so it does not loop forever.
pub fn fail_turn(
    meta: &InstanceMeta,
    history: &[HistoryEvent],
    turn: &PendingTurn,
    err: &TurnError,
    now: Micros,
) -> TurnOutcome {
    let started = execution_started(history)
        .or_else(|| execution_started(&turn.new_events))
        .cloned()
        .unwrap_or_default();
    let mut out = TurnOutcome {
        meta: InstanceMeta {
            updated_at: now,
            ..meta.clone()
        },
        reset_history: false,
        append: turn.new_events.clone(),
        consumed: turn.consumed.clone(),
        cancel_pending: false,
        effects: Vec::new(),
    };
    let action = CompleteWorkflowAction {
        workflow_status: OrchestrationStatus::Failed as i32,
        failure_details: Some(failure("WeftInvalidWorkflowResponse", err.to_string())),
        ..Default::default()
    };
    complete(&mut out, history, &started, -1, &action, None, now);
    out
}

/// A fresh instance row (PENDING) and its `ExecutionStarted` event.
#[allow(clippy::too_many_arguments)]
pub fn new_instance(
    instance_id: &str,
    name: &str,
    version: Option<String>,
    input: Option<String>,
    parent: Option<ParentInstanceInfo>,
    execution_id: String,
    app_id: &str,
    now: Micros,
) -> (InstanceMeta, HistoryEvent) {
    let parent_instance_id = parent
        .as_ref()
        .and_then(|p| p.workflow_instance.as_ref())
        .map(|w| w.instance_id.clone());
    let mut start = event(
        now,
        EventType::ExecutionStarted(ExecutionStartedEvent {
            name: name.to_string(),
            version,
            input: input.clone(),
            workflow_instance: Some(WorkflowInstance {
                instance_id: instance_id.to_string(),
                execution_id: Some(execution_id.clone()),
            }),
            parent_instance: parent,
            ..Default::default()
        }),
    );
    start.router = Some(TaskRouter {
        source_app_id: app_id.to_string(),
        ..Default::default()
    });
    let meta = InstanceMeta {
        instance_id: instance_id.to_string(),
        name: name.to_string(),
        status: RuntimeStatus::Pending,
        execution_id,
        generation: 0,
        input,
        output: None,
        custom_status: None,
        failure: None,
        parent_instance_id,
        created_at: now,
        updated_at: now,
        started_at: None,
        completed_at: None,
        scheduled_start_at: None,
        app_id: app_id.to_string(),
        version: 0,
    };
    (meta, start)
}

pub(super) fn continue_as_new(
    out: &mut TurnOutcome,
    meta: &InstanceMeta,
    started: &ExecutionStartedEvent,
    c: &CompleteWorkflowAction,
    ctx: &mut TurnContext<'_>,
) {
    let now = ctx.now;
    let exec = (ctx.new_id)();
    let mut start = started.clone();
    start.input = c.result.clone();
    if let Some(v) = &c.new_version {
        start.version = Some(v.clone());
    }
    start.workflow_instance = Some(WorkflowInstance {
        instance_id: meta.instance_id.clone(),
        execution_id: Some(exec.clone()),
    });
    let mut start_ev = event(now, EventType::ExecutionStarted(start));
    start_ev.router = Some(TaskRouter {
        source_app_id: ctx.app_id.to_string(),
        ..Default::default()
    });
    out.reset_history = true;
    out.append.clear();
    out.cancel_pending = true;
    out.effects.clear();
    out.meta.status = RuntimeStatus::Running;
    out.meta.generation = meta.generation + 1;
    out.meta.execution_id = exec.clone();
    out.meta.input = c.result.clone();
    out.meta.output = None;
    out.meta.failure = None;
    // Both are addressed to the new execution, which is what puts the carried events ahead of
    // anything that arrived during this turn (see `turn_order`).
    out.effects.push(Effect::Deliver {
        instance_id: meta.instance_id.clone(),
        execution_id: Some(exec.clone()),
        event: start_ev,
    });
    for carried in &c.carryover_events {
        let mut ev = carried.clone();
        ev.event_id = -1;
        out.effects.push(Effect::Deliver {
            instance_id: meta.instance_id.clone(),
            execution_id: Some(exec.clone()),
            event: ev,
        });
    }
}

pub(super) fn complete(
    out: &mut TurnOutcome,
    history: &[HistoryEvent],
    started: &ExecutionStartedEvent,
    id: i32,
    c: &CompleteWorkflowAction,
    terminate: Option<&ExecutionTerminatedEvent>,
    now: Micros,
) {
    let status = RuntimeStatus::from_code(c.workflow_status)
        .filter(|s| s.is_terminal())
        .unwrap_or(RuntimeStatus::Failed);
    out.append.push(event_with_id(
        id,
        now,
        EventType::ExecutionCompleted(ExecutionCompletedEvent {
            workflow_status: status.code(),
            result: c.result.clone(),
            failure_details: c.failure_details.clone(),
        }),
    ));
    out.meta.status = status;
    out.meta.output = c.result.clone();
    out.meta.failure = c.failure_details.as_ref().map(|f| f.encode_to_vec());
    out.meta.completed_at = Some(now);
    out.meta.updated_at = now;
    out.cancel_pending = true;
    out.effects
        .retain(|e| !matches!(e, Effect::ScheduleActivity { .. } | Effect::Timer { .. }));
    if let Some(parent) = &started.parent_instance
        && let Some(p) = &parent.workflow_instance
    {
        let ty = if status == RuntimeStatus::Completed {
            EventType::ChildWorkflowInstanceCompleted(ChildWorkflowInstanceCompletedEvent {
                task_scheduled_id: parent.task_scheduled_id,
                result: c.result.clone(),
                attestation: None,
                signer_certificate: None,
            })
        } else {
            let details = c.failure_details.clone().unwrap_or_else(|| {
                failure(
                    &format!("Workflow{}", capitalize(status.as_str())),
                    format!("child workflow ended with status {status}"),
                )
            });
            EventType::ChildWorkflowInstanceFailed(ChildWorkflowInstanceFailedEvent {
                task_scheduled_id: parent.task_scheduled_id,
                failure_details: Some(details),
                attestation: None,
                signer_certificate: None,
            })
        };
        // Addressed to the parent's execution that started this child: a parent that has since
        // continued as new (or was purged and re-created) must not take it for its own.
        out.effects.push(Effect::Deliver {
            instance_id: p.instance_id.clone(),
            execution_id: p.execution_id.clone(),
            event: event(now, ty),
        });
    }
    if let Some(t) = terminate
        && t.recurse
    {
        let mut children = open_children(history);
        children.extend(open_children(&out.append));
        for child in children {
            out.effects.push(Effect::Deliver {
                instance_id: child,
                execution_id: None,
                event: event(
                    now,
                    EventType::ExecutionTerminated(ExecutionTerminatedEvent {
                        input: t.input.clone(),
                        recurse: true,
                    }),
                ),
            });
        }
    }
}

/// Ends an instance without a worker: one no worker has run yet, or one that is stalled (its
/// worker cannot run it). The parent is told and, if asked, open children are terminated too.
pub(super) fn terminate_directly(
    meta: &InstanceMeta,
    history: &[HistoryEvent],
    started: &ExecutionStartedEvent,
    t: &ExecutionTerminatedEvent,
    consumed: Vec<i64>,
    now: Micros,
) -> TurnOutcome {
    let mut out = TurnOutcome {
        meta: InstanceMeta {
            updated_at: now,
            ..meta.clone()
        },
        reset_history: false,
        append: Vec::new(),
        consumed,
        cancel_pending: true,
        effects: Vec::new(),
    };
    if !history.is_empty() {
        // A started history records how it ended, like any other completion.
        out.append.push(history::workflow_started(now));
        out.append.push(history::event(
            now,
            EventType::ExecutionTerminated(t.clone()),
        ));
    }
    let action = CompleteWorkflowAction {
        workflow_status: OrchestrationStatus::Terminated as i32,
        result: t.input.clone(),
        ..Default::default()
    };
    complete(&mut out, history, started, -1, &action, Some(t), now);
    if history.is_empty() {
        out.append.clear();
    }
    out
}

/// Stalls an instance: its inbox is kept for a later, able worker; the reason is recorded once.
pub fn stalled(
    meta: &InstanceMeta,
    history: &[HistoryEvent],
    reason: StalledReason,
    description: String,
    now: Micros,
) -> TurnOutcome {
    let already = history.iter().rev().find_map(|e| match &e.event_type {
        Some(EventType::ExecutionStalled(s)) => Some(s.description.clone()),
        _ => None,
    });
    let mut append = Vec::new();
    if already.flatten().as_deref() != Some(description.as_str()) {
        append.push(event(
            now,
            EventType::ExecutionStalled(ExecutionStalledEvent {
                reason: reason as i32,
                description: Some(description),
            }),
        ));
    }
    TurnOutcome {
        meta: InstanceMeta {
            status: RuntimeStatus::Stalled,
            updated_at: now,
            ..meta.clone()
        },
        reset_history: false,
        append,
        consumed: Vec::new(),
        cancel_pending: false,
        effects: Vec::new(),
    }
}
