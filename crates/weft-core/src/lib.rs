//! Weft's pure, I/O-free workflow domain: instance status, history rules, and the turn engine
//! that turns a worker's actions into new history events and effects.
//!
//! **Owns:** the turn engine (`turn`: `prepare_turn`, `apply_response` → `TurnOutcome` with
//! `Effect`s), the instance status machine (`status`), ID and text rules (`ids`), buckets
//! (`bucket`), time conversions (`time`) and the injected wall clock (`clock`), rerun planning
//! (`rerun`).
//!
//! **Never:** does I/O, reads the machine's clock outside `clock::SystemClock`, or panics on
//! what a worker sent: every function is tested with synthetic histories.

pub mod bucket;
pub mod clock;
pub mod history;
pub mod ids;
pub mod propagation;
pub mod rerun;
pub mod status;
pub mod time;
pub mod turn;
#[cfg(test)]
mod turn_tests;
#[cfg(test)]
mod turn_tests_generations;

pub use status::{InstanceMeta, Micros, RuntimeStatus};
