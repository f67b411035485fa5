//! Weft's configuration file: Dapr's `Configuration` resource (`spec.workflow`, `spec.tracing`), parsed and
//! validated without I/O so every mistake is reported with its key and line before anything starts.
//!
//! **Owns:** [`parse`] → [`Parsed`] with its [`WorkflowConfig`] (concurrency limits, retention)
//! and `spec.tracing` ([`resolve_tracing`] adds the `OTEL_*` variables the caller passes in), Go
//! duration strings. **Never:** reads files or the environment (callers pass the text), or
//! accepts a key it does not know without saying so.

mod access;
mod duration;
mod tracing;

pub use access::{AccessPolicies, AccessPolicy, DENIED_ERROR_TYPE, Operation, Target, glob};
pub use duration::{format_go_duration, parse_go_duration};
pub use tracing::{
    OtelSection, OtlpProtocol, SamplingRate, TracingSection, TracingSettings, resolve_tracing,
};

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny};
use std::collections::HashSet;
use std::time::Duration;

/// A configuration file that cannot be used; the message names the key and, from the YAML
/// parser, the line and column.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A concurrency limit for every workflow or activity of one name, across the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NameLimit {
    #[serde(deserialize_with = "non_empty_name")]
    pub name: String,
    #[serde(deserialize_with = "max_concurrent")]
    pub max_concurrent: u32,
}

/// How long finished instances are kept before the background purge deletes them. `None` keeps
/// them forever; a status-specific value wins over `any_terminal`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetentionPolicy {
    #[serde(default, deserialize_with = "keep_any")]
    pub any_terminal: Option<Duration>,
    #[serde(default, deserialize_with = "keep_completed")]
    pub completed: Option<Duration>,
    #[serde(default, deserialize_with = "keep_failed")]
    pub failed: Option<Duration>,
    #[serde(default, deserialize_with = "keep_terminated")]
    pub terminated: Option<Duration>,
}

impl RetentionPolicy {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `spec.workflow` of a Dapr Configuration: every key Weft honours. Unset means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkflowConfig {
    /// Workflow turns in flight to this sidecar's workers at once.
    #[serde(default, deserialize_with = "max_wf")]
    pub max_concurrent_workflow_invocations: Option<u32>,
    /// Activity executions in flight to this sidecar's workers at once.
    #[serde(default, deserialize_with = "max_act")]
    pub max_concurrent_activity_invocations: Option<u32>,
    /// Workflow turns in flight across the whole cluster.
    #[serde(default, deserialize_with = "global_wf")]
    pub global_max_concurrent_workflow_invocations: Option<u32>,
    /// Activity executions in flight across the whole cluster.
    #[serde(default, deserialize_with = "global_act")]
    pub global_max_concurrent_activity_invocations: Option<u32>,
    /// Per workflow name, across the cluster (on top of the global limit).
    #[serde(default, deserialize_with = "workflow_limits")]
    pub workflow_concurrency_limits: Vec<NameLimit>,
    /// Per activity name, across the cluster (on top of the global limit).
    #[serde(default, deserialize_with = "activity_limits")]
    pub activity_concurrency_limits: Vec<NameLimit>,
    #[serde(default)]
    pub state_retention_policy: RetentionPolicy,
}

/// Sections of a Dapr Configuration's `spec` that Weft accepts (so one file serves both) and
/// ignores. Anything else under `spec` is refused as a likely typo.
pub const IGNORED_DAPR_SECTIONS: &[&str] = &[
    "accessControl",
    "api",
    "appHttpPipeline",
    "components",
    "features",
    "httpPipeline",
    "logging",
    "metric",
    "metrics",
    "mtls",
    "nameResolution",
    "secrets",
    "wasm",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    api_version: String,
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<IgnoredAny>,
    #[serde(default)]
    spec: Option<Spec>,
}

/// `spec`: `workflow` and `tracing` are read; the other Dapr sections are accepted and ignored (listed in
/// [`IGNORED_DAPR_SECTIONS`]); anything else is refused with its line. Explicit fields rather
/// than `#[serde(flatten)]`, which would buffer the input and lose the line numbers.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    workflow: Option<WorkflowConfig>,
    #[serde(default)]
    access_control: Option<IgnoredAny>,
    #[serde(default)]
    api: Option<IgnoredAny>,
    #[serde(default)]
    app_http_pipeline: Option<IgnoredAny>,
    #[serde(default)]
    components: Option<IgnoredAny>,
    #[serde(default)]
    features: Option<IgnoredAny>,
    #[serde(default)]
    http_pipeline: Option<IgnoredAny>,
    #[serde(default)]
    logging: Option<IgnoredAny>,
    #[serde(default)]
    metric: Option<IgnoredAny>,
    #[serde(default)]
    metrics: Option<IgnoredAny>,
    #[serde(default)]
    mtls: Option<IgnoredAny>,
    #[serde(default)]
    name_resolution: Option<IgnoredAny>,
    #[serde(default)]
    secrets: Option<IgnoredAny>,
    #[serde(default)]
    tracing: Option<TracingSection>,
    #[serde(default)]
    wasm: Option<IgnoredAny>,
}

