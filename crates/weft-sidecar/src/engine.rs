//! The engine: the client operations behind the gRPC and HTTP APIs, the registry of workflow
//! actors and recovery after a restart (worker answers: `worker_ops.rs`; loops: `loops.rs`).

use crate::actor::Actor;
use crate::cluster::Registry;
use crate::cluster::owned::OwnershipView;
use crate::commit::Committer;
use crate::directory::Directory;
use crate::error::{EngineError, Result};
use crate::hub::Hub;
use crate::mailbox::ActorMsg;
use crate::parts::{Parts, Settings};
use crate::telemetry::spans;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, broadcast, mpsc};
use weft_core::clock::{Clock, SystemClock};
use weft_core::history::{all_children, event};
use weft_core::ids::{self, validate_instance_id};
use weft_core::turn::new_instance;
use weft_core::{InstanceMeta, RuntimeStatus};
use weft_proto::durabletask::{
    EventRaisedEvent, ExecutionResumedEvent, ExecutionSuspendedEvent, ExecutionTerminatedEvent,
    HistoryEvent, history_event::EventType,
};
use weft_store::{
    CreateInstance, CreateOutcome, Fence, InstancePage, ListFilter, ReusePolicy, Store,
};

/// Default limit on one payload (input, output, event data, result): 4 MiB less 64 KiB, so a
/// work item carrying one such payload still fits the SDKs' default 4 MiB receive limit.
pub const DEFAULT_MAX_PAYLOAD: usize = 4 * 1024 * 1024 - 64 * 1024;

/// Largest work item sent to a worker: the SDKs' default gRPC receive limit (4 MiB). A workflow
/// whose turn would be larger stalls (`PAYLOAD_SIZE_EXCEEDED`) instead of crashing the stream.
pub const DEFAULT_MAX_WORK_ITEM: usize = 4 * 1024 * 1024;

/// Default of [`EngineConfig::fold_wait`]: far above a turn's round trip under load (tens of
/// milliseconds), and short enough that a worker which cannot run the turn while it waits
/// loses little before its result takes the durable path.
pub const DEFAULT_FOLD_WAIT: Duration = Duration::from_millis(250);

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
    /// instance's actor is in memory; off, every result is first recorded on its own. Either
    /// way the worker's `CompleteActivityTask` is answered once the result is durable.
    pub fold_activity_results: bool,
    /// How long a worker's `CompleteActivityTask` waits for the turn that folds its result to
    /// commit before the result is recorded on its own (and folding pauses for a while).
    pub fold_wait: Duration,
    /// Mutation checks only (the simulation's `fold_answer` mutation): answer a worker's
    /// `CompleteActivityTask` as soon as its result is held in memory, before the turn that
    /// folds it commits — the guard issue 19 added, removed. Never set it otherwise.
    #[doc(hidden)]
    pub unguarded_fold_answer: bool,
    /// Length of this sidecar's ownership lease in the store (with placement only): a sidecar
    /// that could not renew it stops acting as owner after 3/4 of it, and its buckets may be
    /// taken over once it ran out.
    pub lease_ttl: Duration,
    /// The wall clock history and due times are stamped with.
    pub clock: Arc<dyn Clock>,
    /// Who may schedule and manage this app's workflows and activities from other apps
    /// (`WorkflowAccessPolicy` documents; empty: everyone).
    pub access: Arc<weft_config::AccessPolicies>,
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
            fold_wait: DEFAULT_FOLD_WAIT,
            unguarded_fold_answer: false,
            lease_ttl: Duration::from_secs(4),
            clock: Arc::new(SystemClock),
            access: Arc::default(),
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
    /// The client's trace context: the root of the instance's spans when tracing is on.
    pub parent_trace: Option<weft_proto::durabletask::TraceContext>,
}

/// One actor's life; a panic (a bug) is contained to its instance.
async fn run_actor(
    parts: Arc<Parts>,
    id: String,
    rx: mpsc::UnboundedReceiver<ActorMsg>,
    fence: Option<Fence>,
) {
    // Every line the actor logs names its instance and app (JSON logs: in `spans`), and its
    // trace once the instance is loaded (`trace_id`, when it was started with a trace context).
    let span = tracing::info_span!(
        "actor",
        instance = %id,
        app_id = %parts.app_id(),
        trace_id = tracing::field::Empty
    );
    let run = std::panic::AssertUnwindSafe(tracing::Instrument::instrument(
        Actor::new(id.clone(), parts.clone(), rx, fence).run(),
        span,
    ));
    if futures::FutureExt::catch_unwind(run).await.is_err() {
        parts.actors.actor_panicked(&id);
    }
}

/// Cheap to clone; every API handler holds one.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Parts>,
}

impl Engine {
    /// An engine that owns every instance of its app (one sidecar, no placement).
    pub fn new(store: Arc<dyn Store>, cfg: EngineConfig) -> Self {
        let registry = Registry::local_only(&cfg.app_id);
        Self::with_registry(store, cfg, registry)
    }

