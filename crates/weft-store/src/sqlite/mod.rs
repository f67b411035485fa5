//! The embedded SQLite backend: one writer connection per store handle behind a mutex plus a few
//! read-only WAL connections (reads never wait behind the writer's fsync), every operation a
//! transaction run on the blocking pool (SQLite serialises writers anyway).

mod checkpoint;
mod leases;
mod ops;
mod schema;
mod slots;

pub use schema::SCHEMA_VERSION;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use weft_core::{InstanceMeta, Micros};
use weft_proto::durabletask::HistoryEvent;

use crate::codec::now_micros;
use crate::plan::Delivery;
use crate::{
    ActivityCompletion, ActivityTask, BucketLease, Checkpoint, CreateInstance, CreateOutcome,
    Fence, InboxEntry, InstancePage, ListFilter, LoadedInstance, Reminder, Result, Scope,
    SlotLease, Store, StoreError,
};

/// How long a writer waits for another process's write lock before giving up with `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle read connections kept per handle (more are opened while more reads run at once).
const IDLE_READERS: usize = 4;

/// Runs one statement through the connection's statement cache, so `BEGIN`/`COMMIT`/savepoints
/// are parsed once per connection rather than on every transaction.
fn exec_cached(c: &Connection, sql: &str) -> Result<()> {
    c.prepare_cached(sql)
        .and_then(|mut st| st.execute([]).map(|_| ()))
        .map_err(map_err)
}

/// Runs `f` between `begin` and `COMMIT`; rolls back if `f` or the commit fails.
fn in_tx<T>(c: &Connection, begin: &str, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    if !c.is_autocommit() {
        // Left open by a failure that could not roll back (a panic in `f`): start clean.
        let _ = c.execute_batch("ROLLBACK");
    }
    exec_cached(c, begin)?;
    let out = f(c).and_then(|v| exec_cached(c, "COMMIT").map(|()| v));
    if out.is_err() && !c.is_autocommit() {
        let _ = exec_cached(c, "ROLLBACK");
    }
    out
}

/// Runs `f` inside a savepoint of the open transaction: if it fails, only its own writes are
/// rolled back. The outer error is a failure of the savepoint itself (the transaction is lost).
fn in_savepoint<T>(c: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<Result<T>> {
    exec_cached(c, "SAVEPOINT weft_member")?;
    let out = f(c);
    if out.is_err() {
        exec_cached(c, "ROLLBACK TO weft_member")?;
    }
    exec_cached(c, "RELEASE weft_member")?;
    Ok(out)
}

/// Caches prepared statements and keeps their plans. Without the query-planner stability
/// guarantee, SQLite (3.54, bundled) marks a parameter compared with `=` as "prepare again when rebound",
/// and rusqlite clears the bindings of every statement returned to its cache, so each cached read
/// was parsed and planned again on every call (15 % of the sidecar's CPU while creating).
fn keep_plans(c: &Connection) -> Result<()> {
    c.set_prepared_statement_cache_capacity(64);
    c.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(map_err)?;
    Ok(())
}

/// Read-only connections to a database file, reused.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn open(&self) -> Result<Connection> {
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(map_err)?;
        c.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
        keep_plans(&c)?;
        Ok(c)
    }

    /// Runs `f` in a read transaction on an idle (or new) read connection. In WAL mode a read
    /// transaction sees every commit that returned before it began, so reads after a write see it.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let c = match idle {
            Some(c) => c,
            None => self.open()?,
        };
        let out = in_tx(&c, "BEGIN DEFERRED", f);
        if c.is_autocommit()
            && let Ok(mut v) = self.idle.lock()
            && v.len() < IDLE_READERS
        {
            v.push(c);
        }
        out
    }
}

