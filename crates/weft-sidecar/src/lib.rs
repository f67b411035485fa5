//! The Weft sidecar: workflow actors over a durable [`weft_store::Store`], the worker hub that
//! feeds connected SDK workers, the durabletask gRPC service and the Dapr HTTP workflow API.

mod actor;
mod commit;
pub mod engine;
pub mod error;
pub mod grpc;
mod history_json;
pub mod http;
mod hub;
mod rerun;
#[cfg(test)]
mod resync_tests;
pub mod server;
pub mod telemetry;
#[cfg(test)]
mod testing;
mod timers;

pub use engine::{Engine, EngineConfig};
pub use error::EngineError;
pub use history_json::event_json;
pub use server::{Running, ServeError, SidecarConfig, serve};
