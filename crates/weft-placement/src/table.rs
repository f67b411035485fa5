//! The replicated member table: sidecar hosts plus a monotonically increasing version, within
//! one placement cluster named by a random identity chosen once.
//! Pure data and the deterministic command application every raft node runs identically.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use weft_ring::{ActorRings, RingConfig, RingError, RingMember};

use crate::proto::placement as pb;

/// One sidecar host in the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub host_id: String,
    pub address: String,
    pub app_id: String,
    /// Kept sorted and de-duplicated so equal hosts compare equal.
    pub actor_types: Vec<String>,
    pub weight: u32,
    pub zone: String,
}

impl Member {
    /// Normalises wire input: sorted unique actor types, weight clamped to the ring's range.
    pub fn from_proto(h: pb::HostInfo) -> Self {
        let mut actor_types = h.actor_types;
        actor_types.sort();
        actor_types.dedup();
        Self {
            host_id: h.host_id,
            address: h.address,
            app_id: h.app_id,
            actor_types,
            weight: h.weight.min(weft_ring::MAX_WEIGHT),
            zone: h.zone,
        }
    }

    pub fn to_proto(&self) -> pb::HostInfo {
        pb::HostInfo {
            host_id: self.host_id.clone(),
            address: self.address.clone(),
            app_id: self.app_id.clone(),
            actor_types: self.actor_types.clone(),
            weight: self.weight,
            zone: self.zone.clone(),
        }
    }
}

/// A state-machine command carried in the raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Insert or replace a host (registration or changed actor types).
    Upsert(Member),
    /// Remove hosts (liveness timeout or graceful leave).
    Remove { host_ids: Vec<String> },
    /// Names the cluster, once: ignored when the table already has an identity.
    SetClusterId(String),
}

// openraft requires Display for log payloads (used in its tracing).
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Upsert(m) => write!(f, "upsert({})", m.host_id),
            Command::Remove { host_ids } => write!(f, "remove({})", host_ids.join(",")),
            Command::SetClusterId(id) => write!(f, "cluster-id({id})"),
        }
    }
}

impl std::fmt::Display for CommandResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "version={} changed={}", self.version, self.changed)
    }
}

/// Result of applying one command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Table version after the command.
    pub version: u64,
    /// Whether the command changed the table (and so bumped the version).
    pub changed: bool,
}

/// The member table at one version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberTable {
    pub version: u64,
    pub members: BTreeMap<String, Member>,
    /// Empty until the first leader names the cluster (and in tables stored before there was one).
    #[serde(default)]
    pub cluster_id: String,
}

impl MemberTable {
    /// Applies a command; the version grows only when the member list really changes, so
    /// repeated registrations with unchanged info cause no churn in sidecars. Naming the cluster
    /// changes the table (it is published) but not its version: a new cluster is named before
    /// its first member, an older one carries the name from its next change on.
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        let changed = match cmd {
            Command::Upsert(m) => {
                if self.members.get(&m.host_id) == Some(m) {
                    false
                } else {
                    self.members.insert(m.host_id.clone(), m.clone());
                    true
                }
            }
            Command::Remove { host_ids } => {
                // Remove every listed host (no short-circuit), then report whether any existed.
                let before = self.members.len();
                for h in host_ids {
                    self.members.remove(h);
                }
                self.members.len() != before
            }
            Command::SetClusterId(id) => {
                let set = self.cluster_id.is_empty() && !id.is_empty();
                if set {
                    self.cluster_id = id.clone();
                }
                set
            }
        };
        if changed && !matches!(cmd, Command::SetClusterId(_)) {
            self.version += 1;
        }
        CommandResult {
            version: self.version,
            changed,
        }
    }

    pub fn to_proto(&self, vnodes_per_host: u32) -> pb::Table {
        pb::Table {
            version: self.version,
            hosts: self.members.values().map(Member::to_proto).collect(),
            vnodes_per_host,
            cluster_id: self.cluster_id.clone(),
        }
    }
}

/// What a sidecar holds: the table, and the rings built from it on first use (a sidecar only
/// ever looks up in the newest table, so superseded versions never pay for ring building).
#[derive(Debug)]
pub struct PlacementTable {
    pub version: u64,
    /// The placement cluster the table comes from (empty: not named yet).
    pub cluster_id: String,
    pub members: Vec<Member>,
    config: RingConfig,
    rings: std::sync::OnceLock<ActorRings>,
}

impl PlacementTable {
    /// Accepts a received table after the checks ring building relies on.
    pub fn from_proto(t: pb::Table) -> Result<Arc<Self>, RingError> {
        let members: Vec<Member> = t.hosts.into_iter().map(Member::from_proto).collect();
        let mut ids = std::collections::BTreeSet::new();
        for m in &members {
            if m.host_id.is_empty() {
                return Err(RingError::EmptyHostId);
            }
            if !ids.insert(m.host_id.as_str()) {
                return Err(RingError::DuplicateHost(m.host_id.clone()));
            }
        }
        let config = RingConfig {
            vnodes_per_host: if t.vnodes_per_host == 0 {
                weft_ring::DEFAULT_VNODES
            } else {
                t.vnodes_per_host
            },
        };
        Ok(Arc::new(Self {
            version: t.version,
            cluster_id: t.cluster_id,
            members,
            config,
            rings: std::sync::OnceLock::new(),
        }))
    }

