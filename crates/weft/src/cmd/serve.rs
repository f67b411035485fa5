//! Flags shared by the roles that run the engine (`dev`, `sidecar`), and running it until a signal.

use anyhow::Context;
use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
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
}

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

/// Opens the PostgreSQL store; the URL's password never reaches the logs.
pub async fn postgres(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let redacted = redact_url(url);
    tracing::info!(database = %redacted, "connecting to PostgreSQL");
    let store = PgStore::connect(url)
        .await
        .with_context(|| format!("opening the PostgreSQL store at {redacted}"))?;
    Ok(Arc::new(store))
}

/// Joins placement at `placement`, serves until SIGINT/SIGTERM, printing
/// `<role> ready grpc=… http=… internal=…` (plus `extra`) on stdout once every port serves and
/// the first placement table arrived. The first signal drains and leaves in order; a second
/// one exits at once.
pub async fn run(
    role: &str,
    store: Arc<dyn Store>,
    args: ServeArgs,
    placement: Vec<String>,
    extra: &str,
) -> anyhow::Result<()> {
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
            ..Default::default()
        },
        cluster: Some(cluster),
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
    use super::parse_duration;
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
    }
}