impl Spec {
    fn present_ignored(&self) -> Vec<String> {
        let all = [
            ("accessControl", self.access_control.is_some()),
            ("api", self.api.is_some()),
            ("appHttpPipeline", self.app_http_pipeline.is_some()),
            ("components", self.components.is_some()),
            ("features", self.features.is_some()),
            ("httpPipeline", self.http_pipeline.is_some()),
            ("logging", self.logging.is_some()),
            ("metric", self.metric.is_some()),
            ("metrics", self.metrics.is_some()),
            ("mtls", self.mtls.is_some()),
            ("nameResolution", self.name_resolution.is_some()),
            ("secrets", self.secrets.is_some()),
            ("wasm", self.wasm.is_some()),
        ];
        let mut v: Vec<String> = all
            .iter()
            .filter(|(_, p)| *p)
            .map(|(n, _)| n.to_string())
            .collect();
        v.extend(self.tracing.iter().flat_map(TracingSection::ignored_keys));
        v
    }
}

/// A parsed file: the workflow and tracing settings plus the Dapr sections that were present
/// and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub workflow: WorkflowConfig,
    /// `spec.tracing` as written; [`resolve_tracing`] lays the `OTEL_*` variables over it.
    pub tracing: Option<TracingSection>,
    pub ignored_sections: Vec<String>,
    /// `kind: WorkflowAccessPolicy` documents of the same file (multi-app workflows).
    pub access: AccessPolicies,
}

/// Parses and validates the text of a configuration file: a Dapr Configuration, optionally
/// followed (or preceded) by `WorkflowAccessPolicy` documents separated by `---` lines. `source`
/// (the file name) prefixes every error so the operator sees which file, which key and which line.
pub fn parse(text: &str, source: &str) -> Result<Parsed, ConfigError> {
    let docs = split_documents(text);
    if docs.len() <= 1 {
        return parse_configuration(text, source);
    }
    let mut parsed: Option<Parsed> = None;
    let mut access = AccessPolicies::default();
    for (first_line, doc) in docs {
        let src = format!("{source} (document at line {first_line})");
        if document_kind(doc).as_deref() == Some("WorkflowAccessPolicy") {
            access.push(access::parse_policy(doc, &src)?);
        } else if parsed.is_some() {
            return Err(ConfigError(format!(
                "{src}: a second Configuration document; a file holds one Configuration and any number of WorkflowAccessPolicy documents"
            )));
        } else {
            parsed = Some(parse_configuration(doc, &src)?);
        }
    }
    let mut parsed = parsed.unwrap_or_default();
    parsed.access = access;
    Ok(parsed)
}

