//! W3C trace context (`traceparent`/`tracestate`) to and from the durabletask `TraceContext`
//! message and OpenTelemetry's `SpanContext`: pure conversions, no exporter involved.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use std::str::FromStr;
use weft_proto::durabletask::TraceContext;

/// Parses a `traceparent` (`00-<32 hex trace ID>-<16 hex span ID>-<2 hex flags>`). `None` for
/// anything malformed or an all-zero ID, as the W3C spec says to ignore such a header.
pub fn parse_traceparent(text: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let mut parts = text.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    // Version 00 has exactly four fields; a later version may append more.
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    Some((trace, span, TraceFlags::new(flags)))
}

/// The `traceparent` of a span.
pub fn format_traceparent(trace: TraceId, span: SpanId, flags: TraceFlags) -> String {
    format!("00-{trace}-{span}-{:02x}", flags.to_u8())
}

/// The span a durabletask `TraceContext` names (as a remote parent). Older SDKs sent the bare
/// trace ID in `traceParent` and the span ID in `spanID`; both forms are read.
pub fn from_proto(tc: &TraceContext) -> Option<SpanContext> {
    let (trace, span, flags) = parse_traceparent(&tc.trace_parent).or_else(|| {
        let trace = TraceId::from_hex(tc.trace_parent.trim()).ok()?;
        let span = SpanId::from_hex(tc.span_id.trim()).ok()?;
        (trace != TraceId::INVALID && span != SpanId::INVALID).then_some((
            trace,
            span,
            TraceFlags::SAMPLED,
        ))
    })?;
    let state = tc
        .trace_state
        .as_deref()
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    Some(SpanContext::new(trace, span, flags, true, state))
}

/// The `TraceContext` daprd writes for a span: `traceParent` (and `traceState` if any).
pub fn to_proto(sc: &SpanContext) -> TraceContext {
    let state = sc.trace_state().header();
    TraceContext {
        trace_parent: format_traceparent(sc.trace_id(), sc.span_id(), sc.trace_flags()),
        span_id: String::new(),
        trace_state: (!state.is_empty()).then_some(state),
    }
}

/// A `TraceContext` from a `traceparent` header (and optional `tracestate`), if well formed.
pub fn from_headers(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
    parse_traceparent(traceparent)?;
    Some(TraceContext {
        trace_parent: traceparent.trim().to_string(),
        span_id: String::new(),
        trace_state: tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from),
    })
}

/// The trace ID (32 hex digits) of the first `ExecutionStarted` among `events`, if it carries a
/// trace context: what an actor's log lines name as `trace_id`. Stops at that event (it sits at
/// the start of a history), so an untraced instance costs no walk over its whole history.
pub fn trace_id_of<'a>(
    events: impl IntoIterator<Item = &'a weft_proto::durabletask::HistoryEvent>,
) -> Option<String> {
    use weft_proto::durabletask::history_event::EventType;
    let started = events.into_iter().find_map(|ev| match &ev.event_type {
        Some(EventType::ExecutionStarted(es)) => Some(es),
        _ => None,
    })?;
    let tc = started.parent_trace_context.as_ref()?;
    from_proto(tc).map(|sc| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips() {
        let (t, s, f) = parse_traceparent(TP).unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.to_string(), "00f067aa0ba902b7");
        assert!(f.is_sampled());
        assert_eq!(format_traceparent(t, s, f), TP);
        let (_, _, f) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!f.is_sampled());
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn proto_round_trips_with_state() {
        let tc = TraceContext {
            trace_parent: TP.into(),
            span_id: String::new(),
            trace_state: Some("vendor=x".into()),
        };
        let sc = from_proto(&tc).unwrap();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(to_proto(&sc), tc);
    }

    #[test]
    fn old_sdk_form_is_read() {
        let tc = TraceContext {
            trace_parent: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            trace_state: None,
        };
        let sc = from_proto(&tc).unwrap();
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled());
    }

    #[test]
    fn headers_become_a_trace_context() {
        let tc = from_headers(TP, Some(" ")).unwrap();
        assert_eq!(tc.trace_parent, TP);
        assert_eq!(tc.trace_state, None);
        assert!(from_headers("garbage", None).is_none());
    }

    #[test]
    fn the_trace_id_of_a_history_is_its_execution_started_s() {
        use weft_proto::durabletask::history_event::EventType;
        use weft_proto::durabletask::{ExecutionStartedEvent, HistoryEvent};
        let started = |tc: Option<TraceContext>| HistoryEvent {
            event_type: Some(EventType::ExecutionStarted(ExecutionStartedEvent {
                parent_trace_context: tc,
                ..Default::default()
            })),
            ..Default::default()
        };
        let tc = TraceContext {
            trace_parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            ..Default::default()
        };
        let history = [HistoryEvent::default(), started(Some(tc))];
        assert_eq!(
            trace_id_of(&history).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id_of(&[started(None)]), None);
        assert_eq!(trace_id_of(&[]), None);
    }
}
