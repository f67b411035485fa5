//! What a workflow turn does for tracing before it commits: the orchestration's trace context
//! written into the events and work items it creates, and the `timer` and `orchestration`
//! spans it finishes (exported once the commit landed).

use super::spans::{OpenSpan, child_of, new_span_id, span_name};
use super::trace_context::{from_proto, to_proto};
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_core::turn::{Effect, TurnOutcome};
use weft_core::{Micros, RuntimeStatus};
use weft_proto::durabletask::{HistoryEvent, history_event::EventType};

/// Spans to export once the turn is durable, with their end time and status.
pub type Finished = Vec<(OpenSpan, SystemTime, Status)>;

/// The execution's orchestration span, as recorded in its `ExecutionStarted` event.
struct Orchestration {
    name: String,
    version: Option<String>,
    instance_id: String,
    start: SystemTime,
    context: SpanContext,
    parent: SpanContext,
}

fn orchestration(ev: &HistoryEvent) -> Option<Orchestration> {
    let Some(EventType::ExecutionStarted(es)) = &ev.event_type else {
        return None;
    };
    let parent = from_proto(es.parent_trace_context.as_ref()?)?;
    let span = SpanId::from_hex(es.workflow_span_id.as_deref()?).ok()?;
    Some(Orchestration {
        name: es.name.clone(),
        version: es.version.clone(),
        instance_id: es
            .workflow_instance
            .as_ref()
            .map(|w| w.instance_id.clone())
            .unwrap_or_default(),
        start: system_time(ev),
        context: child_of(&parent, span),
        parent,
    })
}

fn system_time(ev: &HistoryEvent) -> SystemTime {
    ev.timestamp
        .and_then(|t| SystemTime::try_from(t).ok())
        .unwrap_or_else(SystemTime::now)
}

fn micros_time(us: Micros) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

fn is_started(ev: &HistoryEvent) -> bool {
    matches!(ev.event_type, Some(EventType::ExecutionStarted(_)))
}

/// Stamps the orchestration's trace context on what the turn schedules (`TaskScheduled`,
/// activity work items, child instances) and collects the spans it finishes. Instances
/// started without a trace context (tracing off or not sampled then) are left alone.
pub fn prepare_turn(
    out: &mut TurnOutcome,
    history: &[HistoryEvent],
    before: RuntimeStatus,
    now: Micros,
) -> Finished {
    let mut finished = Finished::new();
    // The execution this turn ran: its event is in the history, or arrives with the first turn
    // (on continue-as-new, the appended one belongs to the next execution).
    let started = history.iter().find(|e| is_started(e)).or_else(|| {
        (!out.reset_history)
            .then(|| out.append.iter().find(|e| is_started(e)))
            .flatten()
    });
    let Some(orch) = started.and_then(orchestration) else {
        return finished;
    };
    let tc = to_proto(&orch.context);
    let instance_id = orch.instance_id.clone();
    let end = micros_time(now);
    for ev in &mut out.append {
        match &mut ev.event_type {
            Some(EventType::TaskScheduled(t)) if t.parent_trace_context.is_none() => {
                t.parent_trace_context = Some(tc.clone());
            }
            Some(EventType::ChildWorkflowInstanceCreated(c))
                if c.parent_trace_context.is_none() =>
            {
                c.parent_trace_context = Some(tc.clone());
            }
            Some(EventType::TimerFired(f)) => {
                let created = history.iter().find(|h| {
                    h.event_id == f.timer_id
                        && matches!(h.event_type, Some(EventType::TimerCreated(_)))
                });
                if let Some(created) = created {
                    let fire_at = f
                        .fire_at
                        .map(|t| weft_core::time::rfc3339(weft_core::time::to_micros(&t)));
                    finished.push((
                        timer_span(&orch, created, f.timer_id, fire_at, &instance_id),
                        end,
                        Status::Unset,
                    ));
                }
            }
            Some(EventType::ExecutionStarted(es)) if out.reset_history => {
                // Continue-as-new: the next execution gets a span of its own in the same trace.
                es.workflow_span_id = Some(new_span_id().to_string());
            }
            _ => {}
        }
    }
    for effect in &mut out.effects {
        match effect {
            Effect::ScheduleActivity { request, .. } if request.parent_trace_context.is_none() => {
                request.parent_trace_context = Some(tc.clone());
            }
            Effect::StartInstance { start_event, .. } => {
                if let Some(EventType::ExecutionStarted(es)) = &mut start_event.event_type
                    && es.parent_trace_context.is_none()
                {
                    es.parent_trace_context = Some(tc.clone());
                    es.workflow_span_id = Some(new_span_id().to_string());
                }
            }
            _ => {}
        }
    }
    let ended = out.meta.status.is_terminal() || out.reset_history;
    if ended && !before.is_terminal() {
        let status = if out.reset_history {
            RuntimeStatus::ContinuedAsNew
        } else {
            out.meta.status
        };
        let error = (status == RuntimeStatus::Failed).then(|| {
            weft_core::turn::decode_failure(out.meta.failure.as_deref())
                .map(|f| format!("{}: {}", f.error_type, f.error_message))
                .unwrap_or_else(|| "workflow failed".into())
        });
        finished.push((
            orchestration_span(&orch, &instance_id, status),
            end,
            error.map(Status::error).unwrap_or(Status::Unset),
        ));
    }
    finished
}

fn orchestration_span(orch: &Orchestration, instance_id: &str, status: RuntimeStatus) -> OpenSpan {
    let mut attributes = vec![
        KeyValue::new("durabletask.type", "orchestration"),
        KeyValue::new("durabletask.task.name", orch.name.clone()),
        KeyValue::new("durabletask.task.instance_id", instance_id.to_string()),
        KeyValue::new("durabletask.runtime_status", status.as_str()),
    ];
    let name = span_name(
        "orchestration",
        &orch.name,
        orch.version.as_deref(),
        &mut attributes,
    );
    OpenSpan {
        name,
        kind: SpanKind::Server,
        context: orch.context.clone(),
        parent: Some(orch.parent.clone()),
        start: orch.start,
        attributes,
    }
}

fn timer_span(
    orch: &Orchestration,
    created: &HistoryEvent,
    timer_id: i32,
    fire_at: Option<String>,
    instance_id: &str,
) -> OpenSpan {
    let mut attributes = vec![KeyValue::new("durabletask.type", "timer")];
    if let Some(at) = fire_at {
        attributes.push(KeyValue::new("durabletask.fire_at", at));
    }
    attributes.push(KeyValue::new(
        "durabletask.task.task_id",
        i64::from(timer_id),
    ));
    attributes.push(KeyValue::new(
        "durabletask.task.instance_id",
        instance_id.to_string(),
    ));
    OpenSpan {
        name: "timer".into(),
        kind: SpanKind::Internal,
        context: child_of(&orch.context, new_span_id()),
        parent: Some(orch.context.clone()),
        start: system_time(created),
        attributes,
    }
}
