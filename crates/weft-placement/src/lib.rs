//! Weft's placement client and API: what a sidecar needs to take part in placement, and the data
//! every placement node replicates.
//!
//! - [`table`]: the member table ([`MemberTable`], [`Member`], [`Command`]) and its deterministic
//!   command application, and [`PlacementTable`], the table a sidecar holds with its rings.
//! - [`client`]: [`PlacementClient`], one stream to the placement leader (register, heartbeat,
//!   acknowledge, follow redirects), configured by [`ClientConfig`]; [`ActorTypes`] changes what
//!   the host offers.
//! - [`proto`]: the placement port's protocol types, compiled in `weft-proto`.
//!
//! The raft node and the gRPC service live in `weft-placement-server`; the `weft placement` and
//! `weft cluster` commands in the `weft` binary. This crate must never depend on openraft, on a
//! storage engine or on a command-line parser: every sidecar links it.

pub mod client;
pub mod error;
pub mod table;

pub use client::{ActorTypes, ClientConfig, ClientStatus, PlacementClient};
pub use error::PlacementError;
pub use proto::placement::HostInfo;
pub use table::{Command, CommandResult, Member, MemberTable, PlacementTable};

/// Generated protobuf/gRPC code of the placement port (compiled in `weft-proto`).
pub mod proto {
    /// `grpc.health.v1`: the standard health service (Kubernetes `grpc` probes).
    pub use weft_proto::health;
    /// `weft.placement.v1`: the sidecar and admin API.
    pub use weft_proto::placement;
    /// `weft.raft.v1`: raft RPCs between placement nodes.
    pub use weft_proto::raft;
    /// Encoded descriptor set of the three packages (for gRPC reflection).
    pub const DESCRIPTOR: &[u8] = weft_proto::PLACEMENT_DESCRIPTOR_SET;
}

/// Default port of the placement service (sidecar API, admin API and raft RPCs share it).
pub const DEFAULT_PORT: u16 = 50005;
