//! Weft's pure, I/O-free workflow domain: instance status, history rules, and the turn engine
//! that turns a worker's actions into new history events and effects.

pub mod status;

pub use status::{InstanceMeta, Micros, RuntimeStatus};
