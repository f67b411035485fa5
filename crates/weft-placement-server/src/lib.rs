//! Weft's placement server: one placement node of the raft cluster that replicates the sidecar
//! member table, and the gRPC port it serves to sidecars, operators and its peers.
//!
//! - [`node`]: [`PlacementNode`], a running node configured by [`NodeConfig`]: raft, one gRPC
//!   port (placement API, raft RPCs, health), the one-time cluster bootstrap, the leader's
//!   liveness loop.
//! - [`service`]: the `weft.placement.v1.Placement` service: sidecar sessions, liveness, cluster
//!   status and node admin (forwarded to the leader).
//! - [`raft`]: everything that touches openraft: type config, the SQLite log store and state
//!   machine, the gRPC transport, and the [`raft::RaftNode`] facade.
//! - [`health`]: `grpc.health.v1`, SERVING once a leader is known.
//! - [`error`]: [`ServerError`] and the one table mapping it to gRPC codes.
//!
//! The member table, the protocol types and the sidecar's client are `weft-placement`'s; the
//! `weft placement` command that runs a node is the `weft` binary's. No sidecar may depend on
//! this crate, and it must never parse a command line or build a `tonic::Status` outside
//! [`error`].

pub mod error;
pub mod health;
pub mod node;
pub mod raft;
pub mod service;

pub use error::{ErrorKind, ServerError};
pub use node::{NodeConfig, PlacementNode};
