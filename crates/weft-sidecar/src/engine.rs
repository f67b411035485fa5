//! The engine: the operations behind the gRPC and HTTP APIs, the registry of workflow actors,
//! the durable-timer loop and recovery after a restart.

use crate::actor::{Actor, ActorMsg, now};
use crate::cluster::ownership::{Owned, ownership_loop};
use crate::cluster::{ActorKind, Registry};
use crate::commit::Committer;
use crate::error::{EngineError, Result};
use crate::fold::{self, ActivityResult};
use crate::hub::{Hub, Job};
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use weft_core::history::{all_children, event};
use weft_core::ids::{self, validate_instance_id};
use weft_core::turn::new_instance;
use weft_core::{InstanceMeta, RuntimeStatus};
use weft_proto::durabletask::{
    ActivityRequest, ActivityResponse, EventRaisedEvent, ExecutionResumedEvent,
    ExecutionSuspendedEvent, ExecutionTerminatedEvent, HistoryEvent, TaskCompletedEvent,
    TaskFailedEvent, WorkflowResponse, history_event::EventType,
};
use weft_store::{
    ActivityCompletion, CreateInstance, CreateOutcome, InstancePage, ListFilter, ReusePolicy,
    Scope, Store, Wakeup,
};

/// Default limit on one payload (input, output, event data, result): 4 MiB less 64 KiB, so a
/// work item carrying one such payload still fits the SDKs' default 4 MiB receive limit.
pub const DEFAULT_MAX_PAYLOAD: usize = 4 * 1024 * 1024 - 64 * 1024;

/// Largest work item sent to a worker: the SDKs' default gRPC receive limit (4 MiB). A workflow
/// whose turn would be larger stalls (`PAYLOAD_SIZE_EXCEEDED`) instead of crashing the stream.
pub const DEFAULT_MAX_WORK_ITEM: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub app_id: String,
    pub max_payload_bytes: usize,
    pub max_work_item_bytes: usize,
    /// An actor with nothing to do for this long is dropped from memory.
    pub idle_timeout: Duration,
    /// `spec.workflow` of the configuration file: concurrency limits and retention.
    pub workflow: weft_config::WorkflowConfig,
    /// How long a cluster-wide concurrency slot is held without renewal.
    pub slot_lease: Duration,
    /// Hand-off deadline: how long an actor that lost its key waits for its turn in flight, and
    /// how long a sidecar that gained a key from a live sidecar waits before loading it.
    pub handoff_timeout: Duration,
    /// Fold an activity's result into the turn it wakes (one commit per idle step) when the
    /// instance's actor is in memory; off, every result is first recorded on its own.
    pub fold_activity_results: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            app_id: "weft-dev".into(),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD,
            max_work_item_bytes: DEFAULT_MAX_WORK_ITEM,
            idle_timeout: Duration::from_secs(60),
            workflow: Default::default(),
            slot_lease: Duration::from_secs(10),
            handoff_timeout: Duration::from_secs(3),
            fold_activity_results: true,
        }
    }
}

/// A request to start an instance, as both APIs express it.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    pub instance_id: String,
    pub name: String,
    pub version: Option<String>,
    pub input: Option<String>,
    pub scheduled_start_at: Option<weft_core::Micros>,
    pub policy: ReusePolicy,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) committer: Committer,
    pub(crate) hub: Hub,
    pub(crate) app_id: String,
    pub(crate) idle_timeout: Duration,
    pub(crate) handoff_timeout: Duration,
    fold_results: bool,
    /// Who owns what (placement); asked by everything that touches an instance.
    pub(crate) registry: Registry,
    /// The buckets this engine serves now (follows the registry, see `cluster::ownership`).
    owned: RwLock<Arc<Owned>>,
    /// Reconciler passes so far, and deferred take-overs still waiting (for the gauges).
    pub(crate) ownership_pass: std::sync::atomic::AtomicU64,
    pub(crate) deferred: std::sync::atomic::AtomicUsize,
    pub(crate) timers_changed: Notify,
    /// Asks the resync loop for a recovery scan (after a commit with an unknown outcome).
    pub(crate) resync_needed: Notify,
    pub(crate) max_work_item: usize,
    slot_lease: Duration,
    pub(crate) retention: weft_config::RetentionPolicy,
    max_payload: usize,
    actors: Mutex<HashMap<String, mpsc::UnboundedSender<ActorMsg>>>,
    /// Instance rows that changed: with the committed row when the writer has it (so waiters
    /// need no store read), without it when they must re-read (create, purge, other processes).
    changes: broadcast::Sender<(String, Option<Arc<InstanceMeta>>)>,
}

