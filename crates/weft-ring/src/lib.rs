//! Deterministic consistent-hash ring used to place actors on sidecar hosts.
//! Pure and I/O-free: every party that sees the same member table builds the same ring.
//!
//! Design (see docs/placement.md):
//! - Each host gets `vnodes_per_host × weight` virtual nodes keyed `"{host}{i}"` (Dapr's scheme).
//! - Points are `xxh3_64` over explicit bytes, never `std::hash::Hash`, so every build, Rust
//!   version and platform computes the same ring.
//! - `hashring` stores the sorted points and answers the plain lookup; it is fed pre-computed
//!   points through an identity hasher so its own (SipHash/`Hash`-based) hashing never runs.
//! - One ring per actor type ([`ActorRings`]): only hosts that registered a type own its actors.

mod bounded;

pub use bounded::LoadTracker;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hash, Hasher};

/// Virtual nodes per unit of weight when nothing else is configured (Dapr's value).
pub const DEFAULT_VNODES: u32 = 100;
/// Upper bound on virtual nodes per unit of weight: with [`MAX_WEIGHT`] a host has at most a
/// million points, so a table from the wire can neither overflow the count nor exhaust memory.
pub const MAX_VNODES: u32 = 10_000;
/// Upper bound on a host's weight: keeps a ring's size (and a bad table entry's effect) bounded.
pub const MAX_WEIGHT: u32 = 100;

/// Errors from building a ring out of an inconsistent member list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("virtual nodes per host must be at least 1")]
    ZeroVnodes,
    #[error("{vnodes} virtual nodes per host; at most {max} are allowed")]
    VnodesOutOfRange { vnodes: u32, max: u32 },
    #[error("host `{0}` appears more than once")]
    DuplicateHost(String),
    #[error("host `{host}` has weight {weight}; allowed range is 0..={max}")]
    WeightOutOfRange { host: String, weight: u32, max: u32 },
    #[error("host id must not be empty")]
    EmptyHostId,
}

/// Ring parameters; all parties must use the same values (they travel with the member table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Virtual nodes per host of weight 1.
    pub vnodes_per_host: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            vnodes_per_host: DEFAULT_VNODES,
        }
    }
}

/// One host as the ring sees it. Weight 0 keeps the host known but gives it no keys (draining).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub id: String,
    pub weight: u32,
}

impl HostSpec {
    pub fn new(id: impl Into<String>, weight: u32) -> Self {
        Self {
            id: id.into(),
            weight,
        }
    }
}

/// The stable hash used for both virtual-node points and lookup keys.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// A virtual node: its point on the ring and the index of its host in `Ring::hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VNode {
    point: u64,
    host: u32,
}

// Only the point is fed to the hasher; with `PointHasher` that makes hashring's key == point.
impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.point);
    }
}

/// A lookup key already hashed to its point.
#[derive(Debug, Clone, Copy)]
struct Point(u64);

