//! Dapr's workflow spans (tracer `durabletask`: `create_orchestration||…`, `orchestration||…`,
//! `activity||…`, `timer`) exported over OTLP. Off unless [`install`] ran: every hook first
//! checks [`on`] (one atomic load) and builds nothing otherwise.
//!
//! The spans are assembled from history rather than kept open: an orchestration runs over many
//! turns, possibly on several sidecars, so its span ID lives in the `ExecutionStarted` event
//! (`workflowSpanID`) and whichever sidecar commits the last turn exports the span.

use super::trace_context::{from_proto, to_proto};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks,
    SpanProcessor,
};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use weft_config::{OtlpProtocol, TracingSettings};
use weft_proto::durabletask::{
    ActivityRequest, HistoryEvent, TaskFailureDetails, TraceContext, history_event::EventType,
};

/// Activity attempts in flight whose spans are kept open; past this many, new attempts go
/// untraced rather than grow memory (an attempt nobody answers is never removed otherwise).
const MAX_OPEN_ACTIVITIES: usize = 65_536;

struct Exporter {
    processor: BatchSpanProcessor,
    rate: f64,
    scope: InstrumentationScope,
    ids: RandomIdGenerator,
    activities: Mutex<HashMap<(String, i32), OpenSpan>>,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Whether spans are exported (the only cost on the hot path when they are not).
#[inline]
pub fn on() -> bool {
    EXPORTER.get().is_some()
}

/// Starts the OTLP exporter (once per process). Spans are batched on the SDK's own thread.
/// Must be called inside the Tokio runtime (the gRPC channel lives there).
pub fn install(s: &TracingSettings) -> Result<(), String> {
    if EXPORTER.get().is_some() {
        return Ok(());
    }
    if s.endpoint.starts_with("https://") {
        return Err(format!(
            "{}: TLS to an OTLP collector is not built in; use a plain (isSecure: false) \
             collector or agent address",
            s.endpoint
        ));
    }
    let built = match s.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(s.endpoint.clone())
            .with_timeout(Duration::from_secs(10))
            .build(),
        OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(s.endpoint.clone())
            .with_timeout(Duration::from_secs(10))
            .build(),
    };
    let exporter = built.map_err(|e| format!("OTLP exporter for {}: {e}", s.endpoint))?;
    let mut processor = BatchSpanProcessor::builder(exporter).build();
    processor.set_resource(
        &Resource::builder()
            .with_service_name(s.service_name.clone())
            .build(),
    );
    let _ = EXPORTER.set(Exporter {
        processor,
        rate: s.sampling_rate.get(),
        scope: InstrumentationScope::builder("durabletask").build(),
        ids: RandomIdGenerator::default(),
        activities: Mutex::new(HashMap::new()),
    });
    Ok(())
}

/// Sends what is batched (on shutdown, so the last instances' spans are not lost).
pub fn flush() {
    if let Some(ex) = EXPORTER.get() {
        let _ = ex.processor.force_flush();
    }
}

/// Whether a new trace with this ID is sampled: the ratio sampler's rule (the low 63 bits of
/// the ID under `rate · 2⁶³`), so every sidecar decides alike.
pub fn sampled(trace: TraceId, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    let bytes = trace.to_bytes();
    let low = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")) >> 1;
    (low as f64) < rate * (1u64 << 63) as f64
}

pub(crate) fn new_span_id() -> SpanId {
    EXPORTER
        .get()
        .map(|e| e.ids.new_span_id())
        .unwrap_or_else(|| RandomIdGenerator::default().new_span_id())
}

/// A span being assembled: everything but its end.
pub(crate) struct OpenSpan {
    pub name: String,
    pub kind: SpanKind,
    pub context: SpanContext,
    pub parent: Option<SpanContext>,
    pub start: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Span events (the orchestration span's notable history events).
    pub events: Vec<opentelemetry::trace::Event>,
}

impl OpenSpan {
    /// Exports the span, ended at `end`.
    pub fn end(self, end: SystemTime, status: Status) {
        if let Some(ex) = EXPORTER.get() {
            ex.processor.on_end(self.into_data(end, status, &ex.scope));
        }
    }

