//! Generated protobuf types and gRPC stubs: the durabletask sidecar protocol and Weft's internal
//! node-to-node API.
//!
//! The `.proto` sources live in the repository's `proto/` directory. `durabletask.proto` has no
//! proto package, so everything generated from it sits in [`durabletask`] (generated as `_`);
//! `internal.proto` (package `weft.internal.v1`) refers to those types, so its module is nested
//! below it and re-exported as [`internal`].

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

/// The internal node-to-node API (`proto/internal.proto`, package `weft.internal.v1`).
pub use durabletask::weft::internal::v1 as internal;

/// Encoded `FileDescriptorSet` of every Weft proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

pub use prost;
pub use prost_types;
