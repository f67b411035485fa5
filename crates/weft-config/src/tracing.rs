//! `spec.tracing` of a Dapr Configuration (sampling rate, OTLP collector) and the standard
//! `OTEL_*` variables laid over it; the caller passes the environment in, nothing is read here.

use super::{describe, value};
use serde::Deserialize;
use serde::de::{self, Deserializer};

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    #[default]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (`http/protobuf`).
    Http,
}

/// A sampling probability in `[0, 1]` (validated, so never NaN).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct SamplingRate(f64);

impl Eq for SamplingRate {}

impl SamplingRate {
    pub const ALWAYS: SamplingRate = SamplingRate(1.0);

    /// Parses Dapr's `samplingRate` string ("1", "0.25"; "0" switches tracing off).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let v: f64 = t.parse().map_err(|_| {
            format!("'{text}' is not a number between 0 and 1 (e.g. \"1\" or \"0.1\")")
        })?;
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("{v} is out of range: it must be between 0 and 1"));
        }
        Ok(SamplingRate(v))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// `spec.tracing.otel`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OtelSection {
    #[serde(default, deserialize_with = "endpoint")]
    pub endpoint_address: Option<String>,
    #[serde(default, deserialize_with = "is_secure")]
    pub is_secure: Option<bool>,
    #[serde(default, deserialize_with = "protocol")]
    pub protocol: Option<OtlpProtocol>,
}

/// `spec.tracing`. `stdout` and `zipkin` are Dapr exporters Weft does not have: accepted (so
/// one file serves both) and reported as ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingSection {
    #[serde(default, deserialize_with = "sampling_rate")]
    pub sampling_rate: Option<SamplingRate>,
    #[serde(default)]
    pub otel: Option<OtelSection>,
    #[serde(default)]
    stdout: Option<serde_norway::Value>,
    #[serde(default)]
    zipkin: Option<serde_norway::Value>,
}

impl TracingSection {
    /// The Dapr exporters present in the file that Weft does not use.
    pub fn ignored_keys(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.stdout.is_some() {
            v.push("tracing.stdout".to_string());
        }
        if self.zipkin.is_some() {
            v.push("tracing.zipkin".to_string());
        }
        v
    }
}

/// Where and how to export spans: the file's `spec.tracing` with the `OTEL_*` variables over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingSettings {
    /// The collector's URL (scheme included; for HTTP the full `/v1/traces` path).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub sampling_rate: SamplingRate,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

/// Resolves the settings; `None` means tracing is off (no collector named, or a sampling rate
/// of 0). `env` looks up one variable (`|k| std::env::var(k).ok()` in the binary).
pub fn resolve_tracing(
    file: Option<&TracingSection>,
    env: impl Fn(&str) -> Option<String>,
    default_service: &str,
) -> Result<Option<TracingSettings>, String> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let otel = file.and_then(|f| f.otel.clone()).unwrap_or_default();
    let protocol = match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
    {
        Some(p) => parse_protocol(&p).map_err(|m| format!("OTEL_EXPORTER_OTLP_PROTOCOL: {m}"))?,
        None => otel.protocol.unwrap_or_default(),
    };
    let insecure = match env("OTEL_EXPORTER_OTLP_INSECURE") {
        Some(v) => Some(parse_bool(&v).map_err(|m| format!("OTEL_EXPORTER_OTLP_INSECURE: {m}"))?),
        None => otel.is_secure.map(|s| !s),
    };
    // The signal-specific variable is the full URL; the general one is a base that gets the
    // signal's path appended for HTTP (as the OTLP exporter specification says).
    let endpoint = if let Some(e) = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Some(endpoint_url(&e, protocol, insecure, false))
    } else if let Some(e) = env("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Some(endpoint_url(&e, protocol, insecure, true))
    } else {
        otel.endpoint_address
            .as_deref()
            .map(|e| endpoint_url(e, protocol, insecure, true))
    };
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let sampling_rate = match env("OTEL_TRACES_SAMPLER_ARG") {
        Some(v) => SamplingRate::parse(&v).map_err(|m| format!("OTEL_TRACES_SAMPLER_ARG: {m}"))?,
        None => file
            .and_then(|f| f.sampling_rate)
            .unwrap_or(SamplingRate::ALWAYS),
    };
    if sampling_rate.get() == 0.0 {
        return Ok(None);
    }
    Ok(Some(TracingSettings {
        endpoint,
        protocol,
        sampling_rate,
        service_name: env("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_string()),
    }))
}

/// Dapr's `endpointAddress` is `host:port` without a scheme; `isSecure` picks it (plain HTTP/2
/// unless secure). A URL with a scheme is taken as written.
fn endpoint_url(
    addr: &str,
    protocol: OtlpProtocol,
    insecure: Option<bool>,
    append_path: bool,
) -> String {
    let addr = addr.trim().trim_end_matches('/');
    let mut url = if addr.contains("://") {
        addr.to_string()
    } else if insecure == Some(false) {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    if protocol == OtlpProtocol::Http && append_path && !url.ends_with("/v1/traces") {
        url.push_str("/v1/traces");
    }
    url
}

fn parse_protocol(text: &str) -> Result<OtlpProtocol, String> {
    match text.trim() {
        "grpc" => Ok(OtlpProtocol::Grpc),
        "http" | "http/protobuf" => Ok(OtlpProtocol::Http),
        other => Err(format!(
            "'{other}' is not supported: use grpc or http (http/protobuf)"
        )),
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("'{other}' is not true or false")),
    }
}

fn sampling_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SamplingRate>, D::Error> {
    let v = value(d)?;
    let text = match &v {
        serde_norway::Value::Null => return Ok(None),
        serde_norway::Value::String(s) => s.clone(),
        serde_norway::Value::Number(n) => n.to_string(),
        other => {
            return Err(de::Error::custom(format!(
                "samplingRate: expected a number between 0 and 1 such as \"1\", got {}",
                describe(other)
            )));
        }
    };
    SamplingRate::parse(&text)
        .map(Some)
        .map_err(|m| de::Error::custom(format!("samplingRate: {m}")))
}

fn endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match value(d)? {
        serde_norway::Value::Null => Ok(None),
        serde_norway::Value::String(s) if !s.trim().is_empty() => Ok(Some(s)),
        other => Err(de::Error::custom(format!(
            "endpointAddress: expected host:port of an OTLP collector such as \
             localhost:4317, got {}",
            describe(&other)
        ))),
    }
}

fn is_secure<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match value(d)? {
        serde_norway::Value::Null => Ok(None),
        serde_norway::Value::Bool(b) => Ok(Some(b)),
        serde_norway::Value::String(s) => parse_bool(&s)
            .map(Some)
            .map_err(|m| de::Error::custom(format!("isSecure: {m}"))),
        other => Err(de::Error::custom(format!(
            "isSecure: expected true or false, got {}",
            describe(&other)
        ))),
    }
}

fn protocol<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OtlpProtocol>, D::Error> {
    match value(d)? {
        serde_norway::Value::Null => Ok(None),
        serde_norway::Value::String(s) => parse_protocol(&s)
            .map(Some)
            .map_err(|m| de::Error::custom(format!("protocol: {m}"))),
        other => Err(de::Error::custom(format!(
            "protocol: expected grpc or http, got {}",
            describe(&other)
        ))),
    }
}
