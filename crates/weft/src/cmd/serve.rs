//! Flags shared by the roles that run the engine (`dev`, `sidecar`), and running it until a signal.

use anyhow::Context;
use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
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
    /// Port of the internal node-to-node API (forwarded calls, routed completions; 0 picks a
    /// free port).
    #[arg(long, env = "WEFT_INTERNAL_PORT", default_value_t = 50002)]
    pub internal_port: u16,
    /// Address the APIs listen on.
    #[arg(long, env = "WEFT_LISTEN_ADDRESS", default_value = "127.0.0.1")]
    pub listen_address: IpAddr,
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

/// Opens the PostgreSQL store; the URL's password never reaches the logs.
pub async fn postgres(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let redacted = redact_url(url);
    tracing::info!(database = %redacted, "connecting to PostgreSQL");
    let store = PgStore::connect(url)
        .await
        .with_context(|| format!("opening the PostgreSQL store at {redacted}"))?;
    Ok(Arc::new(store))
}

/// Serves until SIGINT/SIGTERM, printing `<role> ready grpc=… http=…` (plus `extra`) on stdout
/// once both ports serve.
pub async fn run(
    role: &str,
    store: Arc<dyn Store>,
    args: ServeArgs,
    extra: &str,
) -> anyhow::Result<()> {
    let cfg = SidecarConfig {
        grpc_addr: SocketAddr::new(args.listen_address, args.grpc_port),
        http_addr: SocketAddr::new(args.listen_address, args.http_port),
        internal_addr: SocketAddr::new(args.listen_address, args.internal_port),
        advertise_host: None,
        api_token: args.api_token.filter(|t| !t.is_empty()),
        engine: EngineConfig {
            app_id: args.app_id,
            max_payload_bytes: args.max_payload_bytes,
            max_work_item_bytes: args.max_work_item_bytes,
            ..Default::default()
        },
    };
    let mut signals = crate::cmd::Signals::install().context("installing signal handlers")?;
    let shutdown = CancellationToken::new();
    let running = weft_sidecar::serve(store, cfg, shutdown.clone()).await?;
    println!(
        "{role} ready grpc={} http={} internal={}{extra}",
        running.grpc_addr, running.http_addr, running.internal_addr
    );
    tracing::info!(grpc = %running.grpc_addr, http = %running.http_addr, "{role} ready");
    signals.recv().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    // Streams and long polls end at cancellation; don't hang on a stuck client.
    let _ = tokio::time::timeout(Duration::from_secs(10), running.done).await;
    Ok(())
}
