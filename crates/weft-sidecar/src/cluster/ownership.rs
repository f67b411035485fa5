//! The engine's side of ownership: which buckets this sidecar serves now — those the placement
//! table gives it *and* whose lease it holds — and the reconciler that moves only what changed:
//! it hands off buckets the table took away and releases their leases once their work here has
//! stopped, and takes over buckets the table gave it as soon as their leases are free.

use crate::actor::ActorMsg;
use crate::cluster::ActorKind;
use crate::cluster::lease::Lease;
use crate::engine::Inner;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weft_core::bucket::{BUCKETS, bucket_of};
use weft_store::{BucketLease, Fence, Scope};

/// How often a bucket the table gives this sidecar but whose lease someone else still holds is
/// asked for again (its holder releases it after its hand-off, or its lease runs out).
const ACQUIRE_RETRY: Duration = Duration::from_millis(100);

/// The buckets this sidecar serves: what its actors, scans and hints are limited to.
#[derive(Debug)]
pub(crate) struct Owned {
    pub(crate) scope: Scope,
    bits: Vec<bool>,
    /// The lease epoch of each served bucket (by index; `None`: an engine without leases, which
    /// owns everything unfenced).
    epochs: Option<Vec<i64>>,
    /// The lease holder the epochs belong to.
    pub(crate) holder: String,
}

impl Owned {
    /// Every listed bucket, without leases (an engine that owns all without placement).
    pub(crate) fn new(app_id: &str, buckets: &[i32]) -> Self {
        Self::build(app_id, buckets.iter().map(|b| (*b, 0)).collect(), None)
    }

    /// The buckets of `leases`, fenced with their epochs.
    pub(crate) fn leased(app_id: &str, holder: &str, leases: &[BucketLease]) -> Self {
        let pairs = leases.iter().map(|l| (l.bucket, l.epoch)).collect();
        Self::build(app_id, pairs, Some(holder.to_string()))
    }

    fn build(app_id: &str, mut pairs: Vec<(i32, i64)>, holder: Option<String>) -> Self {
        pairs.retain(|(b, _)| (0..i32::from(BUCKETS)).contains(b));
        pairs.sort_unstable();
        pairs.dedup_by_key(|(b, _)| *b);
        let mut bits = vec![false; BUCKETS as usize];
        for (b, _) in &pairs {
            bits[*b as usize] = true;
        }
        let epochs = holder.as_ref().map(|_| {
            let mut e = vec![0; BUCKETS as usize];
            for (b, epoch) in &pairs {
                e[*b as usize] = *epoch;
            }
            e
        });
        let fenced = holder.is_some();
        Self {
            scope: Scope {
                app_id: app_id.to_string(),
                buckets: pairs.iter().map(|(b, _)| *b).collect(),
                epochs: fenced.then(|| pairs.iter().map(|(_, e)| *e).collect()),
            },
            bits,
            epochs,
            holder: holder.unwrap_or_default(),
        }
    }

    pub(crate) fn contains_bucket(&self, bucket: i32) -> bool {
        usize::try_from(bucket)
            .ok()
            .and_then(|i| self.bits.get(i).copied())
            .unwrap_or(false)
    }

    pub(crate) fn contains(&self, instance_id: &str) -> bool {
        self.contains_bucket(bucket_of(instance_id))
    }

    /// The fence an owner write to `instance_id` carries: `None` if it is not served here,
    /// `Some(None)` for an engine without leases, `Some(Some(fence))` otherwise.
    pub(crate) fn fence(&self, instance_id: &str) -> Option<Option<Fence>> {
        let bucket = bucket_of(instance_id);
        if !self.contains_bucket(bucket) {
            return None;
        }
        Some(self.epochs.as_ref().map(|e| Fence {
            app_id: self.scope.app_id.clone(),
            bucket,
            epoch: e[bucket as usize],
        }))
    }

    fn leases(&self) -> Vec<BucketLease> {
        let Some(e) = &self.epochs else {
            return Vec::new();
        };
        self.scope
            .buckets
            .iter()
            .map(|b| BucketLease {
                bucket: *b,
                epoch: e[*b as usize],
            })
            .collect()
    }
}

