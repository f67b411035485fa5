//! Weft's end-to-end benchmark: an in-process sidecar (`weft_sidecar::serve`) on SQLite or
//! PostgreSQL, driven over gRPC by a minimal hand-written worker, measuring activity steps per
//! second, end-to-end latency and store commits per activity step. See docs/benchmarks.md.
//!
//! The binary (`src/main.rs`) parses flags and prints the table; everything it measures goes
//! through [`workload::run`], which the smoke test calls too.

pub mod harness;
pub mod pg;
pub mod probe;
pub mod worker;
pub mod workload;

pub use harness::{BenchStore, Sidecar};
pub use workload::{Plan, Row, run, table};
