//! The sidecar's part in the cluster: the ownership registry over the placement table, and the
//! membership that feeds it.

pub mod registry;

pub use registry::{ActorKind, Owner, Registry};
pub(crate) mod lease;
pub mod membership;
pub(crate) mod owned;
pub(crate) mod ownership;

pub use membership::{ClusterConfig, Membership};