impl Hash for Point {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// Identity hasher: returns the single `u64` written to it, so hashring uses our points as-is.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct PointHasher(u64);

impl Hasher for PointHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by VNode/Point; fold anything else so it is still deterministic.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct PointHasherBuilder;

impl BuildHasher for PointHasherBuilder {
    type Hasher = PointHasher;
    fn build_hasher(&self) -> PointHasher {
        PointHasher(0)
    }
}

/// A consistent-hash ring over a set of hosts.
#[derive(Debug, Clone)]
pub struct Ring {
    /// Host ids sorted ascending; `VNode::host` indexes into this.
    hosts: Vec<String>,
    /// Weight of each host, same order as `hosts`.
    weights: Vec<u32>,
    /// The same virtual nodes hashring holds, sorted by (point, host id); used for walks.
    points: Vec<VNode>,
    inner: hashring::HashRing<VNode, PointHasherBuilder>,
}

impl PartialEq for Ring {
    fn eq(&self, other: &Self) -> bool {
        self.hosts == other.hosts && self.weights == other.weights && self.points == other.points
    }
}

impl Ring {
    /// Builds the ring; the result depends only on the set of hosts, never on their order.
    pub fn new(
        hosts: impl IntoIterator<Item = HostSpec>,
        config: RingConfig,
    ) -> Result<Self, RingError> {
        if config.vnodes_per_host == 0 {
            return Err(RingError::ZeroVnodes);
        }
        if config.vnodes_per_host > MAX_VNODES {
            return Err(RingError::VnodesOutOfRange {
                vnodes: config.vnodes_per_host,
                max: MAX_VNODES,
            });
        }
        let mut specs: Vec<HostSpec> = hosts.into_iter().collect();
        specs.sort_by(|a, b| a.id.cmp(&b.id));
        for w in specs.windows(2) {
            if w[0].id == w[1].id {
                return Err(RingError::DuplicateHost(w[0].id.clone()));
            }
        }
        let mut points = Vec::new();
        for (idx, spec) in specs.iter().enumerate() {
            if spec.id.is_empty() {
                return Err(RingError::EmptyHostId);
            }
            if spec.weight > MAX_WEIGHT {
                return Err(RingError::WeightOutOfRange {
                    host: spec.id.clone(),
                    weight: spec.weight,
                    max: MAX_WEIGHT,
                });
            }
            let count = config.vnodes_per_host * spec.weight;
            // Key bytes are `"{host}{i}"`; one buffer per host avoids an allocation per vnode.
            let mut key = spec.id.as_bytes().to_vec();
            let prefix = key.len();
            for i in 0..count {
                key.truncate(prefix);
                key.extend_from_slice(i.to_string().as_bytes());
                points.push(VNode {
                    point: hash_bytes(&key),
                    host: idx as u32,
                });
            }
        }
        // Hosts are indexed in id order, so sorting by (point, index) is sorting by (point, id):
        // a point collision is resolved the same way everywhere. hashring's sort is stable and
        // keyed on the point only, so it keeps this order.
        points.sort_by_key(|v| (v.point, v.host));
        let mut inner = hashring::HashRing::with_hasher(PointHasherBuilder);
        inner.batch_add(points.clone());
        Ok(Self {
            weights: specs.iter().map(|s| s.weight).collect(),
            hosts: specs.into_iter().map(|s| s.id).collect(),
            points,
            inner,
        })
    }

    /// Host ids on the ring (including weight-0 hosts), sorted.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// Number of virtual nodes.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when no host owns any key.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The host owning `key`: the first virtual node clockwise from the key's point.
    pub fn get(&self, key: &[u8]) -> Option<&str> {
        let vnode = self.inner.get(&Point(hash_bytes(key)))?;
        Some(&self.hosts[vnode.host as usize])
    }

    /// Fraction of the key space each host owns (sums to 1 for a non-empty ring); exact, from
    /// the arc lengths, so tests and status output need no key sampling.
    pub fn ownership(&self) -> BTreeMap<&str, f64> {
        let mut arcs = vec![0u128; self.hosts.len()];
        let len = self.points.len();
        for (i, v) in self.points.iter().enumerate() {
            // A vnode owns the arc (previous point, its point]; the first one wraps around.
            let prev = self.points[(i + len - 1) % len].point;
            arcs[v.host as usize] += u128::from(v.point.wrapping_sub(prev));
        }
        if len == 1 {
            arcs[self.points[0].host as usize] = 1u128 << 64;
        }
        let full = (1u128 << 64) as f64;
        self.hosts
            .iter()
            .zip(arcs)
            .map(|(h, a)| (h.as_str(), a as f64 / full))
            .collect()
    }

    /// Index into `points` of the first virtual node at or after `point` (wrapping).
    fn position(&self, point: u64) -> usize {
        let n = self.points.partition_point(|v| v.point < point);
        if n == self.points.len() { 0 } else { n }
    }

    /// Distinct hosts in clockwise order starting at the owner of `key` (replicas, fallbacks).
    pub fn walk(&self, key: &[u8]) -> impl Iterator<Item = &str> + '_ {
        self.walk_indices(key).map(|h| self.hosts[h].as_str())
    }

    /// Like [`Ring::walk`] but yields indices into `hosts`.
    fn walk_indices(&self, key: &[u8]) -> impl Iterator<Item = usize> + '_ {
        let start = if self.points.is_empty() {
            0
        } else {
            self.position(hash_bytes(key))
        };
        let mut seen = BTreeSet::new();
        let len = self.points.len();
        (0..len)
            .map(move |i| self.points[(start + i) % len].host)
            .filter(move |h| seen.insert(*h))
            .map(|h| h as usize)
    }
}

/// A member as placement replicates it, reduced to what the ring needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingMember {
    pub host_id: String,
    pub weight: u32,
    pub actor_types: Vec<String>,
}

/// One ring per actor type, built from the member table; answers "who hosts this actor?".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActorRings {
    by_type: BTreeMap<String, Ring>,
}

