//! The cluster simulation's view of ownership at the store boundary: a [`Store`] wrapper per
//! engine that
//!
//! - records, in one global order shared by every engine, each lease grant (`acquire_buckets`
//!   results) and each *successful* owner write with the fence it carried — checkpoints,
//!   activity and reminder claims (the buckets of the rows they returned), reminder fires and
//!   purges — so [`FenceLog::violations`] can find a write that committed under an epoch lower
//!   than one already granted for its bucket: a write by a stale owner;
//! - can **pause** its engine ([`crate::control::Control`]): armed with an owner-write kind, the
//!   next such call (carrying a fence; for claims, only one that would return rows, judged by
//!   [`crate::pending`]) freezes every store call of that engine, renewals included, until the
//!   driver lets it go — a process stopped between checking its lease and sending a write — and
//!   can **hold** the engine that takes the paused one's buckets over until the paused write
//!   landed;
//! - can **cut** its engine off the database (every call fails as unreachable);
//! - for the mutation check only, can **strip** the fence from one kind of owner write before
//!   forwarding it, to show the invariant catches a missing fencing condition.
//!
//! Order: a grant is numbered after `acquire_buckets` returned (it has committed), a write just
//! before it is forwarded (it commits later). A write numbered after a grant of a higher epoch
//! for its bucket therefore committed after that grant: no false alarms, whatever the threads do.

use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

use crate::control::Control;
use crate::op::Op;
use crate::pending::{Effect, Pending};
use weft_core::Micros;
use weft_core::bucket::bucket_of;
use weft_proto::durabletask::HistoryEvent;
use weft_store::layer::{self, Answer, Call, InnerCall, Layer};
use weft_store::{
    ActivityCompletion, ActivityTask, BucketLease, Checkpoint, CreateInstance, CreateOutcome,
    Fence, Reminder, Result, Scope, Store, StoreError,
};

#[derive(Debug, Clone)]
struct Grant {
    seq: u64,
    engine: usize,
    holder: String,
    epoch: i64,
}

#[derive(Debug, Clone)]
struct Write {
    seq: u64,
    engine: usize,
    op: Op,
    bucket: i32,
    epoch: i64,
    what: String,
}

#[derive(Default)]
struct LogState {
    grants: HashMap<i32, Vec<Grant>>,
    writes: Vec<Write>,
    /// Owner-write calls that carried no fence, per kind.
    unfenced: BTreeMap<Op, u64>,
    /// Owner writes refused as fenced, per kind.
    refused: BTreeMap<Op, u64>,
    /// Owner-write calls forwarded after a grant of a higher epoch for one of their buckets:
    /// the calls the store must refuse (or, for claims, skip those buckets of).
    stale: BTreeMap<Op, u64>,
}

/// Figures of the lease history of one run.
#[derive(Debug, Default, Clone)]
pub struct FenceStats {
    pub grants: u64,
    pub writes: u64,
    pub refused: BTreeMap<Op, u64>,
    pub unfenced: BTreeMap<Op, u64>,
    pub stale: BTreeMap<Op, u64>,
}

