//! `weft workflow …`: manage workflow instances through a sidecar's HTTP API.
//!
//! The commands talk to Dapr's workflow HTTP API (protocol.md §5), so they work against any
//! sidecar that serves it, plus Weft's `/weft/v1/instances` extensions for `list` and `history`.
//! Users script against this surface (docs/cli.md), so names, flags, env vars, output and exit
//! codes are a contract:
//!
//! * exit 0: success;
//! * exit 1: the sidecar rejected the request or answered something unexpected;
//! * exit 2: invalid usage or input; nothing was sent;
//! * exit 3: the sidecar could not be reached.
//!
//! Inputs are validated here, before any request, so a typo never reaches the server half-done.

mod client;
mod render;

use clap::{Args, Subcommand, ValueEnum};
use client::{Api, ApiError};
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code when the sidecar answered with an error (or garbage).
pub const EXIT_SERVER_ERROR: u8 = 1;
/// Exit code for invalid arguments or input; clap uses the same code for its own errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when no answer came back (refused, timed out, unresolvable).
pub const EXIT_UNREACHABLE: u8 = 3;

/// Largest page `list` asks for at once. Big enough to keep round trips low, small enough that
/// one answer stays a modest JSON document.
const MAX_PAGE_SIZE: u32 = 100;

/// Dapr's instance-ID rule: at most 64 letters, digits, `_` or `-`.
const MAX_INSTANCE_ID_LEN: usize = 64;

#[derive(Args, Debug)]
pub struct WorkflowArgs {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: WorkflowCommand,
}

// Options every `weft workflow` command takes, before or after the subcommand name. (A plain
// comment: a doc comment here would replace the command's own `about` text in --help.)
#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// Base URL of the sidecar's HTTP API (`host:port` means http://host:port).
    #[arg(
        long,
        global = true,
        env = "WEFT_ENDPOINT",
        default_value = "http://127.0.0.1:3500",
        value_name = "URL"
    )]
    pub endpoint: String,

    /// Output format: readable text, or the server's JSON for scripts.
    #[arg(long, global = true, env = "WEFT_OUTPUT", value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,

    /// API token sent as the `dapr-api-token` header; falls back to $DAPR_API_TOKEN.
    #[arg(
        long,
        global = true,
        env = "WEFT_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub api_token: Option<String>,

    /// Give up on a request after this many seconds.
    #[arg(
        long,
        global = true,
        env = "WEFT_TIMEOUT",
        default_value = "30",
        value_name = "SECONDS",
        value_parser = parse_timeout
    )]
    pub timeout: Duration,

    /// The app the instance belongs to (for `start`: the app to start it in), when it is not the
    /// app of the sidecar at `--endpoint`: sent as `appID` (docs/multi-app.md).
    #[arg(long, global = true, env = "WEFT_APP_ID", value_name = "APP_ID")]
    pub app_id: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum WorkflowCommand {
    /// Start a new instance of the workflow NAME.
    Start {
        /// Registered name of the workflow.
        #[arg(value_parser = parse_non_empty)]
        name: String,
        /// Instance ID to use (≤ 64 letters, digits, `_`, `-`); the sidecar picks one if absent.
        #[arg(long, env = "WEFT_ID", value_parser = parse_instance_id)]
        id: Option<String>,
        /// Workflow input as JSON text, sent verbatim (e.g. '{"order": 42}' or '"hi"').
        #[arg(long, env = "WEFT_INPUT", value_name = "JSON", value_parser = parse_json)]
        input: Option<String>,
    },
    /// Show one instance: status, timestamps, input, output, custom status, failure.
    Get {
        #[arg(value_parser = parse_non_empty)]
        id: String,
    },
    /// List instances, following pages until all (or --limit) are shown.
    List {
        /// Only instances with this status (RUNNING, COMPLETED, CONTINUED_AS_NEW, FAILED,
        /// CANCELED, TERMINATED, PENDING, SUSPENDED, STALLED; any case).
        #[arg(long, env = "WEFT_STATUS", value_parser = parse_status)]
        status: Option<String>,
        /// Show at most this many instances.
        #[arg(long, env = "WEFT_LIMIT", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Show the history events of one instance.
    History {
        #[arg(value_parser = parse_non_empty)]
        id: String,
    },
    /// Raise the external event EVENT on an instance.
    Raise {
        #[arg(value_parser = parse_non_empty)]
        id: String,
        #[arg(value_parser = parse_non_empty)]
        event: String,
        /// Event payload as JSON text, sent verbatim.
        #[arg(long, env = "WEFT_DATA", value_name = "JSON", value_parser = parse_json)]
        data: Option<String>,
    },
    /// Suspend (pause) a running instance.
    Suspend {
        #[arg(value_parser = parse_non_empty)]
        id: String,
        /// Why; passed as the `reason` query parameter (Dapr's pause API has no reason field).
        #[arg(long, env = "WEFT_REASON")]
        reason: Option<String>,
    },
    /// Resume a suspended instance.
    Resume {
        #[arg(value_parser = parse_non_empty)]
        id: String,
        /// Why; passed as the `reason` query parameter (Dapr's resume API has no reason field).
        #[arg(long, env = "WEFT_REASON")]
        reason: Option<String>,
    },
    /// Terminate an instance and, recursively, its child workflows.
    Terminate {
        #[arg(value_parser = parse_non_empty)]
        id: String,
    },
    /// Delete a finished instance (and its children) with all its history; or, with filter
    /// flags instead of an ID, every finished instance that matches (running ones are never
    /// touched).
    Purge {
        #[arg(value_parser = parse_non_empty, required_unless_present_any = ["created_before", "created_after", "status"])]
        id: Option<String>,
        /// Only instances created at or before this RFC 3339 time (e.g. 2026-01-31T00:00:00Z).
        #[arg(
            long,
            env = "WEFT_CREATED_BEFORE",
            value_name = "TIME",
            conflicts_with = "id"
        )]
        created_before: Option<String>,
        /// Only instances created at or after this RFC 3339 time.
        #[arg(
            long,
            env = "WEFT_CREATED_AFTER",
            value_name = "TIME",
            conflicts_with = "id"
        )]
        created_after: Option<String>,
        /// Only these finished statuses (COMPLETED, FAILED, TERMINATED, CANCELED; repeat or
        /// comma-separate); default: all of them. Not used with an ID.
        #[arg(
            long,
            env = "WEFT_STATUS",
            value_name = "STATUS",
            value_delimiter = ','
        )]
        status: Vec<String>,
    },
}

