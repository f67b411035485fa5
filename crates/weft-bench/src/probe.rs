//! A transparent [`Store`] wrapper (a [`Layer`]) that counts the engine's store calls and the time each takes
//! (as the caller sees it: queueing for the connection included). The benchmark reports these per
//! activity step, which shows where an end-to-end step spends its store round trips. For the
//! batch writes it also records the items per call (the group-commit batch size).
//!
//! The wrapper adds two clock reads, three relaxed atomic adds and the layer's boxed futures per
//! call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use weft_store::Store;
use weft_store::layer::{Answer, Call, InnerCall, Layer};

#[derive(Default)]
struct Stat {
    calls: AtomicU64,
    items: AtomicU64,
    nanos: AtomicU64,
}

/// Counters shared by a [`Probed`] store and the benchmark, one per [`Call`] (lease calls and
/// `health` are not counted).
#[derive(Default)]
pub struct Probe {
    stats: [Stat; Call::ALL.len()],
}

/// One operation's figures over an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct OpStat {
    pub op: &'static str,
    pub calls: u64,
    /// Items carried (batch writes: checkpoints or completions; others: equal to `calls`).
    pub items: u64,
    pub total: Duration,
}

impl Probe {
    fn record(&self, call: Call, items: u64, since: Instant) {
        let s = &self.stats[call as usize];
        s.calls.fetch_add(1, Ordering::Relaxed);
        s.items.fetch_add(items, Ordering::Relaxed);
        let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        s.nanos.fetch_add(ns, Ordering::Relaxed);
    }

    /// The counters now (cumulative since the store was opened).
    pub fn snapshot(&self) -> Vec<OpStat> {
        Call::ALL
            .iter()
            .zip(&self.stats)
            .filter(|(call, _)| probed(**call))
            .map(|(call, s)| OpStat {
                op: call.name(),
                calls: s.calls.load(Ordering::Relaxed),
                items: s.items.load(Ordering::Relaxed),
                total: Duration::from_nanos(s.nanos.load(Ordering::Relaxed)),
            })
            .collect()
    }

    /// What happened between two snapshots, leaving out operations that were not called.
    pub fn delta(before: &[OpStat], after: &[OpStat]) -> Vec<OpStat> {
        after
            .iter()
            .zip(before)
            .map(|(a, b)| OpStat {
                op: a.op,
                calls: a.calls - b.calls,
                items: a.items - b.items,
                total: a.total.saturating_sub(b.total),
            })
            .filter(|s| s.calls > 0)
            .collect()
    }
}

/// A store that forwards every call to `inner` and records it in `probe`.
pub struct Probed {
    inner: Arc<dyn Store>,
    probe: Arc<Probe>,
}

impl Probed {
    pub fn new(inner: Arc<dyn Store>, probe: Arc<Probe>) -> Self {
        Self { inner, probe }
    }
}

/// Whether `call` is counted: the engine's reads and writes of workflow state, not its leases.
fn probed(call: Call) -> bool {
    !call.is_lease() && call != Call::Health
}

#[async_trait]
impl Layer for Probed {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    async fn around<A: Answer>(&self, call: Call, n: usize, inner: InnerCall<'_, A>) -> A {
        if !probed(call) {
            return inner.await;
        }
        let t = Instant::now();
        let out = inner.await;
        self.probe.record(call, n as u64, t);
        out
    }
}

/// The store calls of an interval as a table, per activity step (`steps` steps in the interval).
pub fn table(stats: &[OpStat], steps: u64) -> String {
    let steps = steps.max(1) as f64;
    let mut out = format!(
        "  {:<24} {:>8} {:>10} {:>11} {:>10} {:>10}\n",
        "store call", "calls", "calls/step", "items/call", "mean ms", "total s"
    );
    for s in stats {
        out.push_str(&format!(
            "  {:<24} {:>8} {:>10.3} {:>11.2} {:>10.3} {:>10.3}\n",
            s.op,
            s.calls,
            s.calls as f64 / steps,
            s.items as f64 / s.calls.max(1) as f64,
            s.total.as_secs_f64() * 1e3 / s.calls.max(1) as f64,
            s.total.as_secs_f64()
        ));
    }
    out
}
