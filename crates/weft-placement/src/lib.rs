//! Weft's placement service: an openraft cluster replicating the sidecar member table, its gRPC
//! API for sidecars and admins, the sidecar-side client, and the `weft placement`/`cluster` CLI.

pub mod cli;
pub mod client;
pub mod error;
pub mod health;
pub mod node;
pub mod raft;
pub mod service;
pub mod table;

pub use client::{ClientConfig, ClientStatus, PlacementClient};
pub use error::PlacementError;
pub use node::{NodeConfig, PlacementNode};
pub use proto::placement::HostInfo;
pub use table::{Command, Member, MemberTable, PlacementTable};

/// Generated protobuf/gRPC code.
pub mod proto {
    /// `weft.placement.v1`: the sidecar and admin API.
    pub mod placement {
        tonic::include_proto!("weft.placement.v1");
    }
    /// `weft.raft.v1`: raft RPCs between placement nodes.
    pub mod raft {
        tonic::include_proto!("weft.raft.v1");
    }
    /// `grpc.health.v1`: the standard health service (Kubernetes `grpc` probes).
    pub mod health {
        tonic::include_proto!("grpc.health.v1");
    }
    /// Encoded descriptor set of both packages (for gRPC reflection).
    pub const DESCRIPTOR: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/placement_descriptor.bin"));
}

/// Default port of the placement service (sidecar API, admin API and raft RPCs share it).
pub const DEFAULT_PORT: u16 = 50005;
