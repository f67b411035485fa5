//! Flags shared by the roles that run the engine (`dev`, `sidecar`), and running it until a signal.

use anyhow::Context;
use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weft_config::{TracingSettings, WorkflowConfig};
use weft_sidecar::cluster::ClusterConfig;
use weft_sidecar::engine::{DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_WORK_ITEM};
use weft_sidecar::{EngineConfig, SidecarConfig};
use weft_store::{PgStore, Store, redact_url};

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Port of the durabletask gRPC API (0 picks a free port).
    #[arg(long, env = "WEFT_GRPC_PORT", default_value_t = 50001)]
    pub grpc_port: u16,
    /// Port of the Dapr HTTP API (0 picks a free port).
    #[arg(long, env = "WEFT_HTTP_PORT", default_value_t = 3500)]
    pub http_port: u16,
    /// Port of the internal sidecar-to-sidecar gRPC API (0 picks a free port).
    #[arg(long, env = "WEFT_INTERNAL_PORT", default_value_t = 50002)]
    pub internal_port: u16,
    /// Address every port listens on.
    #[arg(long, env = "WEFT_LISTEN_ADDRESS", default_value = "127.0.0.1")]
    pub listen_address: IpAddr,
    /// Host other sidecars reach this one's internal port on (default: the listen address;
    /// loopback when that is 0.0.0.0).
    #[arg(long, env = "WEFT_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,
    /// On SIGTERM, how long to wait for workers to answer what they hold before leaving
    /// (e.g. 20s, 500ms, 1m).
    #[arg(long, env = "WEFT_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// How long a workflow actor with nothing to do stays in memory before it is dropped
    /// (its instance lives on in the store and is loaded again on its next event).
    #[arg(long, env = "WEFT_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_idle_timeout)]
    pub idle_timeout: Duration,
    /// Fold an activity's result into the turn it wakes: one commit per step. The worker's
    /// `CompleteActivityTask` is answered once that turn committed (or, past `--fold-wait`, once
    /// the result was recorded on its own), so a result the worker was told is recorded is
    /// never lost. One result per turn: others arriving together (a fan-out's join) are recorded
    /// on their own. Off, every result is first recorded on its own (two commits per step).
    #[arg(long, env = "WEFT_FOLD_ACTIVITY_RESULTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub fold_activity_results: bool,
    /// How long a worker's activity completion waits for the turn that folds its result before
    /// the result is recorded on its own and folding pauses for 5 s (a worker whose activities
    /// and turns share one thread pool cannot run that turn while it waits).
    #[arg(long, env = "WEFT_FOLD_WAIT", default_value = "250ms", value_parser = parse_duration)]
    pub fold_wait: Duration,
    /// App ID recorded as the source of workflows started here.
    #[arg(long, env = "WEFT_APP_ID", default_value = "weft-dev")]
    pub app_id: String,
    /// When set, every API call must carry this value in the `dapr-api-token` header.
    #[arg(long, env = "DAPR_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Largest accepted payload (input, output, event data, result) in bytes.
    #[arg(long, env = "WEFT_MAX_PAYLOAD_BYTES", default_value_t = DEFAULT_MAX_PAYLOAD)]
    pub max_payload_bytes: usize,
    /// Largest work item sent to a worker (the SDKs' gRPC receive limit); a workflow whose next
    /// turn is larger stalls with PAYLOAD_SIZE_EXCEEDED.
    #[arg(long, env = "WEFT_MAX_WORK_ITEM_BYTES", default_value_t = DEFAULT_MAX_WORK_ITEM)]
    pub max_work_item_bytes: usize,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// The Dapr Configuration file and the flags that override its `spec.workflow` keys.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// Dapr Configuration YAML (kind: Configuration); Weft reads spec.workflow (concurrency
    /// limits, stateRetentionPolicy) and spec.tracing (OTLP export; the OTEL_* variables
    /// override it). Flags and environment variables below override it.
    #[arg(long = "config", env = "WEFT_CONFIG")]
    pub file: Option<PathBuf>,
    /// Workflow turns in flight to this sidecar's workers at once (unset: unlimited).
    #[arg(long, env = "WEFT_MAX_CONCURRENT_WORKFLOW_INVOCATIONS", value_parser = weft_config::parse_limit)]
    pub max_concurrent_workflow_invocations: Option<u32>,
    /// Activity executions in flight to this sidecar's workers at once (unset: unlimited).
    #[arg(long, env = "WEFT_MAX_CONCURRENT_ACTIVITY_INVOCATIONS", value_parser = weft_config::parse_limit)]
    pub max_concurrent_activity_invocations: Option<u32>,
    /// Workflow turns in flight across the cluster (unset: unlimited).
    #[arg(long, env = "WEFT_GLOBAL_MAX_CONCURRENT_WORKFLOW_INVOCATIONS", value_parser = weft_config::parse_limit)]
    pub global_max_concurrent_workflow_invocations: Option<u32>,
    /// Activity executions in flight across the cluster (unset: unlimited).
    #[arg(long, env = "WEFT_GLOBAL_MAX_CONCURRENT_ACTIVITY_INVOCATIONS", value_parser = weft_config::parse_limit)]
    pub global_max_concurrent_activity_invocations: Option<u32>,
    /// Keep finished instances of any terminal status this long (Go duration, e.g. 24h).
    #[arg(long, env = "WEFT_RETENTION_ANY_TERMINAL", value_parser = weft_config::parse_go_duration)]
    pub retention_any_terminal: Option<Duration>,
    /// Keep completed instances this long.
    #[arg(long, env = "WEFT_RETENTION_COMPLETED", value_parser = weft_config::parse_go_duration)]
    pub retention_completed: Option<Duration>,
    /// Keep failed instances this long.
    #[arg(long, env = "WEFT_RETENTION_FAILED", value_parser = weft_config::parse_go_duration)]
    pub retention_failed: Option<Duration>,
    /// Keep terminated instances this long.
    #[arg(long, env = "WEFT_RETENTION_TERMINATED", value_parser = weft_config::parse_go_duration)]
    pub retention_terminated: Option<Duration>,
    /// How long a cluster-wide concurrency slot stays held without renewal (a dead sidecar's
    /// slots come back after this long).
    #[arg(long, env = "WEFT_SLOT_LEASE", default_value = "10s", value_parser = weft_config::parse_go_duration)]
    pub slot_lease: Duration,
    /// Length of a sidecar's ownership lease in the database (cluster roles): a sidecar that
    /// cannot renew it stops acting as owner after 3/4 of it, and its buckets move once it ran
    /// out (see docs/cluster.md, "Leases and fencing").
    #[arg(long, env = "WEFT_LEASE_TTL", default_value = "4s", value_parser = weft_config::parse_go_duration)]
    pub lease_ttl: Duration,
}

