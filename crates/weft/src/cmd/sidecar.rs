//! `weft sidecar`: the engine on a shared PostgreSQL database (the production role).

use clap::Args;
use std::process::ExitCode;

use super::serve::{self, ServeArgs};

#[derive(Args, Debug)]
pub struct SidecarArgs {
    /// PostgreSQL URL (postgres://user:pass@host:port/db) holding all durable state.
    #[arg(long, env = "WEFT_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
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
    serve::run("weft sidecar", store, args.serve, workflow, "").await?;
    Ok(ExitCode::SUCCESS)
}
