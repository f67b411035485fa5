//! Weft's end-to-end benchmark: a sidecar (in this process, or `weft dev` as a child process) on
//! SQLite or PostgreSQL, or a cluster of `weft sidecar`s on PostgreSQL ([`cluster`]), driven over
//! gRPC by a minimal hand-written worker or the Python SDK, measuring activity steps per second,
//! end-to-end latency, fan-out and join, commits per step (the store's and PostgreSQL's own
//! counters) and the sidecar's idle memory. See docs/benchmarks.md.
//!
//! The binary (`src/main.rs`) parses flags and prints the table; everything it measures goes
//! through [`workload::run`] or [`cluster::bench`], which the tests call too.
//!
//! Main types: [`Target`] (what is measured), [`Plan`] (which workloads, how big), [`Report`] and
//! [`Row`] (the figures). A measuring tool only: it must never be a dependency of the engine's
//! crates, and it must never point at a database it did not create or was not given with
//! `--database-url` (its workloads fill the store with throwaway instances).

pub mod cluster;
pub mod harness;
pub mod json;
pub mod pg;
pub mod pgstat;
pub mod probe;
pub mod process;
pub mod python;
pub mod rss;
pub mod worker;
pub mod workload;

pub use harness::{BenchStore, Sidecar, Target};
pub use workload::{Plan, Report, Row, run, table};
