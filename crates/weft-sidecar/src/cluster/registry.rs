//! Who owns which actor now: one answer derived from the latest placement table, asked by actors,
//! background loops and the API edge.
//!
//! Ownership is decided per bucket ([`weft_core::bucket`]): the owner of a key is the ring owner
//! (for the app's actor type of that kind) of the key's instance bucket. Workflow, activity and
//! executor actors of one instance share a bucket, so they land on the same sidecar whenever
//! that sidecar registered all three types (it registers them together).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;
use weft_core::bucket::{BUCKETS, all_buckets, bucket_of};
use weft_placement::PlacementTable;

/// Kinds of actors placed on the ring (each app has one ring per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorKind {
    Workflow,
    Activity,
    Executor,
}

impl ActorKind {
    pub const ALL: [ActorKind; 3] = [
        ActorKind::Workflow,
        ActorKind::Activity,
        ActorKind::Executor,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This sidecar owns the key.
    Local,
    /// Another sidecar owns it; `address` is its internal API address (host:port).
    Remote { host_id: String, address: String },
    /// No table yet, or no sidecar registered this app's actor type (no worker connected
    /// anywhere): the caller waits for a table change (or, for writes, writes to the store and
    /// lets the future owner's recovery pick it up).
    Nobody,
}

/// The actor type an app's actors of `kind` are registered under in placement (Dapr's names).
pub fn actor_type(app_id: &str, kind: ActorKind) -> String {
    let suffix = match kind {
        ActorKind::Workflow => "workflow",
        ActorKind::Activity => "activity",
        ActorKind::Executor => "executor",
    };
    format!("dapr.internal.default.{app_id}.{suffix}")
}

/// The instance ID a key belongs to: activity keys are `{instance_id}::{task_id}::{generation}`
/// (parsed from the right, so an instance ID containing `::` still works); any other key is an
/// instance ID itself.
pub fn instance_of_key(key: &str) -> &str {
    let mut parts = key.rsplitn(3, "::");
    let (Some(generation), Some(task), Some(instance)) = (parts.next(), parts.next(), parts.next())
    else {
        return key;
    };
    if generation.parse::<i64>().is_ok() && task.parse::<i32>().is_ok() {
        instance
    } else {
        key
    }
}

/// The activity actor key of one scheduled activity.
pub fn activity_key(instance_id: &str, task_id: i32, generation: i64) -> String {
    format!("{instance_id}::{task_id}::{generation}")
}

/// The ring lookup key of a bucket.
fn bucket_ring_key(bucket: i32) -> String {
    format!("bucket-{bucket}")
}

/// Owners of every bucket for one (app, kind) in one table.
#[derive(Debug)]
struct BucketMap {
    /// Index into the table's members per bucket; `None`: nobody registered the type.
    owners: Vec<Option<u32>>,
    /// Buckets owned by this host, ascending.
    mine: Arc<Vec<i32>>,
}

/// One table as the registry uses it, with bucket maps computed on first use per (app, kind).
struct Snapshot {
    version: u64,
    table: Option<Arc<PlacementTable>>,
    maps: Mutex<HashMap<(String, ActorKind), Arc<BucketMap>>>,
}

struct Shared {
    host_id: String,
    local_only: bool,
    snapshot: RwLock<Arc<Snapshot>>,
    version_tx: watch::Sender<u64>,
    /// The placement node that served the latest table (the leader), for the dashboard.
    leader: RwLock<Option<String>>,
    /// How this sidecar dials placement (for the dashboard's status query).
    placement_dial: std::sync::OnceLock<weft_tls::Dial>,
}

/// Cheap to clone (Arc inside).
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host_id", &self.shared.host_id)
            .field("local_only", &self.shared.local_only)
            .field("version", &self.version())
            .finish()
    }
}

impl Registry {
    /// Owns everything, never changes (unit tests, in-process tests without placement).
    pub fn local_only(host_id: &str) -> Registry {
        Self::build(host_id, true)
    }

    /// A registry that answers from the tables given to [`Registry::apply`] (`Nobody` before
    /// the first one).
    pub fn placed(host_id: &str) -> Registry {
        Self::build(host_id, false)
    }