/// The non-empty YAML documents of `text` (split on `---` lines) with their first line number.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut start, mut start_line, mut offset) = (0usize, 1usize, 0usize);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_end() == "---" {
            out.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    out.push((start_line, &text[start..]));
    out.retain(|(_, d)| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    out
}

/// A document's top-level `kind:` value, read without parsing the rest.
fn document_kind(doc: &str) -> Option<String> {
    doc.lines()
        .find_map(|l| l.strip_prefix("kind:"))
        .map(|k| k.trim().trim_matches(['"', '\'']).to_string())
}

fn parse_configuration(text: &str, source: &str) -> Result<Parsed, ConfigError> {
    if document_kind(text).as_deref() == Some("WorkflowAccessPolicy") {
        let mut access = AccessPolicies::default();
        access.push(access::parse_policy(text, source)?);
        return Ok(Parsed {
            access,
            ..Parsed::default()
        });
    }
    if text.trim().is_empty() {
        return Err(ConfigError(format!(
            "{source}: the file is empty; expected a Dapr Configuration \
             (apiVersion: dapr.io/v1alpha1, kind: Configuration)"
        )));
    }
    let file: File = serde_norway::from_str(text).map_err(|e| yaml_error(text, source, &e))?;
    check_top_level(
        text,
        source,
        "apiVersion",
        &file.api_version,
        "dapr.io/v1alpha1",
    )?;
    check_top_level(text, source, "kind", &file.kind, "Configuration")?;
    let spec = file.spec.unwrap_or_default();
    let ignored_sections = spec.present_ignored();
    Ok(Parsed {
        workflow: spec.workflow.unwrap_or_default(),
        tracing: spec.tracing,
        ignored_sections,
        access: AccessPolicies::default(),
    })
}

/// Parses a limit given outside the file (a flag or environment variable).
pub fn parse_limit(text: &str) -> Result<u32, String> {
    let n: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a whole number"))?;
    check_limit(n)
}

fn check_limit(n: i64) -> Result<u32, String> {
    if n < 1 {
        return Err(format!(
            "{n} is not a valid limit: it must be at least 1 (leave the key out for no limit)"
        ));
    }
    u32::try_from(n).map_err(|_| format!("{n} is too large for a limit"))
}

/// A scalar as written, so a value of the wrong type is reported with its key (serde's own
/// type errors would name only the enclosing map).
fn value<'de, D: Deserializer<'de>>(d: D) -> Result<serde_norway::Value, D::Error> {
    serde_norway::Value::deserialize(d)
}

fn describe(v: &serde_norway::Value) -> String {
    serde_norway::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "this value".into())
}

fn limit_value<E: de::Error>(key: &str, v: serde_norway::Value) -> Result<u32, E> {
    match v.as_i64() {
        Some(n) => check_limit(n).map_err(|m| E::custom(format!("{key}: {m}"))),
        None => Err(E::custom(format!(
            "{key}: expected a whole number, got {}",
            describe(&v)
        ))),
    }
}

fn duration_value<E: de::Error>(key: &str, v: serde_norway::Value) -> Result<Duration, E> {
    match v.as_str() {
        Some(s) => parse_go_duration(s).map_err(|m| E::custom(format!("{key}: {m}"))),
        None => Err(E::custom(format!(
            "{key}: expected a duration such as 30s, 1h30m or 24h, got {}",
            describe(&v)
        ))),
    }
}

/// One `deserialize_with` function per key, so every message names its key.
macro_rules! keyed {
    (limit $f:ident $key:literal) => {
        fn $f<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
            limit_value($key, value(d)?)
        }
    };
    (opt_limit $f:ident $key:literal) => {
        fn $f<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
            match value(d)? {
                serde_norway::Value::Null => Ok(None),
                v => limit_value($key, v).map(Some),
            }
        }
    };
    (opt_duration $f:ident $key:literal) => {
        fn $f<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            match value(d)? {
                serde_norway::Value::Null => Ok(None),
                v => duration_value($key, v).map(Some),
            }
        }
    };
}

