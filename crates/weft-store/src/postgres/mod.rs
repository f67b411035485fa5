//! The production PostgreSQL backend: a deadpool of tokio-postgres connections with cached
//! prepared statements, one transaction per operation (fenced checkpoints, set-based group commit
//! in `batch`), `SKIP LOCKED` reminder claims, and LISTEN/NOTIFY wake-ups on a dedicated connection.

mod batch;
mod checkpoint;
mod leases;
mod listen;
mod onetrip;
mod ops;
mod scans;
mod schema;
pub mod tls;

pub use schema::SCHEMA_VERSION;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::broadcast;
use weft_core::{InstanceMeta, Micros};
use weft_proto::durabletask::HistoryEvent;

use crate::codec::now_micros;
use crate::plan::Delivery;
use crate::{
    ActivityCompletion, ActivityTask, BucketLease, Checkpoint, CreateInstance, CreateOutcome,
    Fence, InboxEntry, InstancePage, ListFilter, LoadedInstance, Reminder, Result, Scope,
    SlotLease, Store, StoreError, Wakeup,
};

const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Failures inside the backend, kept raw until the boundary so retry decisions can look at the
/// SQLSTATE.
#[derive(Debug)]
pub(crate) enum PgErr {
    Db(tokio_postgres::Error),
    Pool(String),
    Store(StoreError),
}

pub(crate) type R<T> = std::result::Result<T, PgErr>;

impl From<tokio_postgres::Error> for PgErr {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

impl From<StoreError> for PgErr {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl PgErr {
    /// Whether running the whole (rolled back) transaction again may succeed: no connection,
    /// connection lost, server restarting, deadlock or serialization failure.
    fn retryable(&self) -> bool {
        match self {
            Self::Pool(_) => true,
            Self::Store(_) => false,
            // A wrong CA or a server without TLS does not heal by waiting.
            Self::Db(e) if tls::is_tls_failure(e) => false,
            Self::Db(e) => match e.code() {
                None => true, // I/O or closed connection: no statement outcome to respect
                Some(c) => {
                    let c = c.code();
                    c.starts_with("08") || c.starts_with("40") || c.starts_with("57P")
                }
            },
        }
    }

    /// A failure of COMMIT itself: with an answer from the server the transaction was rolled
    /// back; without one (connection lost) it may have committed.
    fn at_commit(self) -> StoreError {
        match &self {
            Self::Db(e) if e.as_db_error().is_none() => {
                StoreError::OutcomeUnknown(format!("postgres: {e}"))
            }
            _ => self.into_store(),
        }
    }

    fn into_store(self) -> StoreError {
        match self {
            Self::Store(e) => e,
            Self::Pool(e) => StoreError::Unavailable(format!("postgres pool: {e}")),
            Self::Db(e) => match e.as_db_error() {
                Some(db) => {
                    let msg = format!("postgres {}: {}", db.code().code(), db.message());
                    let class = &db.code().code()[..2];
                    // data exceptions / integrity / schema problems will not heal by retrying
                    if matches!(class, "22" | "23" | "42") {
                        StoreError::Corrupt(msg)
                    } else {
                        StoreError::Unavailable(msg)
                    }
                }
                None if tls::is_tls_failure(&e) => StoreError::Unavailable(format!(
                    "postgres: {} (TLS: check sslmode, and that the server's certificate chains to sslrootcert)",
                    tls::describe(&e)
                )),
                None => StoreError::Unavailable(format!("postgres: {e}")),
            },
        }
    }
}

/// Hides the password of a `postgres://user:pass@host/db` URL or a `password=...` key-value
/// connection string, for logs and errors.
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            return format!(
                "{}{}:***{}",
                &url[..scheme_end + 3],
                &rest[..colon],
                &rest[at..]
            );
        }
        return url.to_string();
    }
    // key=value form: blank out the value after `password=` (quoted or not)
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.find("password=") {
        out.push_str(&rest[..i + "password=".len()]);
        let v = &rest[i + "password=".len()..];
        let end = if let Some(q) = v.strip_prefix('\'') {
            q.find('\'').map(|j| j + 2).unwrap_or(v.len())
        } else {
            v.find(' ').unwrap_or(v.len())
        };
        out.push_str("***");
        rest = &v[end..];
    }
    out.push_str(rest);
    out
}

