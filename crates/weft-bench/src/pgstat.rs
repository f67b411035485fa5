//! PostgreSQL's own transaction counters, read over a separate connection: `xact_commit` and
//! `xact_rollback` of `pg_stat_database` (every transaction, reads included) and the next transaction ID
//! (only write transactions are given one), so commits per step do not rely on the store's
//! counter and work with the sidecar in another process.
//!
//! Backends flush their statistics at most once a second while busy and ten seconds after going
//! idle (PostgreSQL 15), so [`PgStat::settled`] waits eleven seconds (unless told otherwise)
//! before reading `xact_commit`. The transaction ID needs no wait. The reads of this connection itself count
//! (one transaction per read) and are subtracted.

use std::time::Duration;

use anyhow::Context as _;
use tokio_postgres::{Client, NoTls};

/// How long an idle backend may hold unflushed statistics, plus a margin.
pub const FLUSH_WAIT: Duration = Duration::from_secs(11);

/// A counter reading.
#[derive(Debug, Clone, Copy)]
pub struct Counters {
    /// `pg_stat_database.xact_commit` of the current database.
    pub xact_commit: i64,
    /// `pg_stat_database.xact_rollback` of the current database.
    pub xact_rollback: i64,
    /// The next transaction ID (`txid_snapshot_xmax` of the current snapshot).
    pub next_xid: i64,
}

/// A connection for reading the counters.
pub struct PgStat {
    client: Client,
    task: tokio::task::JoinHandle<()>,
    flush_wait: Duration,
}

impl Drop for PgStat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgStat {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let (client, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .with_context(|| format!("connecting to {}", weft_store::redact_url(url)))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            client,
            task,
            flush_wait: FLUSH_WAIT,
        })
    }

    /// Waits `wait` instead of [`FLUSH_WAIT`] before a settled reading. Shorter is faster and
    /// undercounts: a backend's transactions of its last second before going idle are missing.
    pub fn with_flush_wait(mut self, wait: Duration) -> Self {
        self.flush_wait = wait;
        self
    }

    /// The counters now; `xact_commit` may lag by up to [`FLUSH_WAIT`].
    pub async fn read(&self) -> anyhow::Result<Counters> {
        let row = self
            .client
            .query_one(
                "SELECT d.xact_commit, d.xact_rollback, txid_snapshot_xmax(txid_current_snapshot())
                 FROM pg_stat_database d WHERE d.datname = current_database()",
                &[],
            )
            .await?;
        Ok(Counters {
            xact_commit: row.get(0),
            xact_rollback: row.get(1),
            next_xid: row.get(2),
        })
    }

    /// The counters after waiting for every idle backend to flush its statistics (the caller
    /// must have stopped producing work).
    pub async fn settled(&self) -> anyhow::Result<Counters> {
        tokio::time::sleep(self.flush_wait).await;
        self.read().await
    }
}

/// Transactions between two readings: (committed transactions, write transactions). One
/// committed transaction of the difference is the later reading itself.
pub fn delta(before: Counters, after: Counters) -> (u64, u64) {
    let commits = (after.xact_commit - before.xact_commit - 1).max(0) as u64;
    let writes = (after.next_xid - before.next_xid).max(0) as u64;
    (commits, writes)
}

/// Rolled-back transactions between two readings.
pub fn rollbacks(before: Counters, after: Counters) -> u64 {
    (after.xact_rollback - before.xact_rollback).max(0) as u64
}
