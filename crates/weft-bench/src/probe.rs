//! A transparent [`Store`] wrapper that counts the engine's store calls and the time each takes
//! (as the caller sees it: queueing for the connection included). The benchmark reports these per
//! activity step, which shows where an end-to-end step spends its store round trips. For the
//! batch writes it also records the items per call (the group-commit batch size).
//!
//! The wrapper adds two clock reads and three relaxed atomic adds per call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use weft_core::{InstanceMeta, Micros};
use weft_proto::durabletask::HistoryEvent;
use weft_store::{
    ActivityCompletion, ActivityTask, BucketLease, Checkpoint, CreateInstance, CreateOutcome,
    Fence, InboxEntry, InstancePage, ListFilter, LoadedInstance, Reminder, Result, Scope,
    SlotLease, Store, Wakeup,
};

/// The store operations, in the order they are reported.
const OPS: [&str; 19] = [
    "create_instance",
    "create_instance_batch",
    "get_instance",
    "load",
    "get_history",
    "read_inbox",
    "append_inbox",
    "checkpoint",
    "checkpoint_batch",
    "claim_activities",
    "complete_activity",
    "complete_activity_batch",
    "instances_with_inbox",
    "claim_due_reminders",
    "fire_reminder",
    "next_reminder_due",
    "stalled_instances",
    "list_instances",
    "purge",
];

#[derive(Default)]
struct Stat {
    calls: AtomicU64,
    items: AtomicU64,
    nanos: AtomicU64,
}

/// Counters shared by a [`Probed`] store and the benchmark.
#[derive(Default)]
pub struct Probe {
    stats: [Stat; OPS.len()],
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
    fn record(&self, op: usize, items: u64, since: Instant) {
        let s = &self.stats[op];
        s.calls.fetch_add(1, Ordering::Relaxed);
        s.items.fetch_add(items, Ordering::Relaxed);
        let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        s.nanos.fetch_add(ns, Ordering::Relaxed);
    }