    fn build(host_id: &str, local_only: bool) -> Registry {
        Registry {
            shared: Arc::new(Shared {
                host_id: host_id.to_string(),
                local_only,
                snapshot: RwLock::new(Arc::new(Snapshot {
                    version: 0,
                    table: None,
                    maps: Mutex::default(),
                })),
                version_tx: watch::channel(0).0,
                leader: RwLock::new(None),
                placement_dial: std::sync::OnceLock::new(),
            }),
        }
    }

    /// This sidecar's host id (as registered in placement).
    pub fn host_id(&self) -> &str {
        &self.shared.host_id
    }

    /// Whether this registry owns everything without placement.
    pub fn is_local_only(&self) -> bool {
        self.shared.local_only
    }

    /// Applies a newer table (older or equal versions of the same placement cluster are ignored:
    /// placement resends; a table of another cluster is applied whatever its version).
    pub fn apply(&self, table: Arc<PlacementTable>) {
        if self.shared.local_only {
            return;
        }
        let version = table.version;
        {
            let mut cur = self
                .shared
                .snapshot
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if cur.table.as_ref().is_some_and(|c| !table.replaces(c)) {
                return;
            }
            *cur = Arc::new(Snapshot {
                version,
                table: Some(table),
                maps: Mutex::default(),
            });
        }
        self.shared.version_tx.send_replace(version);
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.shared
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The owner of `key` (workflow and executor: the instance ID; activity: the activity key
    /// `{instance_id}::{task_id}::{generation}`) for `app_id`'s actor type of that kind.
    pub fn owner(&self, app_id: &str, kind: ActorKind, key: &str) -> Owner {
        self.bucket_owner(app_id, kind, bucket_of(instance_of_key(key)))
    }

    /// The owner of a whole bucket.
    pub fn bucket_owner(&self, app_id: &str, kind: ActorKind, bucket: i32) -> Owner {
        if self.shared.local_only {
            return Owner::Local;
        }
        let snap = self.snapshot();
        let Some(table) = &snap.table else {
            return Owner::Nobody;
        };
        let map = snap.map(&self.shared.host_id, app_id, kind);
        let idx = usize::try_from(bucket).ok();
        match idx.and_then(|i| map.owners.get(i).copied().flatten()) {
            None => Owner::Nobody,
            Some(m) => {
                let m = &table.members[m as usize];
                if m.host_id == self.shared.host_id {
                    Owner::Local
                } else {
                    Owner::Remote {
                        host_id: m.host_id.clone(),
                        address: m.address.clone(),
                    }
                }
            }
        }
    }

    /// Whether the current table has another sidecar `host_id` at internal `address`: the only
    /// peers a worker's answer may be forwarded to (its completion token names them, and a
    /// token is client input).
    pub fn is_peer(&self, host_id: &str, address: &str) -> bool {
        if self.shared.local_only || host_id == self.shared.host_id {
            return false;
        }
        self.snapshot().table.as_ref().is_some_and(|t| {
            t.members
                .iter()
                .any(|m| m.host_id == host_id && m.address == address)
        })
    }

    /// Whether this sidecar owns `key` now.
    pub fn is_local(&self, app_id: &str, kind: ActorKind, key: &str) -> bool {
        self.owner(app_id, kind, key) == Owner::Local
    }

    /// The buckets of `app_id`'s actors of `kind` this sidecar owns, ascending (what its scans
    /// cover).
    pub fn owned_buckets(&self, app_id: &str, kind: ActorKind) -> Arc<Vec<i32>> {
        if self.shared.local_only {
            return Arc::new(all_buckets());
        }
        let snap = self.snapshot();
        if snap.table.is_none() {
            return Arc::new(Vec::new());
        }
        snap.map(&self.shared.host_id, app_id, kind).mine.clone()
    }

    /// The owner host of every bucket for `app_id`'s actors of `kind` (None: nobody), all from
    /// one table, with that table's version.
    pub fn bucket_owners(&self, app_id: &str, kind: ActorKind) -> (u64, Vec<Option<String>>) {
        if self.shared.local_only {
            return (0, vec![Some(self.shared.host_id.clone()); BUCKETS as usize]);
        }
        let snap = self.snapshot();
        let Some(table) = &snap.table else {
            return (snap.version, vec![None; BUCKETS as usize]);
        };
        let map = snap.map(&self.shared.host_id, app_id, kind);
        let owners = map
            .owners
            .iter()
            .map(|o| o.map(|i| table.members[i as usize].host_id.clone()))
            .collect();
        (snap.version, owners)
    }

    /// Whether `host_id` is in the current table with `app_id`'s workflow actor type (a live
    /// sidecar able to run that app's work).
    pub fn registered(&self, host_id: &str, app_id: &str) -> bool {
        let snap = self.snapshot();
        let Some(t) = &snap.table else { return false };
        let ty = actor_type(app_id, ActorKind::Workflow);
        t.members
            .iter()
            .any(|m| m.host_id == host_id && m.actor_types.contains(&ty))
    }

    /// The latest table (`None` before the first one, and always in local-only mode).
    pub fn table(&self) -> Option<Arc<PlacementTable>> {
        self.snapshot().table.clone()
    }

    /// Records the placement node that serves this sidecar's tables (the leader).
    pub fn set_placement_leader(&self, address: Option<String>) {
        *self
            .shared
            .leader
            .write()
            .unwrap_or_else(|p| p.into_inner()) = address;
    }

    /// Records how this sidecar dials placement (once; later calls are ignored).
    pub fn set_placement_dial(&self, dial: weft_tls::Dial) {
        let _ = self.shared.placement_dial.set(dial);
    }

    /// How this sidecar dials placement (`None` without placement).
    pub fn placement_dial(&self) -> Option<weft_tls::Dial> {
        self.shared.placement_dial.get().cloned()
    }

    /// The placement node that served the latest table, if known.
    pub fn placement_leader(&self) -> Option<String> {
        self.shared
            .leader
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Version of the table the answers come from (0 before the first table).
    pub fn version(&self) -> u64 {
        self.snapshot().version
    }

    /// Changes whenever a new table has been applied (the value is its version).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.version_tx.subscribe()
    }
}

impl Snapshot {
    /// Maps are cached only for actor types the table has a ring for, so the cache is bounded
    /// by the table: an app ID a caller makes up (the internal API takes them from requests)
    /// gets the shared empty map and leaves nothing behind.
    fn map(&self, me: &str, app_id: &str, kind: ActorKind) -> Arc<BucketMap> {
        let ty = actor_type(app_id, kind);
        let Some(t) = self
            .table
            .as_ref()
            .filter(|t| t.rings().ring(&ty).is_some())
        else {
            return nobody_map();
        };
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = maps.get(&(app_id.to_string(), kind)) {
            return m.clone();
        }
        let map = Arc::new(build_map(t, me, &ty));
        maps.insert((app_id.to_string(), kind), map.clone());
        map
    }

    #[cfg(test)]
    fn cached_maps(&self) -> usize {
        self.maps.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The map of an actor type nobody hosts: every bucket unowned.
fn nobody_map() -> Arc<BucketMap> {
    static NOBODY: std::sync::OnceLock<Arc<BucketMap>> = std::sync::OnceLock::new();
    NOBODY
        .get_or_init(|| {
            Arc::new(BucketMap {
                owners: vec![None; BUCKETS as usize],
                mine: Arc::default(),
            })
        })
        .clone()
}

fn build_map(table: &PlacementTable, me: &str, actor_type: &str) -> BucketMap {
    let index: HashMap<&str, u32> = table
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.host_id.as_str(), i as u32))
        .collect();
    let ring = table.rings().ring(actor_type);
    let mut owners = Vec::with_capacity(BUCKETS as usize);
    let mut mine = Vec::new();
    for b in 0..i32::from(BUCKETS) {
        let host = ring.and_then(|r| r.get(bucket_ring_key(b).as_bytes()));
        if host == Some(me) {
            mine.push(b);
        }
        owners.push(host.and_then(|h| index.get(h).copied()));
    }
    BucketMap {
        owners,
        mine: Arc::new(mine),
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
