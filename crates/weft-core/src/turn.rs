//! The turn engine: choosing which inbox events a workflow turn delivers ([`prepare_turn`]) and
//! turning the worker's answer into history, a new instance row and effects ([`apply_response`]).
//!
//! Nothing here does I/O: the caller loads state, commits the [`TurnOutcome`] in one transaction
//! and only then carries out its [`Effect`]s.

use crate::history::{self, event, event_with_id, execution_started, failure, open_children};
use crate::time::{from_micros, is_never, to_micros};
use crate::{InstanceMeta, Micros, RuntimeStatus};
use prost::Message;
use std::collections::HashSet;
use weft_proto::durabletask::{
    ActivityRequest, ChildWorkflowInstanceCompletedEvent, ChildWorkflowInstanceCreatedEvent,
    ChildWorkflowInstanceFailedEvent, CompleteWorkflowAction, DetachedWorkflowInstanceCreatedEvent,
    EventRaisedEvent, EventSentEvent, ExecutionCompletedEvent, ExecutionStalledEvent,
    ExecutionStartedEvent, ExecutionTerminatedEvent, HistoryEvent, OrchestrationStatus,
    ParentInstanceInfo, StalledReason, TaskFailureDetails, TaskRouter, TaskScheduledEvent,
    TimerCreatedEvent, TimerFiredEvent, WorkflowAction, WorkflowInstance, WorkflowRequest,
    WorkflowResponse, WorkflowVersion, history_event::EventType,
    workflow_action::WorkflowActionType,
};

/// One pending inbox event and the store sequence number that consumes it.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxItem {
    pub seq: i64,
    pub event: HistoryEvent,
}

/// What the caller must supply for a turn: the clock, its app ID and fresh unique IDs.
pub struct TurnContext<'a> {
    pub app_id: &'a str,
    pub now: Micros,
    /// Returns a new unique execution ID (a UUID in production, a counter in tests).
    pub new_id: &'a mut dyn FnMut() -> String,
}

/// What to do with an instance's inbox.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// Nothing for a worker. `consumed` lists dropped events (duplicates, events for a finished
    /// instance) that a checkpoint should remove; it may be empty.
    Idle { consumed: Vec<i64> },
    /// Finish without a worker: a never-started instance was terminated.
    Direct(Box<TurnOutcome>),
    /// Send a work item to a worker.
    Dispatch(PendingTurn),
}

/// A turn sent to a worker and not yet answered.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingTurn {
    /// `WorkflowStarted` first, then the inbox events in arrival order.
    pub new_events: Vec<HistoryEvent>,
    pub consumed: Vec<i64>,
}

/// Everything one turn commits.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnOutcome {
    /// The new instance row (the store assigns the new fencing version).
    pub meta: InstanceMeta,
    /// Continue-as-new: the history of the old generation is dropped first.
    pub reset_history: bool,
    pub append: Vec<HistoryEvent>,
    pub consumed: Vec<i64>,
    /// Drop pending activities and timers (of older generations; all of them if terminal).
    pub cancel_pending: bool,
    pub effects: Vec<Effect>,
}

/// Work a committed turn hands to the runtime.
// Effects live for one turn only; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    ScheduleActivity {
        task_id: i32,
        request: ActivityRequest,
    },
    /// A durable timer delivering `event` to this instance at `due_at`.
    Timer { due_at: Micros, event: HistoryEvent },
    /// Create a child or detached instance; `on_conflict` goes out instead if an active
    /// instance already has that ID.
    StartInstance {
        meta: InstanceMeta,
        start_event: HistoryEvent,
        on_conflict: Option<(String, HistoryEvent)>,
    },
    /// Append an event to an instance's inbox (possibly this instance's own).
    Deliver {
        instance_id: String,
        event: HistoryEvent,
    },
}

/// A worker's answer the engine refuses to apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    #[error("workflow instance '{0}' has already completed")]
    AlreadyCompleted(String),
    #[error("action {0} has no action type (unknown action)")]
    UnknownAction(i32),
    #[error("action id {0} is used twice or collides with an existing history event")]
    DuplicateActionId(i32),
    #[error("action {id} is invalid: {reason}")]
    InvalidAction { id: i32, reason: String },
}