impl Inner {
    /// Sends a message to an instance's actor, activating it if needed — only for instances
    /// this sidecar serves (their owner hears of the change from the store).
    pub(crate) fn send(self: &Arc<Self>, id: &str, msg: ActorMsg) {
        let mut actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        let msg = match actors.get(id) {
            Some(tx) => match tx.send(msg) {
                Ok(()) => return,
                Err(mpsc::error::SendError(m)) => m,
            },
            None => msg,
        };
        if !self.owns(id) {
            tracing::debug!(instance = %id, "not owned here: not activated");
            return;
        }
        tracing::debug!(instance = %id, "activating");
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(msg);
        actors.insert(id.to_string(), tx);
        tokio::spawn(Actor::new(id.to_string(), self.clone(), rx).run());
    }

    /// Offers an activity result to its instance's actor, to be committed by the next turn.
    /// `None` once the actor accepted it; the result back if it must take the durable path
    /// (no actor in memory, not owned here, or the actor refused: see `Actor::accept`).
    pub(crate) async fn fold(&self, r: ActivityResult) -> Option<ActivityResult> {
        let id = r.completion.instance_id.as_str();
        if !self.fold_results || !self.owns(id) {
            return Some(r);
        }
        let tx = {
            let actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
            match actors.get(id) {
                Some(tx) => tx.clone(),
                None => return Some(r),
            }
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

    /// Tells an active actor its instance was purged (an idle one has nothing to forget).
    fn purged(&self, id: &str) {
        let actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = actors.get(id) {
            let _ = tx.send(ActorMsg::Purged);
        }
    }

    pub(crate) fn wake(self: &Arc<Self>, id: &str) {
        self.send(id, ActorMsg::Wake);
    }

    /// Sends to a running actor only (never activates one).
    pub(crate) fn send_existing(&self, id: &str, msg: ActorMsg) {
        let actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = actors.get(id) {
            let _ = tx.send(msg);
        }
    }

    /// IDs of the actors in memory now.
    pub(crate) fn active_actors(&self) -> Vec<String> {
        let actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        actors.keys().cloned().collect()
    }

    /// Removes an actor that handed its instance off (it is gone whatever its mailbox holds).
    pub(crate) fn remove_actor(&self, id: &str) {
        let mut actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        self.forget_actor(&mut actors, id);
    }

    /// Drops an actor and every record that lived only as long as it (under the actors lock,
    /// so a new actor for the same instance cannot slip in between).
    fn forget_actor(
        &self,
        actors: &mut HashMap<String, mpsc::UnboundedSender<ActorMsg>>,
        id: &str,
    ) {
        actors.remove(id);
        crate::census::shrink_after_burst(actors);
        self.hub.actor_gone(id);
    }

    /// Whether a take-over deferred for a live previous owner is still waiting.
    pub(crate) fn deferred_pending(&self) -> bool {
        self.deferred.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// Whether this sidecar serves the instance now.
    pub(crate) fn owns(&self, id: &str) -> bool {
        self.owned().contains(id)
    }

    pub(crate) fn owned(&self) -> Arc<Owned> {
        self.owned.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn update_owned(&self, f: impl FnOnce(&Owned) -> Owned) {
        let mut cur = self.owned.write().unwrap_or_else(|p| p.into_inner());
        *cur = Arc::new(f(&cur));
    }

    /// The scans' scope: this app's instances in the buckets served now.
    pub(crate) fn scope(&self) -> Scope {
        self.owned().scope.clone()
    }

    /// Removes an idle actor unless a message slipped in; senders hold the same lock.
    pub(crate) fn try_retire(&self, id: &str, rx: &mpsc::UnboundedReceiver<ActorMsg>) -> bool {
        let mut actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        if rx.is_empty() {
            self.forget_actor(&mut actors, id);
            true
        } else {
            false
        }
    }

    /// Claims and re-queues every pending activity and wakes every instance with inbox events: the start-up
    /// recovery, also run after a commit whose outcome is unknown (it may have landed, and then
    /// its effects were never carried out).
    pub(crate) async fn resync(self: &Arc<Self>) -> Result<()> {
        let scope = self.scope();
        self.resync_scope(&scope).await
    }

    /// The recovery scan limited to `scope` (all that is owned, or buckets just taken over).
    pub(crate) async fn resync_scope(self: &Arc<Self>, scope: &Scope) -> Result<()> {
        for a in self.store.claim_activities(scope).await? {
            if !self.owns(&a.instance_id) {
                continue; // handed off while the scan ran
            }
            let request = ActivityRequest::decode(a.request.as_slice())
                .map_err(|e| EngineError::Internal(format!("stored activity request: {e}")))?;
            self.hub.push(Job::Activity {
                generation: a.generation,
                claim: a.claim,
                request,
            });
        }
        for id in self.store.instances_with_inbox(scope).await? {
            self.wake(&id);
        }
        self.timers_changed.notify_one();
        Ok(())
    }

    /// Gives stalled instances in `scope` another chance (a worker connected, or the buckets
    /// were just taken over).
    pub(crate) async fn retry_stalled(self: &Arc<Self>, scope: &Scope) {
        match self.store.stalled_instances(scope, 1000).await {
            Ok(ids) => {
                for id in ids {
                    self.send(&id, ActorMsg::Retry);
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing stalled instances failed"),
        }
    }

    pub(crate) fn changed(&self, id: &str) {
        let _ = self.changes.send((id.to_string(), None));
    }

    /// A commit of this engine changed the row's status; `meta` is the committed row.
    pub(crate) fn committed(&self, meta: &InstanceMeta) {
        let _ = self
            .changes
            .send((meta.instance_id.clone(), Some(Arc::new(meta.clone()))));
    }
}

/// Cheap to clone; every API handler holds one.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl Engine {
    /// An engine that owns every instance of its app (one sidecar, no placement).
    pub fn new(store: Arc<dyn Store>, cfg: EngineConfig) -> Self {
        let registry = Registry::local_only(&cfg.app_id);
        Self::with_registry(store, cfg, registry)
    }

    /// An engine that serves what `registry` says this sidecar owns.
    pub fn with_registry(store: Arc<dyn Store>, cfg: EngineConfig, registry: Registry) -> Self {
        let owned = Owned::new(
            &cfg.app_id,
            &registry.owned_buckets(&cfg.app_id, ActorKind::Workflow),
        );
        Self {
            inner: Arc::new(Inner {
                committer: Committer::new(store.clone()),
                store,
                hub: Hub::configured(cfg.max_work_item_bytes, &cfg.workflow),
                registry,
                owned: RwLock::new(Arc::new(owned)),
                ownership_pass: Default::default(),
                deferred: Default::default(),
                handoff_timeout: cfg.handoff_timeout,
                fold_results: cfg.fold_activity_results,
                app_id: cfg.app_id,
                idle_timeout: cfg.idle_timeout,
                timers_changed: Notify::new(),
                resync_needed: Notify::new(),
                max_payload: cfg.max_payload_bytes,
                max_work_item: cfg.max_work_item_bytes,
                slot_lease: cfg.slot_lease,
                retention: cfg.workflow.state_retention_policy,
                actors: Mutex::default(),
                changes: broadcast::channel(4096).0,
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The ownership registry this engine follows.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The app whose instances this engine runs.
    pub fn app_id(&self) -> &str {
        &self.inner.app_id
    }

    /// Number of connected worker streams, observable (membership registers actor types only
    /// while it is above zero).
    pub fn workers_connected(&self) -> tokio::sync::watch::Receiver<usize> {
        self.inner.hub.connected()
    }

    /// Number of actors in memory (idle ones are dropped after `idle_timeout`).
    pub fn actors_in_memory(&self) -> usize {
        let actors = self.inner.actors.lock().unwrap_or_else(|p| p.into_inner());
        actors.len()
    }

    /// Every per-instance record in memory, counted (see `docs/architecture.md`, idle memory).
    pub fn memory_census(&self) -> crate::census::MemoryCensus {
        let mut c = crate::census::MemoryCensus {
            actors: self.actors_in_memory(),
            ..Default::default()
        };
        self.inner.hub.census(&mut c);
        c
    }

    /// Shutdown drain: stops handing out work, then waits (up to `deadline`) until every
    /// dispatched item has been answered. Returns how many were still out at the deadline.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.inner.hub.pause();
        let mut rx = self.inner.hub.inflight();
        let _ = tokio::time::timeout(deadline, rx.wait_for(|n| *n == 0)).await;
        *rx.borrow()
    }

    /// Re-activates unfinished work after a restart and starts the background loops.
    pub async fn start(&self, shutdown: CancellationToken) -> Result<()> {
        let store = &self.inner.store;
        self.inner.resync().await?;
        if let Some(rx) = store.subscribe() {
            tokio::spawn(follow_store(self.inner.clone(), rx, shutdown.clone()));
        }
        tokio::spawn(crate::timers::timer_loop(
            self.inner.clone(),
            shutdown.clone(),
        ));
        if let Some(rx) = self.inner.hub.oversize_reports() {
            tokio::spawn(oversize_loop(self.inner.clone(), rx));
        }
        tokio::spawn(resync_loop(self.inner.clone(), shutdown.clone()));
        if self.inner.hub.has_cluster_wide_limits() {
            let lease = self.inner.slot_lease;
            tokio::spawn(crate::slots::slot_loop(
                self.inner.clone(),
                lease,
                shutdown.clone(),
            ));
        }
        tokio::spawn(crate::retention::retention_loop(
            self.inner.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(ownership_loop(self.inner.clone(), shutdown.clone()));
        tokio::spawn(stalled_retry_loop(self.inner.clone(), shutdown));
        Ok(())
    }

    pub fn check_payload(&self, what: &str, value: Option<&str>) -> Result<()> {
        self.check_payload_len(what, value.map_or(0, str::len))
    }

    fn check_payload_len(&self, what: &str, len: usize) -> Result<()> {
        if len > self.inner.max_payload {
            return Err(EngineError::PayloadTooLarge(format!(
                "{what} is {len} bytes; the limit is {} bytes",
                self.inner.max_payload
            )));
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------------
    // Client operations

    /// Creates an instance; returns once it is durable (callers may then wait for the start).
    pub async fn start_instance(&self, req: StartRequest) -> Result<String> {
        let this = self.clone();
        to_completion(async move { this.create_and_wake(req).await }).await
    }

    async fn create_and_wake(&self, req: StartRequest) -> Result<String> {
        validate_instance_id(&req.instance_id)?;
        ids::check_name("workflow name", &req.name)?;
        ids::check_opt("workflow version", req.version.as_deref())?;
        self.check_payload("input", req.input.as_deref())?;
        let now = now();
        let exec = uuid::Uuid::new_v4().to_string();
        let (mut meta, start) = new_instance(
            &req.instance_id,
            &req.name,
            req.version,
            req.input,
            None,
            exec,
            &self.inner.app_id,
            now,
        );
        meta.scheduled_start_at = req.scheduled_start_at.filter(|t| *t > now);
        let scheduled = meta.scheduled_start_at.is_some();
        // Group-committed with other starts that arrive while a commit runs.
        let outcome = self
            .inner
            .committer
            .create_instance(CreateInstance {
                meta,
                start_event: start,
                policy: req.policy,
            })
            .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e @ weft_store::StoreError::OutcomeUnknown(_)) => {
                // The row may have landed: a wake (or a timer re-check) lets its owner find it,
                // so a client retry answered ALREADY_EXISTS does not leave it PENDING forever.
                self.inner.wake(&req.instance_id);
                self.inner.timers_changed.notify_one();
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        if outcome == CreateOutcome::Replaced {
            self.inner.send(&req.instance_id, ActorMsg::Reload);
        }
        if outcome != CreateOutcome::Existing {
            self.inner.changed(&req.instance_id);
            if scheduled {
                self.inner.timers_changed.notify_one();
            } else {
                self.inner.wake(&req.instance_id);
            }
        }
        metrics::counter!("weft_workflows_started_total").increment(1);
        Ok(req.instance_id)
    }

    pub async fn get_instance(&self, id: &str) -> Result<Option<InstanceMeta>> {
        ids::check_instance_ref("instance ID", id)?;
        Ok(self.inner.store.get_instance(id).await?)
    }

    /// Waits until `pred` holds for the instance (or it disappears), without polling.
    pub async fn wait_for(
        &self,
        id: &str,
        pred: impl Fn(&InstanceMeta) -> bool,
    ) -> Result<Option<InstanceMeta>> {
        ids::check_instance_ref("instance ID", id)?;
        let mut rx = self.inner.changes.subscribe();
        loop {
            match self.inner.store.get_instance(id).await? {
                None => return Ok(None),
                Some(m) if pred(&m) => return Ok(Some(m)),
                Some(_) => {}
            }
            loop {
                match rx.recv().await {
                    Ok((changed, Some(meta))) if changed == id => {
                        if pred(&meta) {
                            return Ok(Some((*meta).clone()));
                        }
                    }
                    Ok((changed, None)) if changed == id => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(EngineError::Unavailable("shutting down".into()));
                    }
                }
            }
        }
    }

    async fn existing(&self, id: &str) -> Result<InstanceMeta> {
        ids::check_instance_ref("instance ID", id)?;
        self.inner
            .store
            .get_instance(id)
            .await?
            .ok_or_else(|| EngineError::no_such_instance(id))
    }

    async fn deliver(&self, id: &str, ev: HistoryEvent) -> Result<()> {
        let (inner, id) = (self.inner.clone(), id.to_string());
        to_completion(async move {
            if !inner.store.append_inbox(&id, ev).await? {
                return Err(EngineError::no_such_instance(&id));
            }
            inner.wake(&id);
            Ok(())
        })
        .await
    }

    pub async fn raise_event(&self, id: &str, name: &str, input: Option<String>) -> Result<()> {
        ids::check_name("event name", name)?;
        self.check_payload("event data", input.as_deref())?;
        let meta = self.existing(id).await?;
        if meta.status.is_terminal() {
            return Ok(()); // as daprd: events for a finished instance are dropped
        }
        if meta.status == RuntimeStatus::Stalled {
            return Err(EngineError::FailedPrecondition(format!(
                "workflow instance '{id}' is stalled"
            )));
        }
        let ev = event(
            now(),
            EventType::EventRaised(EventRaisedEvent {
                name: name.to_string(),
                input,
            }),
        );
        self.deliver(id, ev).await
    }

    /// Queues termination; the caller may then wait for a terminal status.
    pub async fn terminate(
        &self,
        id: &str,
        output: Option<String>,
        recursive: bool,
    ) -> Result<bool> {
        self.check_payload("output", output.as_deref())?;
        let meta = self.existing(id).await?;
        if meta.status.is_terminal() {
            return Ok(false);
        }
        let ev = event(
            now(),
            EventType::ExecutionTerminated(ExecutionTerminatedEvent {
                input: output,
                recurse: recursive,
            }),
        );
        self.deliver(id, ev).await?;
        Ok(true)
    }

    pub async fn suspend(&self, id: &str, reason: Option<String>) -> Result<bool> {
        self.check_payload("reason", reason.as_deref())?;
        let meta = self.existing(id).await?;
        if meta.status.is_terminal() || meta.status == RuntimeStatus::Suspended {
            return Ok(false);
        }
        let ev = event(
            now(),
            EventType::ExecutionSuspended(ExecutionSuspendedEvent { input: reason }),
        );
        self.deliver(id, ev).await?;
        Ok(true)
    }

    pub async fn resume(&self, id: &str, reason: Option<String>) -> Result<bool> {
        self.check_payload("reason", reason.as_deref())?;
        let meta = self.existing(id).await?;
        // Resuming a running instance would make the SDKs fail it, so only a suspended (or
        // stalled-while-suspended) one gets the event.
        if !matches!(
            meta.status,
            RuntimeStatus::Suspended | RuntimeStatus::Stalled
        ) {
            return Ok(false);
        }
        let ev = event(
            now(),
            EventType::ExecutionResumed(ExecutionResumedEvent { input: reason }),
        );
        self.deliver(id, ev).await?;
        Ok(true)
    }

    /// Deletes a finished instance and, if `recursive`, every descendant it created (children
    /// already purged are skipped). As daprd: if the instance or, in a recursive purge, any
    /// descendant is still active, nothing is purged and the answer is `FailedPrecondition`
    /// (unless `force`). Actors of purged instances drop their state and pending turn.
    pub async fn purge(&self, id: &str, recursive: bool, force: bool) -> Result<i32> {
        let (this, id) = (self.clone(), id.to_string());
        to_completion(async move { this.purge_tree(&id, recursive, force).await }).await
    }

    async fn purge_tree(&self, id: &str, recursive: bool, force: bool) -> Result<i32> {
        self.existing(id).await?;
        let mut tree = vec![id.to_string()];
        if recursive {
            let mut known: std::collections::HashSet<String> = tree.iter().cloned().collect();
            let mut i = 0;
            while i < tree.len() {
                if let Some(h) = self.inner.store.get_history(&tree[i]).await? {
                    for child in all_children(&h) {
                        if known.insert(child.clone()) {
                            tree.push(child);
                        }
                    }
                }
                i += 1;
            }
        }
        if !force {
            for member in &tree {
                if let Some(m) = self.inner.store.get_instance(member).await?
                    && !m.status.is_terminal()
                {
                    let what = if member == id {
                        format!("workflow instance '{id}'")
                    } else {
                        format!("child workflow '{member}' of '{id}'")
                    };
                    return Err(EngineError::FailedPrecondition(format!(
                        "{what} has not yet completed (status {}); terminate it first",
                        m.status
                    )));
                }
            }
        }
        // Descendants first: should one have become active meanwhile (the store checks each
        // again, under its row lock), the instance itself is still there to purge later.
        let mut count = 0;
        for member in tree.iter().rev() {
            if self.inner.store.purge(member, force).await? {
                count += 1;
                self.inner.hub.forget_instance(member);
                self.inner.purged(member);
                self.inner.changed(member);
            }
        }
        Ok(count)
    }

    pub async fn history(&self, id: &str) -> Result<Option<Vec<HistoryEvent>>> {
        ids::check_instance_ref("instance ID", id)?;
        Ok(self.inner.store.get_history(id).await?)
    }

    pub async fn list(&self, filter: ListFilter) -> Result<InstancePage> {
        if let Some(name) = &filter.name {
            ids::check_name("workflow name", name)?;
        }
        if let Some(after) = &filter.after {
            ids::check_text("continuation token", after, ids::MAX_REF_ID_LEN)?;
        }
        Ok(self.inner.store.list_instances(filter).await?)
    }

    // ------------------------------------------------------------------------------------------
    // Worker operations

    pub async fn complete_workflow(&self, resp: WorkflowResponse) -> Result<()> {
        self.check_payload("custom status", resp.custom_status.as_deref())?;
        check_action_payloads(self, &resp)?;
        let id = resp.instance_id.clone();
        if self
            .inner
            .hub
            .take_workflow(&id, &resp.completion_token)
            .is_none()
        {
            tracing::debug!(instance = %id, "completion refused: no such turn in flight");
            return Err(EngineError::NotFound(format!("unknown instance ID: {id}")));
        }
        let (tx, rx) = oneshot::channel();
        self.inner.send(&id, ActorMsg::Complete(Box::new(resp), tx));
        rx.await
            .unwrap_or_else(|_| Err(EngineError::Unavailable("workflow actor stopped".into())))
    }

    pub async fn complete_activity(&self, resp: ActivityResponse) -> Result<()> {
        let this = self.clone();
        to_completion(async move { this.record_activity(resp).await }).await
    }

    async fn record_activity(&self, resp: ActivityResponse) -> Result<()> {
        self.check_payload("activity result", resp.result.as_deref())?;
        if let Some(f) = &resp.failure_details {
            self.check_payload_len("activity failure details", f.encoded_len())?;
        }
        let id = resp.instance_id.clone();
        let Some((generation, claim, request)) =
            self.inner
                .hub
                .take_activity(&id, resp.task_id, &resp.completion_token)
        else {
            return Err(EngineError::NotFound(format!(
                "unknown instance ID/task ID combo: {id}/{}",
                resp.task_id
            )));
        };
        let ty = match resp.failure_details {
            Some(f) => EventType::TaskFailed(TaskFailedEvent {
                task_scheduled_id: resp.task_id,
                failure_details: Some(f),
                task_execution_id: request.task_execution_id.clone(),
                ..Default::default()
            }),
            None => EventType::TaskCompleted(TaskCompletedEvent {
                task_scheduled_id: resp.task_id,
                result: resp.result,
                task_execution_id: request.task_execution_id.clone(),
                ..Default::default()
            }),
        };
        let result = ActivityResult {
            completion: ActivityCompletion {
                instance_id: id.clone(),
                task_id: resp.task_id,
                generation,
                claim: Some(claim),
                event: event(now(), ty),
            },
            request,
        };
        // The task is out of the hub now: recording it and waking the instance (or handing the
        // task out again) must finish even if the caller goes away (a worker killed mid-call
        // drops this future), or the result would be committed with nobody woken.
        let inner = self.inner.clone();
        let finish = tokio::spawn(async move {
            // Folded into the instance's next turn if its actor takes it (one commit per step;
            // a crash before that commit re-runs the activity, as at-least-once allows).
            match inner.fold(result).await {
                None => Ok(()),
                Some(result) => fold::record_durably(&inner, result).await,
            }
        });
        finish
            .await
            .unwrap_or_else(|e| Err(EngineError::Internal(format!("recording a result: {e}"))))
    }

    pub(crate) fn open_stream(&self, stateful: bool) -> crate::hub::StreamHandle<'_> {
        self.inner.hub.open_stream(stateful)
    }
}

/// Runs a client or worker call on a task of its own. Hyper drops a request's future when the
/// caller's connection closes (a worker killed just after sending its result): dropped between a
/// durable write and the wake-up that must follow it, the instance would wait for a wake-up that
/// never comes (and a result whose write failed would never be handed out again).
async fn to_completion<T, F>(call: F) -> Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>> + Send + 'static,
{
    tokio::spawn(call)
        .await
        .unwrap_or_else(|e| Err(EngineError::Internal(format!("engine call failed: {e}"))))
}

fn check_action_payloads(engine: &Engine, resp: &WorkflowResponse) -> Result<()> {
    use weft_proto::durabletask::workflow_action::WorkflowActionType as A;
    for a in &resp.actions {
        let payload = match &a.workflow_action_type {
            Some(A::ScheduleTask(t)) => t.input.as_deref(),
            Some(A::CreateChildWorkflow(c)) => c.input.as_deref(),
            Some(A::SendEvent(s)) => s.data.as_deref(),
            Some(A::CompleteWorkflow(c)) => c.result.as_deref(),
            Some(A::CreateDetachedWorkflow(d)) => d.input.as_deref(),
            _ => None,
        };
        engine.check_payload("workflow action payload", payload)?;
        if let Some(A::CompleteWorkflow(c)) = &a.workflow_action_type
            && let Some(f) = &c.failure_details
        {
            engine.check_payload_len("workflow failure details", f.encoded_len())?;
        }
    }
    Ok(())
}

/// Least time between two recovery scans: requests meanwhile are served by one scan.
const RESYNC_GAP: Duration = Duration::from_secs(1);

/// Runs a recovery scan whenever asked (at most one per [`RESYNC_GAP`]), retrying with backoff
/// until the store answers.
async fn resync_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = inner.resync_needed.notified() => {}
        }
        let mut wait = Duration::from_millis(200);
        while let Err(e) = inner.resync().await {
            tracing::warn!(error = %e, retry_in = ?wait, "recovery scan failed");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        metrics::counter!("weft_recovery_scans_total").increment(1);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESYNC_GAP) => {}
        }
    }
}

/// Hands turns that a stream found too large for its worker back to their actors (to stall).
async fn oversize_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<crate::hub::Oversize>) {
    while let Some(o) = rx.recv().await {
        inner.send(
            &o.instance_id,
            ActorMsg::Oversize {
                size: o.size,
                limit: o.limit,
            },
        );
    }
}

/// Turns change hints from other processes sharing the store (PostgreSQL NOTIFY) into wakeups.
async fn follow_store(
    inner: Arc<Inner>,
    mut rx: broadcast::Receiver<Wakeup>,
    shutdown: CancellationToken,
) {
    loop {
        let hint = tokio::select! {
            _ = shutdown.cancelled() => return,
            h = rx.recv() => h,
        };
        match hint {
            Ok(Wakeup::Inbox(id)) => inner.wake(&id),
            Ok(Wakeup::Instance(id)) => inner.changed(&id),
            Ok(Wakeup::Reminders) => inner.timers_changed.notify_one(),
            Ok(Wakeup::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                // Hints were missed: poll everything once, as at start-up.
                inner.timers_changed.notify_one();
                if let Ok(ids) = inner.store.instances_with_inbox(&inner.scope()).await {
                    for id in ids {
                        inner.wake(&id);
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// When a worker connects, stalled instances get another chance with it.
async fn stalled_retry_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut connected = inner.hub.connected();
    let mut last = *connected.borrow();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = connected.changed() => if r.is_err() { return },
        }
        let n = *connected.borrow();
        if n > last {
            inner.retry_stalled(&inner.scope()).await;
        }
        last = n;
    }
}