/// A fresh ID for one `PgStore` handle (hex, so it never contains the payload separator `/`):
/// random per process (the std hasher's OS-seeded keys), plus a counter for handles within it.
fn writer_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static HANDLES: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!(
        "{:016x}{:x}",
        h.finish(),
        HANDLES.fetch_add(1, Ordering::Relaxed)
    )
}

/// Connection settings for [`PgStore::connect_with`].
#[derive(Clone)]
pub struct PgOptions {
    pub url: String,
    /// Pooled connections (the LISTEN connection is extra).
    pub pool_size: usize,
    /// Run the LISTEN connection that feeds [`Store::subscribe`].
    pub listen: bool,
    /// How long one operation keeps retrying while the database is unreachable or restarting
    /// before it fails with `Unavailable`.
    pub retry_for: Duration,
    pub connect_timeout: Duration,
    /// Try checkpoint batches in one round trip first (`onetrip`). On unless the environment
    /// says `WEFT_PG_ONE_TRIP=off`: an escape hatch, and the A/B switch of the benchmarks.
    pub one_trip: bool,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("listen", &self.listen)
            .field("retry_for", &self.retry_for)
            .field("one_trip", &self.one_trip)
            .finish()
    }
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            listen: true,
            retry_for: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            one_trip: std::env::var("WEFT_PG_ONE_TRIP").map_or(true, |v| v != "off"),
        }
    }
}

struct Inner {
    pool: Pool,
    redacted: String,
    retry_for: Duration,
    commits: AtomicU64,
    /// Whether checkpoint batches try the one trip ([`PgOptions::one_trip`]).
    try_one_trip: bool,
    /// Checkpoint batches committed in one round trip, and those rerun on the reporting path.
    one_trip: AtomicU64,
    reruns: AtomicU64,
    wake: broadcast::Sender<Wakeup>,
    listening: Arc<AtomicBool>,
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(h) = &self.listener {
            h.abort();
        }
    }
}

/// A [`Store`] on a PostgreSQL database shared by every sidecar of a cluster. Clones share the
/// pool; separate `connect` calls are independent handles (as separate sidecars are).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.inner.redacted)
            .field("commits", &self.commit_count())
            .finish_non_exhaustive()
    }
}

/// Runs `$body` (an `R<T>` expression using the transaction `$tx`) in one transaction and
/// commits it. Failures before COMMIT roll back and, if retryable, run everything again with
/// backoff; a failure *at* COMMIT is ambiguous (it may have committed) and is returned.
macro_rules! write_tx {
    ($store:expr, $tx:ident => $body:expr) => {{
        let store: &PgStore = $store;
        let deadline = tokio::time::Instant::now() + store.inner.retry_for;
        let mut backoff = RETRY_MIN;
        loop {
            let attempt: std::result::Result<_, (PgErr, bool)> = async {
                let mut client = store.client().await.map_err(|e| (e, false))?;
                #[allow(unused_mut)]
                let mut $tx = client
                    .transaction()
                    .await
                    .map_err(|e| (PgErr::from(e), false))?;
                let out = async { $body }.await.map_err(|e: PgErr| (e, false))?;
                $tx.commit().await.map_err(|e| (PgErr::from(e), true))?;
                Ok(out)
            }
            .await;
            match attempt {
                Ok(v) => {
                    store.inner.commits.fetch_add(1, Ordering::Relaxed);
                    break Ok(v);
                }
                Err((e, at_commit)) => {
                    if !at_commit
                        && e.retryable()
                        && tokio::time::Instant::now() + backoff < deadline
                    {
                        tracing::debug!(error = ?e, "retrying PostgreSQL transaction");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(RETRY_MAX);
                        continue;
                    }
                    break Err(if at_commit { e.at_commit() } else { e.into_store() });
                }
            }
        }
    }};
}

