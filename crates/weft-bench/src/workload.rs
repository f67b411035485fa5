//! The workloads and their figures.
//!
//! - **throughput**: start `workflows` instances of `steps` activities at once (bounded by
//!   `concurrency` concurrent `StartInstance` calls, each with `scheduledStartTimestamp` = epoch 0
//!   so it returns without waiting for the first turn) and time from the first start to the last
//!   committed `completeWorkflow`. Figure: activity steps per second. p50/p99 are the per-workflow
//!   times from start to completion under that load.
//! - **latency**: one workflow at a time; each is started (epoch 0) and awaited with
//!   `WaitForInstanceCompletion`, timed end to end from the client's side.
//! - **fanout**: the latency workload with one `fanout` workflow of N parallel activities per run.
//!
//! Each reads the in-process store's commit counter before and after: commits per activity step
//! counts every write transaction in between (instance creation included) divided by
//! `workflows × steps`. On PostgreSQL it also reads the server's own counters ([`PgStat`]).
//! They drive [`Endpoints`]: one sidecar, or a cluster's sidecars with starts spread round robin
//! ([`crate::cluster`]). The idle-memory and Python workloads are in [`crate::rss`] and
//! [`crate::python`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use tonic::transport::Channel;
use weft_proto::durabletask::task_hub_sidecar_service_client::TaskHubSidecarServiceClient as Client;
use weft_proto::durabletask::{GetInstanceRequest, OrchestrationStatus};

use crate::harness::{Sidecar, Target, run_tag, start_request};
use crate::pgstat::{self, Counters, PgStat};
use crate::probe::{OpStat, Probe};
use crate::process::load_avg;
use crate::worker::{Notice, Permits, Worker};

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub workload: String,
    pub backend: &'static str,
    /// `in-process`, `process` (the sidecar in a `weft dev` child process) or `cluster`.
    pub sidecar: &'static str,
    pub workflows: usize,
    /// Activities per workflow.
    pub steps: u32,
    /// Workflows that were verified COMPLETED afterwards.
    pub completed: usize,
    pub elapsed: Duration,
    pub steps_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Write transactions of the in-process store (unknown for a child process).
    pub commits: Option<u64>,
    pub commits_per_step: Option<f64>,
    /// PostgreSQL's own counters over the measurement.
    pub pg: Option<PgFigures>,
    /// 1-minute load average at the end of the measurement.
    pub load1: f64,
    /// The engine's store calls during the measurement (in-process sidecar only).
    pub store_calls: Vec<OpStat>,
}

/// PostgreSQL's counters over one measurement (see [`crate::pgstat`]).
#[derive(Debug, Clone, Copy)]
pub struct PgFigures {
    /// Committed transactions (`xact_commit`), reads included.
    pub xact_commit: u64,
    /// Rolled-back transactions (`xact_rollback`), reads included.
    pub xact_rollback: u64,
    /// Transactions that were given a transaction ID (writes).
    pub write_xacts: u64,
}

/// Counter readings taken before a measurement.
struct Meter {
    commits: Option<u64>,
    calls: Vec<OpStat>,
    pg: Option<Counters>,
}

impl Meter {
    async fn begin(ep: &Endpoints<'_>, pg: Option<&PgStat>) -> anyhow::Result<Self> {
        let pg = match pg {
            Some(p) => Some(p.settled().await?),
            None => None,
        };
        Ok(Self {
            commits: ep.commit_count(),
            calls: ep.calls(),
            pg,
        })
    }

    /// Commits, store calls and PostgreSQL figures since `begin`.
    async fn end(
        self,
        ep: &Endpoints<'_>,
        pg: Option<&PgStat>,
    ) -> anyhow::Result<(Option<u64>, Vec<OpStat>, Option<PgFigures>)> {
        let commits = match (self.commits, ep.commit_count()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let calls = Probe::delta(&self.calls, &ep.calls());
        let pg = match (self.pg, pg) {
            (Some(before), Some(p)) => {
                let after = p.settled().await?;
                let (xact_commit, write_xacts) = pgstat::delta(before, after);
                Some(PgFigures {
                    xact_commit,
                    xact_rollback: pgstat::rollbacks(before, after),
                    write_xacts,
                })
            }
            _ => None,
        };
        Ok((commits, calls, pg))
    }
}

/// What the workloads drive: the clients that start and query instances (taken in turn, so a
/// cluster's starts spread over its sidecars) and, for an in-process sidecar, its counters.
pub struct Endpoints<'a> {
    clients: Vec<Client<Channel>>,
    backend: &'static str,
    sidecar: &'static str,
    local: Option<&'a Sidecar>,
}

