//! PLACEHOLDER of the ownership registry contract (`../briefs/registry-contract.md`): this copy
//! owns every key and never changes. The cluster branch replaces it with the real registry over
//! the placement table; keep that one at merge.

use std::sync::Arc;
use tokio::sync::watch;

/// Kinds of actors placed on the ring (each app has one ring per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorKind {
    Workflow,
    Activity,
    Executor,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This sidecar owns the key.
    Local,
    /// Another sidecar owns it; `address` is its internal API address (host:port).
    Remote { host_id: String, address: String },
    /// No table yet, or no sidecar registered this app's actor type.
    Nobody,
}

struct Inner {
    host_id: String,
    version: watch::Sender<u64>,
}

/// Cheap to clone (Arc inside).
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Registry {
    /// Owns everything, never changes.
    pub fn local_only(host_id: &str) -> Registry {
        Registry {
            inner: Arc::new(Inner {
                host_id: host_id.to_string(),
                version: watch::channel(0).0,
            }),
        }
    }

    /// This sidecar's host id.
    pub fn host_id(&self) -> &str {
        &self.inner.host_id
    }

    /// The owner of `key` for `app_id`'s actor type of that kind.
    pub fn owner(&self, _app_id: &str, _kind: ActorKind, _key: &str) -> Owner {
        Owner::Local
    }

    /// Version of the table the answers come from (0 before the first table).
    pub fn version(&self) -> u64 {
        *self.inner.version.borrow()
    }

    /// Changes whenever a new table has been applied (the value is its version).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }
}
