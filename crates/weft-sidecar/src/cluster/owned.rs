//! What this sidecar serves now: the owned bucket set (pure) and the ownership view every
//! owner write asks — the buckets the placement table gives it *and* whose lease it holds.

use crate::cluster::lease::Lease;
use crate::cluster::{ActorKind, Registry};
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use weft_core::bucket::{BUCKETS, bucket_of};
use weft_store::{BucketLease, Fence, Scope};

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

    pub(crate) fn leases(&self) -> Vec<BucketLease> {
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

/// This sidecar's view of ownership: the buckets it serves now and the lease that lets it act.
/// Asked by everything that touches an instance; changed only by the ownership reconciler.
pub(crate) struct OwnershipView {
    /// Who owns what (placement).
    pub(crate) registry: Registry,
    /// The buckets served now (follows the registry and the lease, see `cluster::ownership`).
    owned: RwLock<Arc<Owned>>,
    /// This sidecar's ownership lease (with placement only; without, it owns all unfenced).
    pub(crate) lease: Option<Lease>,
    /// Serialises taking and releasing bucket leases with the changes of `owned`.
    pub(crate) lease_ops: tokio::sync::Mutex<()>,
    /// When each bucket's tasks were last claimed again after a refused result (rate limit).
    reclaimed: Mutex<HashMap<i32, tokio::time::Instant>>,
    /// Claims begun after refused results (`weft_activity_reclaims_total`).
    pub(crate) reclaims: AtomicUsize,
}

impl OwnershipView {
    /// Without placement everything is ours, unfenced; with it, nothing until leases are
    /// granted (`cluster::ownership`).
    pub(crate) fn new(app_id: &str, registry: Registry, lease_ttl: Duration) -> Self {
        let (owned, lease) = if registry.is_local_only() {
            let all = registry.owned_buckets(app_id, ActorKind::Workflow);
            (Owned::new(app_id, &all), None)
        } else {
            (Owned::leased(app_id, "", &[]), Some(Lease::new(lease_ttl)))
        };
        Self {
            registry,
            owned: RwLock::new(Arc::new(owned)),
            lease,
            lease_ops: Default::default(),
            reclaimed: Mutex::default(),
            reclaims: AtomicUsize::new(0),
        }
    }

    /// Whether this sidecar may act as owner now (always, without placement).
    pub(crate) fn lease_valid(&self) -> bool {
        self.lease.as_ref().is_none_or(Lease::valid)
    }

    /// The fence an owner write to `id` carries: `None` if it is not served here (the write
    /// must not happen), `Some(None)` without leases, `Some(Some(fence))` otherwise.
    pub(crate) fn owner_fence(&self, id: &str) -> Option<Option<Fence>> {
        self.owned().fence(id)
    }

    /// Whether a bucket's tasks may be claimed again after a refused result: at most once a
    /// second per bucket, so two views of a bucket can never make claims bounce.
    pub(crate) fn may_reclaim(&self, bucket: i32) -> bool {
        let mut last = self.reclaimed.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        if last
            .get(&bucket)
            .is_some_and(|t| now < *t + Duration::from_secs(1))
        {
            return false;
        }
        if last.len() > 4096 {
            last.clear();
        }
        last.insert(bucket, now);
        true
    }

    /// Whether this sidecar serves the instance now.
    pub(crate) fn owns(&self, id: &str) -> bool {
        self.owned().contains(id)
    }

    pub(crate) fn owned(&self) -> Arc<Owned> {
        self.owned.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn update_owned(&self, f: impl FnOnce(&Owned) -> Owned) {
        let mut cur = self.owned.write().unwrap_or_else(|p| p.into_inner());
        *cur = Arc::new(f(&cur));
    }

    /// The scans' scope: this app's instances in the buckets served now.
    pub(crate) fn scope(&self) -> Scope {
        self.owned().scope.clone()
    }
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