/// Maps rusqlite failures: type/conversion problems mean bad stored data, everything else
/// (busy, I/O, full disk) is an availability problem the caller may retry.
pub(crate) fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match e {
        E::FromSqlConversionFailure(..)
        | E::InvalidColumnType(..)
        | E::IntegralValueOutOfRange(..) => StoreError::Corrupt(format!("sqlite: {e}")),
        E::SqliteFailure(err, _) if err.code == rusqlite::ErrorCode::DatabaseCorrupt => {
            StoreError::Corrupt(format!("sqlite: {e}"))
        }
        E::SqliteFailure(err, _) if err.code == rusqlite::ErrorCode::NotADatabase => {
            StoreError::Corrupt(format!("sqlite: {e}"))
        }
        _ => StoreError::Unavailable(format!("sqlite: {e}")),
    }
}

/// A [`Store`] on one SQLite database file (or in memory, for tests). Cloning shares the
/// connection; opening the same file twice gives independent handles (like two processes).
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// `None` in memory: reads then use `conn`.
    readers: Option<Arc<Readers>>,
    commits: Arc<AtomicU64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("commits", &self.commit_count())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating the directory and file if needed) and migrates the database at `path`.
    /// WAL with `synchronous=FULL`: a commit that returned survives a SIGKILL or power loss.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(map_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(map_err)?;
        let readers = Readers {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        };
        Self::setup(conn, Some(readers))
    }

    /// A private in-memory database (lost on drop), for tests. Reads share the one connection
    /// (another connection would see another database).
    pub fn open_in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory().map_err(map_err)?, None)
    }

    fn setup(mut conn: Connection, readers: Option<Readers>) -> Result<Self> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(map_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(map_err)?;
        keep_plans(&conn)?;
        schema::migrate(&mut conn)?;
        let n = ops::backfill_buckets(&conn)?;
        if n > 0 {
            tracing::info!(
                instances = n,
                "filled in buckets of rows from before migration 2"
            );
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            readers: readers.map(Arc::new),
            commits: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Write transactions committed through this handle (and its clones) so far: the figure
    /// behind "commits per activity step" in docs/storage.md.
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `f` on the blocking pool with the connection locked.
    async fn with_conn<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Unavailable("sqlite connection poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite worker: {e}")))?
    }

    /// Runs `f` in one IMMEDIATE (write-locking) transaction, committed only if `f` succeeds.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let commits = self.commits.clone();
        self.with_conn(move |c| {
            let out = in_tx(c, "BEGIN IMMEDIATE", f)?;
            commits.fetch_add(1, Ordering::Relaxed);
            Ok(out)
        })
        .await
    }

    /// Runs `f` in a read transaction, so multi-statement reads see one snapshot; on a read
    /// connection of its own when the database is a file.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        match &self.readers {
            Some(readers) => {
                let readers = readers.clone();
                tokio::task::spawn_blocking(move || readers.read(f))
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("sqlite worker: {e}")))?
            }
            None => self.with_conn(move |c| in_tx(c, "BEGIN DEFERRED", f)).await,
        }
    }

    /// Runs every item through `f` in one IMMEDIATE transaction, each inside a savepoint so a
    /// failing item rolls back alone; every item gets the transaction's error if it fails.
    async fn write_each<I, T, F>(&self, items: Vec<I>, f: F) -> Vec<Result<T>>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: Fn(&Connection, &I) -> Result<T> + Send + 'static,
    {
        let n = items.len();
        if n == 0 {
            return Vec::new();
        }
        let res = self
            .write(move |c| {
                let mut results = Vec::with_capacity(items.len());
                for item in &items {
                    results.push(in_savepoint(c, |c| f(c, item))?);
                }
                Ok(results)
            })
            .await;
        match res {
            Ok(results) => results,
            // The whole transaction failed: nothing of any item was committed.
            Err(e) => (0..n).map(|_| Err(e.duplicate())).collect(),
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_instance(&self, req: CreateInstance) -> Result<CreateOutcome> {
        self.write(move |c| ops::create(c, &req, now_micros()))
            .await
    }

    async fn create_instance_batch(&self, reqs: Vec<CreateInstance>) -> Vec<Result<CreateOutcome>> {
        let now = now_micros();
        self.write_each(reqs, move |c, req| ops::create(c, req, now))
            .await
    }

    async fn get_instance(&self, instance_id: &str) -> Result<Option<InstanceMeta>> {
        let id = instance_id.to_string();
        self.read(move |c| ops::get_meta(c, &id)).await
    }

    async fn load(&self, instance_id: &str) -> Result<Option<LoadedInstance>> {
        let id = instance_id.to_string();
        self.read(move |c| {
            let Some(meta) = ops::get_meta(c, &id)? else {
                return Ok(None);
            };
            let history = ops::history(c, &id, meta.generation)?;
            let inbox = ops::inbox(c, &id)?;
            Ok(Some(LoadedInstance {
                meta,
                history,
                inbox,
            }))
        })
        .await
    }

    async fn get_history(&self, instance_id: &str) -> Result<Option<Vec<HistoryEvent>>> {
        let id = instance_id.to_string();
        self.read(move |c| match ops::get_meta(c, &id)? {
            Some(meta) => ops::history(c, &id, meta.generation).map(Some),
            None => Ok(None),
        })
        .await
    }

    async fn read_inbox(&self, instance_id: &str) -> Result<Vec<InboxEntry>> {
        let id = instance_id.to_string();
        self.read(move |c| ops::inbox(c, &id)).await
    }

    async fn append_inbox(&self, instance_id: &str, event: HistoryEvent) -> Result<bool> {
        let id = instance_id.to_string();
        self.write(move |c| ops::deliver(c, &Delivery::new(&id, None, &event)))
            .await
    }

    async fn checkpoint(&self, cp: Checkpoint) -> Result<()> {
        self.write(move |c| {
            leases::check(c, cp.fence.as_ref())?;
            checkpoint::checkpoint(c, &cp, now_micros())
        })
        .await
    }

    async fn checkpoint_batch(&self, cps: Vec<Checkpoint>) -> Vec<Result<()>> {
        let now = now_micros();
        self.write_each(cps, move |c, cp| {
            leases::check(c, cp.fence.as_ref())?;
            checkpoint::checkpoint(c, cp, now)
        })
        .await
    }

    async fn claim_activities(&self, scope: &Scope) -> Result<Vec<ActivityTask>> {
        let scope = scope.clone();
        self.write(move |c| ops::claim_activities(c, &leases::current(c, &scope)?))
            .await
    }

    async fn claim_new_remote_activities(&self, scope: &Scope) -> Result<Vec<ActivityTask>> {
        let scope = scope.clone();
        self.write(move |c| ops::claim_new_remote(c, &leases::current(c, &scope)?))
            .await
    }

    async fn complete_activity(
        &self,
        instance_id: &str,
        task_id: i32,
        generation: i64,
        event: HistoryEvent,
    ) -> Result<bool> {
        let id = instance_id.to_string();
        self.write(move |c| ops::complete_activity(c, &id, task_id, generation, None, &event))
            .await
    }

    async fn complete_activity_batch(&self, items: Vec<ActivityCompletion>) -> Vec<Result<bool>> {
        let n = items.len();
        if n == 0 {
            return Vec::new();
        }
        // A refused (reclaimed) result answers only itself; any other error fails the batch.
        let res = self
            .write(move |c| {
                let mut out = Vec::with_capacity(items.len());
                for i in &items {
                    out.push(
                        match ops::complete_activity(
                            c,
                            &i.instance_id,
                            i.task_id,
                            i.generation,
                            i.claim,
                            &i.event,
                        ) {
                            Err(e @ StoreError::Reclaimed { .. }) => Err(e),
                            Err(e) => return Err(e),
                            Ok(done) => Ok(done),
                        },
                    );
                }
                Ok(out)
            })
            .await;
        match res {
            Ok(done) => done,
            Err(e) => (0..n).map(|_| Err(e.duplicate())).collect(),
        }
    }

    async fn instances_with_inbox(&self, scope: &Scope) -> Result<Vec<String>> {
        let scope = scope.clone();
        self.read(move |c| ops::instances_with_inbox(c, &scope))
            .await
    }

    async fn claim_due_reminders(
        &self,
        scope: &Scope,
        now: Micros,
        lease_until: Micros,
        limit: usize,
    ) -> Result<Vec<Reminder>> {
        let scope = scope.clone();
        self.write(move |c| {
            ops::claim_reminders(c, &leases::current(c, &scope)?, now, lease_until, limit)
        })
        .await
    }

    async fn fire_reminder(&self, reminder_id: i64, fence: Option<&Fence>) -> Result<bool> {
        let fence = fence.cloned();
        self.write(move |c| {
            leases::check(c, fence.as_ref())?;
            ops::fire_reminder(c, reminder_id)
        })
        .await
    }

    async fn next_reminder_due(&self, scope: &Scope) -> Result<Option<Micros>> {
        let scope = scope.clone();
        self.read(move |c| ops::next_reminder_due(c, &scope)).await
    }

    async fn stalled_instances(&self, scope: &Scope, limit: usize) -> Result<Vec<String>> {
        let scope = scope.clone();
        self.read(move |c| ops::stalled_instances(c, &scope, limit))
            .await
    }

    async fn cross_app_backlog(&self) -> Result<Vec<(String, i64)>> {
        self.read(ops::cross_app_backlog).await
    }

    async fn list_instances(&self, filter: ListFilter) -> Result<InstancePage> {
        self.read(move |c| ops::list(c, &filter)).await
    }

    async fn purge(&self, instance_id: &str, force: bool, fence: Option<&Fence>) -> Result<bool> {
        let (id, fence) = (instance_id.to_string(), fence.cloned());
        self.write(move |c| {
            leases::check(c, fence.as_ref())?;
            ops::purge(c, &id, force)
        })
        .await
    }

    async fn acquire_slots(
        &self,
        bucket: &str,
        limit: u32,
        holder: &str,
        want: u32,
        now: Micros,
        until: Micros,
    ) -> Result<Vec<u32>> {
        let (bucket, holder) = (bucket.to_string(), holder.to_string());
        self.write(move |c| {
            if leases::slot_holder_live(c, &holder, now_micros())? {
                slots::acquire_slots(c, &bucket, limit, &holder, want, now, until)
            } else {
                Ok(Vec::new())
            }
        })
        .await
    }

    async fn renew_slots(
        &self,
        holder: &str,
        now: Micros,
        until: Micros,
    ) -> Result<Vec<SlotLease>> {
        let holder = holder.to_string();
        self.write(move |c| {
            if leases::slot_holder_live(c, &holder, now_micros())? {
                slots::renew_slots(c, &holder, now, until)
            } else {
                Ok(Vec::new())
            }
        })
        .await
    }

    async fn release_slots(&self, bucket: &str, holder: &str, slots: &[u32]) -> Result<()> {
        let (bucket, holder, slots) = (bucket.to_string(), holder.to_string(), slots.to_vec());
        self.write(move |c| slots::release_slots(c, &bucket, &holder, &slots))
            .await
    }

    async fn start_holder(&self, holder: &str, ttl: Micros) -> Result<()> {
        let holder = holder.to_string();
        self.write(move |c| leases::start_holder(c, &holder, now_micros(), ttl))
            .await
    }

    async fn renew_holder(&self, holder: &str, ttl: Micros) -> Result<bool> {
        let holder = holder.to_string();
        self.write(move |c| leases::renew_holder(c, &holder, now_micros(), ttl))
            .await
    }

    async fn end_holder(&self, holder: &str) -> Result<()> {
        let holder = holder.to_string();
        self.write(move |c| leases::end_holder(c, &holder)).await
    }

    async fn acquire_buckets(
        &self,
        app_id: &str,
        holder: &str,
        buckets: &[i32],
    ) -> Result<Vec<BucketLease>> {
        let (app, holder, buckets) = (app_id.to_string(), holder.to_string(), buckets.to_vec());
        self.write(move |c| leases::acquire(c, &app, &holder, &buckets, now_micros()))
            .await
    }

    async fn release_buckets(&self, app_id: &str, holder: &str, buckets: &[i32]) -> Result<()> {
        let (app, holder, buckets) = (app_id.to_string(), holder.to_string(), buckets.to_vec());
        self.write(move |c| leases::release(c, &app, &holder, &buckets))
            .await
    }
}

#[cfg(test)]
mod tests;
