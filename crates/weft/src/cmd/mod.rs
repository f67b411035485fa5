//! Command-line surface of `weft`: one subcommand per role or client command.

mod dev;
mod workflow;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "weft", version, about = "Weft: a clustered durable-workflow engine")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a single-node engine (sidecar + embedded store) for development.
    Dev(dev::DevArgs),
    /// Manage workflow instances through a sidecar's HTTP API.
    Workflow(workflow::WorkflowArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Workflow(args) => workflow::run(args).await,
    }
}