/// Chooses the events of the next turn: `WorkflowStarted`, then `ExecutionStarted` if present,
/// then the other inbox events in arrival order, minus duplicates and misplaced events.
pub fn prepare_turn(
    meta: &InstanceMeta,
    history: &[HistoryEvent],
    inbox: &[InboxItem],
    now: Micros,
) -> Prepared {
    let all: Vec<i64> = inbox.iter().map(|i| i.seq).collect();
    if meta.status.is_terminal() || inbox.is_empty() {
        return Prepared::Idle { consumed: all };
    }
    let mut seen = Seen::from_history(history);
    let mut suspended = is_suspended(meta, history);
    let ran = execution_started(history).is_some();
    let mut started = ran;
    let mut picked: Vec<HistoryEvent> = Vec::new();
    // ExecutionStarted goes first even if it was queued after other events (continue-as-new
    // re-queues it behind events that arrived during the turn).
    let mut ordered: Vec<&InboxItem> = inbox.iter().collect();
    ordered.sort_by_key(|i| !matches!(i.event.event_type, Some(EventType::ExecutionStarted(_))));
    let mut terminate: Option<ExecutionTerminatedEvent> = None;
    for item in ordered {
        let ev = &item.event;
        let keep = match &ev.event_type {
            Some(EventType::ExecutionStarted(_)) => !std::mem::replace(&mut started, true),
            Some(EventType::ExecutionSuspended(_)) => !std::mem::replace(&mut suspended, true),
            // A resume for a running instance makes the SDKs fail the workflow: drop it.
            Some(EventType::ExecutionResumed(_)) => std::mem::replace(&mut suspended, false),
            Some(EventType::ExecutionTerminated(t)) => {
                terminate.get_or_insert_with(|| t.clone());
                true
            }
            Some(EventType::TaskCompleted(c)) => seen.task(c.task_scheduled_id),
            Some(EventType::TaskFailed(c)) => seen.task(c.task_scheduled_id),
            Some(EventType::TimerFired(t)) => seen.timer(t.timer_id),
            Some(EventType::ChildWorkflowInstanceCompleted(c)) => seen.child(c.task_scheduled_id),
            Some(EventType::ChildWorkflowInstanceFailed(c)) => seen.child(c.task_scheduled_id),
            Some(EventType::EventRaised(_)) => true,
            // Nothing else belongs in an inbox; the SDKs would fail on it.
            _ => false,
        };
        if keep {
            picked.push(ev.clone());
        }
    }
    if !ran && let Some(t) = terminate {
        // No worker has run it yet (none connected, or a scheduled start): end it here.
        return Prepared::Direct(Box::new(terminate_unstarted(meta, &t, all, now)));
    }
    if picked.is_empty() || !started {
        return Prepared::Idle {
            consumed: if started { all } else { Vec::new() },
        };
    }
    let mut new_events = Vec::with_capacity(picked.len() + 1);
    new_events.push(history::workflow_started(now));
    new_events.extend(picked);
    Prepared::Dispatch(PendingTurn {
        new_events,
        consumed: all,
    })
}

/// The work item for a pending turn (daprd leaves `executionId` and the token unset).
pub fn work_item(
    instance_id: &str,
    history: &[HistoryEvent],
    turn: &PendingTurn,
) -> WorkflowRequest {
    WorkflowRequest {
        instance_id: instance_id.to_string(),
        past_events: history.to_vec(),
        new_events: turn.new_events.clone(),
        ..Default::default()
    }
}