/// Like `write_tx!` for reads: `$c` is a pooled client; no commit is counted.
macro_rules! read {
    ($store:expr, $c:ident => $body:expr) => {{
        let store: &PgStore = $store;
        let deadline = tokio::time::Instant::now() + store.inner.retry_for;
        let mut backoff = RETRY_MIN;
        loop {
            let attempt: R<_> = async {
                #[allow(unused_mut)]
                let mut $c = store.client().await?;
                $body
            }
            .await;
            match attempt {
                Ok(v) => break Ok(v),
                Err(e) if e.retryable() && tokio::time::Instant::now() + backoff < deadline => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
                Err(e) => break Err(e.into_store()),
            }
        }
    }};
}

/// Applies migrations on a connection of their own: closing it releases the advisory lock even
/// if we fail half-way.
async fn migrate_once(cfg: &tokio_postgres::Config, tls: &tls::Connector) -> R<()> {
    let (mut client, conn) = cfg.connect(tls.clone()).await?;
    let driver = tokio::spawn(conn);
    let mut migrated = schema::migrate(&mut client).await;
    if migrated.is_ok() {
        migrated = ops::backfill_buckets(&client).await.map(|n| {
            if n > 0 {
                tracing::info!(
                    instances = n,
                    "filled in buckets of rows from before migration 2"
                );
            }
        });
    }
    drop(client);
    let _ = driver.await;
    migrated
}

