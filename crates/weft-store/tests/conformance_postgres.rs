//! The store conformance suite on the PostgreSQL backend: a throwaway server per test binary (or
//! `WEFT_TEST_DATABASE_URL`), a fresh database per test. Without PostgreSQL this fails under
//! `CI=true` and prints a loud SKIP otherwise.

use async_trait::async_trait;
use weft_store::conformance::Fixture;
use weft_store::{PgOptions, PgStore};

struct PgFixture {
    db: weft_testkit::TestDb,
}

impl PgFixture {
    async fn new() -> Option<Self> {
        Some(Self {
            db: weft_testkit::test_database().await?,
        })
    }
}

#[async_trait]
impl Fixture for PgFixture {
    type Handle = PgStore;
    async fn handle(&self) -> PgStore {
        let mut opts = PgOptions::new(self.db.url.clone());
        opts.pool_size = 4;
        PgStore::connect_with(opts)
            .await
            .expect("connect to the test database")
    }
}

weft_store::conformance_tests!(PgFixture::new().await);
