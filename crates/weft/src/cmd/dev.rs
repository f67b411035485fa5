//! `weft dev`: the single-node engine on an embedded SQLite store, for development.

use anyhow::Context;
use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weft_sidecar::engine::{DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_WORK_ITEM};
use weft_sidecar::{EngineConfig, SidecarConfig};
use weft_store::{SqliteStore, Store};

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Directory of the embedded store (created if missing).
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "weft-data")]
    pub data_dir: PathBuf,
    /// Port of the durabletask gRPC API (0 picks a free port).
    #[arg(long, env = "WEFT_GRPC_PORT", default_value_t = 50001)]
    pub grpc_port: u16,
    /// Port of the Dapr HTTP API (0 picks a free port).
    #[arg(long, env = "WEFT_HTTP_PORT", default_value_t = 3500)]
    pub http_port: u16,
    /// Address both APIs listen on.
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

pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    crate::cmd::init_logging();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let db = args.data_dir.join("weft.db");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&db).with_context(|| format!("opening {}", db.display()))?);
    let cfg = SidecarConfig {
        grpc_addr: SocketAddr::new(args.listen_address, args.grpc_port),
        http_addr: SocketAddr::new(args.listen_address, args.http_port),
        api_token: args.api_token.filter(|t| !t.is_empty()),
        engine: EngineConfig {
            app_id: args.app_id,
            max_payload_bytes: args.max_payload_bytes,
            max_work_item_bytes: args.max_work_item_bytes,
            ..Default::default()
        },
    };
    let shutdown = CancellationToken::new();
    let running = weft_sidecar::serve(store, cfg, shutdown.clone()).await?;
    println!(
        "weft dev ready grpc={} http={}",
        running.grpc_addr, running.http_addr
    );
    tracing::info!(data = %db.display(), grpc = %running.grpc_addr, http = %running.http_addr, "weft dev ready");
    crate::cmd::wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    // Streams and long polls end at cancellation; don't hang on a stuck client.
    let _ = tokio::time::timeout(Duration::from_secs(10), running.done).await;
    Ok(ExitCode::SUCCESS)
}
