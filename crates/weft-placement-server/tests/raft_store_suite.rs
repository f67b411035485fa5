//! openraft's storage conformance suite run on the SQLite log store and state machine.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use weft_placement_server::raft::{SqliteLogStore, StateMachine, TablePublisher, TypeConfig};

struct SqliteBuilder;

impl StoreBuilder<TypeConfig, SqliteLogStore, StateMachine, tempfile::TempDir> for SqliteBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, SqliteLogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("raft.db");
        let log = SqliteLogStore::open(&db).expect("open log");
        let sm = StateMachine::open(&db, TablePublisher::new()).expect("open sm");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_openraft_suite() {
    Suite::test_all(SqliteBuilder).await.expect("storage suite");
}
