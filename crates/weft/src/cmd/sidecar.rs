//! `weft sidecar`: the engine on a shared PostgreSQL database (the production role).

use clap::Args;
use std::process::ExitCode;

use super::serve::{self, ServeArgs};

#[derive(Args, Debug)]
pub struct SidecarArgs {
    /// PostgreSQL URL (postgres://user:pass@host:port/db) holding all durable state.
    #[arg(long, env = "WEFT_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Placement nodes to join (host:port, comma-separated; any of them).
    #[arg(long, env = "WEFT_PLACEMENT", value_delimiter = ',', required = true)]
    pub placement: Vec<String>,
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Mutual TLS on the internal port and to placement and peers (the certificate must name
    /// spiffe://TD/ns/NS/APP_ID).
    #[command(flatten)]
    pub tls: weft_tls::TlsArgs,
    /// Serve the public gRPC and HTTP ports with TLS too (needs --tls-*; no client certificate
    /// is asked of SDKs).
    #[arg(long, env = "WEFT_PUBLIC_TLS")]
    pub public_tls: bool,
}

pub async fn run(args: SidecarArgs) -> anyhow::Result<ExitCode> {
    crate::cmd::init_logging();
    let loaded = match args.serve.config.load(&args.serve.app_id) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(serve::BAD_CONFIG));
        }
    };
    let tls = args.tls.load()?;
    match &tls {
        None if args.public_tls => {
            anyhow::bail!("--public-tls needs --tls-cert, --tls-key and --tls-ca")
        }
        None => weft_tls::args::warn_unauthenticated("weft sidecar"),
        Some(t) => {
            let id = t.identity();
            if id.app() != Some(args.serve.app_id.as_str()) {
                // Placement will refuse the registration; say so here too.
                tracing::error!(identity = %id, app_id = %args.serve.app_id, "this sidecar's certificate is not for its --app-id; placement will refuse it");
            }
        }
    }
    let store = serve::postgres(&args.database_url).await?;
    let placement: Vec<String> = args
        .placement
        .iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    anyhow::ensure!(
        !placement.is_empty(),
        "--placement needs at least one host:port"
    );
    let security = serve::Security {
        tls,
        public_tls: args.public_tls,
    };
    serve::run(
        "weft sidecar",
        store,
        args.serve,
        loaded,
        placement,
        "",
        security,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
