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
}

pub async fn run(args: SidecarArgs) -> anyhow::Result<ExitCode> {
    crate::cmd::init_logging();
    let workflow = match args.serve.config.load() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(serve::BAD_CONFIG));
        }
    };
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
    serve::run("weft sidecar", store, args.serve, workflow, placement, "").await?;
    Ok(ExitCode::SUCCESS)
}
