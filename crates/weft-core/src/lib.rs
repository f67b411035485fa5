//! Weft's pure, I/O-free workflow domain: instance status, history rules, and the turn engine
//! that turns a worker's actions into new history events and effects.

pub mod bucket;
pub mod clock;
pub mod history;
pub mod ids;
pub mod rerun;
pub mod status;
pub mod time;
pub mod turn;
#[cfg(test)]
mod turn_tests;
#[cfg(test)]
mod turn_tests_generations;

pub use status::{InstanceMeta, Micros, RuntimeStatus};
