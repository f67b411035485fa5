//! The crate's error type.

/// Errors of the placement service and its client.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("transport: {0}")]
    Transport(String),
    #[error("no placement leader reachable: {0}")]
    NoLeader(String),
    #[error("invalid table: {0}")]
    Table(#[from] weft_ring::RingError),
}
