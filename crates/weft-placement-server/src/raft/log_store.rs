//! Durable raft log and vote in SQLite (WAL, `synchronous=FULL`): a write is reported done only
//! after its transaction is on disk, as openraft requires of `save_vote` and `append`.

use super::{Entry, LogId, TypeConfig, Vote};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use rusqlite::{Connection, OptionalExtension, params};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Opens (creating if needed) a database with the durability settings the raft log relies on.
pub(crate) fn open_db(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS raft_log (idx INTEGER PRIMARY KEY, entry TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS raft_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    )?;
    Ok(conn)
}

pub(crate) fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}

/// Runs blocking SQLite work off the async threads; fsync can take milliseconds.
pub(crate) async fn blocking<R: Send + 'static>(
    conn: &Arc<Mutex<Connection>>,
    f: impl FnOnce(&mut Connection) -> io::Result<R> + Send + 'static,
) -> io::Result<R> {
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    })
    .await
    .map_err(io_err)?
}

fn get_meta<T: serde::de::DeserializeOwned>(c: &Connection, key: &str) -> io::Result<Option<T>> {
    let v: Option<String> = c
        .query_row(
            "SELECT value FROM raft_meta WHERE key = ?1",
            params![key],
            |r| r.get(0),
        )
        .optional()
        .map_err(io_err)?;
    v.map(|s| serde_json::from_str(&s).map_err(io_err))
        .transpose()
}

fn set_meta<T: serde::Serialize>(c: &Connection, key: &str, v: &T) -> io::Result<()> {
    let s = serde_json::to_string(v).map_err(io_err)?;
    c.execute(
        "INSERT INTO raft_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, s],
    )
    .map_err(io_err)?;
    Ok(())
}

/// SQLite indices are i64; raft indices never get near `i64::MAX`, so clamp open ends there.
fn to_sql_range(range: &impl RangeBounds<u64>) -> (i64, i64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => i64::MAX as u64,
    };
    (
        start.min(i64::MAX as u64) as i64,
        end.min(i64::MAX as u64) as i64,
    )
}

/// The log store; clones share one connection (a reader is just another handle).
#[derive(Clone)]
pub struct SqliteLogStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteLogStore {
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            conn: Arc::new(Mutex::new(open_db(path).map_err(io_err)?)),
        })
    }
}

impl RaftLogReader<TypeConfig> for SqliteLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = to_sql_range(&range);
        blocking(&self.conn, move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT entry FROM raft_log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
                )
                .map_err(io_err)?;
            let rows = stmt
                .query_map(params![start, end], |r| r.get::<_, String>(0))
                .map_err(io_err)?;
            rows.map(|r| {
                let s = r.map_err(io_err)?;
                serde_json::from_str(&s).map_err(io_err)
            })
            .collect()
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        blocking(&self.conn, |c| get_meta(c, "vote")).await
    }
}

impl RaftLogStorage<TypeConfig> for SqliteLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        blocking(&self.conn, |c| {
            let purged: Option<LogId> = get_meta(c, "purged")?;
            let last: Option<String> = c
                .query_row(
                    "SELECT entry FROM raft_log ORDER BY idx DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(io_err)?;
            let last = match last {
                Some(s) => Some(serde_json::from_str::<Entry>(&s).map_err(io_err)?.log_id),
                None => purged,
            };
            Ok(LogState {
                last_purged_log_id: purged,
                last_log_id: last,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        blocking(&self.conn, move |c| set_meta(c, "vote", &vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        blocking(&self.conn, move |c| set_meta(c, "committed", &committed)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        blocking(&self.conn, |c| {
            Ok(get_meta::<Option<LogId>>(c, "committed")?.flatten())
        })
        .await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let rows: Vec<(i64, String)> = entries
            .into_iter()
            .map(|e| {
                Ok((
                    e.log_id.index as i64,
                    serde_json::to_string(&e).map_err(io_err)?,
                ))
            })
            .collect::<io::Result<_>>()?;
        let res = blocking(&self.conn, move |c| {
            let tx = c.transaction().map_err(io_err)?;
            {
                let mut stmt = tx
                    .prepare_cached("INSERT OR REPLACE INTO raft_log (idx, entry) VALUES (?1, ?2)")
                    .map_err(io_err)?;
                for (idx, e) in &rows {
                    stmt.execute(params![idx, e]).map_err(io_err)?;
                }
            }
            // synchronous=FULL: commit returns after the WAL is fsynced.
            tx.commit().map_err(io_err)
        })
        .await;
        match res {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0) as i64;
        blocking(&self.conn, move |c| {
            c.execute("DELETE FROM raft_log WHERE idx >= ?1", params![from])
                .map_err(io_err)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        blocking(&self.conn, move |c| {
            let tx = c.transaction().map_err(io_err)?;
            // Record the purge point first in the same transaction, so a crash never leaves a
            // gap without its marker.
            set_meta(&tx, "purged", &log_id)?;
            tx.execute(
                "DELETE FROM raft_log WHERE idx <= ?1",
                params![log_id.index as i64],
            )
            .map_err(io_err)?;
            tx.commit().map_err(io_err)
        })
        .await
    }
}
