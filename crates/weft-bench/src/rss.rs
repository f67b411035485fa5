//! The idle-memory workload: N `wait` workflows (each waits for an external event that never
//! comes) are created with bounded concurrency, the rate reached is recorded, and the sidecar
//! process's resident memory (`VmRSS` of `/proc/PID/status`, not allocator counters) is read
//! empty, once every workflow has had its first turn, when the sidecar's `/metrics` says the
//! idle actors are gone, and again a settling time later (allocators return memory late).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;

use crate::harness::{Sidecar, run_tag, start_request};
use crate::process::load_avg;
use crate::worker::{Notice, Worker};

/// What to run.
#[derive(Debug, Clone)]
pub struct RssPlan {
    pub workflows: usize,
    pub concurrency: usize,
    /// Longest wait for the idle actors to be dropped (longer than the engine's idle timeout).
    pub idle_wait: Duration,
    /// Time between the actors being gone and the last reading.
    pub settle: Duration,
}

/// What the idle-memory workload measured.
#[derive(Debug, Clone)]
pub struct RssReport {
    pub workflows: usize,
    /// Sidecar RSS before the workload (after the warm-up), KiB.
    pub rss_before_kib: u64,
    /// Time to create every instance (all `StartInstance` calls returned).
    pub create_secs: f64,
    pub create_per_sec: f64,
    pub load_after_create: f64,
    /// Time until every workflow had had its first turn.
    pub all_waiting_secs: f64,
    /// Sidecar RSS once every workflow waits, KiB.
    pub rss_waiting_kib: u64,
    /// Highest RSS seen during the workload, KiB (sampled every 500 ms).
    pub rss_peak_kib: u64,
    /// From all waiting until no actor was left in memory (or the wait gave up).
    pub idle_wait_secs: f64,
    /// Actors still in memory at the end of that wait (0 unless it gave up).
    pub actors_left: u64,
    /// Sidecar RSS when the actors were gone, KiB.
    pub rss_retired_kib: u64,
    /// Sidecar RSS `settle_secs` later, KiB.
    pub rss_after_idle_kib: u64,
    pub settle_secs: f64,
    /// Per-instance records besides actors still in memory then (0 expected).
    pub records_left: u64,
    pub load_after_idle: f64,
}

/// Runs the workload on a sidecar in a child process.
pub async fn run(sc: &Sidecar, worker: &mut Worker, plan: &RssPlan) -> anyhow::Result<RssReport> {
    let proc = sc
        .process
        .as_ref()
        .context("the idle-memory workload needs --sidecar process (RSS of the sidecar alone)")?;
    worker.drain()?;
    let pid = proc.pid();
    let rss_before_kib = proc.rss_kib()?;
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_before_kib));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(r) = crate::process::rss_kib(pid) {
                    peak.fetch_max(r, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let tag = run_tag();
    let t0 = Instant::now();
    let mut creates = futures::stream::iter(0..plan.workflows)
        .map(|i| {
            let mut c = sc.client.clone();
            let id = format!("rss-{tag}-{i}");
            async move {
                c.start_instance(start_request(&id, "wait", ""))
                    .await
                    .with_context(|| format!("StartInstance({id})"))
            }
        })
        .buffer_unordered(plan.concurrency.max(1));
    let mut created = 0;
    let mut waiting = 0;
    let mut create_secs = 0.0;
    let mut load_after_create = 0.0;
    while created < plan.workflows || waiting < plan.workflows {
        tokio::select! {
            r = creates.next(), if created < plan.workflows => {
                match r {
                    Some(r) => { r?; created += 1; }
                    None => anyhow::bail!("creation stream ended early"),
                }
                if created == plan.workflows {
                    create_secs = t0.elapsed().as_secs_f64();
                    load_after_create = load_avg();
                }
            }
            n = worker.next() => match n {
                Some(Notice::Waiting) => waiting += 1,
                Some(Notice::Completed { .. }) => {}
                Some(Notice::Failed(e)) => anyhow::bail!("worker: {e}"),
                None => anyhow::bail!("the worker stopped"),
            },
        }
    }
    let all_waiting_secs = t0.elapsed().as_secs_f64();
    let rss_waiting_kib = proc.rss_kib()?;
    let idle0 = Instant::now();
    let gauge = |name: &'static str| async move {
        crate::process::scrape_gauge(&proc.http_addr, name)
            .await
            .map(|v| v.unwrap_or(0.0) as u64)
    };
    let mut actors_left = gauge("weft_actors_in_memory").await?;
    while actors_left > 0 && idle0.elapsed() < plan.idle_wait {
        tokio::time::sleep(Duration::from_millis(500)).await;
        actors_left = gauge("weft_actors_in_memory").await?;
    }
    let idle_wait_secs = idle0.elapsed().as_secs_f64();
    let rss_retired_kib = proc.rss_kib()?;
    tokio::time::sleep(plan.settle).await;
    let rss_after_idle_kib = proc.rss_kib()?;
    let records_left = gauge("weft_instance_records_in_memory").await?;
    sampler.abort();
    Ok(RssReport {
        workflows: plan.workflows,
        rss_before_kib,
        create_secs,
        create_per_sec: plan.workflows as f64 / create_secs.max(1e-9),
        load_after_create,
        all_waiting_secs,
        rss_waiting_kib,
        rss_peak_kib: peak.load(std::sync::atomic::Ordering::Relaxed),
        idle_wait_secs,
        actors_left,
        rss_retired_kib,
        rss_after_idle_kib,
        settle_secs: plan.settle.as_secs_f64(),
        records_left,
        load_after_idle: load_avg(),
    })
}

/// The report as plain text.
pub fn table(r: &RssReport) -> String {
    let mb = |k: u64| k as f64 / 1024.0;
    format!(
        "idle memory, {} workflows waiting for an event (sidecar VmRSS):\n  \
         before {:.1} MB; created in {:.1} s = {:.0} workflows/s (load {:.2}); all waiting after {:.1} s\n  \
         waiting {:.1} MB (peak {:.1} MB, {:.2} KB per workflow over before)\n  \
         actors dropped after {:.1} s ({} left): {:.1} MB; {:.0} s later {:.1} MB, {} instance records left (load {:.2})\n",
        r.workflows,
        mb(r.rss_before_kib),
        r.create_secs,
        r.create_per_sec,
        r.load_after_create,
        r.all_waiting_secs,
        mb(r.rss_waiting_kib),
        mb(r.rss_peak_kib),
        (r.rss_waiting_kib.saturating_sub(r.rss_before_kib)) as f64 / r.workflows.max(1) as f64,
        r.idle_wait_secs,
        r.actors_left,
        mb(r.rss_retired_kib),
        r.settle_secs,
        mb(r.rss_after_idle_kib),
        r.records_left,
        r.load_after_idle,
    )
}
