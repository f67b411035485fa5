//! SQLite-only behaviour: durability across reopen, schema versioning, the commit counter, cached
//! statements.

use super::*;
use crate::conformance::{create_req, empty_cp, raised};
use crate::{ReusePolicy, Store};

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/weft.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.create_instance(create_req("x", ReusePolicy::Error))
            .await
            .unwrap();
        let m = s.get_instance("x").await.unwrap().unwrap();
        let mut cp = empty_cp(&m);
        cp.append = vec![raised("e", 0)];
        s.checkpoint(cp).await.unwrap();
        assert_eq!(s.commit_count(), 2);
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(
        s.get_history("x").await.unwrap().unwrap(),
        vec![raised("e", 0)]
    );
    let mode: String = s
        .conn
        .lock()
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = s
        .conn
        .lock()
        .unwrap()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    drop(SqliteStore::open(&path).unwrap());
    {
        let c = Connection::open(&path).unwrap();
        c.execute(
            "UPDATE weft_schema_version SET version = ?1",
            [SCHEMA_VERSION + 1],
        )
        .unwrap();
    }
    match SqliteStore::open(&path) {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("newer"), "{msg}"),
        other => panic!("expected a schema error, got {other:?}"),
    }
}

#[tokio::test]
async fn in_memory_store_works_and_counts_commits() {
    let s = SqliteStore::open_in_memory().unwrap();
    assert_eq!(s.commit_count(), 0);
    s.create_instance(create_req("m", ReusePolicy::Error))
        .await
        .unwrap();
    // reads do not count as commits; a group commit counts once
    s.load("m").await.unwrap();
    let m = s.get_instance("m").await.unwrap().unwrap();
    let res = s.checkpoint_batch(vec![empty_cp(&m)]).await;
    assert!(res[0].is_ok());
    assert_eq!(s.commit_count(), 2);
}

#[tokio::test]
async fn corrupt_event_bytes_are_reported_not_panicked() {
    let s = SqliteStore::open_in_memory().unwrap();
    s.create_instance(create_req("bad", ReusePolicy::Error))
        .await
        .unwrap();
    s.conn
        .lock()
        .unwrap()
        .execute("UPDATE inbox SET event = x'ffffffff'", [])
        .unwrap();
    assert!(matches!(
        s.read_inbox("bad").await,
        Err(StoreError::Corrupt(_))
    ));
}

/// Reads run on their own WAL connections: a read completes while the writer connection is
/// held (as during a commit's fsync), and every read after a write returned sees that write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_have_their_own_connections_and_see_every_returned_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("weft.db")).unwrap();
    s.create_instance(crate::conformance::create_req(
        "r",
        crate::ReusePolicy::Error,
    ))
    .await
    .unwrap();
    for k in 0..50 {
        assert!(
            s.append_inbox("r", crate::conformance::raised("e", k))
                .await
                .unwrap()
        );
        let n = s.read_inbox("r").await.unwrap().len();
        assert_eq!(n, k as usize + 2, "read after write {k}");
    }
    // Another thread holds the writer connection until told to let go.
    let writer = s.conn.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _held = writer.lock().unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(std::time::Duration::from_secs(60));
    });
    locked_rx.recv().unwrap();
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), s.load("r")).await;
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let loaded = read
        .expect("a read waited for the writer")
        .unwrap()
        .unwrap();
    assert_eq!(loaded.inbox.len(), 51);
}

/// A cached read comparing columns with `=` keeps its plan across calls on both kinds of
/// connection. Fails without `keep_plans`'s QPSG: rusqlite clears a statement's bindings when it
/// goes back to the cache, and SQLite then prepares it again on its next step.
#[tokio::test]
async fn cached_statements_are_not_prepared_again() {
    use rusqlite::StatementStatus;
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("weft.db")).unwrap();
    s.create_instance(create_req("x", ReusePolicy::Error))
        .await
        .unwrap();
    let sql = "SELECT seq FROM history WHERE instance_id = ?1 AND generation = ?2 ORDER BY seq";
    let reader = s.readers.as_ref().unwrap().open().unwrap();
    let writer = s.conn.lock().unwrap();
    for c in [&reader, &*writer] {
        for _ in 0..3 {
            let mut st = c.prepare_cached(sql).unwrap();
            let n = st
                .query_map(rusqlite::params!["x", 0], |r| r.get::<_, i64>(0))
                .unwrap()
                .count();
            assert_eq!(n, 0);
        }
        let st = c.prepare_cached(sql).unwrap();
        assert_eq!(st.get_status(StatementStatus::RePrepare), 0);
    }
}