    fn into_data(self, end: SystemTime, status: Status, scope: &InstrumentationScope) -> SpanData {
        let (parent_span_id, parent_span_is_remote) = match &self.parent {
            Some(p) => (p.span_id(), p.is_remote()),
            None => (SpanId::INVALID, false),
        };
        SpanData {
            span_context: self.context,
            parent_span_id,
            parent_span_is_remote,
            span_kind: self.kind,
            name: self.name.into(),
            start_time: self.start,
            end_time: end.max(self.start),
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events: {
                let mut events = SpanEvents::default();
                events.events = self.events;
                events
            },
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        }
    }
}

/// `<type>||<name>[||<version>]`, and the version attribute when there is one (durabletask-go).
pub(crate) fn span_name(
    kind: &str,
    name: &str,
    version: Option<&str>,
    attrs: &mut Vec<KeyValue>,
) -> String {
    match version.filter(|v| !v.is_empty()) {
        Some(v) => {
            attrs.push(KeyValue::new("durabletask.task.version", v.to_string()));
            format!("{kind}||{name}||{v}")
        }
        None if !name.is_empty() => format!("{kind}||{name}"),
        None => kind.to_string(),
    }
}

/// A local span context (sampled) in the trace of `parent`.
pub(crate) fn child_of(parent: &SpanContext, span: SpanId) -> SpanContext {
    SpanContext::new(
        parent.trace_id(),
        span,
        parent.trace_flags() | TraceFlags::SAMPLED,
        false,
        parent.trace_state().clone(),
    )
}

/// The `create_orchestration` span of a start, and the orchestration span ID it hands to the
/// instance's `ExecutionStarted` event.
pub struct CreateSpan {
    span: OpenSpan,
    orchestration: SpanId,
}

/// Opens `create_orchestration||<name>` (client kind) for a start, under the client's trace
/// context when it sent one. `None` when tracing is off or the trace is not sampled: then the
/// instance carries no trace context and none of its spans are made.
pub fn start_create(
    name: &str,
    version: Option<&str>,
    instance_id: &str,
    client: Option<&TraceContext>,
) -> Option<CreateSpan> {
    let ex = EXPORTER.get()?;
    let parent = client.and_then(from_proto);
    let context = match &parent {
        // Parent-based: the client's decision stands.
        Some(p) if !p.is_sampled() => return None,
        Some(p) => child_of(p, ex.ids.new_span_id()),
        None => {
            let trace = ex.ids.new_trace_id();
            if !sampled(trace, ex.rate) {
                return None;
            }
            SpanContext::new(
                trace,
                ex.ids.new_span_id(),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            )
        }
    };
    let mut attributes = vec![
        KeyValue::new("durabletask.type", "orchestration"),
        KeyValue::new("durabletask.task.name", name.to_string()),
        KeyValue::new("durabletask.task.instance_id", instance_id.to_string()),
    ];
    let name = span_name("create_orchestration", name, version, &mut attributes);
    Some(CreateSpan {
        span: OpenSpan {
            name,
            kind: SpanKind::Client,
            context,
            parent,
            start: SystemTime::now(),
            attributes,
            events: Vec::new(),
        },
        orchestration: ex.ids.new_span_id(),
    })
}

impl CreateSpan {
    /// Writes the trace context into the instance's `ExecutionStarted` event: the create span
    /// as its parent and the ID its orchestration span will have.
    pub fn stamp(&self, start_event: &mut HistoryEvent) {
        if let Some(EventType::ExecutionStarted(es)) = &mut start_event.event_type {
            es.parent_trace_context = Some(to_proto(&self.span.context));
            es.workflow_span_id = Some(self.orchestration.to_string());
        }
    }

