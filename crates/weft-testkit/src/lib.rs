//! Test support for Weft: a throwaway PostgreSQL server built from the local binaries (one per test
//! binary, a fresh database per test), or the user's own server via `WEFT_TEST_DATABASE_URL`.

pub mod postgres;

pub use postgres::{
    PgServer, TestDb, TestkitError, postgres_bin_dir, spawn_watchdog, test_database,
};
