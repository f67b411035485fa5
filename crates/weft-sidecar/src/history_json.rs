//! A readable JSON rendering of history events for the HTTP API and the CLI.

use serde_json::{Map, Value, json};
use weft_core::history::kind;
use weft_core::time::{rfc3339, to_micros};
use weft_proto::durabletask::{HistoryEvent, TaskFailureDetails, history_event::EventType};

fn failure(f: &Option<TaskFailureDetails>) -> Value {
    match f {
        Some(f) => {
            json!({"errorType": f.error_type, "errorMessage": f.error_message, "stackTrace": f.stack_trace})
        }
        None => Value::Null,
    }
}

pub fn event_json(ev: &HistoryEvent) -> Value {
    let mut m = Map::new();
    m.insert("eventId".into(), json!(ev.event_id));
    if let Some(ts) = &ev.timestamp {
        m.insert("timestamp".into(), json!(rfc3339(to_micros(ts))));
    }
    m.insert("type".into(), json!(kind(ev)));
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            m.insert(k.to_string(), v);
        }
    };
    match &ev.event_type {
        Some(EventType::ExecutionStarted(e)) => {
            put("name", json!(e.name));
            put("input", json!(e.input));
            if let Some(p) = e
                .parent_instance
                .as_ref()
                .and_then(|p| p.workflow_instance.as_ref())
            {
                put("parentInstanceId", json!(p.instance_id));
            }
        }
        Some(EventType::ExecutionCompleted(e)) => {
            put(
                "status",
                json!(weft_core::RuntimeStatus::from_code(e.workflow_status).map(|s| s.as_str())),
            );
            put("result", json!(e.result));
            put("failure", failure(&e.failure_details));
        }
        Some(EventType::ExecutionTerminated(e)) => {
            put("input", json!(e.input));
            put("recurse", json!(e.recurse));
        }
        Some(EventType::TaskScheduled(e)) => {
            put("name", json!(e.name));
            put("input", json!(e.input));
        }
        Some(EventType::TaskCompleted(e)) => {
            put("taskScheduledId", json!(e.task_scheduled_id));
            put("result", json!(e.result));
        }
        Some(EventType::TaskFailed(e)) => {
            put("taskScheduledId", json!(e.task_scheduled_id));
            put("failure", failure(&e.failure_details));
        }
        Some(EventType::ChildWorkflowInstanceCreated(e)) => {
            put("instanceId", json!(e.instance_id));
            put("name", json!(e.name));
            put("input", json!(e.input));
        }
        Some(EventType::ChildWorkflowInstanceCompleted(e)) => {
            put("taskScheduledId", json!(e.task_scheduled_id));
            put("result", json!(e.result));
        }
        Some(EventType::ChildWorkflowInstanceFailed(e)) => {
            put("taskScheduledId", json!(e.task_scheduled_id));
            put("failure", failure(&e.failure_details));
        }
        Some(EventType::TimerCreated(e)) => {
            put(
                "fireAt",
                json!(e.fire_at.as_ref().map(|t| rfc3339(to_micros(t)))),
            );
        }
        Some(EventType::TimerFired(e)) => {
            put("timerId", json!(e.timer_id));
            put(
                "fireAt",
                json!(e.fire_at.as_ref().map(|t| rfc3339(to_micros(t)))),
            );
        }
        Some(EventType::EventRaised(e)) => {
            put("name", json!(e.name));
            put("input", json!(e.input));
        }
        Some(EventType::EventSent(e)) => {
            put("instanceId", json!(e.instance_id));
            put("name", json!(e.name));
            put("input", json!(e.input));
        }
        Some(EventType::ExecutionSuspended(e)) => put("reason", json!(e.input)),
        Some(EventType::ExecutionResumed(e)) => put("reason", json!(e.input)),
        Some(EventType::ExecutionStalled(e)) => put("description", json!(e.description)),
        Some(EventType::WorkflowStarted(e)) => {
            if let Some(v) = &e.version {
                put("patches", json!(v.patches));
                put("version", json!(v.name));
            }
        }
        _ => {}
    }
    // Which app scheduled the event and which runs its work (multi-app workflows).
    if let Some(r) = &ev.router {
        let mut router = Map::new();
        router.insert("sourceAppID".into(), json!(r.source_app_id));
        if let Some(t) = r.target_app_id.as_deref().filter(|t| !t.is_empty()) {
            router.insert("targetAppID".into(), json!(t));
        }
        m.insert("router".into(), Value::Object(router));
    }
    Value::Object(m)
}