/// Applies a worker's response to a pending turn.
pub fn apply_response(
    meta: &InstanceMeta,
    history: &[HistoryEvent],
    turn: &PendingTurn,
    resp: &WorkflowResponse,
    ctx: &mut TurnContext<'_>,
) -> Result<TurnOutcome, TurnError> {
    if meta.status.is_terminal() {
        return Err(TurnError::AlreadyCompleted(meta.instance_id.clone()));
    }
    validate_actions(history, &resp.actions)?;
    let now = ctx.now;
    let mut new_events = turn.new_events.clone();
    let recorded = history::recorded_patches(history);
    let patches = resp
        .version
        .as_ref()
        .map(|v| v.patches.clone())
        .unwrap_or_default();

    // Versioning: a worker without the version, or with patches that contradict history, stalls
    // the instance; the turn's events stay in the inbox for a later worker.
    let stall = if let Some(a) = resp.actions.iter().find(|a| {
        matches!(
            a.workflow_action_type,
            Some(WorkflowActionType::WorkflowVersionNotAvailable(_))
        )
    }) {
        let _ = a;
        let name = resp
            .version
            .as_ref()
            .and_then(|v| v.name.clone())
            .unwrap_or_default();
        Some((
            StalledReason::VersionNotAvailable,
            format!("Version not available: {name}"),
        ))
    } else if !recorded.is_empty() && !patches.starts_with(&recorded) {
        Some((
            StalledReason::PatchMismatch,
            format!("Patch mismatch: history has {recorded:?}, worker has {patches:?}"),
        ))
    } else {
        None
    };
    if let Some((reason, description)) = stall {
        return Ok(stalled(meta, history, reason, description, now));
    }

    if let (Some(v), Some(first)) = (&resp.version, new_events.first_mut())
        && let Some(EventType::WorkflowStarted(ws)) = &mut first.event_type
    {
        ws.version = Some(WorkflowVersion {
            patches: patches
                .iter()
                .filter(|p| !recorded.contains(p))
                .cloned()
                .collect(),
            name: v.name.clone(),
        });
    }

    let mut next = meta.clone();
    next.updated_at = now;
    next.status = status_after(meta, history, &new_events);
    if next.started_at.is_none() && next.status != RuntimeStatus::Pending {
        next.started_at = Some(now);
    }
    if let Some(cs) = &resp.custom_status {
        next.custom_status = Some(cs.clone());
    }
    let started = execution_started(history)
        .or_else(|| execution_started(&new_events))
        .cloned()
        .unwrap_or_default();
    let terminate = new_events.iter().find_map(|e| match &e.event_type {
        Some(EventType::ExecutionTerminated(t)) => Some(t.clone()),
        _ => None,
    });

    let mut out = TurnOutcome {
        meta: next,
        reset_history: false,
        append: new_events,
        consumed: turn.consumed.clone(),
        cancel_pending: false,
        effects: Vec::new(),
    };
    let router = TaskRouter {
        source_app_id: ctx.app_id.to_string(),
        target_app_id: None,
        target_app_namespace: None,
    };

    for action in &resp.actions {
        let id = action.id;
        let Some(kind) = &action.workflow_action_type else {
            return Err(TurnError::UnknownAction(id));
        };
        match kind {
            WorkflowActionType::ScheduleTask(t) => {
                let mut ev = event_with_id(
                    id,
                    now,
                    EventType::TaskScheduled(TaskScheduledEvent {
                        name: t.name.clone(),
                        version: t.version.clone(),
                        input: t.input.clone(),
                        parent_trace_context: None,
                        task_execution_id: t.task_execution_id.clone(),
                        rerun_parent_instance_info: None,
                        history_propagation_scope: t.history_propagation_scope,
                    }),
                );
                ev.router = Some(action_router(action, &router));
                out.append.push(ev);
                out.effects.push(Effect::ScheduleActivity {
                    task_id: id,
                    request: ActivityRequest {
                        name: t.name.clone(),
                        version: t.version.clone(),
                        input: t.input.clone(),
                        workflow_instance: Some(WorkflowInstance {
                            instance_id: meta.instance_id.clone(),
                            execution_id: Some(meta.execution_id.clone()),
                        }),
                        task_id: id,
                        parent_trace_context: None,
                        task_execution_id: t.task_execution_id.clone(),
                        propagated_history: None,
                    },
                });
            }
            WorkflowActionType::CreateTimer(t) => {
                let fire_at = t.fire_at.unwrap_or_default();
                out.append.push(event_with_id(
                    id,
                    now,
                    EventType::TimerCreated(TimerCreatedEvent {
                        fire_at: Some(fire_at),
                        name: t.name.clone(),
                        rerun_parent_instance_info: None,
                        origin: t.origin.clone().map(timer_origin),
                    }),
                ));
                if !is_never(&fire_at) {
                    out.effects.push(Effect::Timer {
                        due_at: to_micros(&fire_at),
                        event: event(
                            now,
                            EventType::TimerFired(TimerFiredEvent {
                                fire_at: Some(fire_at),
                                timer_id: id,
                            }),
                        ),
                    });
                }
            }
            WorkflowActionType::CreateChildWorkflow(c) => {
                let child_id = if c.instance_id.is_empty() {
                    crate::ids::default_child_id(&meta.instance_id, id)
                } else {
                    c.instance_id.clone()
                };
                out.append.push(event_with_id(
                    id,
                    now,
                    EventType::ChildWorkflowInstanceCreated(ChildWorkflowInstanceCreatedEvent {
                        instance_id: child_id.clone(),
                        name: c.name.clone(),
                        version: c.version.clone(),
                        input: c.input.clone(),
                        parent_trace_context: None,
                        rerun_parent_instance_info: None,
                        history_propagation_scope: c.history_propagation_scope,
                        retry_parent_instance_info: c.retry_parent_instance_info.clone(),
                    }),
                ));
                let parent = ParentInstanceInfo {
                    task_scheduled_id: id,
                    name: Some(meta.name.clone()),
                    version: None,
                    workflow_instance: Some(WorkflowInstance {
                        instance_id: meta.instance_id.clone(),
                        execution_id: Some(meta.execution_id.clone()),
                    }),
                    app_id: Some(ctx.app_id.to_string()),
                    app_namespace: None,
                };
                let exec = (ctx.new_id)();
                let (child, start) = new_instance(
                    &child_id,
                    &c.name,
                    c.version.clone(),
                    c.input.clone(),
                    Some(parent),
                    exec,
                    ctx.app_id,
                    now,
                );
                let conflict = event(
                    now,
                    EventType::ChildWorkflowInstanceFailed(ChildWorkflowInstanceFailedEvent {
                        task_scheduled_id: id,
                        failure_details: Some(failure(
                            "WorkflowAlreadyExists",
                            format!("an active workflow with ID '{child_id}' already exists"),
                        )),
                        attestation: None,
                        signer_certificate: None,
                    }),
                );
                out.effects.push(Effect::StartInstance {
                    meta: child,
                    start_event: start,
                    on_conflict: Some((meta.instance_id.clone(), conflict)),
                });
            }
            WorkflowActionType::CreateDetachedWorkflow(d) => {
                out.append.push(event_with_id(
                    id,
                    now,
                    EventType::DetachedWorkflowInstanceCreated(
                        DetachedWorkflowInstanceCreatedEvent {
                            instance_id: d.instance_id.clone(),
                        },
                    ),
                ));
                let exec = d.execution_id.clone().unwrap_or_else(|| (ctx.new_id)());
                let (mut m, start) = new_instance(
                    &d.instance_id,
                    &d.name,
                    d.version.clone(),
                    d.input.clone(),
                    None,
                    exec,
                    ctx.app_id,
                    now,
                );
                m.scheduled_start_at = d
                    .scheduled_start_timestamp
                    .as_ref()
                    .map(to_micros)
                    .filter(|t| *t > now);
                out.effects.push(Effect::StartInstance {
                    meta: m,
                    start_event: start,
                    on_conflict: None,
                });
            }
            WorkflowActionType::SendEvent(s) => {
                let target = s
                    .instance
                    .as_ref()
                    .map(|i| i.instance_id.clone())
                    .unwrap_or_default();
                out.append.push(event_with_id(
                    id,
                    now,
                    EventType::EventSent(EventSentEvent {
                        instance_id: target.clone(),
                        name: s.name.clone(),
                        input: s.data.clone(),
                    }),
                ));
                out.effects.push(Effect::Deliver {
                    instance_id: target,
                    event: event(
                        now,
                        EventType::EventRaised(EventRaisedEvent {
                            name: s.name.clone(),
                            input: s.data.clone(),
                        }),
                    ),
                });
            }
            WorkflowActionType::TerminateWorkflow(t) => out.effects.push(Effect::Deliver {
                instance_id: t.instance_id.clone(),
                event: event(
                    now,
                    EventType::ExecutionTerminated(ExecutionTerminatedEvent {
                        input: t.reason.clone(),
                        recurse: t.recurse,
                    }),
                ),
            }),
            WorkflowActionType::CompleteWorkflow(c) => {
                if c.workflow_status == OrchestrationStatus::ContinuedAsNew as i32 {
                    continue_as_new(&mut out, meta, &started, c, ctx);
                } else {
                    complete(&mut out, history, &started, id, c, terminate.as_ref(), now);
                }
                // Actions after a completion are ignored, as daprd does.
                return Ok(out);
            }
            WorkflowActionType::WorkflowVersionNotAvailable(_) => unreachable!("handled above"),
        }
    }
    if let Some(t) = &terminate {
        // The SDK did not finish a terminated instance itself: force it, as daprd does.
        let forced = CompleteWorkflowAction {
            workflow_status: OrchestrationStatus::Terminated as i32,
            result: t.input.clone(),
            ..Default::default()
        };
        complete(&mut out, history, &started, -1, &forced, Some(t), now);
    }
    Ok(out)
}

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
        version: 0,
    };
    (meta, start)
}