/// The lease grants and owner writes of every engine of one run, in one order.
#[derive(Default)]
pub struct FenceLog {
    seq: AtomicU64,
    state: Mutex<LogState>,
    /// Bumped on every grant, for a driver waiting for a take-over.
    granted: watch::Sender<u64>,
    /// Set at the first write by a stale owner (a mutation run can stop there).
    violated: watch::Sender<bool>,
    /// The fences of a paused write whose take-over the driver waits for: an engine granted one
    /// of these buckets at a higher epoch is held until the paused write landed, so the stale
    /// write meets the store before the new owner acted (deterministic, not a race).
    watched: Mutex<HashMap<i32, i64>>,
    /// What claims could find, for pauses that must freeze a claim returning rows.
    pending: Mutex<Pending>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FenceLog {
    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst)
    }

    fn grant(&self, engine: usize, holder: &str, leases: &[BucketLease]) {
        let seq = self.next();
        let mut s = lock(&self.state);
        for l in leases {
            s.grants.entry(l.bucket).or_default().push(Grant {
                seq,
                engine,
                holder: holder.to_string(),
                epoch: l.epoch,
            });
        }
        drop(s);
        self.granted.send_modify(|n| *n += 1);
    }

    fn wrote(&self, seq: u64, engine: usize, op: Op, fence: (i32, i64), what: String) {
        let mut s = lock(&self.state);
        let stale = s
            .grants
            .get(&fence.0)
            .is_some_and(|gs| gs.iter().any(|g| g.seq < seq && g.epoch > fence.1));
        s.writes.push(Write {
            seq,
            engine,
            op,
            bucket: fence.0,
            epoch: fence.1,
            what,
        });
        drop(s);
        if stale {
            self.violated.send_replace(true);
        }
    }

    /// Counts a call forwarded after one of its buckets was granted at a higher epoch.
    fn count_stale(&self, op: Op, fences: &[(i32, i64)]) {
        let mut s = lock(&self.state);
        let stale = fences.iter().any(|(b, e)| {
            s.grants
                .get(b)
                .is_some_and(|gs| gs.iter().any(|g| g.epoch > *e))
        });
        if stale {
            *s.stale.entry(op).or_default() += 1;
        }
    }

    fn count(&self, op: Op, refused: bool) {
        let mut s = lock(&self.state);
        let m = if refused {
            &mut s.refused
        } else {
            &mut s.unfenced
        };
        *m.entry(op).or_default() += 1;
    }

    /// The highest epoch granted for `bucket` so far (to wait for a take-over).
    pub fn epoch_of(&self, bucket: i32) -> Option<i64> {
        lock(&self.state)
            .grants
            .get(&bucket)
            .and_then(|g| g.iter().map(|g| g.epoch).max())
    }

    /// The engine granted the highest epoch of `bucket` so far (its owner, unless released).
    pub fn holder_of(&self, bucket: i32) -> Option<usize> {
        lock(&self.state)
            .grants
            .get(&bucket)
            .and_then(|g| g.iter().max_by_key(|g| g.epoch))
            .map(|g| g.engine)
    }

    /// Waits until a write by a stale owner was recorded.
    pub async fn first_violation(&self) {
        let _ = self.violated.subscribe().wait_for(|v| *v).await;
    }

    /// Holds every engine granted one of `fences`' buckets at a higher epoch, until
    /// [`FenceLog::unwatch`].
    pub fn watch_takeover(&self, fences: &[(i32, i64)]) {
        *lock(&self.watched) = fences.iter().copied().collect();
    }

    /// Stops holding new owners; release the held ones after this.
    pub fn unwatch(&self) {
        lock(&self.watched).clear();
    }

    /// Holds `ctl` if `leases` take over a watched bucket. Under the `watched` lock, so a hold
    /// is never set after [`FenceLog::unwatch`] returned (the driver releases holds after it).
    fn hold_if_taking_over(&self, leases: &[BucketLease], ctl: &Control) {
        let w = lock(&self.watched);
        if leases
            .iter()
            .any(|l| w.get(&l.bucket).is_some_and(|e| l.epoch > *e))
        {
            ctl.hold();
        }
    }

    /// Buckets of instances with activity tasks pending.
    pub fn task_buckets(&self) -> Vec<i32> {
        lock(&self.pending).task_buckets()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        lock(&self.pending)
    }

    /// A receiver that changes on every grant.
    pub fn grants_changed(&self) -> watch::Receiver<u64> {
        self.granted.subscribe()
    }

    pub fn stats(&self) -> FenceStats {
        let s = lock(&self.state);
        FenceStats {
            grants: s.grants.values().map(|g| g.len() as u64).sum(),
            writes: s.writes.len() as u64,
            refused: s.refused.clone(),
            unfenced: s.unfenced.clone(),
            stale: s.stale.clone(),
        }
    }

    /// "No write by a stale owner": every successful owner write numbered after a grant of a
    /// higher epoch for its bucket. Also: one epoch of a bucket belongs to one holder.
    pub fn violations(&self) -> Vec<String> {
        let s = lock(&self.state);
        let mut out = Vec::new();
        for w in &s.writes {
            let Some(gs) = s.grants.get(&w.bucket) else {
                out.push(format!(
                    "engine {} {} under epoch {} of bucket {} that was never granted: {}",
                    w.engine,
                    w.op.name(),
                    w.epoch,
                    w.bucket,
                    w.what
                ));
                continue;
            };
            if let Some(g) = gs.iter().find(|g| g.seq < w.seq && g.epoch > w.epoch) {
                out.push(format!(
                    "stale owner write: engine {} committed {} under epoch {} of bucket {} (at \
                     #{}) after engine {} ({}) was granted epoch {} (at #{}): {}",
                    w.engine,
                    w.op.name(),
                    w.epoch,
                    w.bucket,
                    w.seq,
                    g.engine,
                    g.holder,
                    g.epoch,
                    g.seq,
                    w.what
                ));
            }
        }
        for (b, gs) in &s.grants {
            let mut by_epoch: HashMap<i64, &str> = HashMap::new();
            for g in gs {
                if let Some(h) = by_epoch.insert(g.epoch, &g.holder)
                    && h != g.holder
                {
                    out.push(format!(
                        "bucket {b}: epoch {} granted to both {h} and {}",
                        g.epoch, g.holder
                    ));
                }
            }
        }
        out
    }
}

