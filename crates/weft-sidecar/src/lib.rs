//! The Weft sidecar: workflow actors over a durable [`weft_store::Store`], the worker hub that
//! feeds connected SDK workers, the durabletask gRPC service and the Dapr HTTP workflow API.
//!
//! **Owns:** the engine ([`Engine`]: client operations, recovery, background loops), its
//! components (`parts`: committer, clock, hub, ownership view, actor directory), the API edges
//! (`grpc`, `http`, the internal node-to-node API) and routing to owners (`route`), and its part
//! in the cluster (`cluster`: registry, membership, leases, the ownership reconciler).
//! [`server::serve`] binds the ports and runs it all; [`server::Running::shutdown`] is the
//! ordered way out.
//!
//! **Never:** writes as owner without the fence of a lease it holds (`cluster::owned`), acts on
//! a worker's answer before the checkpoint that records it has committed, or trusts input from
//! a port before the edge validated it. Workflow semantics live in `weft-core`, not here.

mod actor;
mod auth;
#[cfg(test)]
mod cancel_tests;
pub mod census;
#[cfg(test)]
mod clock_tests;
pub mod cluster;
mod commit;
mod directory;
pub mod engine;
pub mod error;
#[cfg(test)]
mod fold_tests;
pub mod grpc;
mod history_json;
pub mod http;
mod hub;
#[cfg(test)]
mod idle_tests;
pub mod internal;
mod lineage;
mod loops;
mod mailbox;
mod parts;
mod reads;
mod recovery;
mod remote;
mod rerun;
#[cfg(test)]
mod resync_tests;
pub mod retention;
pub mod route;
pub mod server;
mod shutdown;
mod slots;
pub mod telemetry;
#[cfg(test)]
mod testing;
mod timers;
mod tls_listener;
#[cfg(test)]
mod transit_tests;
mod ui;
mod worker_ops;

pub use engine::{Engine, EngineConfig};
pub use error::EngineError;
pub use history_json::event_json;
pub use retention::PurgeFilter;
pub use server::{Running, ServeError, SidecarConfig, serve, serve_placed, serve_with};