/// What changed between two owned sets.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    pub(crate) gained: Vec<i32>,
    pub(crate) lost: Vec<i32>,
}

pub(crate) fn delta(before: &Owned, after: &[i32]) -> Delta {
    let now = Owned::new(&before.scope.app_id, after);
    Delta {
        gained: now
            .scope
            .buckets
            .iter()
            .copied()
            .filter(|b| !before.contains_bucket(*b))
            .collect(),
        lost: before
            .scope
            .buckets
            .iter()
            .copied()
            .filter(|b| !now.contains_bucket(*b))
            .collect(),
    }
}

/// Follows the registry and the lease: on every table change or lease change, hands off the
/// buckets this sidecar should no longer serve (all of them once its lease lapsed) and takes over
/// those it should, each as soon as the store grants its lease. Engines without placement own
/// everything unfenced and have nothing to follow.
pub(crate) async fn ownership_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    let Some(lease) = inner.lease.clone() else {
        report(&inner, inner.registry.version(), true);
        return;
    };
    tokio::spawn(lease.clone().run(
        inner.store.clone(),
        inner.registry.host_id().to_string(),
        shutdown.clone(),
    ));
    let mut tables = inner.registry.watch();
    let mut leases = lease.watch();
    let mut retry: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tables.changed() => if r.is_err() { return },
            r = leases.changed() => if r.is_err() { return },
            _ = sleep_until_opt(retry) => {}
        }
        tables.borrow_and_update();
        leases.borrow_and_update();
        retry = reconcile(&inner, &lease).await;
    }
}