/// One engine's store handle, recording into the run's [`FenceLog`].
pub struct FenceStore {
    inner: Arc<dyn Store>,
    engine: usize,
    log: Arc<FenceLog>,
    ctl: Arc<Control>,
    /// Mutation check only: forward this kind of owner write without its fence.
    strip: Option<Op>,
}

impl FenceStore {
    pub fn new(
        inner: Arc<dyn Store>,
        engine: usize,
        log: Arc<FenceLog>,
        ctl: Arc<Control>,
        strip: Option<Op>,
    ) -> Self {
        Self {
            inner,
            engine,
            log,
            ctl,
            strip,
        }
    }

    fn stripped(&self, op: Op) -> bool {
        self.strip == Some(op)
    }

    /// Before forwarding an owner write: maybe pause (if it `matters`), then wait/fail, then
    /// number it. Returns the number and whether this call started a pause (then
    /// [`FenceStore::landed`] must follow the store's answer).
    async fn owner(
        &self,
        op: Op,
        fences: &[(i32, i64)],
        fenced: bool,
        matters: bool,
    ) -> Result<(u64, bool)> {
        if !fenced {
            self.log.count(op, false);
        }
        let paused = self.ctl.trigger(op, fences, matters);
        if let Err(e) = self.ctl.pass().await {
            self.landed(paused);
            return Err(e);
        }
        let seq = self.log.next();
        self.log.count_stale(op, fences);
        Ok((seq, paused))
    }

    /// [`FenceStore::owner`] for a claim over a scope.
    async fn owner_of_scope(&self, op: Op, scope: &Scope, matters: bool) -> Result<(u64, bool)> {
        let pairs = scope.fenced_pairs().unwrap_or_default();
        self.owner(op, &pairs, scope.epochs.is_some(), matters)
            .await
    }

    fn landed(&self, paused: bool) {
        if paused {
            self.ctl.done();
        }
    }

    fn outcome<T>(&self, op: Op, r: &Result<T>) {
        if matches!(r, Err(StoreError::Fenced { .. })) {
            self.log.count(op, true);
        }
    }

    /// Claims: the rows returned, each a write in its instance's bucket under the scope's epoch.
    fn claimed<'a>(
        &self,
        seq: u64,
        op: Op,
        scope: &Scope,
        ids: impl Iterator<Item = (&'a str, String)>,
    ) {
        let Some(epochs) = &scope.epochs else { return };
        for (id, what) in ids {
            let b = bucket_of(id);
            if let Some(i) = scope.buckets.iter().position(|x| *x == b)
                && let Some(e) = epochs.get(i)
            {
                self.log.wrote(seq, self.engine, op, (b, *e), what);
            }
        }
    }
}