impl PgStore {
    /// Connects with default options, applying migrations first.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(PgOptions::new(url)).await
    }

    pub async fn connect_with(opts: PgOptions) -> Result<Self> {
        let redacted = redact_url(&opts.url);
        let prepared = tls::prepare(&opts.url)?;
        let connector = prepared.connector()?;
        let mut cfg: tokio_postgres::Config = prepared.url.parse().map_err(|e| {
            StoreError::Unavailable(format!("invalid database URL {redacted}: {e}"))
        })?;
        cfg.ssl_mode(prepared.ssl_mode());
        cfg.connect_timeout(opts.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if cfg.get_application_name().is_none() {
            cfg.application_name("weft");
        }
        // Every connection of this handle names it as the writer in its NOTIFY payloads.
        let writer = writer_id();
        // JIT off unless the URL's options turn it on: compiling a large batch's plan cost
        // ≈ 0.3 s, more than running it (the store's statements are short and prepared).
        let options = match cfg.get_options() {
            Some(o) if !o.trim().is_empty() => format!("-c jit=off {o} -c weft.writer={writer}"),
            _ => format!("-c jit=off -c weft.writer={writer}"),
        };
        cfg.options(&options);
        // Starting before the database is up is normal (containers): keep trying for `retry_for`.
        let deadline = tokio::time::Instant::now() + opts.retry_for;
        let mut backoff = RETRY_MIN;
        loop {
            match migrate_once(&cfg, &connector).await {
                Ok(()) => break,
                Err(e) if e.retryable() && tokio::time::Instant::now() + backoff < deadline => {
                    tracing::warn!(url = %redacted, error = ?e, "database not reachable yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
                Err(e) => {
                    return Err(match e.into_store() {
                        StoreError::Unavailable(m) => {
                            StoreError::Unavailable(format!("connecting to {redacted}: {m}"))
                        }
                        other => other,
                    });
                }
            }
        }

        let mgr = Manager::from_config(
            cfg.clone(),
            connector.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(opts.connect_timeout))
            .create_timeout(Some(opts.connect_timeout))
            .recycle_timeout(Some(opts.connect_timeout))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("building pool: {e}")))?;
        let (wake, _) = broadcast::channel(1024);
        let listening = Arc::new(AtomicBool::new(false));
        let listener = opts
            .listen
            .then(|| listen::spawn(cfg, connector, writer, wake.clone(), listening.clone()));
        tracing::info!(url = %redacted, "connected to PostgreSQL store");
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                redacted,
                retry_for: opts.retry_for,
                commits: AtomicU64::new(0),
                try_one_trip: opts.one_trip,
                one_trip: AtomicU64::new(0),
                reruns: AtomicU64::new(0),
                wake,
                listening,
                listener,
            }),
        })
    }

    /// The database URL with its password hidden.
    pub fn redacted_url(&self) -> &str {
        &self.inner.redacted
    }

    /// Write transactions committed through this handle so far (see docs/storage.md).
    pub fn commit_count(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// Checkpoint batches committed in one round trip, and those that went down the
    /// reporting path after trying it (a fence or version that no longer held, a failure).
    pub fn one_trip_counts(&self) -> (u64, u64) {
        (
            self.inner.one_trip.load(Ordering::Relaxed),
            self.inner.reruns.load(Ordering::Relaxed),
        )
    }

    /// Whether the LISTEN connection is currently up (notifications flowing).
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Relaxed)
    }

    /// The per-member group commit: one transaction, a savepoint per member, so a member whose
    /// statements fail rolls back alone. The fallback when the set-based batch hit bad data.
    async fn checkpoint_each(&self, cps: Vec<Checkpoint>, now: Micros) -> Vec<Result<()>> {
        // Lock rows in instance-ID order so two concurrent batches cannot deadlock each other.
        let mut order: Vec<usize> = (0..cps.len()).collect();
        order.sort_by(|&a, &b| cps[a].instance_id.cmp(&cps[b].instance_id));
        let res: Result<Vec<Result<()>>> = write_tx!(self, tx => {
            ops::lock_children(&tx, &cps).await?;
            let mut results: Vec<Result<()>> = (0..cps.len()).map(|_| Ok(())).collect();
            for &i in &order {
                let sp = tx.savepoint("weft_cp").await?;
                match checkpoint::checkpoint(&sp, &cps[i], now).await {
                    Ok(()) => sp.commit().await?,
                    Err(e) if e.retryable() => return Err(e),
                    Err(e) => {
                        sp.rollback().await?;
                        results[i] = Err(e.into_store());
                    }
                }
            }
            Ok(results)
        });
        match res {
            Ok(results) => results,
            Err(e) => (0..cps.len()).map(|_| Err(e.duplicate())).collect(),
        }
    }

    async fn client(&self) -> R<deadpool_postgres::Object> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| PgErr::Pool(e.to_string()))
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_instance(&self, req: CreateInstance) -> Result<CreateOutcome> {
        let now = now_micros();
        write_tx!(self, tx => ops::create(&tx, &req, now).await)
    }

    async fn get_instance(&self, instance_id: &str) -> Result<Option<InstanceMeta>> {
        read!(self, c => ops::get_meta(&c, instance_id, false).await)
    }

    async fn load(&self, instance_id: &str) -> Result<Option<LoadedInstance>> {
        read!(self, c => {
            // One snapshot for row, history and inbox.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            // Pipelined: the three reads travel together.
            let (meta, history, inbox) = futures::try_join!(
                ops::get_meta(&tx, instance_id, false),
                ops::history(&tx, instance_id),
                ops::inbox(&tx, instance_id)
            )?;
            tx.commit().await?;
            Ok(meta.map(|meta| LoadedInstance { meta, history, inbox }))
        })
    }

    async fn get_history(&self, instance_id: &str) -> Result<Option<Vec<HistoryEvent>>> {
        read!(self, c => {
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let (meta, history) = futures::try_join!(
                ops::get_meta(&tx, instance_id, false),
                ops::history(&tx, instance_id)
            )?;
            tx.commit().await?;
            Ok(meta.map(|_| history))
        })
    }

    async fn read_inbox(&self, instance_id: &str) -> Result<Vec<InboxEntry>> {
        read!(self, c => ops::inbox(&c, instance_id).await)
    }

    async fn read_inbox_batch(&self, ids: Vec<String>) -> Result<Vec<Vec<InboxEntry>>> {
        read!(self, c => ops::inboxes(&c, &ids).await)
    }

    async fn append_inbox(&self, instance_id: &str, event: HistoryEvent) -> Result<bool> {
        write_tx!(self, tx => ops::deliver(&tx, &Delivery::new(instance_id, None, &event)).await)
    }

    async fn checkpoint(&self, cp: Checkpoint) -> Result<()> {
        let now = now_micros();
        write_tx!(self, tx => checkpoint::checkpoint(&tx, &cp, now).await)
    }

    async fn checkpoint_batch(&self, cps: Vec<Checkpoint>) -> Vec<Result<()>> {
        if cps.is_empty() {
            return Vec::new();
        }
        let now = now_micros();
        if let Some(answers) = self.checkpoint_one_trip(&cps).await {
            return answers;
        }
        let res = write_tx!(self, tx => batch::checkpoints(&mut tx, &cps, now).await);
        match res {
            Ok(results) => results,
            // A statement failed for some member (bad data): the set-based statements cannot tell
            // whose, so run the batch again member by member to fail only that one.
            Err(StoreError::Corrupt(m)) => {
                tracing::warn!(error = %m, "set-based checkpoint batch failed; retrying member by member");
                self.checkpoint_each(cps, now).await
            }
            // A folded result's task was claimed since: refuse that member's turn alone.
            Err(StoreError::Reclaimed { .. }) => self.checkpoint_each(cps, now).await,
            Err(e) => (0..cps.len()).map(|_| Err(e.duplicate())).collect(),
        }
    }

    async fn create_instance_batch(&self, reqs: Vec<CreateInstance>) -> Vec<Result<CreateOutcome>> {
        if reqs.is_empty() {
            return Vec::new();
        }
        let now = now_micros();
        let res = write_tx!(self, tx => batch::creates(&mut tx, &reqs, now).await);
        match res {
            Ok(results) => results,
            Err(StoreError::Corrupt(m)) => {
                tracing::warn!(error = %m, "set-based create batch failed; creating one by one");
                let mut out = Vec::with_capacity(reqs.len());
                for r in reqs {
                    out.push(self.create_instance(r).await);
                }
                out
            }
            Err(e) => (0..reqs.len()).map(|_| Err(e.duplicate())).collect(),
        }
    }

    async fn claim_activities(&self, scope: &Scope) -> Result<Vec<ActivityTask>> {
        write_tx!(self, tx => {
            let scope = leases::current(&tx, scope).await?;
            scans::claim_activities(&tx, &scope).await
        })
    }

    async fn claim_new_remote_activities(&self, scope: &Scope) -> Result<Vec<ActivityTask>> {
        write_tx!(self, tx => {
            let scope = leases::current(&tx, scope).await?;
            scans::claim_new_remote(&tx, &scope).await
        })
    }

    async fn complete_activity(
        &self,
        instance_id: &str,
        task_id: i32,
        generation: i64,
        event: HistoryEvent,
    ) -> Result<bool> {
        write_tx!(self, tx => {
            scans::complete_activity(&tx, instance_id, task_id, generation, &event).await
        })
    }

    async fn complete_activity_batch(&self, items: Vec<ActivityCompletion>) -> Vec<Result<bool>> {
        let n = items.len();
        if n == 0 {
            return Vec::new();
        }
        let res: Result<Vec<Result<bool>>> =
            write_tx!(self, tx => batch::complete_activities(&tx, &items).await);
        match res {
            Ok(done) => done,
            Err(e) => (0..n).map(|_| Err(e.duplicate())).collect(),
        }
    }

    async fn instances_with_inbox(&self, scope: &Scope) -> Result<Vec<String>> {
        read!(self, c => scans::instances_with_inbox(&c, scope).await)
    }

    async fn claim_due_reminders(
        &self,
        scope: &Scope,
        now: Micros,
        lease_until: Micros,
        limit: usize,
    ) -> Result<Vec<Reminder>> {
        write_tx!(self, tx => {
            scans::generic_plans(&tx).await?;
            let scope = leases::current(&tx, scope).await?;
            scans::claim_reminders(&tx, &scope, now, lease_until, limit).await
        })
    }

    async fn fire_reminder(&self, reminder_id: i64, fence: Option<&Fence>) -> Result<bool> {
        write_tx!(self, tx => {
            leases::check(&tx, fence).await?;
            scans::fire_reminder(&tx, reminder_id).await
        })
    }

    async fn next_reminder_due(&self, scope: &Scope) -> Result<Option<Micros>> {
        read!(self, c => {
            let tx = c.transaction().await?;
            scans::generic_plans(&tx).await?;
            let next = scans::next_reminder_due(&tx, scope).await?;
            tx.commit().await?;
            Ok(next)
        })
    }

    async fn stalled_instances(&self, scope: &Scope, limit: usize) -> Result<Vec<String>> {
        read!(self, c => scans::stalled_instances(&c, scope, limit).await)
    }

    async fn list_instances(&self, filter: ListFilter) -> Result<InstancePage> {
        read!(self, c => ops::list(&c, &filter).await)
    }

    async fn purge(&self, instance_id: &str, force: bool, fence: Option<&Fence>) -> Result<bool> {
        write_tx!(self, tx => {
            leases::check(&tx, fence).await?;
            ops::purge(&tx, instance_id, force).await
        })
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
        write_tx!(self, tx => {
            if leases::slot_holder_live(&tx, holder).await? {
                ops::acquire_slots(&tx, bucket, limit, holder, want, now, until).await
            } else {
                Ok(Vec::new())
            }
        })
    }

    async fn renew_slots(
        &self,
        holder: &str,
        now: Micros,
        until: Micros,
    ) -> Result<Vec<SlotLease>> {
        write_tx!(self, tx => {
            if leases::slot_holder_live(&tx, holder).await? {
                ops::renew_slots(&tx, holder, now, until).await
            } else {
                Ok(Vec::new())
            }
        })
    }

    async fn release_slots(&self, bucket: &str, holder: &str, slots: &[u32]) -> Result<()> {
        write_tx!(self, tx => ops::release_slots(&tx, bucket, holder, slots).await)
    }

    async fn start_holder(&self, holder: &str, ttl: Micros) -> Result<()> {
        write_tx!(self, tx => leases::start_holder(&tx, holder, ttl).await)
    }

    async fn renew_holder(&self, holder: &str, ttl: Micros) -> Result<bool> {
        write_tx!(self, tx => leases::renew_holder(&tx, holder, ttl).await)
    }

    async fn end_holder(&self, holder: &str) -> Result<()> {
        write_tx!(self, tx => leases::end_holder(&tx, holder).await)
    }

    async fn acquire_buckets(
        &self,
        app_id: &str,
        holder: &str,
        buckets: &[i32],
    ) -> Result<Vec<BucketLease>> {
        write_tx!(self, tx => leases::acquire(&tx, app_id, holder, buckets).await)
    }

    async fn release_buckets(&self, app_id: &str, holder: &str, buckets: &[i32]) -> Result<()> {
        write_tx!(self, tx => leases::release(&tx, app_id, holder, buckets).await)
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Wakeup>> {
        self.inner
            .listener
            .as_ref()
            .map(|_| self.inner.wake.subscribe())
    }

    /// One `SELECT 1` on a pooled connection, bounded by 3 s, no retries: readiness must flip
    /// to not-ready promptly while the database is down.
    async fn cross_app_backlog(&self) -> Result<Vec<(String, i64)>> {
        read!(self, c => scans::cross_app_backlog(&c).await)
    }

    async fn health(&self) -> Result<()> {
        let probe = async {
            let c = self.client().await?;
            c.simple_query("SELECT 1").await?;
            Ok::<_, PgErr>(())
        };
        match tokio::time::timeout(Duration::from_secs(3), probe).await {
            Ok(r) => r.map_err(PgErr::into_store),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{} did not answer within 3 s",
                self.inner.redacted
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
