//! Small, pure helpers over history events: constructors, names, and facts read off a history.

use crate::Micros;
use crate::time::from_micros;
use weft_proto::durabletask::{
    ExecutionStartedEvent, HistoryEvent, TaskFailureDetails, WorkflowStartedEvent,
    history_event::EventType,
};

/// A history event with `eventId = -1` (every event not created from an action).
pub fn event(now: Micros, ty: EventType) -> HistoryEvent {
    event_with_id(-1, now, ty)
}

pub fn event_with_id(id: i32, now: Micros, ty: EventType) -> HistoryEvent {
    HistoryEvent {
        event_id: id,
        timestamp: Some(from_micros(now)),
        router: None,
        event_type: Some(ty),
    }
}

pub fn workflow_started(now: Micros) -> HistoryEvent {
    event(
        now,
        EventType::WorkflowStarted(WorkflowStartedEvent { version: None }),
    )
}

/// The protobuf field name of an event's type (`taskScheduled`, …) in PascalCase, for logs and
/// the history views of the HTTP API and CLI.
pub fn kind(ev: &HistoryEvent) -> &'static str {
    match &ev.event_type {
        None => "Unknown",
        Some(t) => match t {
            EventType::ExecutionStarted(_) => "ExecutionStarted",
            EventType::ExecutionCompleted(_) => "ExecutionCompleted",
            EventType::ExecutionTerminated(_) => "ExecutionTerminated",
            EventType::TaskScheduled(_) => "TaskScheduled",
            EventType::TaskCompleted(_) => "TaskCompleted",
            EventType::TaskFailed(_) => "TaskFailed",
            EventType::ChildWorkflowInstanceCreated(_) => "ChildWorkflowInstanceCreated",
            EventType::ChildWorkflowInstanceCompleted(_) => "ChildWorkflowInstanceCompleted",
            EventType::ChildWorkflowInstanceFailed(_) => "ChildWorkflowInstanceFailed",
            EventType::TimerCreated(_) => "TimerCreated",
            EventType::TimerFired(_) => "TimerFired",
            EventType::WorkflowStarted(_) => "WorkflowStarted",
            EventType::WorkflowCompleted(_) => "WorkflowCompleted",
            EventType::EventSent(_) => "EventSent",
            EventType::EventRaised(_) => "EventRaised",
            EventType::ContinueAsNew(_) => "ContinueAsNew",
            EventType::ExecutionSuspended(_) => "ExecutionSuspended",
            EventType::ExecutionResumed(_) => "ExecutionResumed",
            EventType::ExecutionStalled(_) => "ExecutionStalled",
            EventType::DetachedWorkflowInstanceCreated(_) => "DetachedWorkflowInstanceCreated",
        },
    }
}

/// The `ExecutionStarted` event of a history, if it has one.
pub fn execution_started(history: &[HistoryEvent]) -> Option<&ExecutionStartedEvent> {
    history.iter().find_map(|e| match &e.event_type {
        Some(EventType::ExecutionStarted(s)) => Some(s),
        _ => None,
    })
}

/// Children this history created that have not reported back (for recursive terminate).
pub fn open_children(history: &[HistoryEvent]) -> Vec<String> {
    let mut open: Vec<(i32, String)> = Vec::new();
    for e in history {
        match &e.event_type {
            Some(EventType::ChildWorkflowInstanceCreated(c)) => {
                open.push((e.event_id, c.instance_id.clone()))
            }
            Some(EventType::ChildWorkflowInstanceCompleted(c)) => {
                open.retain(|(id, _)| *id != c.task_scheduled_id)
            }
            Some(EventType::ChildWorkflowInstanceFailed(c)) => {
                open.retain(|(id, _)| *id != c.task_scheduled_id)
            }
            _ => {}
        }
    }
    open.into_iter().map(|(_, id)| id).collect()
}

/// Every child instance ID this history created (for recursive purge).
pub fn all_children(history: &[HistoryEvent]) -> Vec<String> {
    history
        .iter()
        .filter_map(|e| match &e.event_type {
            Some(EventType::ChildWorkflowInstanceCreated(c)) => Some(c.instance_id.clone()),
            _ => None,
        })
        .collect()
}

/// Patches recorded so far in the `WorkflowStarted` events of a history, in order.
pub fn recorded_patches(history: &[HistoryEvent]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in history {
        if let Some(EventType::WorkflowStarted(ws)) = &e.event_type
            && let Some(v) = &ws.version
        {
            for p in &v.patches {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
        }
    }
    out
}

/// A failure details message with just a type and a message.
pub fn failure(error_type: &str, message: impl Into<String>) -> TaskFailureDetails {
    TaskFailureDetails {
        error_type: error_type.to_string(),
        error_message: message.into(),
        stack_trace: None,
        inner_failure: None,
        is_non_retriable: true,
    }
}
