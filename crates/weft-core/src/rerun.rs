//! Re-running a finished workflow from one of its activities: the new instance's history is the
//! source history up to that activity's `TaskScheduled` event, with the activities still open at
//! that point scheduled again.

use weft_proto::durabletask::{
    ActivityRequest, HistoryEvent, WorkflowInstance, history_event::EventType,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RerunError {
    #[error("event {0} is not a TaskScheduled event of the source history")]
    NotAnActivity(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RerunPlan {
    pub history: Vec<HistoryEvent>,
    /// Activities to dispatch again (the target first).
    pub activities: Vec<ActivityRequest>,
}

/// Builds the history of `new_id` from `source`, cut just after the `TaskScheduled` with ID
/// `event_id` (whose input is replaced when `input` is given).
pub fn plan(
    source: &[HistoryEvent],
    event_id: u32,
    new_id: &str,
    new_execution_id: &str,
    input: Option<Option<String>>,
) -> Result<RerunPlan, RerunError> {
    let target = source
        .iter()
        .position(|e| {
            e.event_id == event_id as i32
                && matches!(e.event_type, Some(EventType::TaskScheduled(_)))
        })
        .ok_or(RerunError::NotAnActivity(event_id))?;
    let mut history: Vec<HistoryEvent> = source[..=target].to_vec();
    for e in &mut history {
        if let Some(EventType::ExecutionStarted(s)) = &mut e.event_type {
            s.workflow_instance = Some(WorkflowInstance {
                instance_id: new_id.to_string(),
                execution_id: Some(new_execution_id.to_string()),
            });
        }
    }
    if let (Some(inp), Some(last)) = (input, history.last_mut())
        && let Some(EventType::TaskScheduled(t)) = &mut last.event_type
    {
        t.input = inp;
    }
    let mut open: Vec<&HistoryEvent> = Vec::new();
    for e in &history {
        match &e.event_type {
            Some(EventType::TaskScheduled(_)) => open.push(e),
            Some(EventType::TaskCompleted(c)) => open.retain(|o| o.event_id != c.task_scheduled_id),
            Some(EventType::TaskFailed(c)) => open.retain(|o| o.event_id != c.task_scheduled_id),
            _ => {}
        }
    }
    open.sort_by_key(|e| e.event_id != event_id as i32);
    let activities = open
        .into_iter()
        .filter_map(|e| match &e.event_type {
            Some(EventType::TaskScheduled(t)) => Some(ActivityRequest {
                name: t.name.clone(),
                version: t.version.clone(),
                input: t.input.clone(),
                workflow_instance: Some(WorkflowInstance {
                    instance_id: new_id.to_string(),
                    execution_id: Some(new_execution_id.to_string()),
                }),
                task_id: e.event_id,
                parent_trace_context: None,
                task_execution_id: t.task_execution_id.clone(),
                propagated_history: None,
            }),
            _ => None,
        })
        .collect();
    Ok(RerunPlan {
        history,
        activities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{event, event_with_id};
    use weft_proto::durabletask::{ExecutionStartedEvent, TaskCompletedEvent, TaskScheduledEvent};

    fn sched(id: i32, name: &str) -> HistoryEvent {
        event_with_id(
            id,
            0,
            EventType::TaskScheduled(TaskScheduledEvent {
                name: name.into(),
                input: Some("1".into()),
                ..Default::default()
            }),
        )
    }
    fn done(id: i32) -> HistoryEvent {
        event(
            0,
            EventType::TaskCompleted(TaskCompletedEvent {
                task_scheduled_id: id,
                ..Default::default()
            }),
        )
    }

    #[test]
    fn cuts_history_and_reschedules_open_activities() {
        let start = event(
            0,
            EventType::ExecutionStarted(ExecutionStartedEvent {
                name: "wf".into(),
                ..Default::default()
            }),
        );
        let src = vec![
            start,
            sched(1, "a"),
            done(1),
            sched(2, "b"),
            sched(3, "c"),
            done(3),
            done(2),
        ];
        let p = plan(&src, 3, "new", "x", Some(Some("9".into()))).unwrap();
        assert_eq!(p.history.len(), 5);
        let names: Vec<_> = p
            .activities
            .iter()
            .map(|a| (a.name.as_str(), a.task_id))
            .collect();
        assert_eq!(names, [("c", 3), ("b", 2)]);
        assert_eq!(p.activities[0].input.as_deref(), Some("9"));
        let Some(EventType::ExecutionStarted(s)) = &p.history[0].event_type else {
            panic!()
        };
        assert_eq!(s.workflow_instance.as_ref().unwrap().instance_id, "new");
        assert_eq!(plan(&src, 2, "n", "x", None).unwrap().activities.len(), 1);
        assert_eq!(
            plan(&src, 7, "n", "x", None),
            Err(RerunError::NotAnActivity(7))
        );
    }
}
