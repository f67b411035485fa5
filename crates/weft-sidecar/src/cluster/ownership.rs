//! The ownership reconciler: follows the placement table and the lease and moves only what
//! changed (the served set itself is `cluster::owned`): it hands off buckets the table took away and releases their leases once their work here has
//! stopped, and takes over buckets the table gave it as soon as their leases are free.

use crate::cluster::ActorKind;
use crate::cluster::lease::Lease;
use crate::cluster::owned::{Delta, Owned, delta};
use crate::mailbox::ActorMsg;
use crate::parts::Parts;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weft_store::{BucketLease, Scope};

/// How often a bucket the table gives this sidecar but whose lease someone else still holds is
/// asked for again (its holder releases it after its hand-off, or its lease runs out).
const ACQUIRE_RETRY: Duration = Duration::from_millis(100);

/// Follows the registry and the lease: on every table change or lease change, hands off the
/// buckets this sidecar should no longer serve (all of them once its lease lapsed) and takes over
/// those it should, each as soon as the store grants its lease. Engines without placement own
/// everything unfenced and have nothing to follow.
pub(crate) async fn ownership_loop(inner: Arc<Parts>, shutdown: CancellationToken) {
    let Some(lease) = inner.view.lease.clone() else {
        report(&inner, inner.view.registry.version(), true);
        return;
    };
    tokio::spawn(lease.clone().run(
        inner.store.clone(),
        inner.view.registry.host_id().to_string(),
        shutdown.clone(),
    ));
    let mut tables = inner.view.registry.watch();
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
async fn reconcile(inner: &Arc<Parts>, lease: &Lease) -> Option<Instant> {
    let version = inner.view.registry.version();
    let state = lease.state();
    let want: Vec<i32> = if state.valid() {
        inner
            .view
            .registry
            .owned_buckets(inner.app_id(), ActorKind::Workflow)
            .to_vec()
    } else {
        Vec::new()
    };
    let _one_at_a_time = inner.view.lease_ops.lock().await;
    let owned = inner.view.owned();
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
        .filter(|b| !inner.view.owned().contains_bucket(*b) || owned.holder != state.holder)
        .collect();
    if missing.is_empty() || !state.valid() {
        report(inner, version, true);
        return None;
    }
    match inner
        .store
        .acquire_buckets(inner.app_id(), &state.holder, &missing)
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
fn report(inner: &Parts, version: u64, settled: bool) {
    metrics::gauge!("weft_owned_buckets").set(inner.view.owned().scope.buckets.len() as f64);
    let done = settled && inner.view.registry.version() == version;
    // 0 while a hand-off is still in progress.
    metrics::gauge!("weft_ownership_version").set(if done { version as f64 } else { 0.0 });
}

/// Stops serving `lost`: queued work goes back to the store's keeping, actors hand off (at
/// once, abandoning a turn in flight, when the lease lapsed: nothing may be committed then).
fn hand_off(inner: &Arc<Parts>, lost: &[i32], lapsed: bool) {
    let lost_set = Owned::new(inner.app_id(), lost);
    inner.view.update_owned(|o| {
        let keep: Vec<BucketLease> = o
            .leases()
            .into_iter()
            .filter(|l| !lost_set.contains_bucket(l.bucket))
            .collect();
        Owned::leased(inner.app_id(), &o.holder, &keep)
    });
    inner.hub.withdraw_queued(|id| lost_set.contains(id));
    for id in inner.actors.active() {
        if lost_set.contains(&id) {
            let msg = if lapsed {
                ActorMsg::Lapsed
            } else {
                ActorMsg::Handoff
            };
            inner.actors.send_existing(&id, msg);
        }
    }
}

/// Releases the leases of handed-off buckets once nothing of theirs runs here any more — no
/// actor in memory, no activity at a worker — or the hand-off deadline passed, so the next owner
/// neither races a last turn nor dispatches again what this sidecar's workers are running.
async fn release_after_handoff(inner: Arc<Parts>, holder: String, lost: Vec<i32>) {
    let lost_set = Owned::new(inner.app_id(), &lost);
    let deadline = Instant::now() + inner.settings.handoff_timeout;
    let mut idle = inner.hub.inflight();
    loop {
        let busy = inner.actors.active().iter().any(|id| lost_set.contains(id))
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
    let _one_at_a_time = inner.view.lease_ops.lock().await;
    // Only what is still not served here (the table may have given some back meanwhile).
    let owned = inner.view.owned();
    let release: Vec<i32> = lost
        .into_iter()
        .filter(|b| owned.holder != holder || !owned.contains_bucket(*b))
        .collect();
    if let Err(e) = inner
        .store
        .release_buckets(inner.app_id(), &holder, &release)
        .await
    {
        tracing::warn!(error = %e, "releasing bucket leases failed; they run out with the lease");
    }
}

/// Starts serving `gained`: scans those buckets (pending activities, inboxes, timers) with
/// retries until the store answers.
fn take_over(inner: &Arc<Parts>, holder: &str, gained: Vec<BucketLease>) {
    inner.view.update_owned(|o| {
        let mut all = if o.holder == holder {
            o.leases()
        } else {
            Vec::new()
        };
        all.extend(gained.iter().copied());
        Owned::leased(inner.app_id(), holder, &all)
    });
    let scope = Scope {
        app_id: inner.app_id().to_string(),
        buckets: gained.iter().map(|l| l.bucket).collect(),
        epochs: Some(gained.iter().map(|l| l.epoch).collect()),
    };
    let inner = inner.clone();
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(200);
        while let Err(e) = crate::recovery::resync_scope(&inner, &scope).await {
            tracing::warn!(error = %e, retry_in = ?wait, "scanning newly owned buckets failed");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            if !inner.view.lease_valid() {
                return;
            }
        }
        crate::recovery::retry_stalled(&inner, &scope).await;
    });
}