    /// An engine that serves what `registry` says this sidecar owns.
    pub fn with_registry(store: Arc<dyn Store>, cfg: EngineConfig, registry: Registry) -> Self {
        let view = Arc::new(OwnershipView::new(&cfg.app_id, registry, cfg.lease_ttl));
        let hub = Arc::new(Hub::configured(cfg.max_work_item_bytes, &cfg.workflow));
        // No work leaves the hub while the ownership lease is not valid (docs/cluster.md).
        let lease = Arc::downgrade(&view);
        hub.set_dispatch_gate(Box::new(move || {
            lease.upgrade().is_none_or(|v| v.lease_valid())
        }));
        let resync_needed = Arc::new(Notify::new());
        let actors = Directory::new(
            view.clone(),
            hub.clone(),
            resync_needed.clone(),
            cfg.fold_activity_results,
        );
        let inner = Arc::new(Parts {
            committer: Committer::new(store.clone()),
            inboxes: crate::reads::InboxReader::new(store.clone()),
            store,
            clock: cfg.clock.clone(),
            hub,
            view,
            actors,
            settings: Settings {
                app_id: cfg.app_id,
                idle_timeout: cfg.idle_timeout,
                handoff_timeout: cfg.handoff_timeout,
                fold_wait: cfg.fold_wait,
                unguarded_fold_answer: cfg.unguarded_fold_answer,
                max_work_item: cfg.max_work_item_bytes,
                max_payload: cfg.max_payload_bytes,
                slot_lease: cfg.slot_lease,
                retention: cfg.workflow.state_retention_policy,
                access: cfg.access,
            },
            timers_changed: Notify::new(),
            resync_needed,
            remote_tasks: Notify::new(),
        });
        // Weak: the directory lives inside what the actors hold.
        let weak = Arc::downgrade(&inner);
        inner.actors.set_spawner(Box::new(move |id, rx, fence| {
            if let Some(parts) = weak.upgrade() {
                tokio::spawn(run_actor(parts, id, rx, fence));
            }
        }));
        Self { inner }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The ownership registry this engine follows.
    pub fn registry(&self) -> &Registry {
        &self.inner.view.registry
    }

    /// The app whose instances this engine runs.
    pub fn app_id(&self) -> &str {
        self.inner.app_id()
    }

    /// Number of connected worker streams, observable (membership registers actor types only
    /// while it is above zero).
    pub fn workers_connected(&self) -> tokio::sync::watch::Receiver<usize> {
        self.inner.hub.connected()
    }

    /// Number of actors in memory (idle ones are dropped after `idle_timeout`).
    pub fn actors_in_memory(&self) -> usize {
        self.inner.actors.len()
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

    /// Sets the cross-app backlog gauge from the store (at `/metrics` scrape time).
    pub async fn publish_cross_app_backlog(&self) {
        crate::remote::publish_backlog(&self.inner).await;
    }

    pub fn check_payload(&self, what: &str, value: Option<&str>) -> Result<()> {
        self.check_payload_len(what, value.map_or(0, str::len))
    }

    pub(crate) fn check_payload_len(&self, what: &str, len: usize) -> Result<()> {
        if len > self.inner.settings.max_payload {
            return Err(EngineError::PayloadTooLarge(format!(
                "{what} is {len} bytes; the limit is {} bytes",
                self.inner.settings.max_payload
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
        let now = self.inner.now();
        let exec = uuid::Uuid::new_v4().to_string();
        let span = spans::on()
            .then(|| {
                let (name, version) = (&req.name, req.version.as_deref());
                spans::start_create(name, version, &req.instance_id, req.parent_trace.as_ref())
            })
            .flatten();
        let (mut meta, mut start) = new_instance(
            &req.instance_id,
            &req.name,
            req.version,
            req.input,
            None,
            exec,
            self.inner.app_id(),
            now,
        );
        if let Some(span) = &span {
            span.stamp(&mut start);
        }
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
        if let Some(span) = span {
            span.end(outcome.as_ref().err().map(|e| e.to_string()));
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(e @ weft_store::StoreError::OutcomeUnknown(_)) => {
                // The row may have landed: a wake (or a timer re-check) lets its owner find it,
                // so a client retry answered ALREADY_EXISTS does not leave it PENDING forever.
                self.inner.actors.wake(&req.instance_id);
                self.inner.timers_changed.notify_one();
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        if outcome == CreateOutcome::Replaced {
            self.inner.actors.send(&req.instance_id, ActorMsg::Reload);
        }
        if outcome != CreateOutcome::Existing {
            self.inner.actors.changed(&req.instance_id);
            if scheduled {
                self.inner.timers_changed.notify_one();
            } else {
                self.inner.actors.wake(&req.instance_id);
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
        let mut rx = self.inner.actors.subscribe();
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
            inner.actors.wake(&id);
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
            self.inner.now(),
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
            self.inner.now(),
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
            self.inner.now(),
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
            self.inner.now(),
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
            let fence = self.inner.view.owner_fence(member).flatten();
            if self
                .inner
                .store
                .purge(member, force, fence.as_ref())
                .await?
            {
                count += 1;
                self.inner.hub.forget_instance(member);
                self.inner.actors.purged(member);
                self.inner.actors.changed(member);
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
        .unwrap_or_else(|e| Err(join_failure(e)))
}

/// A call's task that was cancelled died with the runtime (shutdown, a crash): the caller may
/// retry elsewhere or later, as with any call that failed before it was answered. A panic is a
/// bug and says so.
fn join_failure(e: tokio::task::JoinError) -> EngineError {
    if e.is_cancelled() {
        EngineError::Unavailable(format!("the engine stopped during the call: {e}"))
    } else {
        EngineError::Internal(format!("engine call failed: {e}"))
    }
}

#[cfg(test)]
mod join_tests {
    use super::*;

    #[tokio::test]
    async fn a_cancelled_call_is_unavailable_and_a_panic_internal() {
        let stuck = tokio::spawn(std::future::pending::<()>());
        stuck.abort();
        let cancelled = join_failure(stuck.await.unwrap_err());
        assert!(
            matches!(cancelled, EngineError::Unavailable(_)),
            "{cancelled:?}"
        );
        let panicked = join_failure(tokio::spawn(async { panic!("boom") }).await.unwrap_err());
        assert!(matches!(panicked, EngineError::Internal(_)), "{panicked:?}");
    }
}
