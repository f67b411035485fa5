//! The actor directory: the mailboxes of the workflow actors in memory, activation on first
//! message (owned instances only), offers of activity results, and the instance-change feed.

use crate::cluster::owned::OwnershipView;
use crate::hub::Hub;
use crate::mailbox::{ActivityResult, ActorMsg};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use weft_core::InstanceMeta;
use weft_store::Fence;

/// How long folding pauses after a worker waited out `fold_wait` (see `Directory::fold_overdue`).
const FOLD_PAUSE: Duration = Duration::from_secs(5);

type Mailboxes = HashMap<String, mpsc::UnboundedSender<ActorMsg>>;

/// Starts an actor for an instance on its mailbox, under the fence it was activated with (set by
/// the engine, which knows what an actor is; the directory only keeps mailboxes).
pub(crate) type Spawner =
    Box<dyn Fn(String, mpsc::UnboundedReceiver<ActorMsg>, Option<Fence>) + Send + Sync>;

pub(crate) struct Directory {
    mailboxes: Mutex<Mailboxes>,
    spawner: OnceLock<Spawner>,
    view: Arc<OwnershipView>,
    hub: Arc<Hub>,
    /// Asks the resync loop for a recovery scan (an actor panicked and lost what it held).
    resync_needed: Arc<Notify>,
    fold_results: bool,
    /// Until when results take the durable path because a worker waited too long for a turn
    /// (`fold_overdue`).
    fold_paused_until: Mutex<Option<Instant>>,
    /// Shutdown drain began: results take the durable path (no actor holds them any more).
    pub(crate) draining: AtomicBool,
    /// Instance rows that changed: with the committed row when the writer has it (so waiters
    /// need no store read), without it when they must re-read (create, purge, other processes).
    changes: broadcast::Sender<(String, Option<Arc<InstanceMeta>>)>,
}

impl Directory {
    pub(crate) fn new(
        view: Arc<OwnershipView>,
        hub: Arc<Hub>,
        resync_needed: Arc<Notify>,
        fold_results: bool,
    ) -> Self {
        Self {
            mailboxes: Mutex::default(),
            spawner: OnceLock::new(),
            view,
            hub,
            resync_needed,
            fold_results,
            fold_paused_until: Mutex::new(None),
            draining: AtomicBool::new(false),
            changes: broadcast::channel(4096).0,
        }
    }