/// The settings a serving role starts with.
pub struct Loaded {
    pub workflow: WorkflowConfig,
    /// Where spans go; `None`: tracing is off.
    pub tracing: Option<TracingSettings>,
    /// `WorkflowAccessPolicy` documents of the file (docs/multi-app.md).
    pub access: weft_config::AccessPolicies,
}

impl ConfigArgs {
    /// The file (if any) with flags and environment variables applied over it. Errors name the
    /// file, the key and its line. `app_id` is the spans' default `service.name`.
    pub fn load(&self, app_id: &str) -> Result<Loaded, weft_config::ConfigError> {
        let (mut w, section, access) = match &self.file {
            None => (WorkflowConfig::default(), None, Default::default()),
            Some(path) => {
                let parsed = read_config(path)?;
                for section in &parsed.ignored_sections {
                    tracing::info!(file = %path.display(), section = %section, "ignoring a Dapr configuration section Weft does not use");
                }
                if !parsed.access.is_empty() {
                    tracing::info!(file = %path.display(), policies = parsed.access.len(), "workflow access policies loaded");
                }
                (parsed.workflow, parsed.tracing, parsed.access)
            }
        };
        let tracing =
            weft_config::resolve_tracing(section.as_ref(), |k| std::env::var(k).ok(), app_id)
                .map_err(weft_config::ConfigError)?;
        let over = |dst: &mut Option<u32>, src: Option<u32>| {
            if src.is_some() {
                *dst = src;
            }
        };
        over(
            &mut w.max_concurrent_workflow_invocations,
            self.max_concurrent_workflow_invocations,
        );
        over(
            &mut w.max_concurrent_activity_invocations,
            self.max_concurrent_activity_invocations,
        );
        over(
            &mut w.global_max_concurrent_workflow_invocations,
            self.global_max_concurrent_workflow_invocations,
        );
        over(
            &mut w.global_max_concurrent_activity_invocations,
            self.global_max_concurrent_activity_invocations,
        );
        let r = &mut w.state_retention_policy;
        for (dst, src) in [
            (&mut r.any_terminal, self.retention_any_terminal),
            (&mut r.completed, self.retention_completed),
            (&mut r.failed, self.retention_failed),
            (&mut r.terminated, self.retention_terminated),
        ] {
            if src.is_some() {
                *dst = src;
            }
        }
        Ok(Loaded {
            workflow: w,
            tracing,
            access,
        })
    }
}

