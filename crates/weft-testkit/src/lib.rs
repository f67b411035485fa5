//! Test support for Weft: a throwaway PostgreSQL server built from the local binaries (one per test
//! binary, a fresh database per test; fast by default, durable on request with [`PgLaunch`]), or
//! the user's own server via `WEFT_TEST_DATABASE_URL`; a multi-process cluster launcher
//! (placement nodes, sidecars, HAProxy) with fault injection; and a TCP proxy that can cut and heal
//! a connection path.

pub mod cluster;
pub mod error;
pub mod haproxy;
pub mod postgres;
pub mod process;
pub mod proxy;

pub use cluster::{Cluster, ClusterConfig, SidecarAddrs, Target};
pub use error::TestkitError;
pub use postgres::{PgLaunch, PgServer, TestDb, postgres_bin_dir, test_database};
pub use process::{Proc, Signal};
pub use proxy::{ProxyMode, TcpProxy};
