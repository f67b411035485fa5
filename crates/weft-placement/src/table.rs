//! The replicated member table: sidecar hosts plus a monotonically increasing version.
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
}

// openraft requires Display for log payloads (used in its tracing).
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Upsert(m) => write!(f, "upsert({})", m.host_id),
            Command::Remove { host_ids } => write!(f, "remove({})", host_ids.join(",")),
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
}

impl MemberTable {
    /// Applies a command; the version grows only when the member list really changes, so
    /// repeated registrations with unchanged info cause no churn in sidecars.
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
        };
        if changed {
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
        }
    }
}

/// What a sidecar holds: the table, and the rings built from it on first use (a sidecar only
/// ever looks up in the newest table, so superseded versions never pay for ring building).
#[derive(Debug)]
pub struct PlacementTable {
    pub version: u64,
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
            members,
            config,
            rings: std::sync::OnceLock::new(),
        }))
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
