//! Cluster membership and ownership. PLACEHOLDER (route branch): only the registry contract, so
//! routing compiles before the cluster branch lands; the lead keeps the cluster helper's version.

pub mod registry;

pub use registry::{ActorKind, Owner, Registry};