/// A finished status for `purge --status`, upper-cased.
fn parse_finished_status(s: &str) -> Result<String, String> {
    let up = s.trim().to_ascii_uppercase();
    match up.as_str() {
        "COMPLETED" | "FAILED" | "TERMINATED" | "CANCELED" => Ok(up),
        _ => Err(format!(
            "'{s}' is not a finished status (COMPLETED, FAILED, TERMINATED, CANCELED); only finished instances are purged"
        )),
    }
}

/// Anything that ends a command early, classified by exit code.
#[derive(Debug)]
enum Failure {
    Usage(String),
    Api(ApiError),
    Other(anyhow::Error),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Api(ApiError::Unreachable { .. }) => EXIT_UNREACHABLE,
            Failure::Api(_) | Failure::Other(_) => EXIT_SERVER_ERROR,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(m) => f.write_str(m),
            Failure::Api(e) => e.fmt(f),
            Failure::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

pub async fn run(args: WorkflowArgs) -> anyhow::Result<ExitCode> {
    match execute(args).await {
        Ok(text) => {
            write_stdout(&text);
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            eprintln!("error: {failure}");
            Ok(ExitCode::from(failure.exit_code()))
        }
    }
}

/// Writes the result, tolerating a closed pipe (`weft workflow list | head`): the reader went
/// away on purpose, which is no reason to panic.
fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Runs one command and returns what to print on stdout.
async fn execute(args: WorkflowArgs) -> Result<String, Failure> {
    let WorkflowArgs { global, command } = args;
    let base = client::parse_endpoint(&global.endpoint).map_err(Failure::Usage)?;
    let token = global
        .api_token
        .or_else(|| std::env::var("DAPR_API_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let api = Api::new(base, token, global.timeout)
        .map_err(Failure::Other)?
        .for_app(global.app_id.filter(|a| !a.is_empty()));
    let human = global.output == OutputFormat::Human;
    let render = |v: &Value, human_text: String| {
        if human { human_text } else { render::json(v) }
    };

    Ok(match command {
        WorkflowCommand::Start { name, id, input } => {
            let v = api.start(&name, id.as_deref(), input.as_deref()).await?;
            let started = v.get("instanceID").and_then(Value::as_str).ok_or_else(|| {
                Failure::Api(ApiError::Protocol(format!(
                    "start answered without an instanceID: {v}"
                )))
            })?;
            render(
                &v,
                format!("Started workflow {name} as instance {started}\n"),
            )
        }
        WorkflowCommand::Get { id } => {
            let mut v = api.get(&id).await?;
            if v.get("runtimeStatus").and_then(Value::as_str) == Some("RUNNING") {
                // What the instance waits for in other apps (multi-app workflows).
                if let Ok(h) = api.history(&id).await {
                    let waiting = render::waiting_on(&h);
                    if !waiting.is_empty()
                        && let Some(o) = v.as_object_mut()
                    {
                        o.insert("waitingOn".into(), Value::Array(waiting));
                    }
                }
            }
            render(&v, render::instance(&v))
        }
        WorkflowCommand::List { status, limit } => {
            let page = list_all(&api, status.as_deref(), limit).await?;
            render(&page, render::instance_table(instances_of(&page)))
        }
        WorkflowCommand::History { id } => {
            let v = api.history(&id).await?;
            render(&v, render::history_table(&v))
        }
        WorkflowCommand::Raise { id, event, data } => {
            let v = api.raise(&id, &event, data.as_deref()).await?;
            render(&v, format!("Raised event {event} on instance {id}\n"))
        }
        WorkflowCommand::Suspend { id, reason } => {
            let v = api.operate(&id, "pause", &reason_query(&reason)).await?;
            render(&v, format!("Suspend requested for instance {id}\n"))
        }
        WorkflowCommand::Resume { id, reason } => {
            let v = api.operate(&id, "resume", &reason_query(&reason)).await?;
            render(&v, format!("Resume requested for instance {id}\n"))
        }
        WorkflowCommand::Terminate { id } => {
            let v = api.operate(&id, "terminate", &[]).await?;
            render(&v, format!("Termination requested for instance {id}\n"))
        }
        WorkflowCommand::Purge { id: Some(id), .. } => {
            let v = api.operate(&id, "purge", &[]).await?;
            render(&v, format!("Purged instance {id}\n"))
        }
        WorkflowCommand::Purge {
            id: None,
            created_before,
            created_after,
            status,
        } => {
            let status = status
                .iter()
                .map(|s| parse_finished_status(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Failure::Usage)?
                .join(",");
            let mut query = Vec::new();
            if let Some(t) = &created_after {
                query.push(("createdFrom", t.as_str()));
            }
            if let Some(t) = &created_before {
                query.push(("createdTo", t.as_str()));
            }
            if !status.is_empty() {
                query.push(("status", status.as_str()));
            }
            let v = api.purge_by_filter(&query).await?;
            let n = v
                .get("deletedInstanceCount")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            render(&v, format!("Purged {n} finished instance(s)\n"))
        }
    })
}

fn reason_query(reason: &Option<String>) -> Vec<(&'static str, &str)> {
    reason
        .as_deref()
        .map(|r| ("reason", r))
        .into_iter()
        .collect()
}

fn instances_of(page: &Value) -> &[Value] {
    page.get("instances")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Follows `next` until the last page or until `limit` instances are collected. The result has
/// the server's page shape: `{"instances": [...]}`, plus `"next"` when `limit` cut the listing
/// short and more instances exist, so a script can continue from there.
async fn list_all(api: &Api, status: Option<&str>, limit: Option<u32>) -> Result<Value, Failure> {
    let mut all: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let remaining = limit.map_or(u32::MAX, |l| l - all.len() as u32);
        let page = api
            .list_page(status, remaining.min(MAX_PAGE_SIZE), after.as_deref())
            .await?;
        let Some(instances) = page.get("instances").and_then(Value::as_array) else {
            return Err(ApiError::Protocol(format!(
                "list answered without an instances array: {page}"
            ))
            .into());
        };
        // Never return more than asked, even if the server ignores `limit`; the listing then
        // continues after the last instance kept, not after the server's page.
        if instances.len() > remaining as usize {
            all.extend(instances.iter().take(remaining as usize).cloned());
            let mut out = serde_json::json!({ "instances": all });
            if let Some(last) = all.last().and_then(|i| i.get("instanceID")).cloned() {
                out["next"] = last;
            }
            return Ok(out);
        }
        all.extend(instances.iter().cloned());
        let next = page
            .get("next")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let Some(next) = next else {
            break;
        };
        if limit.is_some_and(|l| all.len() as u32 >= l) {
            return Ok(serde_json::json!({ "instances": all, "next": next }));
        }
        // A cursor that does not move would loop forever.
        if after.as_deref() == Some(next.as_str()) {
            return Err(ApiError::Protocol(format!(
                "list returned the same next cursor {next:?} twice"
            ))
            .into());
        }
        after = Some(next);
    }
    Ok(serde_json::json!({ "instances": all }))
}

fn parse_non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_string())
    }
}

/// Checked here with Dapr's rule so that a bad ID fails before anything is sent. Only `start`
/// checks it: instances created over gRPC may carry IDs outside the rule and must stay reachable.
fn parse_instance_id(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.chars().count() > MAX_INSTANCE_ID_LEN {
        return Err(format!("is longer than {MAX_INSTANCE_ID_LEN} characters"));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "contains {bad:?}; only letters, digits, '_' and '-' are allowed"
        ));
    }
    Ok(s.to_string())
}

/// Payloads go over the wire verbatim (the exact text the user typed), but must be JSON because
/// the SDKs `JSON.parse`/`json.loads` them inside the workflow, where a typo would only surface as
/// a failed instance.
fn parse_json(s: &str) -> Result<String, String> {
    serde_json::from_str::<serde::de::IgnoredAny>(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("not valid JSON ({e}); quote strings, e.g. '\"text\"'"))
}

fn parse_status(s: &str) -> Result<String, String> {
    weft_core::RuntimeStatus::parse(s.trim())
        .map(|st| st.as_str().to_string())
        .ok_or_else(|| {
            let names: Vec<&str> = weft_core::RuntimeStatus::ALL
                .iter()
                .map(|st| st.as_str())
                .collect();
            format!("unknown status; expected one of {}", names.join(", "))
        })
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| "must be a number of seconds".to_string())?;
    if !secs.is_finite() || secs <= 0.0 || secs > 24.0 * 3600.0 {
        return Err("must be more than 0 and at most 86400 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests;
