//! The engine's side of ownership: which buckets this sidecar serves now, and the reconciler
//! that moves only what changed when the registry's table changes (hand-off and take-over).

use crate::actor::ActorMsg;
use crate::cluster::{ActorKind, Owner};
use crate::engine::Inner;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weft_core::bucket::{BUCKETS, bucket_of};
use weft_store::Scope;

/// The buckets this sidecar serves: what its actors, scans and hints are limited to.
#[derive(Debug)]
pub(crate) struct Owned {
    pub(crate) scope: Scope,
    bits: Vec<bool>,
}

impl Owned {
    pub(crate) fn new(app_id: &str, buckets: &[i32]) -> Self {
        let mut bits = vec![false; BUCKETS as usize];
        for b in buckets {
            if let Some(x) = usize::try_from(*b).ok().and_then(|i| bits.get_mut(i)) {
                *x = true;
            }
        }
        let mut buckets = buckets.to_vec();
        buckets.sort_unstable();
        buckets.dedup();
        Self {
            scope: Scope {
                app_id: app_id.to_string(),
                buckets,
            },
            bits,
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

/// Previous owner host of each bucket, as of the last table applied (None: nobody).
type Owners = Vec<Option<String>>;

fn owners_now(inner: &Inner) -> Owners {
    (0..i32::from(BUCKETS))
        .map(|b| {
            match inner
                .registry
                .bucket_owner(&inner.app_id, ActorKind::Workflow, b)
            {
                Owner::Local => Some(inner.registry.host_id().to_string()),
                Owner::Remote { host_id, .. } => Some(host_id),
                Owner::Nobody => None,
            }
        })
        .collect()
}

/// Follows the registry: on every table change, hands off lost buckets and takes over gained
/// ones. Buckets gained from a sidecar that is still a member wait `handoff_timeout` first, so
/// its turn in flight can finish (or be abandoned) before this side loads the instance.
pub(crate) async fn ownership_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut rx = inner.registry.watch();
    // Unknown before the first pass: whatever is owned then is taken over at once.
    let mut previous: Owners = vec![None; BUCKETS as usize];
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
        first = false;
        rx.borrow_and_update();
        let current = owners_now(&inner);
        let mine = inner.registry.host_id().to_string();
        let want: Vec<i32> = current
            .iter()
            .enumerate()
            .filter(|(_, o)| o.as_deref() == Some(mine.as_str()))
            .map(|(b, _)| b as i32)
            .collect();
        let d = delta(&inner.owned(), &want);
        if !d.lost.is_empty() {
            hand_off(&inner, &d.lost);
        }
        let (now, later): (Vec<i32>, Vec<i32>) = d.gained.iter().partition(|b| {
            // Taken over at once unless the previous owner is still a member of the app.
            match &previous[**b as usize] {
                Some(h) if h != &mine => !inner.registry.registered(h, &inner.app_id),
                _ => true,
            }
        });
        let version = inner.registry.version();
        if now.is_empty() && later.is_empty() && d.lost.is_empty() {
            previous = current;
            report(&inner, version, true);
            continue;
        }
        tracing::info!(
            version = inner.registry.version(),
            gained = now.len(),
            gained_later = later.len(),
            lost = d.lost.len(),
            "ownership changed"
        );
        take_over(&inner, now, shutdown.clone());
        report(&inner, version, later.is_empty());
        if !later.is_empty() {
            let inner2 = inner.clone();
            let sd = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = sd.cancelled() => return,
                    _ = tokio::time::sleep(inner2.handoff_timeout) => {}
                }
                // Only what is still ours by then.
                let still: Vec<i32> = later
                    .into_iter()
                    .filter(|b| {
                        inner2
                            .registry
                            .bucket_owner(&inner2.app_id, ActorKind::Workflow, *b)
                            == Owner::Local
                    })
                    .collect();
                take_over(&inner2, still, sd);
                report(&inner2, version, true);
            });
        }
        previous = current;
    }
}

/// Publishes what this sidecar serves: `weft_owned_buckets` and, once the hand-off of a table
/// is complete (deferred take-overs included), `weft_ownership_version`.
fn report(inner: &Inner, version: u64, settled: bool) {
    metrics::gauge!("weft_owned_buckets").set(inner.owned().scope.buckets.len() as f64);
    if settled && inner.registry.version() == version {
        metrics::gauge!("weft_ownership_version").set(version as f64);
    }
}

/// Stops serving `lost`: queued work goes back to the store's keeping, actors hand off.
fn hand_off(inner: &Arc<Inner>, lost: &[i32]) {
    let lost_set = Owned::new(&inner.app_id, lost);
    inner.update_owned(|o| {
        let keep: Vec<i32> = o
            .scope
            .buckets
            .iter()
            .copied()
            .filter(|b| !lost_set.contains_bucket(*b))
            .collect();
        Owned::new(&inner.app_id, &keep)
    });
    inner.hub.withdraw_queued(|id| lost_set.contains(id));
    for id in inner.active_actors() {
        if lost_set.contains(&id) {
            inner.send_existing(&id, ActorMsg::Handoff);
        }
    }
}

/// Starts serving `gained`: scans those buckets (pending activities, inboxes, timers) with
/// retries until the store answers.
fn take_over(inner: &Arc<Inner>, gained: Vec<i32>, shutdown: CancellationToken) {
    if gained.is_empty() {
        return;
    }
    inner.update_owned(|o| {
        let mut all = o.scope.buckets.clone();
        all.extend(gained.iter().copied());
        Owned::new(&inner.app_id, &all)
    });
    let scope = Scope {
        app_id: inner.app_id.clone(),
        buckets: gained,
    };
    let inner = inner.clone();
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(200);
        while let Err(e) = inner.resync_scope(&scope).await {
            tracing::warn!(error = %e, retry_in = ?wait, "scanning newly owned buckets failed");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(5));
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
