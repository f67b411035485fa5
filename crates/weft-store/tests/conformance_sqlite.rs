//! The store conformance suite on the SQLite backend (a fresh database file per test).

use std::path::PathBuf;

use async_trait::async_trait;
use weft_store::SqliteStore;
use weft_store::conformance::Fixture;

struct SqliteFixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SqliteFixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("weft.db");
        Self { _dir: dir, path }
    }
}

#[async_trait]
impl Fixture for SqliteFixture {
    type Handle = SqliteStore;
    async fn handle(&self) -> SqliteStore {
        SqliteStore::open(&self.path).expect("open sqlite store")
    }
}

weft_store::conformance_tests!(Some(SqliteFixture::new()));