    /// Whether this table supersedes `current`: a newer version of the same cluster, or any
    /// table of another cluster (a placement that lost its data starts again at version 1, and
    /// its tables must not be ignored). A table whose cluster is not named yet compares by version.
    pub fn replaces(&self, current: &PlacementTable) -> bool {
        let other_cluster = !self.cluster_id.is_empty()
            && !current.cluster_id.is_empty()
            && self.cluster_id != current.cluster_id;
        other_cluster || self.version > current.version
    }

    /// The per-actor-type rings of this table.
    pub fn rings(&self) -> &ActorRings {
        self.rings.get_or_init(|| {
            ActorRings::build(
                self.members.iter().map(|m| RingMember {
                    host_id: m.host_id.clone(),
                    weight: m.weight,
                    actor_types: m.actor_types.clone(),
                }),
                self.config,
            )
            // from_proto checked ids and Member::from_proto clamped weights, so this holds.
            .unwrap_or_default()
        })
    }

    /// The member that hosts (actor type, actor id), if any host registered the type.
    pub fn lookup(&self, actor_type: &str, actor_id: &str) -> Option<&Member> {
        let host = self.rings().lookup(actor_type, actor_id)?;
        self.members.iter().find(|m| m.host_id == host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, types: &[&str]) -> Member {
        Member {
            host_id: id.into(),
            address: format!("{id}:50002"),
            app_id: "app".into(),
            actor_types: types.iter().map(|s| s.to_string()).collect(),
            weight: 1,
            zone: String::new(),
        }
    }

    #[test]
    fn version_bumps_only_on_change() {
        let mut t = MemberTable::default();
        assert_eq!(t.apply(&Command::Upsert(member("a", &["wf"]))).version, 1);
        let r = t.apply(&Command::Upsert(member("a", &["wf"])));
        assert_eq!((r.version, r.changed), (1, false));
        assert_eq!(
            t.apply(&Command::Upsert(member("a", &["wf", "act"])))
                .version,
            2
        );
        let r = t.apply(&Command::Remove {
            host_ids: vec!["zz".into()],
        });
        assert_eq!((r.version, r.changed), (2, false));
        let r = t.apply(&Command::Remove {
            host_ids: vec!["a".into()],
        });
        assert_eq!((r.version, r.changed), (3, true));
        assert!(t.members.is_empty());
    }

    #[test]
    fn cluster_id_is_set_once_and_orders_tables_across_clusters() {
        let mut t = MemberTable::default();
        t.apply(&Command::Upsert(member("a", &["wf"])));
        let r = t.apply(&Command::SetClusterId("one".into()));
        assert_eq!((r.version, r.changed), (1, true), "named, same member list");
        let r = t.apply(&Command::SetClusterId("two".into()));
        assert_eq!(
            (r.version, r.changed, t.cluster_id.as_str()),
            (1, false, "one")
        );
        t.apply(&Command::Upsert(member("c", &["wf"])));
        t.apply(&Command::Upsert(member("d", &["wf"])));
        let old = PlacementTable::from_proto(t.to_proto(100)).unwrap();
        assert_eq!(old.cluster_id, "one");

        // A fresh cluster (placement lost its data): lower versions, another identity.
        let mut fresh = MemberTable::default();
        fresh.apply(&Command::Upsert(member("b", &["wf"])));
        fresh.apply(&Command::Upsert(member("e", &["wf"])));
        let unnamed = PlacementTable::from_proto(fresh.to_proto(100)).unwrap();
        assert!(
            !unnamed.replaces(&old),
            "not named yet: compared by version"
        );
        fresh.apply(&Command::SetClusterId("three".into()));
        let named = PlacementTable::from_proto(fresh.to_proto(100)).unwrap();
        assert!(named.version < old.version);
        assert!(
            named.replaces(&old),
            "another cluster's table replaces whatever its version"
        );
        assert!(!named.replaces(&named), "the same table again is not newer");

        // Tables stored before identities existed read as unnamed.
        let legacy: MemberTable = serde_json::from_str(r#"{"version":4,"members":{}}"#).unwrap();
        assert_eq!((legacy.version, legacy.cluster_id.as_str()), (4, ""));
    }

    #[test]
    fn proto_round_trip_builds_rings() {
        let mut t = MemberTable::default();
        t.apply(&Command::Upsert(member("a", &["wf"])));
        t.apply(&Command::Upsert(member("b", &["wf", "act"])));
        let pt = PlacementTable::from_proto(t.to_proto(100)).unwrap();
        assert_eq!(pt.version, 2);
        assert_eq!(pt.lookup("act", "x").unwrap().host_id, "b");
        assert!(pt.lookup("wf", "x").is_some());
        assert!(pt.lookup("none", "x").is_none());
    }
}