fn fence_pair(f: Option<&Fence>) -> Vec<(i32, i64)> {
    f.map(|f| vec![(f.bucket, f.epoch)]).unwrap_or_default()
}

// Every call waits for (or fails with) the engine's pause or cut (`around`); owner writes,
// activity results and grants are also recorded.
#[async_trait]
impl Layer for FenceStore {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    async fn around<A: Answer>(&self, _: Call, n: usize, inner: InnerCall<'_, A>) -> A {
        if let Err(e) = self.ctl.pass().await {
            return A::failed(n, e);
        }
        inner.await
    }
    // One by one, as `Store`'s default does (each creation passes the engine's pause alone).
    async fn create_instance_batch(&self, reqs: Vec<CreateInstance>) -> Vec<Result<CreateOutcome>> {
        layer::one_by_one(reqs, |r| Layer::create_instance(self, r)).await
    }
    async fn checkpoint(&self, cp: Checkpoint) -> Result<()> {
        Layer::checkpoint_batch(self, vec![cp])
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("empty batch".into())))
    }
    async fn checkpoint_batch(&self, mut cps: Vec<Checkpoint>) -> Vec<Result<()>> {
        let fences: Vec<_> = cps
            .iter()
            .map(|c| c.fence.as_ref().map(|f| (f.bucket, f.epoch)))
            .collect();
        let all: Vec<_> = fences.iter().flatten().copied().collect();
        let fenced = !fences.iter().any(Option::is_none);
        let (seq, paused) = match self.owner(Op::Checkpoint, &all, fenced, true).await {
            Ok(x) => x,
            Err(e) => return cps.iter().map(|_| Err(e.duplicate_public())).collect(),
        };
        let effects: Vec<_> = cps.iter().map(Effect::of).collect();
        let what: Vec<_> = cps
            .iter()
            .map(|c| format!("checkpoint of {} v{}", c.instance_id, c.expected_version))
            .collect();
        if self.stripped(Op::Checkpoint) {
            for c in &mut cps {
                c.fence = None;
            }
        }
        let out = self.inner.checkpoint_batch(cps).await;
        self.landed(paused);
        for (((r, f), w), effect) in out.iter().zip(&fences).zip(what).zip(effects) {
            self.outcome(Op::Checkpoint, r);
            if r.is_ok() {
                self.log.pending().apply(effect);
            }
            if let (Ok(()), Some(f)) = (r, f) {
                self.log.wrote(seq, self.engine, Op::Checkpoint, *f, w);
            }
        }
        out
    }
    async fn claim_activities(&self, scope: &Scope) -> Result<Vec<ActivityTask>> {
        let matters = self.log.pending().has_tasks(scope);
        let (seq, paused) = self
            .owner_of_scope(Op::ClaimActivities, scope, matters)
            .await?;
        let r = if self.stripped(Op::ClaimActivities) {
            let mut s = scope.clone();
            s.epochs = None;
            self.inner.claim_activities(&s).await
        } else {
            self.inner.claim_activities(scope).await
        };
        self.landed(paused);
        self.outcome(Op::ClaimActivities, &r);
        if let Ok(tasks) = &r {
            let ids = tasks.iter().map(|t| {
                (
                    t.instance_id.as_str(),
                    format!("claim of task {} of {}", t.task_id, t.instance_id),
                )
            });
            self.claimed(seq, Op::ClaimActivities, scope, ids);
        }
        r
    }
    async fn complete_activity(
        &self,
        instance_id: &str,
        task_id: i32,
        generation: i64,
        event: HistoryEvent,
    ) -> Result<bool> {
        let inner = self
            .inner
            .complete_activity(instance_id, task_id, generation, event);
        let r = self.around(Call::CompleteActivity, 1, inner).await;
        if let Ok(true) = r {
            self.log
                .pending()
                .completed(instance_id, task_id, generation);
        }
        r
    }
    async fn complete_activity_batch(&self, items: Vec<ActivityCompletion>) -> Vec<Result<bool>> {
        let keys: Vec<_> = items
            .iter()
            .map(|i| (i.instance_id.clone(), i.task_id, i.generation))
            .collect();
        let n = items.len();
        let inner = self.inner.complete_activity_batch(items);
        let out = self.around(Call::CompleteActivityBatch, n, inner).await;
        let mut p = self.log.pending();
        for (r, (id, task, generation)) in out.iter().zip(keys) {
            if let Ok(true) = r {
                p.completed(&id, task, generation);
            }
        }
        drop(p);
        out
    }
    async fn claim_due_reminders(
        &self,
        scope: &Scope,
        now: Micros,
        lease_until: Micros,
        limit: usize,
    ) -> Result<Vec<Reminder>> {
        let matters = self.log.pending().has_due_reminder(scope, now);
        let (seq, paused) = self
            .owner_of_scope(Op::ClaimReminders, scope, matters)
            .await?;
        let r = if self.stripped(Op::ClaimReminders) {
            let mut s = scope.clone();
            s.epochs = None;
            self.inner
                .claim_due_reminders(&s, now, lease_until, limit)
                .await
        } else {
            self.inner
                .claim_due_reminders(scope, now, lease_until, limit)
                .await
        };
        self.landed(paused);
        self.outcome(Op::ClaimReminders, &r);
        if let Ok(rs) = &r {
            self.log.pending().claimed(rs);
            let ids = rs.iter().map(|r| {
                (
                    r.instance_id.as_str(),
                    format!("claim of reminder {} of {}", r.id, r.instance_id),
                )
            });
            self.claimed(seq, Op::ClaimReminders, scope, ids);
        }
        r
    }
    async fn fire_reminder(&self, reminder_id: i64, fence: Option<&Fence>) -> Result<bool> {
        let (seq, paused) = self
            .owner(Op::FireReminder, &fence_pair(fence), fence.is_some(), true)
            .await?;
        let f = if self.stripped(Op::FireReminder) {
            None
        } else {
            fence
        };
        let r = self.inner.fire_reminder(reminder_id, f).await;
        self.landed(paused);
        self.outcome(Op::FireReminder, &r);
        if let (Ok(true), Some(f)) = (&r, fence) {
            let what = format!("fire of reminder {reminder_id}");
            self.log.wrote(
                seq,
                self.engine,
                Op::FireReminder,
                (f.bucket, f.epoch),
                what,
            );
        }
        r
    }
    async fn purge(&self, id: &str, force: bool, fence: Option<&Fence>) -> Result<bool> {
        let (seq, paused) = self
            .owner(Op::Purge, &fence_pair(fence), fence.is_some(), true)
            .await?;
        let f = if self.stripped(Op::Purge) {
            None
        } else {
            fence
        };
        let r = self.inner.purge(id, force, f).await;
        self.landed(paused);
        self.outcome(Op::Purge, &r);
        if let Ok(true) = r {
            self.log.pending().purged(id);
        }
        if let (Ok(true), Some(f)) = (&r, fence) {
            let what = format!("purge of {id}");
            self.log
                .wrote(seq, self.engine, Op::Purge, (f.bucket, f.epoch), what);
        }
        r
    }
    async fn acquire_buckets(
        &self,
        app_id: &str,
        holder: &str,
        buckets: &[i32],
    ) -> Result<Vec<BucketLease>> {
        let inner = self.inner.acquire_buckets(app_id, holder, buckets);
        let r = self.around(Call::AcquireBuckets, 1, inner).await;
        if let Ok(leases) = &r {
            self.log.grant(self.engine, holder, leases);
            self.log.hold_if_taking_over(leases, &self.ctl);
        }
        r
    }
}

/// A copy of a pass error for each member of a batch.
trait DuplicatePublic {
    fn duplicate_public(&self) -> StoreError;
}

impl DuplicatePublic for StoreError {
    fn duplicate_public(&self) -> StoreError {
        StoreError::Unavailable(self.to_string())
    }
}