    pub fn end(self, error: Option<String>) {
        let status = match error {
            Some(e) => Status::error(e),
            None => Status::Unset,
        };
        self.span.end(SystemTime::now(), status);
    }
}

/// Opens this attempt's `activity||<name>` span (server kind, child of the orchestration span
/// in the request's trace context) and hands the worker the activity span's context instead,
/// so the SDK's spans nest under it. Untraced requests pass through untouched.
pub fn activity_dispatched(mut request: ActivityRequest) -> ActivityRequest {
    let Some(ex) = EXPORTER.get() else {
        return request;
    };
    let Some(parent) = request.parent_trace_context.as_ref().and_then(from_proto) else {
        return request;
    };
    let instance_id = request
        .workflow_instance
        .as_ref()
        .map(|w| w.instance_id.clone())
        .unwrap_or_default();
    let mut attributes = vec![
        KeyValue::new("durabletask.type", "activity"),
        KeyValue::new("durabletask.task.name", request.name.clone()),
        KeyValue::new("durabletask.task.task_id", i64::from(request.task_id)),
        KeyValue::new("durabletask.task.instance_id", instance_id.clone()),
    ];
    let name = span_name(
        "activity",
        &request.name,
        request.version.as_deref(),
        &mut attributes,
    );
    let context = child_of(&parent, ex.ids.new_span_id());
    request.parent_trace_context = Some(to_proto(&context));
    let span = OpenSpan {
        name,
        kind: SpanKind::Server,
        context,
        parent: Some(parent),
        start: SystemTime::now(),
        attributes,
        events: Vec::new(),
    };
    let mut open = ex.activities.lock().unwrap_or_else(|p| p.into_inner());
    if open.len() < MAX_OPEN_ACTIVITIES {
        // A re-dispatch (the worker's stream died) ends the earlier attempt's span.
        if let Some(earlier) = open.insert((instance_id, request.task_id), span) {
            earlier.end(
                SystemTime::now(),
                Status::error("work item dispatched again"),
            );
        }
    }
    request
}

/// Ends the activity span of an answered attempt (failed if the activity failed).
pub fn activity_answered(instance_id: &str, task_id: i32, failure: Option<&TaskFailureDetails>) {
    let Some(ex) = EXPORTER.get() else {
        return;
    };
    let span = ex
        .activities
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&(instance_id.to_string(), task_id));
    if let Some(span) = span {
        let status = match failure {
            Some(f) => Status::error(format!("{}: {}", f.error_type, f.error_message)),
            None => Status::Unset,
        };
        span.end(SystemTime::now(), status);
    }
}

/// Exports spans a committed turn finished.
pub(crate) fn export(spans: Vec<(OpenSpan, SystemTime, Status)>) {
    for (span, end, status) in spans {
        span.end(end, status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_sampling_follows_the_trace_id() {
        let low = TraceId::from_hex("000000000000000000000000000000ff").unwrap();
        let high = TraceId::from_hex("0000000000000000ffffffffffffffff").unwrap();
        assert!(sampled(low, 0.5) && !sampled(high, 0.5));
        assert!(sampled(high, 1.0));
        assert!(!sampled(low, 0.0));
    }

    #[test]
    fn span_names_follow_durabletask() {
        let mut a = Vec::new();
        assert_eq!(span_name("activity", "pay", None, &mut a), "activity||pay");
        assert!(a.is_empty());
        assert_eq!(
            span_name("orchestration", "wf", Some("2"), &mut a),
            "orchestration||wf||2"
        );
        assert_eq!(a, vec![KeyValue::new("durabletask.task.version", "2")]);
        assert_eq!(span_name("timer", "", None, &mut a), "timer");
    }

    #[test]
    fn nothing_is_built_while_tracing_is_off() {
        assert!(!on());
        assert!(start_create("wf", None, "i", None).is_none());
        let req = ActivityRequest {
            name: "a".into(),
            ..Default::default()
        };
        assert_eq!(activity_dispatched(req.clone()), req);
    }
}
