//! Mutual TLS between Weft's own processes: SPIFFE workload identities in X.509 certificates,
//! rustls configurations that follow certificate rotation on disk, the tonic server and client
//! plumbing, per-call authorisation, and issuing development certificates with rcgen.
//!
//! **Never:** accepts a peer without checking its identity against the rule of the port it
//! called (`authz`), or keeps serving a certificate that rotated on disk.

pub mod args;
pub mod authz;
pub mod certs;
pub mod client;
pub mod context;
pub mod error;
pub mod identity;
pub mod server;

pub use args::TlsArgs;
pub use authz::{PeerCheck, caller};
pub use client::Dial;
pub use context::{Expect, TlsContext};
pub use error::TlsError;
pub use identity::{ADMIN, PLACEMENT, Peer, PeerInfo, Role, SpiffeId};
pub use server::{Conn, Incoming, Mode, incoming};

/// Default SPIFFE trust domain (as Dapr's Sentry).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Default namespace in the SPIFFE path.
pub const DEFAULT_NAMESPACE: &str = "default";