impl<'a> Endpoints<'a> {
    /// One sidecar (in this process or a child).
    pub fn of(sc: &'a Sidecar) -> Self {
        Self {
            clients: vec![sc.client.clone()],
            backend: sc.backend,
            sidecar: sidecar_kind(sc),
            local: Some(sc),
        }
    }

    /// Sidecars in other processes, reached through `clients` (at least one); rows name the
    /// sidecar `sidecar`.
    pub fn remote(
        clients: Vec<Client<Channel>>,
        backend: &'static str,
        sidecar: &'static str,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!clients.is_empty(), "no client to drive the workloads with");
        Ok(Self {
            clients,
            backend,
            sidecar,
            local: None,
        })
    }

    /// The `i`-th client, round robin.
    fn client(&self, i: usize) -> Client<Channel> {
        self.clients[i % self.clients.len()].clone()
    }

    fn commit_count(&self) -> Option<u64> {
        self.local.and_then(Sidecar::commit_count)
    }

    fn calls(&self) -> Vec<OpStat> {
        self.local.map(|s| s.probe.snapshot()).unwrap_or_default()
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Counts the instances among `ids` whose status is COMPLETED.
pub(crate) async fn count_completed(
    ep: &Endpoints<'_>,
    ids: &[String],
    concurrency: usize,
) -> anyhow::Result<usize> {
    let results: Vec<anyhow::Result<bool>> = futures::stream::iter(ids.iter().cloned().enumerate())
        .map(|(i, id)| {
            let mut c = ep.client(i);
            async move {
                let r = c
                    .get_instance(GetInstanceRequest {
                        instance_id: id.clone(),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("GetInstance({id})"))?
                    .into_inner();
                Ok(r.workflow_state
                    .is_some_and(|s| s.workflow_status == OrchestrationStatus::Completed as i32))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut n = 0;
    for r in results {
        n += usize::from(r?);
    }
    Ok(n)
}

/// The throughput workload (see the module docs). `worker` must run workflows of `steps` steps.
pub async fn throughput(
    ep: &Endpoints<'_>,
    worker: &mut Worker,
    pg: Option<&PgStat>,
    workflows: usize,
    steps: u32,
    concurrency: usize,
) -> anyhow::Result<Row> {
    worker.drain()?;
    let tag = run_tag();
    let prefix = format!("tp-{tag}-");
    let ids: Vec<String> = (0..workflows).map(|i| format!("{prefix}{i}")).collect();
    let input = steps.to_string();
    let meter = Meter::begin(ep, pg).await?;
    let t0 = Instant::now();

    // Start everything with bounded concurrency, while completions already stream in.
    let starts = futures::stream::iter(ids.iter().cloned().enumerate())
        .map(|(i, id)| {
            let mut c = ep.client(i);
            let input = &input;
            async move {
                let t = Instant::now();
                c.start_instance(start_request(&id, "chain", input))
                    .await
                    .with_context(|| format!("StartInstance({id})"))?;
                anyhow::Ok((id, t))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>();
    let mut started: HashMap<String, Instant> = HashMap::with_capacity(workflows);
    let mut done: HashMap<String, Instant> = HashMap::with_capacity(workflows);
    let mut starts = Box::pin(starts);
    let mut starts_done = false;
    while !(starts_done && done.len() == workflows) {
        tokio::select! {
            r = &mut starts, if !starts_done => {
                starts_done = true;
                for s in r {
                    let (id, t) = s?;
                    started.insert(id, t);
                }
            }
            n = worker.next() => match n {
                Some(Notice::Completed { instance_id, at }) => {
                    // A turn answered twice (re-dispatched after a hand-off) completes once.
                    if instance_id.starts_with(&prefix) {
                        done.entry(instance_id).or_insert(at);
                    }
                }
                Some(Notice::Waiting) => {}
                Some(Notice::Failed(e)) => anyhow::bail!("worker: {e}"),
                None => anyhow::bail!("the worker stopped"),
            },
        }
    }
    let last = done.values().max().copied().unwrap_or(t0);
    let elapsed = last.duration_since(t0);
    let load1 = load_avg();
    let (commits, store_calls, pg) = meter.end(ep, pg).await?;

    let mut lat: Vec<Duration> = done
        .iter()
        .filter_map(|(id, at)| started.get(id).map(|s| at.saturating_duration_since(*s)))
        .collect();
    lat.sort();
    let completed = count_completed(ep, &ids, concurrency).await?;
    let total_steps = (workflows as u64 * u64::from(steps)) as f64;
    Ok(Row {
        workload: "throughput".into(),
        backend: ep.backend,
        sidecar: ep.sidecar,
        workflows,
        steps,
        completed,
        elapsed,
        steps_per_sec: total_steps / elapsed.as_secs_f64().max(1e-9),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        commits,
        commits_per_step: commits.map(|c| c as f64 / total_steps.max(1.0)),
        pg,
        load1,
        store_calls,
    })
}

fn sidecar_kind(sc: &Sidecar) -> &'static str {
    if sc.process.is_some() {
        "process"
    } else {
        "in-process"
    }
}

/// The latency workload (see the module docs): `runs` sequential `chain` workflows of `steps`
/// steps, or with `fanout` set, `fanout` workflows of `steps` parallel activities.
pub async fn latency(
    ep: &Endpoints<'_>,
    worker: &mut Worker,
    pg: Option<&PgStat>,
    runs: usize,
    steps: u32,
    fanout: bool,
) -> anyhow::Result<Row> {
    worker.drain()?;
    let tag = run_tag();
    let (name, label) = if fanout {
        ("fanout", format!("fanout-{steps}"))
    } else {
        ("chain", "latency".to_string())
    };
    let input = steps.to_string();
    let meter = Meter::begin(ep, pg).await?;
    let t0 = Instant::now();
    let mut lat = Vec::with_capacity(runs);
    let mut completed = 0;
    for i in 0..runs {
        let id = format!("lat-{tag}-{i}");
        let mut client = ep.client(i);
        let t = Instant::now();
        client
            .start_instance(start_request(&id, name, &input))
            .await
            .with_context(|| format!("StartInstance({id})"))?;
        let r = client
            .wait_for_instance_completion(GetInstanceRequest {
                instance_id: id.clone(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("WaitForInstanceCompletion({id})"))?
            .into_inner();
        lat.push(t.elapsed());
        worker.drain()?;
        let status = r.workflow_state.map(|s| s.workflow_status);
        anyhow::ensure!(
            status == Some(OrchestrationStatus::Completed as i32),
            "{id} ended with status {status:?}"
        );
        completed += 1;
    }
    let elapsed = t0.elapsed();
    let load1 = load_avg();
    let (commits, store_calls, pg) = meter.end(ep, pg).await?;
    lat.sort();
    let total_steps = (runs as u64 * u64::from(steps)) as f64;
    Ok(Row {
        workload: label,
        backend: ep.backend,
        sidecar: ep.sidecar,
        workflows: runs,
        steps,
        completed,
        elapsed,
        steps_per_sec: total_steps / elapsed.as_secs_f64().max(1e-9),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        commits,
        commits_per_step: commits.map(|c| c as f64 / total_steps.max(1.0)),
        pg,
        load1,
        store_calls,
    })
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub workflows: usize,
    pub steps: u32,
    pub concurrency: usize,
    /// Sequential workflows for the latency workload (0 skips it).
    pub latency_runs: usize,
    /// Run the throughput workload.
    pub throughput: bool,
    /// Unmeasured workflows run first (connections, caches, prepared statements).
    pub warmup: usize,
    /// Fan-out sizes to measure (each run `fanout_runs` times, one at a time).
    pub fanout: Vec<u32>,
    pub fanout_runs: usize,
    /// The idle-memory workload (needs the sidecar in a child process).
    pub rss: Option<crate::rss::RssPlan>,
    /// The Python SDK worker workload (needs the sidecar in a child process).
    pub python: Option<crate::python::PyPlan>,
    /// How the bench worker limits its concurrent answers.
    pub permits: Permits,
    /// The wait for PostgreSQL's statistics before each reading ([`crate::pgstat::FLUSH_WAIT`];
    /// shorter undercounts).
    pub pg_flush_wait: Duration,
}

/// What a cluster run started and how it settled.
#[derive(Debug, Clone)]
pub struct ClusterFacts {
    pub sidecars: usize,
    pub placement_nodes: usize,
    pub via_haproxy: bool,
    /// Sidecars placement listed with the workers' actor types when the workloads began.
    pub sidecars_with_workers: usize,
    /// Starting the placement nodes (a leader elected), the sidecars (every ready line) and
    /// HAProxy.
    pub start_secs: f64,
    /// From the workers connecting to placement's table listing their sidecars, acknowledged.
    pub settle_secs: f64,
    /// `split` or `shared` (the worker's permit pools).
    pub permits: &'static str,
    /// PostgreSQL transactions per second with no workload running (lease renewals, reminder
    /// and remote-task polls of every sidecar), measured over one statistics wait before the
    /// workloads; `pg_window_extra_secs` is what each workload's counter window adds to its
    /// run time (the statistics wait before its closing reading).
    pub background_xacts_per_sec: Option<f64>,
    pub pg_window_extra_secs: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The sidecar child process's RSS right after it started, KiB.
    pub rss_at_start_kib: Option<u64>,
    pub rows: Vec<Row>,
    pub rss: Option<crate::rss::RssReport>,
    pub python: Option<crate::python::PyReport>,
    /// What a cluster run started ([`crate::cluster`]).
    pub cluster: Option<ClusterFacts>,
}

/// Starts a sidecar where `target` says, connects a worker, runs the plan and shuts everything
/// down. `pg_url` (the database the sidecar uses, if PostgreSQL) enables PostgreSQL's counters.
pub async fn run(
    target: impl Into<Target>,
    plan: &Plan,
    pg_url: Option<&str>,
) -> anyhow::Result<Report> {
    let sc = Sidecar::launch(target.into()).await?;
    let pg = match pg_url {
        Some(u) => Some(
            PgStat::connect(u)
                .await?
                .with_flush_wait(plan.pg_flush_wait),
        ),
        None => None,
    };
    let pg = pg.as_ref();
    let mut report = Report {
        rss_at_start_kib: sc.process.as_ref().and_then(|p| p.rss_kib().ok()),
        ..Report::default()
    };
    // The Python SDK is the only worker on its sidecar: run it before ours connects.
    if let Some(py) = &plan.python {
        report.python = Some(crate::python::run(&sc, pg, py).await?);
    }
    let mut worker = Worker::start(sc.connect().await?, plan.concurrency, plan.permits).await?;
    report.rows = chains(&Endpoints::of(&sc), &mut worker, pg, plan).await?;
    if let Some(rss) = &plan.rss {
        report.rss = Some(crate::rss::run(&sc, &mut worker, rss).await?);
    }
    drop(worker);
    sc.stop().await;
    Ok(report)
}

/// The warm-up, then the throughput, latency and fan-out workloads of `plan`, with `worker`
/// answering.
pub async fn chains(
    ep: &Endpoints<'_>,
    worker: &mut Worker,
    pg: Option<&PgStat>,
    plan: &Plan,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let (steps, concurrency) = (plan.steps, plan.concurrency);
    if plan.warmup > 0 {
        throughput(ep, worker, None, plan.warmup, steps, concurrency)
            .await
            .context("warm-up")?;
    }
    if plan.throughput {
        rows.push(throughput(ep, worker, pg, plan.workflows, steps, concurrency).await?);
    }
    if plan.latency_runs > 0 {
        rows.push(latency(ep, worker, pg, plan.latency_runs, steps, false).await?);
    }
    for &n in &plan.fanout {
        rows.push(latency(ep, worker, pg, plan.fanout_runs, n, true).await?);
    }
    Ok(rows)
}

/// The results as a plain-text table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<12} {:<9} {:<10} {:>9} {:>5} {:>9} {:>9} {:>11} {:>9} {:>9} {:>8} {:>12} {:>10} {:>10} {:>8} {:>6}\n",
        "workload",
        "backend",
        "sidecar",
        "workflows",
        "steps",
        "completed",
        "time s",
        "steps/s",
        "p50 ms",
        "p99 ms",
        "commits",
        "commits/step",
        "pg xact/st",
        "pg wr/step",
        "pg rollb",
        "load"
    );
    for r in rows {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        let per_step = |n: u64| n as f64 / (r.workflows as f64 * f64::from(r.steps)).max(1.0);
        out.push_str(&format!(
            "{:<12} {:<9} {:<10} {:>9} {:>5} {:>9} {:>9.2} {:>11.0} {:>9.2} {:>9.2} {:>8} {:>12} {:>10} {:>10} {:>8} {:>6.2}\n",
            r.workload,
            r.backend,
            r.sidecar,
            r.workflows,
            r.steps,
            r.completed,
            r.elapsed.as_secs_f64(),
            r.steps_per_sec,
            ms(r.p50),
            ms(r.p99),
            r.commits.map_or("-".to_string(), |c| c.to_string()),
            opt(r.commits_per_step),
            opt(r.pg.map(|p| per_step(p.xact_commit))),
            opt(r.pg.map(|p| per_step(p.write_xacts))),
            r.pg.map_or("-".to_string(), |p| p.xact_rollback.to_string()),
            r.load1
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