impl ActorRings {
    /// Builds every actor type's ring from the member table.
    pub fn build(
        members: impl IntoIterator<Item = RingMember>,
        config: RingConfig,
    ) -> Result<Self, RingError> {
        let mut by_type: BTreeMap<String, Vec<HostSpec>> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for m in members {
            if !seen.insert(m.host_id.clone()) {
                return Err(RingError::DuplicateHost(m.host_id));
            }
            let types: BTreeSet<String> = m.actor_types.into_iter().collect();
            for t in types {
                by_type
                    .entry(t)
                    .or_default()
                    .push(HostSpec::new(m.host_id.clone(), m.weight));
            }
        }
        let by_type = by_type
            .into_iter()
            .map(|(t, hosts)| Ok((t, Ring::new(hosts, config)?)))
            .collect::<Result<_, RingError>>()?;
        Ok(Self { by_type })
    }

    /// The host for (actor type, actor id); `None` when no host registered the type.
    pub fn lookup(&self, actor_type: &str, actor_id: &str) -> Option<&str> {
        self.by_type.get(actor_type)?.get(actor_id.as_bytes())
    }

    /// The ring for one actor type.
    pub fn ring(&self, actor_type: &str) -> Option<&Ring> {
        self.by_type.get(actor_type)
    }

    /// Actor types that have at least one host.
    pub fn actor_types(&self) -> impl Iterator<Item = &str> {
        self.by_type.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[&str]) -> Ring {
        Ring::new(
            ids.iter().map(|i| HostSpec::new(*i, 1)),
            RingConfig::default(),
        )
        .unwrap()
    }

    #[test]
    fn empty_ring_has_no_owner() {
        assert_eq!(ring(&[]).get(b"x"), None);
        assert_eq!(ring(&[]).walk(b"x").count(), 0);
    }

    #[test]
    fn hash_is_pinned() {
        // Guards against an accidental change of hash function or key format: every sidecar
        // and placement node of every version must agree on these points.
        assert_eq!(hash_bytes(b"host-a0"), 3_090_521_778_678_005_712);
    }

    #[test]
    fn rejects_bad_tables() {
        let cfg = RingConfig::default();
        assert_eq!(
            Ring::new([HostSpec::new("a", 1), HostSpec::new("a", 2)], cfg),
            Err(RingError::DuplicateHost("a".into()))
        );
        assert!(matches!(
            Ring::new([HostSpec::new("a", MAX_WEIGHT + 1)], cfg),
            Err(RingError::WeightOutOfRange { .. })
        ));
        assert_eq!(
            Ring::new([HostSpec::new("a", 1)], RingConfig { vnodes_per_host: 0 }),
            Err(RingError::ZeroVnodes)
        );
        // Before MAX_VNODES this overflowed `vnodes * weight` (a panic in debug builds) or
        // tried to build billions of points.
        assert_eq!(
            Ring::new(
                [HostSpec::new("a", 2)],
                RingConfig {
                    vnodes_per_host: u32::MAX
                }
            ),
            Err(RingError::VnodesOutOfRange {
                vnodes: u32::MAX,
                max: MAX_VNODES
            })
        );
    }

    #[test]
    fn weight_scales_virtual_nodes_and_zero_drains() {
        let r = Ring::new(
            [
                HostSpec::new("a", 2),
                HostSpec::new("b", 1),
                HostSpec::new("c", 0),
            ],
            RingConfig::default(),
        )
        .unwrap();
        assert_eq!(r.len(), 300);
        assert_eq!(r.hosts().len(), 3);
        assert!((0..2000).all(|i| r.get(format!("k{i}").as_bytes()) != Some("c")));
    }

    #[test]
    fn walk_lists_each_host_once_starting_with_owner() {
        let r = ring(&["a", "b", "c"]);
        let hosts: Vec<_> = r.walk(b"actor-1").collect();
        assert_eq!(hosts.len(), 3);
        assert_eq!(Some(hosts[0]), r.get(b"actor-1"));
    }

    #[test]
    fn actor_rings_only_use_hosts_of_the_type() {
        let rings = ActorRings::build(
            [
                RingMember {
                    host_id: "a".into(),
                    weight: 1,
                    actor_types: vec!["wf".into(), "act".into()],
                },
                RingMember {
                    host_id: "b".into(),
                    weight: 1,
                    actor_types: vec!["act".into()],
                },
            ],
            RingConfig::default(),
        )
        .unwrap();
        for i in 0..100 {
            assert_eq!(rings.lookup("wf", &format!("id{i}")), Some("a"));
        }
        assert_eq!(rings.lookup("nope", "x"), None);
        assert_eq!(rings.actor_types().collect::<Vec<_>>(), vec!["act", "wf"]);
    }
}
