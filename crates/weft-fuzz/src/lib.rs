//! Fuzzing on stable Rust: every port's decoders (durabletask gRPC, the internal API, the
//! placement API and raft payloads, the HTTP API, the Configuration YAML) and weft-core's turn
//! engine, each a [`harness::Target`] run for a bounded time by `cargo test -p weft-fuzz`.
//!
//! Owns the mutation loop ([`harness::fuzz`], [`harness::Rng`]), the targets ([`targets`]), the
//! seed corpus generator ([`seeds`]) and an in-process sidecar for the gRPC targets
//! ([`sidecar`]). It is test tooling: it must never be a dependency of production crates, nor
//! need a nightly toolchain, network access beyond loopback or a run without a time budget.

pub mod harness;
pub mod input;
pub mod seeds;
pub mod sidecar;
pub mod targets;

/// Why a fuzz run could not start.
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error("fuzz configuration: {0}")]
    Config(String),
    #[error("setting up the in-process sidecar: {0}")]
    Setup(String),
    #[error("writing the seed corpus: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs `target` for the budget from `WEFT_FUZZ_SECS` and fails on any crash.
pub fn fuzz_for_budget(target: &mut dyn harness::Target) -> Result<harness::Report, FuzzError> {
    let report = harness::fuzz(target, harness::budget()?, harness::seed())?;
    Ok(report)
}
