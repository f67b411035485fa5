//! Rules a turn checks: action validation, status transitions, duplicate detection.

use super::*;

/// Whether an action's ID becomes the ID of a history event that later events refer to (a
/// result names its `TaskScheduled`, a fire its `TimerCreated`, a child result its
/// `ChildWorkflowInstanceCreated`) and that replay matches against the SDK's action: those IDs
/// must be unique within the execution, or a result could complete the wrong task. daprd checks
/// no IDs at all; completion, terminate and version-not-available actions need no uniqueness
/// here either (a completion's ID can equal an earlier timer's when the SDK's replay takes
/// another path, and the Python SDK numbers a completion after a crash -1).
fn names_a_history_event(kind: &WorkflowActionType) -> bool {
    match kind {
        WorkflowActionType::ScheduleTask(_)
        | WorkflowActionType::CreateTimer(_)
        | WorkflowActionType::CreateChildWorkflow(_)
        | WorkflowActionType::CreateDetachedWorkflow(_)
        | WorkflowActionType::SendEvent(_) => true,
        WorkflowActionType::CompleteWorkflow(_)
        | WorkflowActionType::TerminateWorkflow(_)
        | WorkflowActionType::WorkflowVersionNotAvailable(_) => false,
    }
}

/// Whether a history event is one that [`names_a_history_event`] actions write.
fn schedules(e: &HistoryEvent) -> bool {
    matches!(
        e.event_type,
        Some(
            EventType::TaskScheduled(_)
                | EventType::TimerCreated(_)
                | EventType::ChildWorkflowInstanceCreated(_)
                | EventType::DetachedWorkflowInstanceCreated(_)
                | EventType::EventSent(_)
        )
    )
}

pub(super) fn validate_actions(
    history: &[HistoryEvent],
    actions: &[WorkflowAction],
) -> Result<(), TurnError> {
    // Events without an ID carry -1; a scheduling event keeps whatever ID its action had, so a
    // negative one must still not be scheduled twice.
    let mut ids: HashSet<i32> = history
        .iter()
        .filter(|e| e.event_id >= 0 || schedules(e))
        .map(|e| e.event_id)
        .collect();
    for a in actions {
        let Some(kind) = &a.workflow_action_type else {
            return Err(TurnError::UnknownAction(a.id));
        };
        if names_a_history_event(kind) && !ids.insert(a.id) {
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
pub(super) fn is_suspended(meta: &InstanceMeta, history: &[HistoryEvent]) -> bool {
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

pub(super) fn status_after(
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

pub(super) fn action_router(action: &WorkflowAction, local: &TaskRouter) -> TaskRouter {
    let mut r = action.router.clone().unwrap_or_default();
    r.source_app_id = local.source_app_id.clone();
    r
}

/// The app a routed action runs in when it is another app than `local` (a target naming this
/// app, or none, is a local call).
pub(super) fn remote_app(router: Option<&TaskRouter>, local: &str) -> Option<String> {
    router
        .and_then(|r| r.target_app_id.as_deref())
        .filter(|t| !t.is_empty() && *t != local)
        .map(str::to_string)
}

pub(super) fn timer_origin(
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

pub(super) fn capitalize(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut c = lower.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// Tracks completions already in history so redelivered ones are dropped.
pub(super) struct Seen {
    tasks: HashSet<i32>,
    timers: HashSet<i32>,
    children: HashSet<i32>,
}

impl Seen {
    pub(super) fn from_history(history: &[HistoryEvent]) -> Self {
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
    pub(super) fn task(&mut self, id: i32) -> bool {
        self.tasks.insert(id)
    }
    pub(super) fn timer(&mut self, id: i32) -> bool {
        self.timers.insert(id)
    }
    pub(super) fn child(&mut self, id: i32) -> bool {
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
