//! Every generated protobuf type and gRPC stub of Weft, compiled here once (protox, no `protoc`):
//! the durabletask sidecar protocol, the internal node-to-node API, and the placement port's
//! protocols (the placement API, raft RPCs, gRPC health).
//!
//! The `.proto` sources live in the repository's `proto/` directory. `durabletask.proto` has no
//! proto package, so everything generated from it sits in [`durabletask`] (generated as `_`);
//! `internal.proto` (package `weft.internal.v1`) refers to those types, so its module is nested
//! below it and re-exported as [`internal`]. This crate holds generated code only, and the one hand-written message
//! [`wire::WorkItemFrame`].

#[allow(clippy::all, missing_docs)]
pub mod durabletask {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));

    #[doc(hidden)]
    pub mod weft {
        pub mod internal {
            #[allow(clippy::all, missing_docs)]
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/weft.internal.v1.rs"));
            }
        }
    }
}

pub mod wire;

/// `TaskHubSidecarService`'s server once more, sending `GetWorkItems` as [`wire::WorkItemFrame`]s
/// (every other type is the one in [`durabletask`]); the sidecar serves this one.
#[allow(clippy::all, missing_docs)]
pub mod framed {
    include!(concat!(env!("OUT_DIR"), "/framed/_.rs"));
}

/// The internal node-to-node API (`proto/internal.proto`, package `weft.internal.v1`).
pub use durabletask::weft::internal::v1 as internal;

/// `weft.placement.v1` (`proto/placement.proto`): the placement API for sidecars and operators.
#[allow(clippy::all, missing_docs)]
pub mod placement {
    include!(concat!(env!("OUT_DIR"), "/weft.placement.v1.rs"));
}

/// `weft.raft.v1` (`proto/raft.proto`): raft RPCs between placement nodes.
#[allow(clippy::all, missing_docs)]
pub mod raft {
    include!(concat!(env!("OUT_DIR"), "/weft.raft.v1.rs"));
}

/// `grpc.health.v1` (`proto/health.proto`): the standard health service on the placement port
/// (Kubernetes `grpc` probes).
#[allow(clippy::all, missing_docs)]
pub mod health {
    include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
}

/// Encoded `FileDescriptorSet` of the sidecar's protos, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// Encoded `FileDescriptorSet` of the placement port's protos (placement, raft, health).
pub const PLACEMENT_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/placement_descriptor.bin"));

pub use prost;
pub use prost_types;
