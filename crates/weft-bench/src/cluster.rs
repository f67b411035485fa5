//! Cluster mode (`--cluster N`): `weft placement` nodes and N `weft sidecar`s on PostgreSQL,
//! started by weft-testkit's launcher, driven by one bench worker per sidecar (or all through
//! HAProxy) with the chain workloads' starts spread round robin over the sidecars.
//!
//! A start that lands on a sidecar which does not own the instance is forwarded to its owner, and
//! a workflow's completion is seen by whichever worker runs its last turn: the workers report into
//! one channel ([`Worker::start_many`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use serde_json::Value;
use weft_testkit::{Cluster, ClusterConfig};

use crate::harness::Sidecar;
use crate::pgstat::PgStat;
use crate::worker::{Permits, Worker};
pub use crate::workload::ClusterFacts;
use crate::workload::{Endpoints, Plan, Report, Row, chains};

/// How long the workers' sidecars may take to appear in an acknowledged placement table.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Through HAProxy the workers may not land on every sidecar: after this, go on with those that
/// have one.
const HAPROXY_SETTLE_GRACE: Duration = Duration::from_secs(10);

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The `weft` binary.
    pub weft_bin: PathBuf,
    pub sidecars: usize,
    pub placement_nodes: usize,
    /// Workers and clients reach the sidecars through HAProxy instead of one each.
    pub via_haproxy: bool,
    /// The PostgreSQL database every sidecar uses (the benchmark's, fsync on).
    pub database_url: String,
    /// Extra flags for every `weft sidecar`.
    pub sidecar_args: Vec<String>,
}

/// Where the workers and clients connect.
struct Wiring {
    /// One gRPC URL per worker and per client: each sidecar's, or HAProxy's N times.
    targets: Vec<String>,
    weft_bin: PathBuf,
    placement_addrs: String,
    database_url: String,
    facts: ClusterFacts,
}

/// Starts the cluster, runs `plan`'s chain workloads until `deadline` at the latest and stops every
/// process it started (also on error). Blocking. The processes die with the thread that started
/// them (`PR_SET_PDEATHSIG`), so call this on a thread that lives until it returns.
pub fn bench(opts: &ClusterOptions, plan: &Plan, deadline: Instant) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.sidecars >= 1, "--cluster needs at least one sidecar");
    anyhow::ensure!(
        opts.placement_nodes >= 1,
        "a cluster needs a placement node"
    );
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut cfg = ClusterConfig::new(&opts.weft_bin);
    cfg.placement_nodes = opts.placement_nodes;
    cfg.sidecars = opts.sidecars;
    cfg.haproxy = opts.via_haproxy;
    cfg.haproxy_slots = opts.sidecars;
    cfg.app_id = "weft-bench".into();
    cfg.database_url = Some(opts.database_url.clone());
    cfg.sidecar_args = opts.sidecar_args.clone();
    // The sidecars log at warn, as `--sidecar process` does: info lines cost CPU under load.
    cfg.env = vec![("RUST_LOG".into(), "warn".into())];
    cfg.ready_timeout = left().min(Duration::from_secs(60));
    let t = Instant::now();
    let cluster = Cluster::start(cfg).context("starting the cluster")?;
    let start_secs = t.elapsed().as_secs_f64();
    let wiring = Wiring::of(&cluster, opts, plan.permits, start_secs)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async {
        match tokio::time::timeout(left(), drive(&wiring, plan)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!(
                "deadline exceeded; aborted (raise --deadline-secs or shrink the workload)"
            )),
        }
    });
    // Bounded: a task still waiting on a sidecar must not hold the process.
    rt.shutdown_timeout(Duration::from_secs(5));
    // Dropping `cluster` (on return) SIGKILLs every process it started, by PID.
    outcome.map_err(|e| e.context(format!("the cluster's log tails:\n{}", cluster.logs(1500))))
}

