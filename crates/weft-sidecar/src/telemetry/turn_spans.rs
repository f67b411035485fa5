//! What a workflow turn does for tracing before it commits: the orchestration's trace context
//! written into the events and work items it creates, and the `timer` and `orchestration`
//! spans it finishes (exported once the commit landed).

use super::spans::{OpenSpan, child_of, new_span_id, span_name};
use super::trace_context::{from_proto, to_proto};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind, Status};
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
        // This execution's events: on continue-as-new the appended ones belong to the next.
        let appended = if out.reset_history {
            &[][..]
        } else {
            &out.append[..]
        };
        let mut span = orchestration_span(&orch, &instance_id, status);
        span.events = notable_events(history.iter().chain(appended));
        finished.push((span, end, error.map(Status::error).unwrap_or(Status::Unset)));
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
        events: Vec::new(),
    }
}

/// The history events durabletask-go reports on the orchestration span, with their times:
/// external events received (name, payload size), suspensions and resumptions (reason), stalls
/// (reason, description).
fn notable_events<'a>(history: impl Iterator<Item = &'a HistoryEvent>) -> Vec<Event> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    history
        .filter_map(|ev| {
            let (name, attributes) = match ev.event_type.as_ref()? {
                EventType::EventRaised(e) => (
                    "Received external event",
                    vec![
                        KeyValue::new("name", e.name.clone()),
                        KeyValue::new("size", e.input.as_ref().map_or(0, |i| i.len() as i64)),
                    ],
                ),
                EventType::ExecutionSuspended(e) => (
                    "Execution suspended",
                    vec![KeyValue::new("reason", text(&e.input))],
                ),
                EventType::ExecutionResumed(e) => (
                    "Execution resumed",
                    vec![KeyValue::new("reason", text(&e.input))],
                ),
                EventType::ExecutionStalled(e) => (
                    "Execution stalled",
                    vec![
                        KeyValue::new("reason", stalled_reason(e.reason)),
                        KeyValue::new("description", text(&e.description)),
                    ],
                ),
                _ => return None,
            };
            Some(Event::new(name, system_time(ev), attributes, 0))
        })
        .collect()
}

