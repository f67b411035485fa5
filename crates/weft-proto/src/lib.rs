//! Generated protobuf types and gRPC stubs for the durabletask sidecar protocol.
//!
//! The `.proto` sources live in the repository's `proto/` directory; there is no proto package, so
//! everything generated from `durabletask.proto` sits in [`durabletask`] (generated as `_`).

#[allow(clippy::all, missing_docs)]
pub mod durabletask {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// Encoded `FileDescriptorSet` of every Weft proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

pub use prost;
pub use prost_types;