    /// The counters now (cumulative since the store was opened).
    pub fn snapshot(&self) -> Vec<OpStat> {
        OPS.iter()
            .zip(&self.stats)
            .map(|(op, s)| OpStat {
                op,
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

/// Times `$call` as operation `$op` carrying `$items` items.
macro_rules! timed {
    ($self:ident, $op:literal, $items:expr, $call:expr) => {{
        const IDX: usize = op_index($op);
        let items = $items as u64;
        let t = Instant::now();
        let out = $call.await;
        $self.probe.record(IDX, items, t);
        out
    }};
}

const fn op_index(name: &str) -> usize {
    let mut i = 0;
    while i < OPS.len() {
        if const_eq(OPS[i], name) {
            return i;
        }
        i += 1;
    }
    panic!("unknown store operation");
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[async_trait]
impl Store for Probed {
    async fn create_instance(&self, req: CreateInstance) -> Result<CreateOutcome> {
        timed!(self, "create_instance", 1, self.inner.create_instance(req))
    }

    // Forwarded, so the store's own group commit runs (the trait's default would split it).
    async fn create_instance_batch(&self, reqs: Vec<CreateInstance>) -> Vec<Result<CreateOutcome>> {
        timed!(
            self,
            "create_instance_batch",
            reqs.len(),
            self.inner.create_instance_batch(reqs)
        )
    }

    async fn get_instance(&self, instance_id: &str) -> Result<Option<InstanceMeta>> {
        timed!(
            self,
            "get_instance",
            1,
            self.inner.get_instance(instance_id)
        )
    }

    async fn load(&self, instance_id: &str) -> Result<Option<LoadedInstance>> {
        timed!(self, "load", 1, self.inner.load(instance_id))
    }

    async fn get_history(&self, instance_id: &str) -> Result<Option<Vec<HistoryEvent>>> {
        timed!(self, "get_history", 1, self.inner.get_history(instance_id))
    }

    async fn read_inbox(&self, instance_id: &str) -> Result<Vec<InboxEntry>> {
        timed!(self, "read_inbox", 1, self.inner.read_inbox(instance_id))
    }

    async fn append_inbox(&self, instance_id: &str, event: HistoryEvent) -> Result<bool> {
        timed!(
            self,
            "append_inbox",
            1,
            self.inner.append_inbox(instance_id, event)
        )
    }

    async fn checkpoint(&self, cp: Checkpoint) -> Result<()> {
        timed!(self, "checkpoint", 1, self.inner.checkpoint(cp))
    }

    async fn checkpoint_batch(&self, cps: Vec<Checkpoint>) -> Vec<Result<()>> {
        timed!(
            self,
            "checkpoint_batch",
            cps.len(),
            self.inner.checkpoint_batch(cps)
        )
    }

    async fn claim_activities(&self, scope: &Scope) -> Result<Vec<ActivityTask>> {
        timed!(
            self,
            "claim_activities",
            1,
            self.inner.claim_activities(scope)
        )
    }

    async fn complete_activity(
        &self,
        instance_id: &str,
        task_id: i32,
        generation: i64,
        event: HistoryEvent,
    ) -> Result<bool> {
        timed!(
            self,
            "complete_activity",
            1,
            self.inner
                .complete_activity(instance_id, task_id, generation, event)
        )
    }

    async fn complete_activity_batch(&self, items: Vec<ActivityCompletion>) -> Vec<Result<bool>> {
        timed!(
            self,
            "complete_activity_batch",
            items.len(),
            self.inner.complete_activity_batch(items)
        )
    }

    async fn instances_with_inbox(&self, scope: &Scope) -> Result<Vec<String>> {
        timed!(
            self,
            "instances_with_inbox",
            1,
            self.inner.instances_with_inbox(scope)
        )
    }

    async fn claim_due_reminders(
        &self,
        scope: &Scope,
        now: Micros,
        lease_until: Micros,
        limit: usize,
    ) -> Result<Vec<Reminder>> {
        timed!(
            self,
            "claim_due_reminders",
            1,
            self.inner
                .claim_due_reminders(scope, now, lease_until, limit)
        )
    }

    async fn fire_reminder(&self, reminder_id: i64, fence: Option<&Fence>) -> Result<bool> {
        timed!(
            self,
            "fire_reminder",
            1,
            self.inner.fire_reminder(reminder_id, fence)
        )
    }

    async fn next_reminder_due(&self, scope: &Scope) -> Result<Option<Micros>> {
        timed!(
            self,
            "next_reminder_due",
            1,
            self.inner.next_reminder_due(scope)
        )
    }

    async fn stalled_instances(&self, scope: &Scope, limit: usize) -> Result<Vec<String>> {
        timed!(
            self,
            "stalled_instances",
            1,
            self.inner.stalled_instances(scope, limit)
        )
    }

    async fn list_instances(&self, filter: ListFilter) -> Result<InstancePage> {
        timed!(self, "list_instances", 1, self.inner.list_instances(filter))
    }

    async fn purge(&self, instance_id: &str, force: bool, fence: Option<&Fence>) -> Result<bool> {
        timed!(
            self,
            "purge",
            1,
            self.inner.purge(instance_id, force, fence)
        )
    }

    async fn acquire_slots(
        &self,
        bucket: &str,
        limit: u32,
        holder: &str,
        want: u32,
        now: Micros,
        until: Micros,
    ) -> Result<Vec<u32>> {
        self.inner
            .acquire_slots(bucket, limit, holder, want, now, until)
            .await
    }

    async fn renew_slots(
        &self,
        holder: &str,
        now: Micros,
        until: Micros,
    ) -> Result<Vec<SlotLease>> {
        self.inner.renew_slots(holder, now, until).await
    }

    async fn release_slots(&self, bucket: &str, holder: &str, slots: &[u32]) -> Result<()> {
        self.inner.release_slots(bucket, holder, slots).await
    }
    async fn start_holder(&self, holder: &str, ttl: Micros) -> Result<()> {
        self.inner.start_holder(holder, ttl).await
    }
    async fn renew_holder(&self, holder: &str, ttl: Micros) -> Result<bool> {
        self.inner.renew_holder(holder, ttl).await
    }
    async fn end_holder(&self, holder: &str) -> Result<()> {
        self.inner.end_holder(holder).await
    }
    async fn acquire_buckets(
        &self,
        app_id: &str,
        holder: &str,
        buckets: &[i32],
    ) -> Result<Vec<BucketLease>> {
        self.inner.acquire_buckets(app_id, holder, buckets).await
    }
    async fn release_buckets(&self, app_id: &str, holder: &str, buckets: &[i32]) -> Result<()> {
        self.inner.release_buckets(app_id, holder, buckets).await
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Wakeup>> {
        self.inner.subscribe()
    }

    async fn health(&self) -> Result<()> {
        self.inner.health().await
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