fn stalled_reason(reason: i32) -> &'static str {
    weft_proto::durabletask::StalledReason::try_from(reason).map_or("UNKNOWN", |r| r.as_str_name())
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
        events: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::history::{event, event_with_id};
    use weft_core::turn::new_instance;
    use weft_core::{InstanceMeta, time::from_micros};
    use weft_proto::durabletask::{
        ActivityRequest, TaskScheduledEvent, TimerCreatedEvent, TimerFiredEvent, TraceContext,
    };

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const ORCH: &str = "1111111111111111";
    const SECOND: Micros = 1_000_000;

    fn started(traced: bool) -> (InstanceMeta, HistoryEvent) {
        let (meta, mut ev) = new_instance("i1", "wf", None, None, None, "e1".into(), "app", SECOND);
        if let (true, Some(EventType::ExecutionStarted(es))) = (traced, &mut ev.event_type) {
            es.parent_trace_context = Some(TraceContext {
                trace_parent: TP.into(),
                ..Default::default()
            });
            es.workflow_span_id = Some(ORCH.into());
        }
        (meta, ev)
    }

    fn turn(meta: InstanceMeta, status: RuntimeStatus) -> TurnOutcome {
        TurnOutcome {
            meta: InstanceMeta { status, ..meta },
            reset_history: false,
            append: vec![
                event_with_id(
                    2,
                    3 * SECOND,
                    EventType::TaskScheduled(TaskScheduledEvent::default()),
                ),
                event(
                    3 * SECOND,
                    EventType::TimerFired(TimerFiredEvent {
                        timer_id: 1,
                        fire_at: Some(from_micros(3 * SECOND)),
                    }),
                ),
            ],
            consumed: vec![],
            cancel_pending: false,
            effects: vec![Effect::ScheduleActivity {
                app: None,
                task_id: 2,
                request: ActivityRequest::default(),
            }],
        }
    }

    fn history(traced: bool) -> (InstanceMeta, Vec<HistoryEvent>) {
        let (meta, es) = started(traced);
        let timer = event_with_id(
            1,
            2 * SECOND,
            EventType::TimerCreated(TimerCreatedEvent::default()),
        );
        (meta, vec![es, timer])
    }

    fn stamped(out: &TurnOutcome) -> (Option<String>, Option<String>) {
        let Some(EventType::TaskScheduled(t)) = &out.append[0].event_type else {
            unreachable!()
        };
        let Effect::ScheduleActivity { request, .. } = &out.effects[0] else {
            unreachable!()
        };
        let tp = |c: &Option<TraceContext>| c.as_ref().map(|c| c.trace_parent.clone());
        (
            tp(&t.parent_trace_context),
            tp(&request.parent_trace_context),
        )
    }

    #[test]
    fn a_turn_stamps_what_it_schedules_and_ends_its_timers() {
        let (meta, h) = history(true);
        let mut out = turn(meta, RuntimeStatus::Running);
        let done = prepare_turn(&mut out, &h, RuntimeStatus::Running, 4 * SECOND);
        let want = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{ORCH}-01");
        assert_eq!(stamped(&out), (Some(want.clone()), Some(want)));
        assert_eq!(done.len(), 1);
        let (timer, end, _) = &done[0];
        assert_eq!(timer.name, "timer");
        assert_eq!(timer.kind, SpanKind::Internal);
        assert_eq!(timer.parent.as_ref().unwrap().span_id().to_string(), ORCH);
        assert_eq!(timer.start, micros_time(2 * SECOND));
        assert_eq!(*end, micros_time(4 * SECOND));
    }

    #[test]
    fn the_last_turn_ends_the_one_orchestration_span() {
        let (meta, h) = history(true);
        let mut out = turn(meta, RuntimeStatus::Completed);
        let done = prepare_turn(&mut out, &h, RuntimeStatus::Running, 4 * SECOND);
        let (orch, _, _) = done
            .iter()
            .find(|(s, ..)| s.name == "orchestration||wf")
            .unwrap();
        assert_eq!(orch.kind, SpanKind::Server);
        assert_eq!(orch.context.span_id().to_string(), ORCH);
        let parent = orch.parent.as_ref().unwrap();
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(orch.start, micros_time(SECOND));
        assert!(
            orch.attributes
                .contains(&KeyValue::new("durabletask.runtime_status", "COMPLETED"))
        );
        // A turn after the end (already terminal) does not export it again.
        let (meta, h) = history(true);
        let mut again = turn(meta, RuntimeStatus::Completed);
        let done = prepare_turn(&mut again, &h, RuntimeStatus::Completed, 5 * SECOND);
        assert!(done.iter().all(|(s, ..)| s.name != "orchestration||wf"));
    }

    #[test]
    fn untraced_instances_are_left_alone() {
        let (meta, h) = history(false);
        let mut out = turn(meta, RuntimeStatus::Completed);
        assert!(prepare_turn(&mut out, &h, RuntimeStatus::Running, 4 * SECOND).is_empty());
        assert_eq!(stamped(&out), (None, None));
    }

    #[test]
    fn notable_history_events_become_span_events() {
        use weft_proto::durabletask::{
            EventRaisedEvent, ExecutionResumedEvent, ExecutionStalledEvent,
            ExecutionSuspendedEvent, StalledReason,
        };
        let ev = |t: EventType| HistoryEvent {
            event_type: Some(t),
            ..Default::default()
        };
        let history = [
            ev(EventType::TimerCreated(TimerCreatedEvent::default())),
            ev(EventType::EventRaised(EventRaisedEvent {
                name: "go".into(),
                input: Some("10".into()),
            })),
            ev(EventType::ExecutionSuspended(ExecutionSuspendedEvent {
                input: Some("maintenance".into()),
            })),
            ev(EventType::ExecutionResumed(ExecutionResumedEvent {
                input: None,
            })),
            ev(EventType::ExecutionStalled(ExecutionStalledEvent {
                reason: StalledReason::PatchMismatch as i32,
                description: Some("patch p1".into()),
            })),
        ];
        let events = notable_events(history.iter());
        let got: Vec<(&str, Vec<String>)> = events
            .iter()
            .map(|e| {
                let attrs = e
                    .attributes
                    .iter()
                    .map(|kv| format!("{}={}", kv.key, kv.value))
                    .collect();
                (e.name.as_ref(), attrs)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "Received external event",
                    vec!["name=go".into(), "size=2".into()]
                ),
                ("Execution suspended", vec!["reason=maintenance".into()]),
                ("Execution resumed", vec!["reason=".into()]),
                (
                    "Execution stalled",
                    vec![
                        "reason=PATCH_MISMATCH".into(),
                        "description=patch p1".into()
                    ]
                ),
            ]
        );
    }
}
