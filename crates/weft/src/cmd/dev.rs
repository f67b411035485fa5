//! `weft dev`: the single-node engine on an embedded SQLite store (or a PostgreSQL database), with
//! a single-node placement service in the same process.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use weft_placement_server::{NodeConfig, PlacementNode};
use weft_store::{SqliteStore, Store};

use super::serve::{self, ServeArgs};

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Directory of the embedded store (created if missing); unused with --database-url.
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "weft-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (postgres://user:pass@host:port/db) to use instead of the embedded store.
    #[arg(long, env = "WEFT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Port of the embedded single-node placement service (0 picks a free port).
    #[arg(long, env = "WEFT_PLACEMENT_PORT", default_value_t = 50005)]
    pub placement_port: u16,
    #[command(flatten)]
    pub serve: ServeArgs,
}

pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    crate::cmd::init_logging();
    let loaded = match args.serve.config.load(&args.serve.app_id) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(serve::BAD_CONFIG));
        }
    };
    let store: Arc<dyn Store> = match &args.database_url {
        Some(url) => serve::postgres(url).await?,
        None => {
            std::fs::create_dir_all(&args.data_dir)
                .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
            let db = args.data_dir.join("weft.db");
            tracing::info!(data = %db.display(), "using the embedded store");
            Arc::new(SqliteStore::open(&db).with_context(|| format!("opening {}", db.display()))?)
        }
    };
    let placement_dir = args.data_dir.join("placement");
    let listen = std::net::SocketAddr::new(args.serve.listen_address, args.placement_port);
    let placement = PlacementNode::start(NodeConfig::new(1, listen, placement_dir))
        .await
        .context("starting the embedded placement node")?;
    // The very same path as a cluster: this one sidecar joins its embedded placement node.
    let addr = placement.local_addr();
    let join = if addr.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let extra = format!(" placement={addr}");
    let served = serve::run(
        "weft dev",
        store,
        args.serve,
        loaded,
        vec![join.to_string()],
        &extra,
        serve::Security::default(),
    )
    .await;
    // Ordered shutdown: the engine first (above), then placement.
    placement.shutdown().await;
    served?;
    Ok(ExitCode::SUCCESS)
}