impl Wiring {
    fn of(
        c: &Cluster,
        opts: &ClusterOptions,
        permits: Permits,
        start_secs: f64,
    ) -> anyhow::Result<Self> {
        let n = opts.sidecars;
        let targets = match c.balancer() {
            Some((grpc, _)) => vec![format!("http://{grpc}"); n],
            None => (0..n)
                .map(|i| {
                    let a = c
                        .sidecar(i)
                        .with_context(|| format!("sidecar {i} has no address"))?;
                    Ok(format!("http://{}", a.grpc))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        Ok(Self {
            targets,
            weft_bin: opts.weft_bin.clone(),
            placement_addrs: c.placement_addrs(),
            database_url: c.database_url().to_string(),
            facts: ClusterFacts {
                sidecars: n,
                placement_nodes: opts.placement_nodes,
                via_haproxy: opts.via_haproxy,
                sidecars_with_workers: 0,
                start_secs,
                settle_secs: 0.0,
                background_xacts_per_sec: None,
                pg_window_extra_secs: 0.0,
                permits: match permits {
                    Permits::Split => "split",
                    Permits::Shared => "shared",
                },
            },
        })
    }
}

/// Connects the workers, waits for placement to place work on their sidecars, runs the chain
/// workloads.
async fn drive(w: &Wiring, plan: &Plan) -> anyhow::Result<Report> {
    let mut worker_clients = Vec::with_capacity(w.targets.len());
    for url in &w.targets {
        worker_clients.push(Sidecar::connect_to(url).await?);
    }
    let t = Instant::now();
    let mut worker = Worker::start_many(worker_clients, plan.concurrency, plan.permits).await?;
    let mut facts = w.facts.clone();
    facts.sidecars_with_workers = settle(w, &mut worker).await?;
    facts.settle_secs = t.elapsed().as_secs_f64();
    let mut clients = Vec::with_capacity(w.targets.len());
    for url in &w.targets {
        clients.push(Sidecar::connect_to(url).await?);
    }
    let ep = Endpoints::remote(clients, "postgres", "cluster")?;
    let pg = PgStat::connect(&w.database_url)
        .await?
        .with_flush_wait(plan.pg_flush_wait);
    // The cluster's own transactions while idle, so the per-step figures can be read net of
    // them: they are paid per second, not per step.
    let before = pg.settled().await?;
    let t = Instant::now();
    let after = pg.settled().await?;
    facts.background_xacts_per_sec =
        Some(crate::pgstat::delta(before, after).0 as f64 / t.elapsed().as_secs_f64());
    facts.pg_window_extra_secs = plan.pg_flush_wait.as_secs_f64();
    let rows = chains(&ep, &mut worker, Some(&pg), plan).await?;
    drop(worker);
    Ok(Report {
        rows,
        cluster: Some(facts),
        ..Report::default()
    })
}

/// Waits until placement's table lists the workers' sidecars with their actor types and every
/// one of them acknowledged it (a sidecar offers its app's actor types only while a worker of it
/// is connected). Returns how many sidecars have a worker.
async fn settle(w: &Wiring, worker: &mut Worker) -> anyhow::Result<usize> {
    let want = w.targets.len();
    let t = Instant::now();
    loop {
        worker.drain()?;
        let last = match cluster_status(w).await {
            Ok(s) => {
                if let Some(n) = placed(&s) {
                    let grace = w.facts.via_haproxy && t.elapsed() >= HAPROXY_SETTLE_GRACE;
                    if n == want || (grace && n >= 1) {
                        return Ok(n);
                    }
                }
                s.to_string()
            }
            Err(e) => format!("{e:#}"),
        };
        anyhow::ensure!(
            t.elapsed() < SETTLE_TIMEOUT,
            "placement did not list {want} sidecars with a worker within {} s; last status: {last}",
            SETTLE_TIMEOUT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sidecars with actor types in `weft cluster status --output json`, once each acknowledged the
/// current table; `None` while one lags.
pub fn placed(status: &Value) -> Option<usize> {
    let version = status["table_version"].as_u64()?;
    let hosts = status["hosts"].as_array()?;
    let with_types: Vec<&Value> = hosts
        .iter()
        .filter(|h| h["actor_types"].as_array().is_some_and(|t| !t.is_empty()))
        .collect();
    with_types
        .iter()
        .all(|h| h["acked_version"].as_u64() == Some(version))
        .then_some(with_types.len())
}

async fn cluster_status(w: &Wiring) -> anyhow::Result<Value> {
    let mut cmd = tokio::process::Command::new(&w.weft_bin);
    cmd.args([
        "cluster",
        "status",
        "--output",
        "json",
        "--timeout-ms",
        "2000",
    ])
    .arg("--placement")
    .arg(&w.placement_addrs)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    // Our flags decide, as in the launcher: no WEFT_* setting of the caller's shell leaks in.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("WEFT_") {
            cmd.env_remove(k);
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .context("weft cluster status timed out")??;
    anyhow::ensure!(
        out.status.success(),
        "weft cluster status: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout).context("weft cluster status printed no JSON")
}

/// The cluster's lines under the table: what ran, and the figures issue 19 asks for.
pub fn summary(facts: &ClusterFacts, rows: &[Row]) -> String {
    let wiring = if facts.via_haproxy {
        "every worker and client through HAProxy"
    } else {
        "one worker per sidecar, starts round robin"
    };
    let mut out = format!(
        "cluster: {} x weft sidecar ({wiring}), {} placement nodes; workers on {} of {} \
         sidecars; started in {:.2} s, placement settled {:.2} s after the workers connected; \
         worker permits {}\n",
        facts.sidecars,
        facts.placement_nodes,
        facts.sidecars_with_workers,
        facts.sidecars,
        facts.start_secs,
        facts.settle_secs,
        facts.permits,
    );
    for r in rows {
        let steps = (r.workflows as f64 * f64::from(r.steps)).max(1.0);
        let pg = r.pg.map_or("-".to_string(), |p| {
            let total = (p.xact_commit + p.xact_rollback) as f64;
            let net = facts.background_xacts_per_sec.map_or(String::new(), |bg| {
                let window = r.elapsed.as_secs_f64() + facts.pg_window_extra_secs;
                format!(
                    "; net of the idle cluster's {bg:.1}/s over the {window:.1} s window ≈ {:.2}",
                    (total - bg * window).max(0.0) / steps
                )
            });
            format!(
                "{:.2} ({} commits + {} rollbacks, reads included), write transactions {:.2}{net}",
                total / steps,
                p.xact_commit,
                p.xact_rollback,
                p.write_xacts as f64 / steps
            )
        });
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let per_step = |d: Duration| ms(d) / f64::from(r.steps.max(1));
        let figures = if r.workload == "throughput" {
            format!(
                "{:.0} steps/s, p50 {:.1} ms per workflow under load",
                r.steps_per_sec,
                ms(r.p50)
            )
        } else if r.workload != "latency" {
            format!(
                "p50 {:.1} ms, p99 {:.1} ms per workflow of {} parallel activities",
                ms(r.p50),
                ms(r.p99),
                r.steps
            )
        } else {
            format!(
                "idle p50 {:.1} ms, p99 {:.1} ms per {}-step workflow = {:.2} / {:.2} ms per step",
                ms(r.p50),
                ms(r.p99),
                r.steps,
                per_step(r.p50),
                per_step(r.p99)
            )
        };
        out.push_str(&format!(
            "  {}: {figures}; PostgreSQL transactions per step {pg}\n",
            r.workload
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placed_counts_sidecars_with_workers_once_all_acked() {
        let s = json!({"table_version": 4, "hosts": [
            {"actor_types": ["a", "b"], "acked_version": 4},
            {"actor_types": [], "acked_version": 3},
            {"actor_types": ["a", "b"], "acked_version": 4},
        ]});
        assert_eq!(placed(&s), Some(2));
        let lagging = json!({"table_version": 5, "hosts": [
            {"actor_types": ["a"], "acked_version": 4},
        ]});
        assert_eq!(placed(&lagging), None);
        assert_eq!(placed(&json!({"hosts": []})), None);
    }
}
