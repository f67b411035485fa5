//! The turn engine: choosing which inbox events a workflow turn delivers ([`prepare_turn`]) and
//! turning the worker's answer into history, a new instance row and effects ([`apply_response`]).
//!
//! Nothing here does I/O: the caller loads state, commits the [`TurnOutcome`] in one transaction
//! and only then carries out its [`Effect`]s.

mod actions;
mod finish;
mod rules;

use actions::Applier;

use finish::{complete, continue_as_new, terminate_directly};
pub use finish::{fail_turn, new_instance, stalled};
use rules::{Seen, is_suspended, status_after, validate_actions};
pub use rules::{decode_failure, event_time, timestamp};

use crate::history::{self, event, event_with_id, execution_started, failure, open_children};
use crate::time::{from_micros, to_micros};
use crate::{InstanceMeta, Micros, RuntimeStatus};
use prost::Message;
use std::collections::HashSet;
use weft_proto::durabletask::{
    ActivityRequest, ChildWorkflowInstanceCompletedEvent, ChildWorkflowInstanceFailedEvent,
    CompleteWorkflowAction, ExecutionCompletedEvent, ExecutionStalledEvent, ExecutionStartedEvent,
    ExecutionTerminatedEvent, HistoryEvent, OrchestrationStatus, ParentInstanceInfo, StalledReason,
    TaskFailureDetails, TaskRouter, WorkflowAction, WorkflowInstance, WorkflowRequest,
    WorkflowResponse, WorkflowVersion, history_event::EventType,
    workflow_action::WorkflowActionType,
};

/// One pending inbox event and the store sequence number that consumes it.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxItem {
    pub seq: i64,
    pub event: HistoryEvent,
    /// The generation (execution) the event is addressed to, if it is addressed to one: results,
    /// timer fires and child results are; raised events, suspend/resume/terminate are not. An
    /// event for another generation is dropped, so one execution never sees another's results.
    pub generation: Option<i64>,
}

/// What the caller must supply for a turn: the clock, its app ID and fresh unique IDs.
pub struct TurnContext<'a> {
    pub app_id: &'a str,
    pub now: Micros,
    /// Returns a new unique execution ID (a UUID in production, a counter in tests).
    pub new_id: &'a mut dyn FnMut() -> String,
    /// The history this instance was handed by its caller (a child workflow scheduled with
    /// `propagation=`), which `LINEAGE` passes on.
    pub inherited: Option<&'a weft_proto::durabletask::PropagatedHistory>,
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
        /// The app whose workers run it when that is not this instance's app (a cross-app
        /// call: `TaskRouter.targetAppID`); `None` for this app's own workers.
        app: Option<String>,
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
    /// Append an event to an instance's inbox (possibly this instance's own). With
    /// `execution_id`, only while that execution is the instance's current one (it is then
    /// stamped with its generation); without, to whatever execution is current.
    Deliver {
        instance_id: String,
        execution_id: Option<String>,
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
    let ordered = turn_order(meta, inbox, !ran);
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
    let stalled = meta.status == RuntimeStatus::Stalled;
    if (!ran || stalled)
        && let Some(t) = terminate
    {
        // No worker has run it yet (none connected, or a scheduled start), or no worker can
        // (stalled): end it here.
        let started = execution_started(history)
            .or_else(|| {
                inbox.iter().find_map(|i| match &i.event.event_type {
                    Some(EventType::ExecutionStarted(s)) => Some(s),
                    _ => None,
                })
            })
            .cloned()
            .unwrap_or_default();
        return Prepared::Direct(Box::new(terminate_directly(
            meta, history, &started, &t, all, now,
        )));
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

/// The inbox events a turn may deliver, in delivery order. Events addressed to another
/// generation are left out (a late result of an earlier execution, or of a purged and re-created
/// instance). A turn that starts an execution (`starting`: none has started in this history)
/// delivers first its `ExecutionStarted` and then the
/// events carried over into it by continue-as-new (both stamped for this generation by the
/// checkpoint that created it), and only then what arrived meanwhile, in arrival order: the
/// carried events were received before anything that arrived during that checkpoint's turn.
fn turn_order<'a>(
    meta: &InstanceMeta,
    inbox: &'a [InboxItem],
    starting: bool,
) -> Vec<&'a InboxItem> {
    let current = |i: &InboxItem| i.generation.is_none_or(|g| g == meta.generation);
    let mut ordered: Vec<&InboxItem> = inbox.iter().filter(|i| current(i)).collect();
    let is_start =
        |i: &InboxItem| matches!(i.event.event_type, Some(EventType::ExecutionStarted(_)));
    if starting && ordered.iter().any(|i| is_start(i)) {
        // Stable: each group keeps arrival order.
        ordered.sort_by_key(|i| match () {
            _ if is_start(i) => 0,
            _ if i.generation.is_some() => 1,
            _ => 2,
        });
    }
    ordered
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

/// Why a worker's answer stalls the instance instead of being applied, if it does: the worker
/// lacks the workflow's version, or its patches contradict those history recorded.
fn stall_reason(
    resp: &WorkflowResponse,
    recorded: &[String],
    patches: &[String],
) -> Option<(StalledReason, String)> {
    let not_available = resp.actions.iter().any(|a| {
        matches!(
            a.workflow_action_type,
            Some(WorkflowActionType::WorkflowVersionNotAvailable(_))
        )
    });
    if not_available {
        let name = resp
            .version
            .as_ref()
            .and_then(|v| v.name.clone())
            .unwrap_or_default();
        Some((
            StalledReason::VersionNotAvailable,
            format!("Version not available: {name}"),
        ))
    } else if !recorded.is_empty() && !patches.starts_with(recorded) {
        Some((
            StalledReason::PatchMismatch,
            format!("Patch mismatch: history has {recorded:?}, worker has {patches:?}"),
        ))
    } else {
        None
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
    // Names and IDs the stores would refuse (NUL, oversize) fail the instance with a clear error
    // instead of failing its commit over and over.
    crate::ids::check_response_strings(resp).map_err(|(id, e)| TurnError::InvalidAction {
        id,
        reason: e.to_string(),
    })?;
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
    if let Some((reason, description)) = stall_reason(resp, &recorded, &patches) {
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
    let ctx_app_id = ctx.app_id.to_string();
    let mut apply = Applier {
        meta,
        history,
        now,
        ctx,
        router: TaskRouter {
            source_app_id: ctx_app_id,
            target_app_id: None,
            target_app_namespace: None,
        },
    };
    for action in &resp.actions {
        let id = action.id;
        let Some(kind) = &action.workflow_action_type else {
            return Err(TurnError::UnknownAction(id));
        };
        match kind {
            WorkflowActionType::ScheduleTask(t) => apply.schedule_task(&mut out, action, t),
            WorkflowActionType::CreateTimer(t) => apply.create_timer(&mut out, id, t),
            WorkflowActionType::CreateChildWorkflow(c) => apply.create_child(&mut out, action, c),
            WorkflowActionType::CreateDetachedWorkflow(d) => apply.create_detached(&mut out, id, d),
            WorkflowActionType::SendEvent(e) => apply.send_event(&mut out, id, e),
            WorkflowActionType::TerminateWorkflow(t) => apply.terminate_other(&mut out, t),
            WorkflowActionType::CompleteWorkflow(c) => {
                if c.workflow_status == OrchestrationStatus::ContinuedAsNew as i32 {
                    continue_as_new(&mut out, meta, &started, c, apply.ctx);
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