keyed!(limit max_concurrent "maxConcurrent");
keyed!(opt_limit max_wf "maxConcurrentWorkflowInvocations");
keyed!(opt_limit max_act "maxConcurrentActivityInvocations");
keyed!(opt_limit global_wf "globalMaxConcurrentWorkflowInvocations");
keyed!(opt_limit global_act "globalMaxConcurrentActivityInvocations");
keyed!(opt_duration keep_any "anyTerminal");
keyed!(opt_duration keep_completed "completed");
keyed!(opt_duration keep_failed "failed");
keyed!(opt_duration keep_terminated "terminated");

fn non_empty_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Err(de::Error::custom("name: must not be empty"));
    }
    Ok(s)
}

fn name_limits<'de, D: Deserializer<'de>>(key: &str, d: D) -> Result<Vec<NameLimit>, D::Error> {
    let list = Option::<Vec<NameLimit>>::deserialize(d)?.unwrap_or_default();
    let mut seen = HashSet::new();
    for l in &list {
        if !seen.insert(l.name.as_str()) {
            return Err(de::Error::custom(format!(
                "{key}: name '{}' is listed twice",
                l.name
            )));
        }
    }
    Ok(list)
}

fn workflow_limits<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NameLimit>, D::Error> {
    name_limits("workflowConcurrencyLimits", d)
}

fn activity_limits<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NameLimit>, D::Error> {
    name_limits("activityConcurrencyLimits", d)
}

/// Keys whose values we check ourselves; their messages start with `"{key}: "`.
const CHECKED_KEYS: &[&str] = &[
    "maxConcurrent",
    "maxConcurrentWorkflowInvocations",
    "maxConcurrentActivityInvocations",
    "globalMaxConcurrentWorkflowInvocations",
    "globalMaxConcurrentActivityInvocations",
    "anyTerminal",
    "completed",
    "failed",
    "terminated",
    "name",
    "samplingRate",
    "endpointAddress",
    "isSecure",
    "protocol",
];

/// The parser's message with the line of the offending key. For a value our own checks refuse,
/// the parser reports where the enclosing mapping starts; the key itself is the first line at
/// or after that one that starts with it.
fn yaml_error(text: &str, source: &str, e: &serde_norway::Error) -> ConfigError {
    let msg = e.to_string();
    let Some(loc) = e.location() else {
        return ConfigError(format!("{source}: {msg}"));
    };
    let suffix = format!(" at line {} column {}", loc.line(), loc.column());
    let body = msg.strip_suffix(&suffix).unwrap_or(&msg);
    let key = CHECKED_KEYS
        .iter()
        .find(|k| body.starts_with(&format!("{k}: ")) || body.contains(&format!(": {k}: ")));
    let line = key
        .and_then(|k| {
            let want = format!("{k}:");
            text.lines()
                .enumerate()
                .skip(loc.line().saturating_sub(1))
                .find(|(_, l)| {
                    let t = l.trim_start();
                    t.strip_prefix("- ")
                        .unwrap_or(t)
                        .trim_start()
                        .starts_with(&want)
                })
                .map(|(i, _)| i + 1)
        })
        .unwrap_or(loc.line());
    ConfigError(format!("{source}: {body} at line {line}"))
}

/// The 1-based line of a top-level key (they start at column 0), for errors found after parsing.
fn top_level_line(text: &str, key: &str) -> Option<usize> {
    let prefix = format!("{key}:");
    text.lines()
        .position(|l| l.starts_with(&prefix))
        .map(|i| i + 1)
}

fn check_top_level(
    text: &str,
    source: &str,
    key: &str,
    got: &str,
    want: &str,
) -> Result<(), ConfigError> {
    if got == want {
        return Ok(());
    }
    let at = top_level_line(text, key)
        .map(|l| format!(" at line {l}"))
        .unwrap_or_default();
    Err(ConfigError(format!(
        "{source}: {key}: '{got}' is not supported; expected {want}{at}"
    )))
}

#[cfg(test)]
mod tests;