/// Reads and parses one configuration file.
pub fn read_config(
    path: &std::path::Path,
) -> Result<weft_config::Parsed, weft_config::ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        weft_config::ConfigError(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
    })?;
    weft_config::parse(&text, &path.display().to_string())
}

/// Exit code of a refused configuration (as for any usage error).
pub const BAD_CONFIG: u8 = 2;

/// Parses `20s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 20s, 500ms, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s or m)")),
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// An idle timeout: a duration above zero (zero would drop every actor between its turns).
pub fn parse_idle_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err(format!("`{s}`: the idle timeout must be at least 10ms"));
    }
    Ok(d)
}

/// Opens the PostgreSQL store; the URL's password never reaches the logs.
pub async fn postgres(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let redacted = redact_url(url);
    tracing::info!(database = %redacted, "connecting to PostgreSQL");
    let store = PgStore::connect(url)
        .await
        .with_context(|| format!("opening the PostgreSQL store at {redacted}"))?;
    Ok(Arc::new(store))
}

/// TLS of a serving role (none for `weft dev`).
#[derive(Default)]
pub struct Security {
    pub tls: Option<Arc<weft_tls::TlsContext>>,
    pub public_tls: bool,
}

/// Joins placement at `placement`, serves until SIGINT/SIGTERM, printing
/// `<role> ready grpc=… http=… internal=…` (plus `extra`) on stdout once every port serves and
/// the first placement table arrived. The first signal drains and leaves in order; a second
/// one exits at once.
pub async fn run(
    role: &str,
    store: Arc<dyn Store>,
    args: ServeArgs,
    loaded: Loaded,
    placement: Vec<String>,
    extra: &str,
    security: Security,
) -> anyhow::Result<()> {
    if let Some(t) = &loaded.tracing {
        weft_sidecar::telemetry::spans::install(t).map_err(anyhow::Error::msg)?;
        tracing::info!(endpoint = %t.endpoint, protocol = ?t.protocol, sampling_rate = t.sampling_rate.get(), "exporting workflow spans over OTLP");
    }
    let workflow = loaded.workflow;
    let mut cluster = ClusterConfig::new(placement);
    cluster.advertise_host = args.advertise_address.clone().unwrap_or_default();
    let cfg = SidecarConfig {
        grpc_addr: SocketAddr::new(args.listen_address, args.grpc_port),
        http_addr: SocketAddr::new(args.listen_address, args.http_port),
        internal_addr: SocketAddr::new(args.listen_address, args.internal_port),
        api_token: args.api_token.filter(|t| !t.is_empty()),
        engine: EngineConfig {
            app_id: args.app_id,
            max_payload_bytes: args.max_payload_bytes,
            max_work_item_bytes: args.max_work_item_bytes,
            workflow,
            slot_lease: args.config.slot_lease,
            lease_ttl: args.config.lease_ttl,
            idle_timeout: args.idle_timeout,
            fold_activity_results: args.fold_activity_results,
            fold_wait: args.fold_wait,
            access: Arc::new(loaded.access),
            ..Default::default()
        },
        cluster: Some(cluster),
        tls: security.tls,
        public_tls: security.public_tls,
    };
    let mut signals = crate::cmd::Signals::install().context("installing signal handlers")?;
    let shutdown = CancellationToken::new();
    let running = tokio::select! {
        r = weft_sidecar::serve(store, cfg, shutdown.clone()) => r?,
        _ = signals.recv() => {
            shutdown.cancel();
            return Ok(());
        }
    };
    println!(
        "{role} ready grpc={} http={} internal={}{extra}",
        running.grpc_addr, running.http_addr, running.internal_addr
    );
    tracing::info!(
        grpc = %running.grpc_addr,
        http = %running.http_addr,
        internal = %running.internal_addr,
        host_id = %running.host_id,
        "{role} ready"
    );
    signals.recv().await;
    tracing::info!(drain_timeout = ?args.drain_timeout, "shutting down: draining, then leaving placement");
    tokio::select! {
        r = running.shutdown(args.drain_timeout) => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "server ended with an error");
            }
            weft_sidecar::telemetry::spans::flush();
        }
        _ = signals.recv() => {
            tracing::warn!("second signal: exiting at once");
            std::process::exit(1);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_idle_timeout};
    use std::time::Duration;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "s", "10h", "-1s", "1e9s", "abc", "99999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_idle_timeout("5s"), Ok(Duration::from_secs(5)));
        for bad in ["0", "0s", "5ms", "abc"] {
            assert!(parse_idle_timeout(bad).is_err(), "{bad}");
        }
    }
}
