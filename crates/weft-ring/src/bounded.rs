//! Consistent hashing with bounded loads (Mirrokni et al.; Dapr's `GetLeast`): a key goes to the
//! first host clockwise whose load stays under `factor × its fair share`. Integer math only.

use crate::Ring;
use std::collections::BTreeMap;

/// Tracks how many keys each host holds and assigns new keys under a load bound.
///
/// The caller owns the tracker (loads are local knowledge, not replicated), so bounded-load
/// placement is only consistent among parties that assign the same keys in the same order.
#[derive(Debug, Clone)]
pub struct LoadTracker {
    /// Allowed load as a percentage of the fair share, e.g. 125 = Dapr's 1.25.
    factor_percent: u64,
    loads: BTreeMap<String, u64>,
    total: u64,
}

impl LoadTracker {
    /// `factor_percent` below 100 would make the bound unsatisfiable, so it is raised to 100.
    pub fn new(factor_percent: u32) -> Self {
        Self {
            factor_percent: u64::from(factor_percent.max(100)),
            loads: BTreeMap::new(),
            total: 0,
        }
    }

    /// Keys currently held by `host`.
    pub fn load(&self, host: &str) -> u64 {
        self.loads.get(host).copied().unwrap_or(0)
    }

    /// Keys held in total.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Assigns `key` to a host on `ring` and counts it; `None` only for a ring without keys.
    pub fn assign(&mut self, ring: &Ring, key: &[u8]) -> Option<String> {
        let total_weight: u64 = ring.weights.iter().map(|w| u64::from(*w)).sum();
        if total_weight == 0 {
            return None;
        }
        let next_total = self.total + 1;
        let host = ring
            .walk_indices(key)
            .find(|&h| {
                let w = u64::from(ring.weights[h]);
                // ceil(next_total × w × factor / (W × 100)); the caps sum to ≥ next_total, so some
                // host always qualifies.
                let cap = (next_total * w * self.factor_percent).div_ceil(total_weight * 100);
                w > 0 && self.load(&ring.hosts[h]) < cap
            })
            .map(|h| ring.hosts[h].clone())?;
        *self.loads.entry(host.clone()).or_default() += 1;
        self.total = next_total;
        Some(host)
    }

    /// Forgets one key held by `host` (actor deactivated).
    pub fn release(&mut self, host: &str) {
        if let Some(l) = self.loads.get_mut(host)
            && *l > 0
        {
            *l -= 1;
            self.total -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HostSpec, RingConfig};

    #[test]
    fn no_host_exceeds_the_bound() {
        let ring = Ring::new(
            (0..7).map(|i| HostSpec::new(format!("host-{i}"), 1)),
            RingConfig::default(),
        )
        .unwrap();
        let mut t = LoadTracker::new(115);
        let n = 7_000u64;
        for i in 0..n {
            t.assign(&ring, format!("actor-{i}").as_bytes()).unwrap();
        }
        let cap = (n * 115).div_ceil(700);
        for h in ring.hosts() {
            assert!(t.load(h) <= cap, "{h} holds {} > {cap}", t.load(h));
        }
        assert_eq!(t.total(), n);
        t.release("host-0");
        assert_eq!(t.total(), n - 1);
    }

    #[test]
    fn weights_shift_the_bound() {
        let ring = Ring::new(
            [HostSpec::new("big", 3), HostSpec::new("small", 1)],
            RingConfig::default(),
        )
        .unwrap();
        let mut t = LoadTracker::new(110);
        for i in 0..4000 {
            t.assign(&ring, format!("k{i}").as_bytes()).unwrap();
        }
        assert!(t.load("small") <= 1100, "small={}", t.load("small"));
        assert!(t.load("big") > 2 * t.load("small"));
    }
}