fn continue_as_new(
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
    out.meta.execution_id = exec;
    out.meta.input = c.result.clone();
    out.meta.output = None;
    out.meta.failure = None;
    out.effects.push(Effect::Deliver {
        instance_id: meta.instance_id.clone(),
        event: start_ev,
    });
    for carried in &c.carryover_events {
        let mut ev = carried.clone();
        ev.event_id = -1;
        out.effects.push(Effect::Deliver {
            instance_id: meta.instance_id.clone(),
            event: ev,
        });
    }
}

fn complete(
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
        out.effects.push(Effect::Deliver {
            instance_id: p.instance_id.clone(),
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

fn terminate_unstarted(
    meta: &InstanceMeta,
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
    let action = CompleteWorkflowAction {
        workflow_status: OrchestrationStatus::Terminated as i32,
        result: t.input.clone(),
        ..Default::default()
    };
    complete(
        &mut out,
        &[],
        &ExecutionStartedEvent::default(),
        -1,
        &action,
        None,
        now,
    );
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

fn validate_actions(history: &[HistoryEvent], actions: &[WorkflowAction]) -> Result<(), TurnError> {
    let mut ids: HashSet<i32> = history
        .iter()
        .map(|e| e.event_id)
        .filter(|id| *id >= 0)
        .collect();
    for a in actions {
        let Some(kind) = &a.workflow_action_type else {
            return Err(TurnError::UnknownAction(a.id));
        };
        let completes = matches!(kind, WorkflowActionType::CompleteWorkflow(_));
        // -1 is how the Python SDK numbers the completion it sends after a crash.
        let numbered = !(completes && a.id < 0);
        if numbered && !ids.insert(a.id) {
            return Err(TurnError::DuplicateActionId(a.id));
        }
        let invalid = |reason: &str| TurnError::InvalidAction {
            id: a.id,
            reason: reason.to_string(),
        };
        match kind {
            WorkflowActionType::ScheduleTask(t) if t.name.is_empty() => {
                return Err(invalid("activity name is empty"));
            }
            WorkflowActionType::CreateChildWorkflow(c) => {
                if c.name.is_empty() {
                    return Err(invalid("child workflow name is empty"));
                }
                if !c.instance_id.is_empty()
                    && crate::ids::validate_child_instance_id(&c.instance_id).is_err()
                {
                    return Err(invalid("child workflow instance ID is invalid"));
                }
            }
            WorkflowActionType::CreateDetachedWorkflow(d)
                if d.name.is_empty()
                    || crate::ids::validate_child_instance_id(&d.instance_id).is_err() =>
            {
                return Err(invalid(
                    "detached workflow needs a name and a valid instance ID",
                ));
            }
            WorkflowActionType::SendEvent(s)
                if s.instance.as_ref().is_none_or(|i| i.instance_id.is_empty()) =>
            {
                return Err(invalid("send event needs a target instance"));
            }
            WorkflowActionType::TerminateWorkflow(t) if t.instance_id.is_empty() => {
                return Err(invalid("terminate needs a target instance"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Suspended according to the row, or (for a stalled row) according to history.
fn is_suspended(meta: &InstanceMeta, history: &[HistoryEvent]) -> bool {
    match meta.status {
        RuntimeStatus::Suspended => true,
        RuntimeStatus::Stalled => history
            .iter()
            .rev()
            .find_map(|e| match e.event_type {
                Some(EventType::ExecutionSuspended(_)) => Some(true),
                Some(EventType::ExecutionResumed(_)) => Some(false),
                _ => None,
            })
            .unwrap_or(false),
        _ => false,
    }
}

fn status_after(
    meta: &InstanceMeta,
    history: &[HistoryEvent],
    new_events: &[HistoryEvent],
) -> RuntimeStatus {
    let mut status = match meta.status {
        RuntimeStatus::Stalled if is_suspended(meta, history) => RuntimeStatus::Suspended,
        RuntimeStatus::Stalled => RuntimeStatus::Running,
        s => s,
    };
    for e in new_events {
        match e.event_type {
            Some(EventType::ExecutionStarted(_)) if status == RuntimeStatus::Pending => {
                status = RuntimeStatus::Running
            }
            Some(EventType::ExecutionSuspended(_)) => status = RuntimeStatus::Suspended,
            Some(EventType::ExecutionResumed(_)) => status = RuntimeStatus::Running,
            _ => {}
        }
    }
    status
}

fn action_router(action: &WorkflowAction, local: &TaskRouter) -> TaskRouter {
    let mut r = action.router.clone().unwrap_or_default();
    r.source_app_id = local.source_app_id.clone();
    r
}

fn timer_origin(
    o: weft_proto::durabletask::create_timer_action::Origin,
) -> weft_proto::durabletask::timer_created_event::Origin {
    use weft_proto::durabletask::create_timer_action::Origin as A;
    use weft_proto::durabletask::timer_created_event::Origin as E;
    match o {
        A::CreateTimer(x) => E::CreateTimer(x),
        A::ExternalEvent(x) => E::ExternalEvent(x),
        A::ActivityRetry(x) => E::ActivityRetry(x),
        A::ChildWorkflowRetry(x) => E::ChildWorkflowRetry(x),
    }
}

fn capitalize(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut c = lower.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// Tracks completions already in history so redelivered ones are dropped.
struct Seen {
    tasks: HashSet<i32>,
    timers: HashSet<i32>,
    children: HashSet<i32>,
}

impl Seen {
    fn from_history(history: &[HistoryEvent]) -> Self {
        let mut s = Seen {
            tasks: HashSet::new(),
            timers: HashSet::new(),
            children: HashSet::new(),
        };
        for e in history {
            match &e.event_type {
                Some(EventType::TaskCompleted(c)) => s.tasks.insert(c.task_scheduled_id),
                Some(EventType::TaskFailed(c)) => s.tasks.insert(c.task_scheduled_id),
                Some(EventType::TimerFired(t)) => s.timers.insert(t.timer_id),
                Some(EventType::ChildWorkflowInstanceCompleted(c)) => {
                    s.children.insert(c.task_scheduled_id)
                }
                Some(EventType::ChildWorkflowInstanceFailed(c)) => {
                    s.children.insert(c.task_scheduled_id)
                }
                _ => false,
            };
        }
        s
    }
    fn task(&mut self, id: i32) -> bool {
        self.tasks.insert(id)
    }
    fn timer(&mut self, id: i32) -> bool {
        self.timers.insert(id)
    }
    fn child(&mut self, id: i32) -> bool {
        self.children.insert(id)
    }
}

/// `TaskFailureDetails` decoded from an instance row, if present and well-formed.
pub fn decode_failure(bytes: Option<&[u8]>) -> Option<TaskFailureDetails> {
    bytes.and_then(|b| TaskFailureDetails::decode(b).ok())
}

/// The timestamp of a history event in µs (0 if absent).
pub fn event_time(ev: &HistoryEvent) -> Micros {
    ev.timestamp.as_ref().map(to_micros).unwrap_or(0)
}

/// Re-exported for callers building timer events.
pub fn timestamp(us: Micros) -> prost_types::Timestamp {
    from_micros(us)
}
