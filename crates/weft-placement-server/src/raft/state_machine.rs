//! The raft state machine: the member table, persisted with its applied log id in SQLite so a
//! restart resumes where it stopped; snapshots are the table serialised as JSON.

use super::log_store::{blocking, io_err, open_db};
use super::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use futures::{Stream, StreamExt};
use openraft::EntryPayload;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};
use weft_placement::table::{CommandResult, MemberTable};

/// Everything the state machine persists.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmData {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    table: MemberTable,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Channels on which applied tables are published to the service layer.
#[derive(Clone)]
pub struct TablePublisher {
    /// Latest table (for new streams and status).
    pub latest: watch::Sender<Arc<MemberTable>>,
    /// Every changed version in order (for dissemination without skipping versions).
    pub changes: broadcast::Sender<Arc<MemberTable>>,
}

impl TablePublisher {
    pub fn new() -> Self {
        Self {
            latest: watch::channel(Arc::new(MemberTable::default())).0,
            changes: broadcast::channel(4096).0,
        }
    }

    fn publish(&self, table: &MemberTable) {
        let t = Arc::new(table.clone());
        self.latest.send_replace(t.clone());
        let _ = self.changes.send(t);
    }
}

impl Default for TablePublisher {
    fn default() -> Self {
        Self::new()
    }
}

/// State machine handle; the snapshot builder is a clone.
#[derive(Clone)]
pub struct StateMachine {
    conn: Arc<Mutex<Connection>>,
    data: Arc<Mutex<SmData>>,
    publisher: TablePublisher,
}

fn load_sm(c: &Connection) -> io::Result<SmData> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS sm_state (id INTEGER PRIMARY KEY, data TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS sm_snapshot (id INTEGER PRIMARY KEY, data TEXT NOT NULL);",
    )
    .map_err(io_err)?;
    let s: Option<String> = c
        .query_row("SELECT data FROM sm_state WHERE id = 1", [], |r| r.get(0))
        .optional()
        .map_err(io_err)?;
    match s {
        Some(s) => serde_json::from_str(&s).map_err(io_err),
        None => Ok(SmData::default()),
    }
}

fn save_sm(c: &Connection, d: &SmData) -> io::Result<()> {
    let s = serde_json::to_string(d).map_err(io_err)?;
    c.execute(
        "INSERT INTO sm_state (id, data) VALUES (1, ?1)
         ON CONFLICT(id) DO UPDATE SET data = excluded.data",
        params![s],
    )
    .map_err(io_err)?;
    Ok(())
}

fn save_snapshot(c: &Connection, s: &StoredSnapshot) -> io::Result<()> {
    let s = serde_json::to_string(s).map_err(io_err)?;
    c.execute(
        "INSERT INTO sm_snapshot (id, data) VALUES (1, ?1)
         ON CONFLICT(id) DO UPDATE SET data = excluded.data",
        params![s],
    )
    .map_err(io_err)?;
    Ok(())
}

impl StateMachine {
    /// Opens the state machine stored in `path` (may be the log's database file).
    pub fn open(path: &Path, publisher: TablePublisher) -> io::Result<Self> {
        let conn = open_db(path).map_err(io_err)?;
        let data = load_sm(&conn)?;
        publisher.publish(&data.table);
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            data: Arc::new(Mutex::new(data)),
            publisher,
        })
    }

    /// The table as applied on this node.
    pub fn table(&self) -> MemberTable {
        self.data
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .table
            .clone()
    }

    async fn persist(&self, d: SmData) -> io::Result<()> {
        blocking(&self.conn, move |c| save_sm(c, &d)).await
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let d = self.data.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let data = serde_json::to_vec(&d.table).map_err(io_err)?;
        let meta = SnapshotMeta {
            last_log_id: d.last_applied,
            last_membership: d.last_membership.clone(),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        blocking(&self.conn, move |c| save_snapshot(c, &stored)).await?;
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let d = self.data.lock().unwrap_or_else(|p| p.into_inner());
        Ok((d.last_applied, d.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        let mut responders = Vec::new();
        // Each changed version is published on its own so sidecars never skip one.
        let mut versions = Vec::new();
        let snapshot = {
            // Collect the batch first: the std mutex must not be held across `.await`.
            let mut batch = Vec::new();
            while let Some(item) = entries.next().await {
                batch.push(item?);
            }
            let mut d = self.data.lock().unwrap_or_else(|p| p.into_inner());
            for (entry, responder) in batch {
                let log_id = entry.log_id();
                let result = match &entry.payload {
                    EntryPayload::Blank => CommandResult {
                        version: d.table.version,
                        changed: false,
                    },
                    EntryPayload::Normal(cmd) => {
                        let r = d.table.apply(cmd);
                        if r.changed {
                            versions.push(d.table.clone());
                        }
                        r
                    }
                    EntryPayload::Membership(m) => {
                        d.last_membership = StoredMembership::new(Some(log_id), m.clone());
                        CommandResult {
                            version: d.table.version,
                            changed: false,
                        }
                    }
                };
                d.last_applied = Some(log_id);
                responders.push((responder, result));
            }
            d.clone()
        };
        self.persist(snapshot).await?;
        for table in &versions {
            self.publisher.publish(table);
        }
        for (responder, result) in responders {
            if let Some(r) = responder {
                r.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let table: MemberTable = serde_json::from_slice(&snapshot).map_err(io_err)?;
        let d = SmData {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            table: table.clone(),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot,
        };
        let persisted = d.clone();
        blocking(&self.conn, move |c| {
            let tx = c.transaction().map_err(io_err)?;
            save_sm(&tx, &persisted)?;
            save_snapshot(&tx, &stored)?;
            tx.commit().map_err(io_err)
        })
        .await?;
        *self.data.lock().unwrap_or_else(|p| p.into_inner()) = d;
        self.publisher.publish(&table);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let s: Option<StoredSnapshot> = blocking(&self.conn, |c| {
            let s: Option<String> = c
                .query_row("SELECT data FROM sm_snapshot WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(io_err)?;
            s.map(|s| serde_json::from_str(&s).map_err(io_err))
                .transpose()
        })
        .await?;
        Ok(s.map(|s| Snapshot {
            meta: s.meta,
            snapshot: s.data,
        }))
    }
}
