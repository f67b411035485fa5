//! `weft config check FILE`: validates a Dapr Configuration file the way `--config` would,
//! without starting anything; prints what Weft will use, or the error (exit code 2).

use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use weft_config::{NameLimit, format_go_duration};

use super::serve::{BAD_CONFIG, read_config};

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate FILE; exit 0 and print the settings, or print the error and exit 2.
    Check {
        /// The configuration file (apiVersion: dapr.io/v1alpha1, kind: Configuration).
        file: PathBuf,
    },
}

pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check { file } = args.command;
    let parsed = match read_config(&file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(BAD_CONFIG));
        }
    };
    let w = &parsed.workflow;
    println!("{}: ok", file.display());
    let limit = |v: Option<u32>| v.map_or("unlimited".to_string(), |n| n.to_string());
    let keep = |v: Option<std::time::Duration>| v.map_or("forever".to_string(), format_go_duration);
    let names = |v: &[NameLimit]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter()
                .map(|l| format!("{}={}", l.name, l.max_concurrent))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    println!(
        "  maxConcurrentWorkflowInvocations: {}",
        limit(w.max_concurrent_workflow_invocations)
    );
    println!(
        "  maxConcurrentActivityInvocations: {}",
        limit(w.max_concurrent_activity_invocations)
    );
    println!(
        "  globalMaxConcurrentWorkflowInvocations: {}",
        limit(w.global_max_concurrent_workflow_invocations)
    );
    println!(
        "  globalMaxConcurrentActivityInvocations: {}",
        limit(w.global_max_concurrent_activity_invocations)
    );
    println!(
        "  workflowConcurrencyLimits: {}",
        names(&w.workflow_concurrency_limits)
    );
    println!(
        "  activityConcurrencyLimits: {}",
        names(&w.activity_concurrency_limits)
    );
    let r = &w.state_retention_policy;
    println!(
        "  stateRetentionPolicy: anyTerminal={} completed={} failed={} terminated={}",
        keep(r.any_terminal),
        keep(r.completed),
        keep(r.failed),
        keep(r.terminated)
    );
    if let Some(t) = &parsed.tracing {
        let otel = t.otel.clone().unwrap_or_default();
        println!(
            "  tracing: samplingRate={} endpointAddress={} isSecure={} protocol={:?} (OTEL_* variables override these)",
            t.sampling_rate
                .map_or("1".to_string(), |r| r.get().to_string()),
            otel.endpoint_address.as_deref().unwrap_or("unset (off)"),
            otel.is_secure.unwrap_or(false),
            otel.protocol.unwrap_or_default(),
        );
    }
    if !parsed.access.is_empty() {
        println!(
            "  workflow access policies: {} (docs/multi-app.md)",
            parsed.access.len()
        );
    }
    for s in &parsed.ignored_sections {
        println!("  (spec.{s}: a Dapr section Weft ignores)");
    }
    Ok(ExitCode::SUCCESS)
}