/// One pass: returns when to pass again if some wanted bucket is still leased elsewhere.
async fn reconcile(inner: &Arc<Inner>, lease: &Lease) -> Option<Instant> {
    let version = inner.registry.version();
    let state = lease.state();
    let want: Vec<i32> = if state.valid() {
        inner
            .registry
            .owned_buckets(&inner.app_id, ActorKind::Workflow)
            .to_vec()
    } else {
        Vec::new()
    };
    let _one_at_a_time = inner.lease_ops.lock().await;
    let owned = inner.owned();
    // Leases of an earlier incarnation are void: nothing of them may be served.
    let d = if owned.holder == state.holder {
        delta(&owned, &want)
    } else {
        Delta {
            lost: owned.scope.buckets.clone(),
            gained: want.clone(),
        }
    };
    if !d.lost.is_empty() {
        tracing::info!(
            version,
            lost = d.lost.len(),
            lease_valid = state.valid(),
            "handing off buckets"
        );
        hand_off(inner, &d.lost, !state.valid());
        tokio::spawn(release_after_handoff(
            inner.clone(),
            owned.holder.clone(),
            d.lost.clone(),
        ));
    }
    let missing: Vec<i32> = want
        .iter()
        .copied()
        .filter(|b| !inner.owned().contains_bucket(*b) || owned.holder != state.holder)
        .collect();
    if missing.is_empty() || !state.valid() {
        report(inner, version, true);
        return None;
    }
    match inner
        .store
        .acquire_buckets(&inner.app_id, &state.holder, &missing)
        .await
    {
        Ok(got) => {
            let waiting = missing.len() - got.len();
            if !got.is_empty() {
                tracing::info!(version, gained = got.len(), waiting, "taking over buckets");
                take_over(inner, &state.holder, got);
            }
            report(inner, version, waiting == 0);
            (waiting > 0).then(|| Instant::now() + ACQUIRE_RETRY)
        }
        Err(e) => {
            tracing::warn!(error = %e, "acquiring bucket leases failed; retrying");
            report(inner, version, false);
            Some(Instant::now() + ACQUIRE_RETRY * 5)
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Publishes what this sidecar serves: `weft_owned_buckets` and, once every bucket the table
/// gives it is served, `weft_ownership_version`.
fn report(inner: &Inner, version: u64, settled: bool) {
    metrics::gauge!("weft_owned_buckets").set(inner.owned().scope.buckets.len() as f64);
    let done = settled && inner.registry.version() == version;
    // 0 while a hand-off is still in progress.
    metrics::gauge!("weft_ownership_version").set(if done { version as f64 } else { 0.0 });
}

/// Stops serving `lost`: queued work goes back to the store's keeping, actors hand off (at
/// once, abandoning a turn in flight, when the lease lapsed: nothing may be committed then).
fn hand_off(inner: &Arc<Inner>, lost: &[i32], lapsed: bool) {
    let lost_set = Owned::new(&inner.app_id, lost);
    inner.update_owned(|o| {
        let keep: Vec<BucketLease> = o
            .leases()
            .into_iter()
            .filter(|l| !lost_set.contains_bucket(l.bucket))
            .collect();
        Owned::leased(&inner.app_id, &o.holder, &keep)
    });
    inner.hub.withdraw_queued(|id| lost_set.contains(id));
    for id in inner.active_actors() {
        if lost_set.contains(&id) {
            let msg = if lapsed {
                ActorMsg::Lapsed
            } else {
                ActorMsg::Handoff
            };
            inner.send_existing(&id, msg);
        }
    }
}

/// Releases the leases of handed-off buckets once nothing of theirs runs here any more — no
/// actor in memory, no activity at a worker — or the hand-off deadline passed, so the next owner
/// neither races a last turn nor dispatches again what this sidecar's workers are running.
async fn release_after_handoff(inner: Arc<Inner>, holder: String, lost: Vec<i32>) {
    let lost_set = Owned::new(&inner.app_id, &lost);
    let deadline = Instant::now() + inner.handoff_timeout;
    let mut idle = inner.hub.inflight();
    loop {
        let busy = inner.active_actors().iter().any(|id| lost_set.contains(id))
            || inner.hub.holds_any(|id| lost_set.contains(id));
        if !busy || Instant::now() >= deadline {
            if busy {
                tracing::info!(
                    "hand-off deadline passed with work in flight; the next owner dispatches it again"
                );
            }
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = idle.changed() => {}
        }
    }
    let _one_at_a_time = inner.lease_ops.lock().await;
    // Only what is still not served here (the table may have given some back meanwhile).
    let owned = inner.owned();
    let release: Vec<i32> = lost
        .into_iter()
        .filter(|b| owned.holder != holder || !owned.contains_bucket(*b))
        .collect();
    if let Err(e) = inner
        .store
        .release_buckets(&inner.app_id, &holder, &release)
        .await
    {
        tracing::warn!(error = %e, "releasing bucket leases failed; they run out with the lease");
    }
}

/// Starts serving `gained`: scans those buckets (pending activities, inboxes, timers) with
/// retries until the store answers.
fn take_over(inner: &Arc<Inner>, holder: &str, gained: Vec<BucketLease>) {
    inner.update_owned(|o| {
        let mut all = if o.holder == holder {
            o.leases()
        } else {
            Vec::new()
        };
        all.extend(gained.iter().copied());
        Owned::leased(&inner.app_id, holder, &all)
    });
    let scope = Scope {
        app_id: inner.app_id.clone(),
        buckets: gained.iter().map(|l| l.bucket).collect(),
        epochs: Some(gained.iter().map(|l| l.epoch).collect()),
    };
    let inner = inner.clone();
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(200);
        while let Err(e) = inner.resync_scope(&scope).await {
            tracing::warn!(error = %e, retry_in = ?wait, "scanning newly owned buckets failed");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            if !inner.lease_valid() {
                return;
            }
        }
        inner.retry_stalled(&scope).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_lists_only_changes() {
        let before = Owned::new("a", &[1, 2, 3]);
        assert_eq!(
            delta(&before, &[2, 3, 4]),
            Delta {
                gained: vec![4],
                lost: vec![1]
            }
        );
        assert_eq!(delta(&before, &[3, 2, 1]), Delta::default());
        assert!(before.contains_bucket(2) && !before.contains_bucket(4));
        assert!(!before.contains_bucket(-1) && !before.contains_bucket(99_999));
    }
}
