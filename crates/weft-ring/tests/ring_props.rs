//! Property tests of the ring: determinism, minimal movement on membership change, and spread.

use proptest::prelude::*;
use std::collections::BTreeSet;
use weft_ring::{HostSpec, LoadTracker, Ring, RingConfig};

const KEYS: usize = 4_000;

/// Distinct host ids shaped like real advertised addresses or pod names.
fn host_ids(min: usize, max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("[a-z0-9.-]{1,12}(:[0-9]{2,5})?", min..=max)
        .prop_map(|s: BTreeSet<String>| s.into_iter().collect())
}

fn ring_of(ids: &[String]) -> Ring {
    Ring::new(
        ids.iter().map(|i| HostSpec::new(i.clone(), 1)),
        RingConfig::default(),
    )
    .unwrap()
}

fn keys(salt: u64) -> Vec<String> {
    (0..KEYS).map(|i| format!("actor-{salt}-{i}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn same_table_same_ring_in_any_order(
        (ids, shuffled) in host_ids(1, 20).prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        weights in prop::collection::vec(0u32..4, 20),
    ) {
        let spec = |ids: &[String]| -> Vec<HostSpec> {
            // Weight follows the host, not the position, so both tables describe the same members.
            ids.iter().map(|i| {
                let w = weights[(weft_ring::hash_bytes(i.as_bytes()) % 20) as usize];
                HostSpec::new(i.clone(), w)
            }).collect()
        };
        let a = Ring::new(spec(&ids), RingConfig::default()).unwrap();
        let b = Ring::new(spec(&shuffled), RingConfig::default()).unwrap();
        prop_assert_eq!(&a, &b);
        for k in keys(1).iter().take(500) {
            prop_assert_eq!(a.get(k.as_bytes()), b.get(k.as_bytes()));
        }
    }

    #[test]
    fn removing_a_host_moves_only_its_keys(ids in host_ids(2, 16), victim in any::<prop::sample::Index>(), salt in any::<u64>()) {
        let before = ring_of(&ids);
        let gone = victim.get(&ids).clone();
        let rest: Vec<String> = ids.iter().filter(|i| **i != gone).cloned().collect();
        let after = ring_of(&rest);
        for k in keys(salt) {
            let (b, a) = (before.get(k.as_bytes()).unwrap(), after.get(k.as_bytes()).unwrap());
            if b != gone {
                prop_assert_eq!(a, b, "key {} moved although its host stayed", k);
            }
        }
    }

    #[test]
    fn adding_one_of_n_plus_1_moves_about_one_share(ids in host_ids(3, 16), salt in any::<u64>()) {
        let (new, old) = ids.split_last().unwrap();
        let before = ring_of(old);
        let after = ring_of(&ids);
        let mut moved = 0usize;
        for k in keys(salt) {
            let (b, a) = (before.get(k.as_bytes()).unwrap(), after.get(k.as_bytes()).unwrap());
            if a != b {
                prop_assert_eq!(a, new.as_str(), "a key moved between two old hosts");
                moved += 1;
            }
        }
        let ideal = 1.0 / ids.len() as f64;
        let frac = moved as f64 / KEYS as f64;
        // Per-host share has ~10% relative std dev at 100 vnodes, plus sampling noise: ±50% is
        // several standard deviations, so this only fails on a real defect.
        prop_assert!((frac - ideal).abs() <= 0.5 * ideal, "moved {frac:.3}, ideal {ideal:.3}");
    }

    /// The ring's average spread: mean absolute deviation of host shares stays within 15% of
    /// the ideal share at 100 virtual nodes (measured ≈ 8%). Per-host worst case is reported
    /// in docs/placement.md; for a hard per-host cap use bounded loads (next property).
    #[test]
    fn spread_within_15_percent_at_100_vnodes(ids in host_ids(10, 30)) {
        let ring = ring_of(&ids);
        let ideal = 1.0 / ids.len() as f64;
        let own = ring.ownership();
        prop_assert_eq!(own.len(), ids.len());
        let total: f64 = own.values().sum();
        prop_assert!((total - 1.0).abs() < 1e-9);
        let mad = own.values().map(|s| (s - ideal).abs() / ideal).sum::<f64>() / ids.len() as f64;
        prop_assert!(mad <= 0.15, "mean deviation {mad:.3}");
    }

    /// Per host, ±15% needs more virtual nodes than Dapr's 100 (per-host share has ≈10% standard
    /// deviation there, see docs/placement.md); at 1000 it holds for every host.
    #[test]
    fn every_host_within_15_percent_at_1000_vnodes(ids in host_ids(3, 20)) {
        let ring = Ring::new(
            ids.iter().map(|i| HostSpec::new(i.clone(), 1)),
            RingConfig { vnodes_per_host: 1000 },
        )
        .unwrap();
        let ideal = 1.0 / ids.len() as f64;
        for (host, share) in ring.ownership() {
            let dev = (share - ideal).abs() / ideal;
            prop_assert!(dev <= 0.15, "{} owns {:.4}, ideal {:.4}", host, share, ideal);
        }
    }

    #[test]
    fn bounded_load_caps_every_host_at_115_percent(ids in host_ids(2, 16), salt in any::<u64>()) {
        let ring = ring_of(&ids);
        let mut t = LoadTracker::new(115);
        for k in keys(salt) {
            t.assign(&ring, k.as_bytes()).unwrap();
        }
        let cap = (KEYS as f64 * 1.15 / ids.len() as f64).ceil() as u64;
        for h in &ids {
            prop_assert!(t.load(h) <= cap, "{} holds {} > {}", h, t.load(h), cap);
        }
    }
}
