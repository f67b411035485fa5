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
//! The idle-memory and Python workloads are in [`crate::rss`] and [`crate::python`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use weft_proto::durabletask::{GetInstanceRequest, OrchestrationStatus};

use crate::harness::{Sidecar, Target, run_tag, start_request};
use crate::pgstat::{self, Counters, PgStat};
use crate::probe::{OpStat, Probe};
use crate::process::load_avg;
use crate::worker::{Notice, Worker};

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub workload: String,
    pub backend: &'static str,
    /// `in-process` or `process` (the sidecar in a `weft dev` child process).
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
    async fn begin(sc: &Sidecar, pg: Option<&PgStat>) -> anyhow::Result<Self> {
        let pg = match pg {
            Some(p) => Some(p.settled().await?),
            None => None,
        };
        Ok(Self {
            commits: sc.commit_count(),
            calls: sc.probe.snapshot(),
            pg,
        })
    }

    /// Commits, store calls and PostgreSQL figures since `begin`.
    async fn end(
        self,
        sc: &Sidecar,
        pg: Option<&PgStat>,
    ) -> anyhow::Result<(Option<u64>, Vec<OpStat>, Option<PgFigures>)> {
        let commits = match (self.commits, sc.commit_count()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let calls = Probe::delta(&self.calls, &sc.probe.snapshot());
        let pg = match (self.pg, pg) {
            (Some(before), Some(p)) => {
                let (xact_commit, write_xacts) = pgstat::delta(before, p.settled().await?);
                Some(PgFigures {
                    xact_commit,
                    write_xacts,
                })
            }
            _ => None,
        };
        Ok((commits, calls, pg))
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
    sc: &Sidecar,
    ids: &[String],
    concurrency: usize,
) -> anyhow::Result<usize> {
    let results: Vec<anyhow::Result<bool>> = futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let mut c = sc.client.clone();
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
    sc: &Sidecar,
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
    let meter = Meter::begin(sc, pg).await?;
    let t0 = Instant::now();

    // Start everything with bounded concurrency, while completions already stream in.
    let starts = futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let mut c = sc.client.clone();
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
                    if instance_id.starts_with(&prefix) {
                        done.insert(instance_id, at);
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
    let (commits, store_calls, pg) = meter.end(sc, pg).await?;

    let mut lat: Vec<Duration> = done
        .iter()
        .filter_map(|(id, at)| started.get(id).map(|s| at.saturating_duration_since(*s)))
        .collect();
    lat.sort();
    let completed = count_completed(sc, &ids, concurrency).await?;
    let total_steps = (workflows as u64 * u64::from(steps)) as f64;
    Ok(Row {
        workload: "throughput".into(),
        backend: sc.backend,
        sidecar: sidecar_kind(sc),
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
    sc: &Sidecar,
    worker: &mut Worker,
    pg: Option<&PgStat>,
    runs: usize,
    steps: u32,
    fanout: bool,
) -> anyhow::Result<Row> {
    worker.drain()?;
    let tag = run_tag();
    let mut client = sc.client.clone();
    let (name, label) = if fanout {
        ("fanout", format!("fanout-{steps}"))
    } else {
        ("chain", "latency".to_string())
    };
    let input = steps.to_string();
    let meter = Meter::begin(sc, pg).await?;
    let t0 = Instant::now();
    let mut lat = Vec::with_capacity(runs);
    let mut completed = 0;
    for i in 0..runs {
        let id = format!("lat-{tag}-{i}");
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
    let (commits, store_calls, pg) = meter.end(sc, pg).await?;
    lat.sort();
    let total_steps = (runs as u64 * u64::from(steps)) as f64;
    Ok(Row {
        workload: label,
        backend: sc.backend,
        sidecar: sidecar_kind(sc),
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
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The sidecar child process's RSS right after it started, KiB.
    pub rss_at_start_kib: Option<u64>,
    pub rows: Vec<Row>,
    pub rss: Option<crate::rss::RssReport>,
    pub python: Option<crate::python::PyReport>,
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
        Some(u) => Some(PgStat::connect(u).await?),
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
    let mut worker = Worker::start(sc.connect().await?, plan.concurrency).await?;
    if plan.warmup > 0 {
        throughput(
            &sc,
            &mut worker,
            None,
            plan.warmup,
            plan.steps,
            plan.concurrency,
        )
        .await
        .context("warm-up")?;
    }
    if plan.throughput {
        let r = throughput(
            &sc,
            &mut worker,
            pg,
            plan.workflows,
            plan.steps,
            plan.concurrency,
        )
        .await?;
        report.rows.push(r);
    }
    if plan.latency_runs > 0 {
        let r = latency(&sc, &mut worker, pg, plan.latency_runs, plan.steps, false).await?;
        report.rows.push(r);
    }
    for &n in &plan.fanout {
        let r = latency(&sc, &mut worker, pg, plan.fanout_runs, n, true).await?;
        report.rows.push(r);
    }
    if let Some(rss) = &plan.rss {
        report.rss = Some(crate::rss::run(&sc, &mut worker, rss).await?);
    }
    drop(worker);
    sc.stop().await;
    Ok(report)
}

/// The results as a plain-text table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<12} {:<9} {:<10} {:>9} {:>5} {:>9} {:>9} {:>11} {:>9} {:>9} {:>8} {:>12} {:>10} {:>10} {:>6}\n",
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
        "load"
    );
    for r in rows {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        let per_step = |n: u64| n as f64 / (r.workflows as f64 * f64::from(r.steps)).max(1.0);
        out.push_str(&format!(
            "{:<12} {:<9} {:<10} {:>9} {:>5} {:>9} {:>9.2} {:>11.0} {:>9.2} {:>9.2} {:>8} {:>12} {:>10} {:>10} {:>6.2}\n",
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
