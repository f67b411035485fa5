//! Test support: a store wrapper that counts calls, can make checkpoints fail and hold activity
//! results, to observe the engine's loops (timer wake-ups, recovery scans, retries) without sleeps.

use async_trait::async_trait;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;
use weft_core::Micros;
use weft_proto::durabletask::HistoryEvent;
use weft_store::layer::{self, Layer};
use weft_store::*;

/// A router over a fresh engine on in-memory SQLite that owns everything (call inside a
/// runtime: the engine spawns its committers).
pub(crate) fn local_router() -> crate::route::Router {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let engine = crate::Engine::with_registry(
        store,
        Default::default(),
        crate::cluster::Registry::local_only("me"),
    );
    let ownership = Arc::new(engine.registry().clone());
    crate::route::Router::new(engine, ownership, 1 << 20, None, None)
}

/// How checkpoints of one instance fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// Rolled back: nothing was written.
    Rejected,
    /// The connection dropped at COMMIT: it may have landed.
    Unknown,
}

#[derive(Default)]
pub(crate) struct Counts {
    pub claims: AtomicUsize,
    /// Recovery scans (each reads the pending activities once).
    pub scans: AtomicUsize,
    pub checkpoints: AtomicUsize,
    pub inbox_reads: AtomicUsize,
    /// Activity results recorded on their own (the durable path).
    pub results: AtomicUsize,
}

pub(crate) struct Spy {
    inner: Arc<dyn Store>,
    pub counts: Counts,
    /// Wakes a test whenever a count changes.
    pub changed: Notify,
    fail: Mutex<Option<(String, Fail)>>,
    /// How the next batch of activity results fails (once).
    fail_results: Mutex<Option<Fail>>,
    /// While true, activity results wait before they are written (see `hold_activity_results`).
    hold: tokio::sync::watch::Sender<bool>,
    /// Signalled when an activity result reaches the store.
    pub activity_arrived: Notify,
}

impl Spy {
    pub(crate) fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            counts: Counts::default(),
            changed: Notify::new(),
            fail: Mutex::new(None),
            fail_results: Mutex::new(None),
            hold: tokio::sync::watch::channel(false).0,
            activity_arrived: Notify::new(),
        })
    }

    /// Holds activity results at the store's door until called again with `false`.
    pub(crate) fn hold_activity_results(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    pub(crate) fn fail_checkpoints_of(&self, instance: &str, how: Option<Fail>) {
        *self.fail.lock().unwrap() = how.map(|h| (instance.to_string(), h));
    }

    /// The next batch of activity results fails `how` (`Unknown`: it lands, then the commit's
    /// answer is lost).
    pub(crate) fn fail_next_results(&self, how: Fail) {
        *self.fail_results.lock().unwrap() = Some(how);
    }

    /// Claims every pending task of `app` as another sidecar's scan would (not counted).
    pub(crate) async fn claim_as_another(&self, app: &str) -> Vec<ActivityTask> {
        self.inner.claim_activities(&Scope::all(app)).await.unwrap()
    }

    /// Records results as another sidecar's dispatch would (not counted).
    pub(crate) async fn complete_as_another(
        &self,
        items: Vec<ActivityCompletion>,
    ) -> Vec<Result<bool>> {
        self.inner.complete_activity_batch(items).await
    }

    fn bump(&self, c: &AtomicUsize) {
        c.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

// Only the counted and failed calls; the rest is forwarded by `Layer`.
#[async_trait]
impl Layer for Spy {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    // One by one, as `Store`'s default does: what these tests were written against.
    async fn create_instance_batch(&self, reqs: Vec<CreateInstance>) -> Vec<Result<CreateOutcome>> {
        layer::one_by_one(reqs, |r| Layer::create_instance(self, r)).await
    }
    async fn read_inbox(&self, id: &str) -> Result<Vec<InboxEntry>> {
        self.bump(&self.counts.inbox_reads);
        self.inner.read_inbox(id).await
    }
    async fn checkpoint(&self, cp: Checkpoint) -> Result<()> {
        self.bump(&self.counts.checkpoints);
        let fail = self.fail.lock().unwrap().clone();
        match fail {
            Some((id, Fail::Rejected)) if id == cp.instance_id => {
                Err(StoreError::Corrupt("rejected by the test".into()))
            }
            Some((id, Fail::Unknown)) if id == cp.instance_id => {
                Err(StoreError::OutcomeUnknown("lost by the test".into()))
            }
            _ => self.inner.checkpoint(cp).await,
        }
    }
    // Split so that each checkpoint is counted and can fail on its own.
    async fn checkpoint_batch(&self, cps: Vec<Checkpoint>) -> Vec<Result<()>> {
        layer::one_by_one(cps, |cp| Layer::checkpoint(self, cp)).await
    }
    async fn claim_activities(&self, scope: &Scope) -> Result<Vec<ActivityTask>> {
        self.bump(&self.counts.scans);
        self.inner.claim_activities(scope).await
    }
    async fn complete_activity(
        &self,
        id: &str,
        task_id: i32,
        generation: i64,
        event: HistoryEvent,
    ) -> Result<bool> {
        self.activity_arrived.notify_one();
        self.bump(&self.counts.results);
        let _ = self.hold.subscribe().wait_for(|h| !*h).await;
        self.inner
            .complete_activity(id, task_id, generation, event)
            .await
    }
    async fn complete_activity_batch(&self, items: Vec<ActivityCompletion>) -> Vec<Result<bool>> {
        self.activity_arrived.notify_one();
        for _ in &items {
            self.bump(&self.counts.results);
        }
        let _ = self.hold.subscribe().wait_for(|h| !*h).await;
        let fail = self.fail_results.lock().unwrap().take();
        let n = items.len();
        let lost = || {
            (0..n)
                .map(|_| Err(StoreError::OutcomeUnknown("test".into())))
                .collect()
        };
        match fail {
            None => self.inner.complete_activity_batch(items).await,
            Some(Fail::Rejected) => (0..n)
                .map(|_| Err(StoreError::Unavailable("test".into())))
                .collect(),
            Some(Fail::Unknown) => {
                self.inner.complete_activity_batch(items).await;
                lost()
            }
        }
    }
    async fn claim_due_reminders(
        &self,
        scope: &Scope,
        now: Micros,
        lease_until: Micros,
        limit: usize,
    ) -> Result<Vec<Reminder>> {
        self.bump(&self.counts.claims);
        self.inner
            .claim_due_reminders(scope, now, lease_until, limit)
            .await
    }
}
