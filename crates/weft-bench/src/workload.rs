//! The workloads and their figures.
//!
//! - **throughput**: start `workflows` instances of `steps` activities at once (bounded by
//!   `concurrency` concurrent `StartInstance` calls, each with `scheduledStartTimestamp` = epoch 0
//!   so it returns without waiting for the first turn) and time from the first start to the last
//!   committed `completeWorkflow`. Figure: activity steps per second. p50/p99 are the per-workflow
//!   times from start to completion under that load.
//! - **latency**: one workflow at a time; each is started (epoch 0) and awaited with
//!   `WaitForInstanceCompletion`, timed end to end from the client's side.
//!
//! Both read the store's commit counter before and after: commits per activity step counts every
//! write transaction in between (instance creation included) divided by `workflows × steps`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use weft_proto::durabletask::{CreateInstanceRequest, GetInstanceRequest, OrchestrationStatus};

use crate::harness::Sidecar;
use crate::probe::{OpStat, Probe};
use crate::worker::{Notice, Worker};

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub workload: &'static str,
    pub backend: &'static str,
    pub workflows: usize,
    pub steps: u32,
    /// Workflows that were verified COMPLETED afterwards.
    pub completed: usize,
    pub elapsed: Duration,
    pub steps_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub commits: u64,
    pub commits_per_step: f64,
    /// The engine's store calls during the measurement.
    pub store_calls: Vec<OpStat>,
}

/// A short random tag so several runs (or a reused database) never share instance IDs.
pub fn run_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

fn start_request(id: &str) -> CreateInstanceRequest {
    CreateInstanceRequest {
        instance_id: id.to_string(),
        name: "bench".into(),
        input: Some("0".into()),
        // A (past) scheduled start makes StartInstance return once the instance is durable.
        scheduled_start_timestamp: Some(prost_types::Timestamp::default()),
        ..Default::default()
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
async fn count_completed(
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
    workflows: usize,
    steps: u32,
    concurrency: usize,
) -> anyhow::Result<Row> {
    worker.drain()?;
    let tag = run_tag();
    let prefix = format!("tp-{tag}-");
    let ids: Vec<String> = (0..workflows).map(|i| format!("{prefix}{i}")).collect();
    let commits0 = sc.store.commit_count();
    let calls0 = sc.probe.snapshot();
    let t0 = Instant::now();

    // Start everything with bounded concurrency, while completions already stream in.
    let starts = futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let mut c = sc.client.clone();
            async move {
                let t = Instant::now();
                c.start_instance(start_request(&id))
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
                Some(Notice::Failed(e)) => anyhow::bail!("worker: {e}"),
                None => anyhow::bail!("the worker stopped"),
            },
        }
    }
    let last = done.values().max().copied().unwrap_or(t0);
    let elapsed = last.duration_since(t0);
    let commits = sc.store.commit_count() - commits0;
    let store_calls = Probe::delta(&calls0, &sc.probe.snapshot());

    let mut lat: Vec<Duration> = done
        .iter()
        .filter_map(|(id, at)| started.get(id).map(|s| at.saturating_duration_since(*s)))
        .collect();
    lat.sort();
    let completed = count_completed(sc, &ids, concurrency).await?;
    let total_steps = (workflows as u64 * u64::from(steps)) as f64;
    Ok(Row {
        workload: "throughput",
        backend: sc.store.backend(),
        workflows,
        steps,
        completed,
        elapsed,
        steps_per_sec: total_steps / elapsed.as_secs_f64().max(1e-9),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        commits,
        commits_per_step: commits as f64 / total_steps.max(1.0),
        store_calls,
    })
}

/// The latency workload (see the module docs): `runs` sequential workflows of `steps` steps.
pub async fn latency(
    sc: &Sidecar,
    worker: &mut Worker,
    runs: usize,
    steps: u32,
) -> anyhow::Result<Row> {
    worker.drain()?;
    let tag = run_tag();
    let mut client = sc.client.clone();
    let commits0 = sc.store.commit_count();
    let calls0 = sc.probe.snapshot();
    let t0 = Instant::now();
    let mut lat = Vec::with_capacity(runs);
    let mut completed = 0;
    for i in 0..runs {
        let id = format!("lat-{tag}-{i}");
        let t = Instant::now();
        client
            .start_instance(start_request(&id))
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
    let commits = sc.store.commit_count() - commits0;
    let store_calls = Probe::delta(&calls0, &sc.probe.snapshot());
    lat.sort();
    let total_steps = (runs as u64 * u64::from(steps)) as f64;
    Ok(Row {
        workload: "latency",
        backend: sc.store.backend(),
        workflows: runs,
        steps,
        completed,
        elapsed,
        steps_per_sec: total_steps / elapsed.as_secs_f64().max(1e-9),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        commits,
        commits_per_step: commits as f64 / total_steps.max(1.0),
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
}

/// Starts a sidecar on `store`, connects a worker, runs the plan and shuts everything down.
pub async fn run(store: crate::BenchStore, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let sc = Sidecar::start(store).await?;
    let mut worker = Worker::start(sc.connect().await?, plan.steps, plan.concurrency).await?;
    let mut rows = Vec::new();
    if plan.warmup > 0 {
        throughput(&sc, &mut worker, plan.warmup, plan.steps, plan.concurrency)
            .await
            .context("warm-up")?;
    }
    if plan.throughput {
        rows.push(
            throughput(
                &sc,
                &mut worker,
                plan.workflows,
                plan.steps,
                plan.concurrency,
            )
            .await?,
        );
    }
    if plan.latency_runs > 0 {
        rows.push(latency(&sc, &mut worker, plan.latency_runs, plan.steps).await?);
    }
    drop(worker);
    sc.stop().await;
    Ok(rows)
}

/// The results as a plain-text table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<11} {:<9} {:>9} {:>5} {:>9} {:>9} {:>11} {:>9} {:>9} {:>8} {:>12}\n",
        "workload",
        "backend",
        "workflows",
        "steps",
        "completed",
        "time s",
        "steps/s",
        "p50 ms",
        "p99 ms",
        "commits",
        "commits/step"
    );
    for r in rows {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        out.push_str(&format!(
            "{:<11} {:<9} {:>9} {:>5} {:>9} {:>9.2} {:>11.0} {:>9.2} {:>9.2} {:>8} {:>12.3}\n",
            r.workload,
            r.backend,
            r.workflows,
            r.steps,
            r.completed,
            r.elapsed.as_secs_f64(),
            r.steps_per_sec,
            ms(r.p50),
            ms(r.p99),
            r.commits,
            r.commits_per_step
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
