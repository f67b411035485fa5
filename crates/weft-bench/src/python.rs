//! The Python SDK worker workload: `python/chain_bench.py` (dapr-ext-workflow's WorkflowRuntime
//! and DaprWorkflowClient) runs ten-step chains against the sidecar child process. The script
//! reports workflows/s, the idle p50 and its own CPU; this side samples the sidecar's CPU at the
//! script's phase markers and, on PostgreSQL, the server's transaction counters around the run.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::harness::Sidecar;
use crate::pgstat::{self, PgStat};
use crate::process::load_avg;

/// What to run.
#[derive(Debug, Clone)]
pub struct PyPlan {
    /// A Python with dapr-ext-workflow installed.
    pub python: PathBuf,
    pub script: PathBuf,
    pub steps: u32,
    pub workflows: usize,
    pub latency_runs: usize,
    pub clients: usize,
    pub warmup: usize,
}

/// What the Python workload measured.
#[derive(Debug, Clone)]
pub struct PyReport {
    /// The script's own JSON line.
    pub script: serde_json::Value,
    pub wf_per_sec: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    /// Sidecar CPU seconds during the throughput phase.
    pub sidecar_cpu_secs: f64,
    /// Python process CPU seconds (worker and client) during the throughput phase.
    pub python_cpu_secs: f64,
    /// Sidecar CPU per activity step in the throughput phase, ms.
    pub sidecar_cpu_ms_per_step: f64,
    /// PostgreSQL committed transactions (reads included) per workflow over the whole script
    /// (warm-up, throughput and latency phases, worker start included).
    pub pg_xact_per_workflow: Option<f64>,
    pub pg_write_xacts_per_workflow: Option<f64>,
    pub load1: f64,
}

/// Runs the script against `sc` (which must be a child process) and waits for it.
pub async fn run(sc: &Sidecar, pg: Option<&PgStat>, plan: &PyPlan) -> anyhow::Result<PyReport> {
    let proc = sc
        .process
        .as_ref()
        .context("the Python workload needs --sidecar process")?;
    let endpoint = sc
        .grpc_url
        .strip_prefix("http://")
        .unwrap_or(&sc.grpc_url)
        .to_string();
    let before = match pg {
        Some(p) => Some(p.settled().await?),
        None => None,
    };
    let mut child = tokio::process::Command::new(&plan.python)
        .arg(&plan.script)
        .env("DAPR_GRPC_ENDPOINT", &endpoint)
        .env("STEPS", plan.steps.to_string())
        .env("WORKFLOWS", plan.workflows.to_string())
        .env("LATENCY_RUNS", plan.latency_runs.to_string())
        .env("CLIENTS", plan.clients.to_string())
        .env("WARMUP", plan.warmup.to_string())
        .env_remove("DAPR_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", plan.python.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let mut cpu_at = std::collections::HashMap::new();
    let mut last = String::new();
    while let Some(line) = lines.next_line().await? {
        if let Some(phase) = line.strip_prefix("PHASE ") {
            cpu_at.insert(phase.trim().to_string(), proc.cpu_secs()?);
        } else if !line.trim().is_empty() {
            last = line;
        }
    }
    let status = child.wait().await?;
    anyhow::ensure!(status.success(), "the Python benchmark failed ({status})");
    let load1 = load_avg();
    let v: serde_json::Value = serde_json::from_str(&last)
        .with_context(|| format!("the Python benchmark's last line is not JSON: {last:?}"))?;
    let f = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    let phase = |k: &str| cpu_at.get(k).copied().unwrap_or(f64::NAN);
    let sidecar_cpu_secs = phase("throughput-end") - phase("throughput-start");
    let total_wf = (plan.warmup + plan.workflows + plan.latency_runs) as f64;
    let (pg_xact_per_workflow, pg_write_xacts_per_workflow) = match (before, pg) {
        (Some(b), Some(p)) => {
            let (x, w) = pgstat::delta(b, p.settled().await?);
            (Some(x as f64 / total_wf), Some(w as f64 / total_wf))
        }
        _ => (None, None),
    };
    Ok(PyReport {
        wf_per_sec: f("throughput_wf_per_s"),
        latency_p50_ms: f("latency_p50_ms"),
        latency_p99_ms: f("latency_p99_ms"),
        sidecar_cpu_secs,
        python_cpu_secs: f("throughput_cpu_s"),
        sidecar_cpu_ms_per_step: sidecar_cpu_secs * 1e3
            / (plan.workflows as f64 * f64::from(plan.steps)).max(1.0),
        pg_xact_per_workflow,
        pg_write_xacts_per_workflow,
        load1,
        script: v,
    })
}

/// The report as plain text.
pub fn table(r: &PyReport) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    format!(
        "Python SDK worker (dapr-ext-workflow), ten-step chains:\n  \
         throughput {:.1} workflows/s; idle p50 {:.1} ms, p99 {:.1} ms\n  \
         sidecar CPU {:.2} s = {:.3} ms per step = {:.0} % of the Python process's {:.2} s\n  \
         PostgreSQL transactions per workflow: {} committed (reads included), {} writes; load {:.2}\n",
        r.wf_per_sec,
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.sidecar_cpu_secs,
        r.sidecar_cpu_ms_per_step,
        100.0 * r.sidecar_cpu_secs / r.python_cpu_secs.max(1e-9),
        r.python_cpu_secs,
        opt(r.pg_xact_per_workflow),
        opt(r.pg_write_xacts_per_workflow),
        r.load1,
    )
}