    /// Sets how actors are started (once, right after the engine is built).
    pub(crate) fn set_spawner(&self, spawner: Spawner) {
        if self.spawner.set(spawner).is_err() {
            tracing::error!("actor spawner set twice; the first one stays");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mailboxes> {
        self.mailboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a message to an instance's actor, activating it if needed — only for instances
    /// this sidecar serves (their owner hears of the change from the store).
    pub(crate) fn send(&self, id: &str, msg: ActorMsg) {
        let mut actors = self.lock();
        let msg = match actors.get(id) {
            Some(tx) => match tx.send(msg) {
                Ok(()) => return,
                Err(mpsc::error::SendError(m)) => m,
            },
            None => msg,
        };
        let Some(fence) = self.view.owner_fence(id) else {
            tracing::debug!(instance = %id, "not owned here: not activated");
            return;
        };
        let Some(spawn) = self.spawner.get() else {
            tracing::error!(instance = %id, "no actor spawner: not activated");
            return;
        };
        tracing::debug!(instance = %id, "activating");
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(msg);
        actors.insert(id.to_string(), tx);
        spawn(id.to_string(), rx, fence);
    }

    pub(crate) fn wake(&self, id: &str) {
        self.send(id, ActorMsg::Wake);
    }

    /// An actor panicked (a bug): what it held in memory — results folded into a turn not yet
    /// committed, the turn itself — is gone, so recover as after a restart: a recovery scan claims
    /// and dispatches the pending activities again, and a fresh actor reloads the instance.
    pub(crate) fn actor_panicked(&self, id: &str) {
        tracing::error!(instance = %id, "workflow actor panicked; recovering the instance from the store");
        metrics::counter!("weft_actor_panics_total").increment(1);
        {
            let mut actors = self.lock();
            // Only the entry of the dead actor (its mailbox is closed); a fresh one may exist.
            if actors.get(id).is_some_and(|tx| tx.is_closed()) {
                self.forget(&mut actors, id);
            }
        }
        // Its held results are gone: the scan must dispatch their tasks again.
        self.hub.transit_lost(id);
        self.resync_needed.notify_one();
        self.wake(id);
    }

    /// Offers an activity result to its instance's actor, to be committed by the next turn.
    /// `None` once the actor accepted it; the result back if it must take the durable path
    /// (no actor in memory, not owned here, or the actor refused: see `Actor::accept`).
    pub(crate) async fn fold(&self, r: ActivityResult) -> Option<ActivityResult> {
        let id = r.completion.instance_id.as_str();
        if !self.fold_results
            || self.draining.load(Ordering::SeqCst)
            || self.fold_paused()
            || !self.view.owns(id)
        {
            return Some(r);
        }
        let tx = match self.lock().get(id) {
            Some(tx) => tx.clone(),
            None => return Some(r),
        };
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(m)) = tx.send(ActorMsg::Fold(Box::new(r), reply)) {
            return match m {
                ActorMsg::Fold(r, _) => Some(*r),
                _ => None,
            };
        }
        // An actor always answers (refusing from its mailbox drain when it stops); should it
        // vanish anyway, the result is lost with it and the task row makes it run again.
        answer.await.unwrap_or(None).map(|r| *r)
    }

    /// A worker has waited `fold_wait` for the turn that folds its result: the actor records it
    /// durably now, and folding pauses for [`FOLD_PAUSE`]. A worker whose activities and turns
    /// share one pool of threads or permits (the Python SDK's thread pool) cannot run that turn
    /// while its activity calls wait, so under load every fold would wait out the deadline;
    /// paused, its results take the durable path (two commits a step, answered at once) and
    /// only one deadline per pause is lost. Idle workers never hit the deadline.
    pub(crate) fn fold_overdue(&self, id: &str, key: (i32, i64)) {
        metrics::counter!("weft_activity_fold_waits_overdue_total").increment(1);
        let until = Instant::now() + FOLD_PAUSE;
        let mut paused = self
            .fold_paused_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if paused.is_none_or(|t| t < until) {
            if paused.is_none_or(|t| t < Instant::now()) {
                tracing::info!(instance = %id, pause = ?FOLD_PAUSE, "an activity result waited too long for its turn; folding paused");
            }
            *paused = Some(until);
        }
        drop(paused);
        self.send_existing(id, ActorMsg::Spill(key));
    }

    fn fold_paused(&self) -> bool {
        let paused = self
            .fold_paused_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        paused.is_some_and(|t| Instant::now() < t)
    }

    /// Tells an active actor its instance was purged (an idle one has nothing to forget).
    pub(crate) fn purged(&self, id: &str) {
        self.send_existing(id, ActorMsg::Purged);
    }

    /// Sends to a running actor only (never activates one).
    pub(crate) fn send_existing(&self, id: &str, msg: ActorMsg) {
        if let Some(tx) = self.lock().get(id) {
            let _ = tx.send(msg);
        }
    }

    /// IDs of the actors in memory now.
    pub(crate) fn active(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Number of actors in memory.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Removes an actor that handed its instance off (it is gone whatever its mailbox holds).
    pub(crate) fn remove(&self, id: &str) {
        let mut actors = self.lock();
        self.forget(&mut actors, id);
    }

    /// Removes an idle actor unless a message slipped in; senders hold the same lock.
    pub(crate) fn try_retire(&self, id: &str, rx: &mpsc::UnboundedReceiver<ActorMsg>) -> bool {
        let mut actors = self.lock();
        if rx.is_empty() {
            self.forget(&mut actors, id);
            true
        } else {
            false
        }
    }

    /// Drops an actor and every record that lived only as long as it (under the mailboxes lock,
    /// so a new actor for the same instance cannot slip in between).
    fn forget(&self, actors: &mut Mailboxes, id: &str) {
        actors.remove(id);
        crate::census::shrink_after_burst(actors);
        self.hub.actor_gone(id);
    }

    /// The row of `id` changed; waiters must read it again.
    pub(crate) fn changed(&self, id: &str) {
        let _ = self.changes.send((id.to_string(), None));
    }

    /// A commit of this engine changed the row's status; `meta` is the committed row.
    pub(crate) fn committed(&self, meta: &InstanceMeta) {
        let _ = self
            .changes
            .send((meta.instance_id.clone(), Some(Arc::new(meta.clone()))));
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<(String, Option<Arc<InstanceMeta>>)> {
        self.changes.subscribe()
    }
}
