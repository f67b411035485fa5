//! A count of every per-instance record the sidecar keeps in memory, so tests and `/metrics` can
//! check that an idle workflow costs nothing here once its actor has been dropped.

use std::collections::HashMap;
use std::hash::Hash;

/// Records held in memory, by map. An instance with no actor, no queued or dispatched work and
/// no parked turn appears in none of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryCensus {
    /// Workflow actors in memory.
    pub actors: usize,
    /// Instances with work queued for a worker or in flight (the hub's instance index).
    pub hub_instances: usize,
    /// Work items dispatched and not yet answered.
    pub hub_in_flight: usize,
    /// Work items queued for a worker.
    pub hub_queued: usize,
    /// Instances some stateful worker's history cache is recorded for.
    pub warm_instances: usize,
    /// Jobs holding concurrency slots, parked for one, or keeping their place after a withdraw.
    pub limit_records: usize,
}

impl MemoryCensus {
    /// Per-instance records of every kind but the actors themselves.
    pub fn hub_records(&self) -> usize {
        self.hub_instances
            + self.hub_in_flight
            + self.hub_queued
            + self.warm_instances
            + self.limit_records
    }

    /// Sets the gauges rendered at `/metrics`.
    pub fn publish(&self) {
        metrics::gauge!("weft_actors_in_memory").set(self.actors as f64);
        metrics::gauge!("weft_instance_records_in_memory").set(self.hub_records() as f64);
    }
}

/// Gives back a map's table after a burst (a million activations leave a million-slot table
/// behind otherwise). Halving only when three quarters are empty keeps the cost amortised.
pub(crate) fn shrink_after_burst<K: Eq + Hash, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > 64 && m.len() * 4 < m.capacity() {
        m.shrink_to(m.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_emptied_after_a_burst_gives_its_table_back() {
        let mut m: HashMap<u32, u32> = (0..10_000).map(|i| (i, i)).collect();
        let big = m.capacity();
        for i in 0..10_000 {
            m.remove(&i);
            shrink_after_burst(&mut m);
        }
        assert!(m.capacity() <= 64, "{} of {big}", m.capacity());
        let mut small: HashMap<u32, u32> = (0..40).map(|i| (i, i)).collect();
        let cap = small.capacity();
        small.remove(&1);
        shrink_after_burst(&mut small);
        // (`capacity()` may drop by one on a removal that leaves a tombstone: hashbrown counts
        // room left before a rehash, and whether a slot becomes a tombstone depends on the hash
        // seed. A shrink would halve it.)
        assert!(
            small.capacity() + 1 >= cap,
            "small tables are left alone: {} of {cap}",
            small.capacity()
        );
    }
}
