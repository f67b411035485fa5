//! Command-line surface of `weft`: one subcommand per role or client command.

pub mod cluster;
mod config;
mod dev;
pub mod placement;
mod serve;
mod sidecar;
mod workflow;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "weft",
    version,
    about = "Weft: a clustered durable-workflow engine"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log line format on stderr: `text` for people, `json` (one object per line) for log
    /// pipelines.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "WEFT_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a single-node engine (sidecar + embedded store) for development.
    Dev(dev::DevArgs),
    /// Run the engine on a shared PostgreSQL database.
    Sidecar(sidecar::SidecarArgs),
    /// Check a configuration file (Dapr Configuration YAML) without starting anything.
    Config(config::ConfigArgs),
    /// Manage workflow instances through a sidecar's HTTP API.
    Workflow(workflow::WorkflowArgs),
    /// Run a placement node (raft member that replicates the actor placement table).
    Placement(placement::PlacementArgs),
    /// Inspect and change the placement cluster (status, add-node, remove-node).
    Cluster(cluster::ClusterArgs),
    /// Make a development CA and issue certificates for placement, sidecars and operators.
    Certs(weft_tls::certs::CertsArgs),
}

/// Logs go to stderr (stdout carries the ready line and command output); `RUST_LOG` filters.
/// In JSON, each line is one object with the event's fields at the top level (`instance`,
/// `app_id`, … where the event has them) and the spans it happened in.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match LOG_FORMAT.get().copied().unwrap_or(LogFormat::Text) {
        LogFormat::Text => fmt.try_init(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}

/// SIGINT/SIGTERM handlers, installed when created: make one before announcing readiness so a
/// signal sent right after the ready line is never met by the default action (death).
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves on SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let _ = LOG_FORMAT.set(cli.log_format);
    match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Sidecar(args) => sidecar::run(args).await,
        Command::Config(args) => config::run(args),
        Command::Workflow(args) => workflow::run(args).await,
        Command::Placement(args) => placement::run_placement(args).await,
        Command::Cluster(args) => cluster::run_cluster(args).await,
        Command::Certs(args) => {
            println!("{}", weft_tls::certs::run(&args)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
