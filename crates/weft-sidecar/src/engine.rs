//! The engine: the client operations behind the gRPC and HTTP APIs, the registry of workflow
//! actors and recovery after a restart (worker answers: `worker_ops.rs`; loops: `loops.rs`).

use crate::actor::{Actor, ActorMsg, now};
use crate::cluster::lease::Lease;
use crate::cluster::ownership::{Owned, ownership_loop};
use crate::cluster::{ActorKind, Registry};
use crate::commit::Committer;
use crate::error::{EngineError, Result};
use crate::fold::ActivityResult;
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
    ActivityRequest, EventRaisedEvent, ExecutionResumedEvent, ExecutionSuspendedEvent,
    ExecutionTerminatedEvent, HistoryEvent, history_event::EventType,
};
use weft_store::{
    CreateInstance, CreateOutcome, Fence, InstancePage, ListFilter, ReusePolicy, Scope, Store,
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
    /// Length of this sidecar's ownership lease in the store (with placement only): a sidecar
    /// that could not renew it stops acting as owner after 3/4 of it, and its buckets may be
    /// taken over once it ran out.
    pub lease_ttl: Duration,
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
            lease_ttl: Duration::from_secs(4),
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
    /// The buckets this engine serves now (follows the registry and the lease, see
    /// `cluster::ownership`).
    owned: RwLock<Arc<Owned>>,
    /// This sidecar's ownership lease (with placement only; without, it owns all unfenced).
    pub(crate) lease: Option<Lease>,
    /// Serialises taking and releasing bucket leases with the changes of `owned`.
    pub(crate) lease_ops: tokio::sync::Mutex<()>,
    /// When each bucket's tasks were last claimed again after a refused result (rate limit).
    reclaimed: Mutex<HashMap<i32, tokio::time::Instant>>,
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
        let Some(fence) = self.owner_fence(id) else {
            tracing::debug!(instance = %id, "not owned here: not activated");
            return;
        };
        tracing::debug!(instance = %id, "activating");
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(msg);
        actors.insert(id.to_string(), tx);
        let (inner, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            let run = std::panic::AssertUnwindSafe(
                Actor::new(id.clone(), inner.clone(), rx, fence).run(),
            );
            if futures::FutureExt::catch_unwind(run).await.is_err() {
                inner.actor_panicked(&id);
            }
        });
    }

    /// An actor panicked (a bug): what it held in memory — results folded into a turn not yet
    /// committed, the turn itself — is gone, so recover as after a restart: a recovery scan claims
    /// and dispatches the pending activities again, and a fresh actor reloads the instance.
    fn actor_panicked(self: &Arc<Self>, id: &str) {
        tracing::error!(instance = %id, "workflow actor panicked; recovering the instance from the store");
        metrics::counter!("weft_actor_panics_total").increment(1);
        {
            let mut actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
            // Only the entry of the dead actor (its mailbox is closed); a fresh one may exist.
            if actors.get(id).is_some_and(|tx| tx.is_closed()) {
                self.forget_actor(&mut actors, id);
            }
        }
        self.resync_needed.notify_one();
        self.wake(id);
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

    /// Whether this sidecar may act as owner now (always, without placement).
    pub(crate) fn lease_valid(&self) -> bool {
        self.lease.as_ref().is_none_or(Lease::valid)
    }

    /// The fence an owner write to `id` carries: `None` if it is not served here (the write
    /// must not happen), `Some(None)` without leases, `Some(Some(fence))` otherwise.
    pub(crate) fn owner_fence(&self, id: &str) -> Option<Option<Fence>> {
        self.owned().fence(id)
    }

    /// Whether a bucket's tasks may be claimed again after a refused result: at most once a
    /// second per bucket, so two views of a bucket can never make claims bounce.
    pub(crate) fn may_reclaim(&self, bucket: i32) -> bool {
        let mut last = self.reclaimed.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        if last
            .get(&bucket)
            .is_some_and(|t| now < *t + Duration::from_secs(1))
        {
            return false;
        }
        if last.len() > 4096 {
            last.clear();
        }
        last.insert(bucket, now);
        true
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
        // Without placement everything is ours, unfenced; with it, nothing until leases are
        // granted (`cluster::ownership`).
        let (owned, lease) = if registry.is_local_only() {
            let all = registry.owned_buckets(&cfg.app_id, ActorKind::Workflow);
            (Owned::new(&cfg.app_id, &all), None)
        } else {
            (
                Owned::leased(&cfg.app_id, "", &[]),
                Some(Lease::new(cfg.lease_ttl)),
            )
        };
        Self {
            inner: Arc::new(Inner {
                committer: Committer::new(store.clone()),
                store,
                hub: Hub::configured(cfg.max_work_item_bytes, &cfg.workflow),
                registry,
                owned: RwLock::new(Arc::new(owned)),
                lease,
                lease_ops: Default::default(),
                reclaimed: Mutex::default(),
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

    /// Ends this sidecar's ownership lease (clean shutdown, after the drain): it acts as owner
    /// no more, and every bucket it held is free for the next owner at once.
    pub async fn end_lease(&self) {
        if let Some(lease) = &self.inner.lease {
            lease.end(self.inner.store.as_ref()).await;
        }
    }

    /// Re-activates unfinished work after a restart and starts the background loops.
    pub async fn start(&self, shutdown: CancellationToken) -> Result<()> {
        let store = &self.inner.store;
        self.inner.resync().await?;
        if let Some(rx) = store.subscribe() {
            tokio::spawn(crate::loops::follow_store(
                self.inner.clone(),
                rx,
                shutdown.clone(),
            ));
        }
        tokio::spawn(crate::timers::timer_loop(
            self.inner.clone(),
            shutdown.clone(),
        ));
        if let Some(rx) = self.inner.hub.oversize_reports() {
            tokio::spawn(crate::loops::oversize_loop(self.inner.clone(), rx));
        }
        tokio::spawn(crate::loops::resync_loop(
            self.inner.clone(),
            shutdown.clone(),
        ));
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
        tokio::spawn(crate::loops::stalled_retry_loop(
            self.inner.clone(),
            shutdown,
        ));
        Ok(())
    }

    pub fn check_payload(&self, what: &str, value: Option<&str>) -> Result<()> {
        self.check_payload_len(what, value.map_or(0, str::len))
    }

    pub(crate) fn check_payload_len(&self, what: &str, len: usize) -> Result<()> {
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
            // Fenced when this sidecar serves the member (a child elsewhere is its owner's
            // instance: the store's row lock orders this delete with that owner's writes).
            let fence = self.inner.owner_fence(member).flatten();
            if self
                .inner
                .store
                .purge(member, force, fence.as_ref())
                .await?
            {
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
}

/// Runs a client or worker call on a task of its own. Hyper drops a request's future when the
/// caller's connection closes (a worker killed just after sending its result): dropped between a
/// durable write and the wake-up that must follow it, the instance would wait for a wake-up that
/// never comes (and a result whose write failed would never be handed out again).
pub(crate) async fn to_completion<T, F>(call: F) -> Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>> + Send + 'static,
{
    tokio::spawn(call)
        .await
        .unwrap_or_else(|e| Err(EngineError::Internal(format!("engine call failed: {e}"))))
}
