//! The worker hub: a queue of work items shared by every connected `GetWorkItems` stream, and the
//! record of which stream holds which item, so items on a stream that dies go back to the queue.

mod limits;
mod queue;
mod stream;
mod transit;
mod warm;

use crate::telemetry::workflow::{Stage, stage};
use limits::Limits;
use queue::JobQueue;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
pub use stream::StreamHandle;
use tokio::sync::{Notify, mpsc, watch};
pub(crate) use transit::Absorb;
use transit::Transit;
pub(crate) use transit::task_key as transit_key;
use warm::Warm;
use weft_proto::durabletask::{ActivityRequest, HistoryEvent, WorkflowRequest};

/// Whether work may be handed out now (see [`Hub::set_dispatch_gate`]).
pub(crate) type DispatchGate = Box<dyn Fn() -> bool + Send + Sync>;

/// How often a stream looks at a closed dispatch gate again.
const GATE_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// A workflow turn waiting for or held by a worker. The past events are the actor's cached
/// history, shared rather than copied: queue, in-flight record and actor hold one `Vec`, and
/// only the stream copies what it actually sends (the delta, for a warm stateful worker).
#[derive(Debug, Clone, Default)]
pub struct WorkflowTurn {
    pub instance_id: String,
    pub past_events: Arc<Vec<HistoryEvent>>,
    pub new_events: Vec<HistoryEvent>,
    /// What the instance inherited from its parent (`propagation=`), sent with every turn.
    pub propagated: Option<Arc<weft_proto::durabletask::PropagatedHistory>>,
}

impl From<WorkflowRequest> for WorkflowTurn {
    fn from(r: WorkflowRequest) -> Self {
        Self {
            instance_id: r.instance_id,
            past_events: Arc::new(r.past_events),
            new_events: r.new_events,
            propagated: r.propagated_history.map(Arc::new),
        }
    }
}

/// A unit of work for a worker.
// Jobs are moved, not copied in bulk; boxing the activity request would add an allocation per
// activity to save a few bytes per queue slot.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Job {
    Workflow(WorkflowTurn),
    Activity {
        generation: i64,
        /// The task's claim this dispatch is made under (`ActivityTask::claim`): its result is
        /// recorded only while the task still has it.
        claim: i64,
        request: ActivityRequest,
    },
}

impl Job {
    pub(crate) fn key(&self) -> Key {
        match self {
            Job::Workflow(r) => Key::Workflow(r.instance_id.clone()),
            Job::Activity { request, .. } => Key::Activity(
                request
                    .workflow_instance
                    .as_ref()
                    .map(|w| w.instance_id.clone())
                    .unwrap_or_default(),
                request.task_id,
            ),
        }
    }

    pub(crate) fn generation(&self) -> Option<i64> {
        match self {
            Job::Workflow(_) => None,
            Job::Activity { generation, .. } => Some(*generation),
        }
    }

    /// Moves an activity to a newer claim of the same task (no-op for workflow turns).
    fn adopt_claim(&mut self, newer: &Job) {
        if let (Job::Activity { claim, .. }, Job::Activity { claim: c, .. }) = (self, newer) {
            *claim = (*claim).max(*c);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Workflow(String),
    Activity(String, i32),
}

impl Key {
    pub(crate) fn instance(&self) -> &str {
        match self {
            Key::Workflow(i) | Key::Activity(i, _) => i,
        }
    }
}

/// A dispatched job: the stream holding it and the completion token sent with it.
struct InFlight {
    stream: u64,
    job: Job,
    token: String,
    /// When a worker took it (`weft_worker_round_trip_seconds`, activity execution latency).
    since: std::time::Instant,
}

/// An activity's in-flight record, taken when its worker answered.
#[derive(Debug)]
pub struct TakenActivity {
    pub generation: i64,
    pub claim: i64,
    pub request: ActivityRequest,
    /// From dispatch to the answer.
    pub held_for: std::time::Duration,
}

/// A workflow turn too large for the worker whose stream took it (reported to the engine, which
/// stalls the instance).
#[derive(Debug)]
pub struct Oversize {
    pub instance_id: String,
    pub size: usize,
    pub limit: usize,
}

#[derive(Default)]
struct State {
    /// Positions for the queues: `back` grows for new items, `front` shrinks for items given
    /// back by a dead stream (they go first).
    back: i64,
    front: i64,
    workflows: JobQueue,
    activities: JobQueue,
    /// Dispatched and not yet completed: which stream holds it.
    inflight: HashMap<Key, InFlight>,
    /// Every key queued or in flight, by instance (for purge, finish and continue-as-new).
    by_instance: HashMap<String, HashSet<Key>>,
    warm: Warm,
    /// Concurrency limits: only admitted jobs are queued; the rest wait in the limiter.
    limits: Limits,
    /// Activity results taken and not yet recorded.
    transit: Transit,
}

impl State {
    fn queue(&mut self, key: &Key) -> &mut JobQueue {
        match key {
            Key::Workflow(_) => &mut self.workflows,
            Key::Activity(..) => &mut self.activities,
        }
    }

    fn enqueue(&mut self, key: Key, job: Job, front: bool) {
        let pos = if front {
            self.front -= 1;
            self.front
        } else {
            self.back += 1;
            self.back
        };
        self.by_instance
            .entry(key.instance().to_string())
            .or_default()
            .insert(key.clone());
        self.queue(&key).put(pos, key, job);
    }

    fn dequeue(&mut self, key: &Key) -> Option<Job> {
        let job = self.queue(key).remove(key)?;
        self.unindex(key);
        Some(job)
    }

    fn drop_inflight(&mut self, key: &Key) -> Option<InFlight> {
        let f = self.inflight.remove(key)?;
        self.unindex(key);
        Some(f)
    }

    /// Forgets `key` in the instance index unless it is still queued or in flight.
    fn unindex(&mut self, key: &Key) {
        if self.queue(key).get(key).is_some() || self.inflight.contains_key(key) {
            return;
        }
        if let Some(keys) = self.by_instance.get_mut(key.instance()) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_instance.remove(key.instance());
            }
        }
    }

    /// The oldest queued job of either kind.
    fn pop(&mut self) -> Option<(Key, Job)> {
        let q = match (self.workflows.head(), self.activities.head()) {
            (Some(w), Some(a)) if a < w => &mut self.activities,
            (Some(_), _) => &mut self.workflows,
            (None, Some(_)) => &mut self.activities,
            (None, None) => return None,
        };
        q.pop()
    }

    fn queued(&self) -> usize {
        self.workflows.len() + self.activities.len()
    }

    /// Queues jobs the limiter let in after a slot freed.
    fn enqueue_admitted(&mut self, jobs: Vec<Job>) -> bool {
        self.limits.publish();
        let any = !jobs.is_empty();
        for job in jobs {
            self.enqueue(job.key(), job, false);
        }
        any
    }
}

/// Shared between the engine (which enqueues) and the gRPC streams (which take).
pub struct Hub {
    state: Mutex<State>,
    ready: Notify,
    next_stream: AtomicU64,
    next_token: AtomicU64,
    /// Per-process prefix of completion tokens, so a token from before a restart never matches.
    boot: String,
    /// Suffix of completion tokens naming this sidecar (`@host_id@internal_address`), so a
    /// completion that reaches another sidecar can be routed back here (see `route.rs`).
    origin: OnceLock<String>,
    /// Number of connected streams, observable (e.g. to retry stalled instances on connect).
    connected: watch::Sender<usize>,
    /// Draining for shutdown: nothing new is handed out; answers to what is out are taken.
    paused: AtomicBool,
    /// Whether this sidecar may hand out work at all (its ownership lease is valid), checked
    /// at the moment an item leaves the queue: see [`Hub::set_dispatch_gate`].
    gate: OnceLock<DispatchGate>,
    /// Number of dispatched, unanswered items (for the shutdown drain).
    inflight_count: watch::Sender<usize>,
    /// Largest work item a worker accepts, checked on what a stream actually sends.
    max_work_item: usize,
    oversize_tx: mpsc::UnboundedSender<Oversize>,
    oversize_rx: Mutex<Option<mpsc::UnboundedReceiver<Oversize>>>,
    /// Concurrency slots were asked for or freed (wakes the cluster-wide lease loop).
    pub(crate) slots_changed: Notify,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

impl Hub {
    pub fn new(max_work_item: usize) -> Self {
        Self::configured(max_work_item, &weft_config::WorkflowConfig::default())
    }

    /// A hub enforcing the concurrency limits of `cfg`.
    pub fn configured(max_work_item: usize, cfg: &weft_config::WorkflowConfig) -> Self {
        let (oversize_tx, rx) = mpsc::unbounded_channel();
        Self {
            state: Mutex::new(State {
                limits: Limits::new(cfg),
                ..Default::default()
            }),
            slots_changed: Notify::new(),
            ready: Notify::new(),
            next_stream: AtomicU64::new(1),
            next_token: AtomicU64::new(1),
            boot: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            origin: OnceLock::new(),
            connected: watch::channel(0).0,
            paused: AtomicBool::new(false),
            gate: OnceLock::new(),
            inflight_count: watch::channel(0).0,
            max_work_item,
            oversize_tx,
            oversize_rx: Mutex::new(Some(rx)),
        }
    }

    /// Reports of turns too large for the stream that took them; taken once, by the engine.
    pub fn oversize_reports(&self) -> Option<mpsc::UnboundedReceiver<Oversize>> {
        self.oversize_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Queues a job. An activity already queued or in flight for the same generation is not
    /// dispatched again (a recovery scan re-pushing it must not disturb the worker running it):
    /// it only takes the newer claim, so the running dispatch's result is still recorded. One
    /// of an older generation is superseded. A workflow turn replaces a queued copy in place,
    /// and an in-flight one (the actor gave that dispatch up, so its answer must be refused).
    pub fn push(&self, job: Job) {
        self.push_locked(self.lock(), job);
    }

    fn push_locked(&self, st: std::sync::MutexGuard<'_, State>, job: Job) {
        let key = job.key();
        {
            let mut st = st;
            let generation = job.generation();
            if let Some(f) = st.inflight.get_mut(&key) {
                if generation.is_some() && f.job.generation() == generation {
                    f.job.adopt_claim(&job);
                    return;
                }
                st.drop_inflight(&key);
            }
            if generation.is_some()
                && st.activities.get(&key).and_then(Job::generation) == generation
            {
                if let Some(queued) = st.activities.get_mut(&key) {
                    queued.adopt_claim(&job);
                }
                return;
            }
            // Over a concurrency limit the job waits in the limiter instead.
            let admitted = st.limits.admit(key.clone(), job);
            st.limits.publish();
            match admitted {
                Some(job) => {
                    st.enqueue(key, job, false);
                    self.count_inflight(&st);
                }
                None => {
                    drop(st);
                    self.slots_changed.notify_one();
                    return;
                }
            }
        }
        self.ready.notify_one();
    }

    /// After slots were freed: wake streams for admitted jobs, and the lease loop (so it gives
    /// back what no waiting work needs). The lease loop's own calls never notify it, or it
    /// would wake itself forever.
    fn after_release(&self, st: &State, admitted: bool) {
        if admitted {
            self.ready.notify_one();
        }
        if st.limits.has_cluster_wide() {
            self.slots_changed.notify_one();
        }
    }

    /// Runs `f` on the limiter under the hub lock and queues whatever it admits (lease changes).
    pub(crate) fn limiter<T>(&self, f: impl FnOnce(&mut Limits) -> (T, Vec<Job>)) -> T {
        let mut st = self.lock();
        let (out, jobs) = f(&mut st.limits);
        if st.enqueue_admitted(jobs) {
            self.ready.notify_one();
        }
        out
    }

    pub(crate) fn has_cluster_wide_limits(&self) -> bool {
        self.lock().limits.has_cluster_wide()
    }

    /// Instances with work waiting for a concurrency slot.
    pub fn waiting_for_slot(&self) -> HashSet<String> {
        self.lock().limits.waiting_instances()
    }

    /// Removes the in-flight record a completion answers. A worker that echoes the completion
    /// token (the Python SDKs do) must echo the one of the current dispatch: a late answer to
    /// an earlier dispatch of the same key (re-dispatched after its stream died) is refused and
    /// leaves the record alone. Workers without tokens (JS) are matched by key, as daprd does.
    fn take_inflight(&self, key: Key, token: &str) -> Option<(Job, std::time::Duration)> {
        let mut st = self.lock();
        let taken = match st.inflight.get(&key) {
            Some(f) if token.is_empty() || f.token == token => {
                let job = st.drop_inflight(&key).map(|f| (f.job, f.since.elapsed()));
                if let (Key::Activity(id, task), Some((Job::Activity { generation, .. }, _))) =
                    (&key, &job)
                {
                    st.transit.begin((id.clone(), *task, *generation));
                }
                let freed = st.limits.release(&key);
                let admitted = st.enqueue_admitted(freed);
                self.after_release(&st, admitted);
                job
            }
            _ => None,
        };
        self.count_inflight(&st);
        if let Some((job, held)) = &taken {
            let kind = match job {
                Job::Workflow(_) => "workflow",
                Job::Activity { .. } => "activity",
            };
            stage(Stage::WorkerRoundTrip, Some(kind), *held);
        }
        taken
    }

    fn count_inflight(&self, st: &State) {
        let n = st.inflight.len();
        self.inflight_count
            .send_if_modified(|c| std::mem::replace(c, n) != n);
    }

    /// Stops handing out work (shutdown drain); queued items stay queued.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Hands out work again after [`Hub::pause`] (tests hold turns in the queue with it).
    #[cfg(test)]
    pub(crate) fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.ready.notify_waiters();
    }

    /// Number of dispatched, unanswered items, observable.
    pub fn inflight(&self) -> watch::Receiver<usize> {
        self.inflight_count.subscribe()
    }

    /// Drops queued (not yet dispatched) items of instances `moved` says are no longer ours, and
    /// those waiting for a concurrency slot; their new owner dispatches them again from the
    /// store. Items a worker is running stay (their answers are still recorded here), and so do
    /// their slots: only the slots of withdrawn items are freed.
    pub fn withdraw_queued(&self, moved: impl Fn(&str) -> bool) {
        let mut st = self.lock();
        let keys: Vec<Key> = st
            .by_instance
            .iter()
            .filter(|(instance, _)| moved(instance))
            .flat_map(|(_, keys)| keys.iter().cloned())
            .collect();
        // Parked first, so the slots freed below admit no job of a moved instance.
        st.limits.withdraw_parked(&moved);
        let mut freed = Vec::new();
        for key in &keys {
            if st.dequeue(key).is_some() {
                freed.extend(st.limits.release(key));
            }
        }
        let admitted = st.enqueue_admitted(freed);
        self.after_release(&st, admitted);
    }

    /// Whether a worker holds any dispatched item of an instance `which` selects.
    pub fn holds_any(&self, which: impl Fn(&str) -> bool) -> bool {
        self.lock().inflight.keys().any(|k| which(k.instance()))
    }

    /// Whether a worker holds this instance's turn now.
    pub fn workflow_in_flight(&self, instance_id: &str) -> bool {
        self.lock()
            .inflight
            .contains_key(&Key::Workflow(instance_id.to_string()))
    }

    /// Forgets an in-flight workflow turn (its actor gave up on it at hand-off): a late answer
    /// finds nothing.
    pub fn forget_workflow(&self, instance_id: &str) {
        let mut st = self.lock();
        let key = Key::Workflow(instance_id.to_string());
        st.drop_inflight(&key);
        let freed = st.limits.release(&key);
        let admitted = st.enqueue_admitted(freed);
        self.after_release(&st, admitted);
        self.count_inflight(&st);
    }

    /// Removes a workflow turn's in-flight record; `None` if no such turn is pending.
    pub fn take_workflow(&self, instance_id: &str, token: &str) -> Option<WorkflowTurn> {
        match self.take_inflight(Key::Workflow(instance_id.to_string()), token) {
            Some((Job::Workflow(r), _)) => Some(r),
            _ => None,
        }
    }

    /// Removes an activity's in-flight record.
    pub fn take_activity(
        &self,
        instance_id: &str,
        task_id: i32,
        token: &str,
    ) -> Option<TakenActivity> {
        match self.take_inflight(Key::Activity(instance_id.to_string(), task_id), token) {
            Some((
                Job::Activity {
                    generation,
                    claim,
                    request,
                },
                held_for,
            )) => Some(TakenActivity {
                generation,
                claim,
                request,
                held_for,
            }),
            _ => None,
        }
    }

    /// Sets the token suffix naming this sidecar (once, before workers connect).
    /// Installs the check every hand-out makes first (the ownership lease's local validity).
    /// A process that was paused (SIGSTOP, a stall) wakes with its streams ready to send what
    /// was queued before the pause; the lease loop may notice the lapse only later, so the
    /// stream itself must not hand out an item while the lease is not valid.
    pub(crate) fn set_dispatch_gate(&self, gate: DispatchGate) {
        let _ = self.gate.set(gate);
    }

    fn gate_open(&self) -> bool {
        self.gate.get().is_none_or(|g| g())
    }

    pub fn set_origin(&self, origin: String) {
        let _ = self.origin.set(origin);
    }

    /// Whether a workflow turn (`task_id` `None`) or an activity is in flight on this sidecar.
    pub fn holds(&self, instance_id: &str, task_id: Option<i32>) -> bool {
        let key = match task_id {
            None => Key::Workflow(instance_id.to_string()),
            Some(t) => Key::Activity(instance_id.to_string(), t),
        };
        self.lock().inflight.contains_key(&key)
    }

    /// A worker gives a work item back unanswered: it goes to the front of the queue for the
    /// next worker. False if no item with that token is in flight here.
    pub fn abandon(&self, token: &str) -> bool {
        let mut st = self.lock();
        let Some(key) = st
            .inflight
            .iter()
            .find(|(_, f)| f.token == token)
            .map(|(k, _)| k.clone())
        else {
            return false;
        };
        if let Some(f) = st.inflight.remove(&key) {
            st.enqueue(key, f.job, true);
        }
        self.count_inflight(&st);
        drop(st);
        self.ready.notify_one();
        true
    }

    /// Takes a workflow turn back if no worker has taken it yet (so it can be re-prepared
    /// with newer inbox events); false if it is in flight or unknown.
    pub fn withdraw_workflow(&self, instance_id: &str) -> bool {
        let key = Key::Workflow(instance_id.to_string());
        let mut st = self.lock();
        let was_queued = st.dequeue(&key).is_some();
        let (was_parked, freed) = st.limits.withdraw(&key, was_queued);
        let admitted = st.enqueue_admitted(freed);
        self.after_release(&st, admitted);
        was_queued || was_parked
    }

    /// Forgets everything queued or in flight for an instance (finished or purged).
    pub fn forget_instance(&self, instance_id: &str) {
        let mut st = self.lock();
        for key in st.by_instance.remove(instance_id).into_iter().flatten() {
            st.queue(&key).remove(&key);
            st.inflight.remove(&key);
        }
        st.warm.forget_instance(instance_id);
        let freed = st.limits.forget(instance_id);
        let admitted = st.enqueue_admitted(freed);
        self.after_release(&st, admitted);
        self.count_inflight(&st);
    }

    /// The instance's actor left memory (idle, or handed off): drops what only a live actor
    /// needs — stateful workers' history-cache counts (the next turn then carries the full
    /// history, which such a worker accepts in place of its cache) and a withdrawn turn's place
    /// under the limits. Work still queued or in flight (an activity outliving its actor) stays.
    pub(crate) fn actor_gone(&self, instance_id: &str) {
        let mut st = self.lock();
        st.warm.forget_instance(instance_id);
        st.limits
            .forget_returning(&Key::Workflow(instance_id.to_string()));
        crate::census::shrink_after_burst(&mut st.by_instance);
        crate::census::shrink_after_burst(&mut st.inflight);
    }

    /// Counts the per-instance records (the actor count is the engine's).
    pub(crate) fn census(&self, c: &mut crate::census::MemoryCensus) {
        let st = self.lock();
        c.hub_instances = st.by_instance.len();
        c.hub_in_flight = st.inflight.len();
        c.hub_queued = st.queued();
        c.warm_instances = st.warm.instances();
        c.limit_records = st.limits.records();
    }

    /// A new execution of the instance began (continue-as-new, or it was replaced): activities
    /// of older generations still queued are withdrawn, and no worker's history cache counts.
    pub fn new_execution(&self, instance_id: &str, generation: i64) {
        let mut st = self.lock();
        // Waiting work of older generations goes first, so slots freed below go to live work.
        st.limits.drop_stale(instance_id, generation);
        let mut freed = Vec::new();
        let stale: Vec<Key> = st
            .by_instance
            .get(instance_id)
            .into_iter()
            .flatten()
            .filter(|k| matches!(k, Key::Activity(..)))
            .cloned()
            .collect();
        for key in stale {
            if st
                .activities
                .get(&key)
                .and_then(Job::generation)
                .is_some_and(|g| g < generation)
            {
                st.dequeue(&key);
                freed.extend(st.limits.release(&key));
            }
        }
        st.warm.forget_instance(instance_id);
        let admitted = st.enqueue_admitted(freed);
        self.after_release(&st, admitted);
    }

    pub fn connected(&self) -> watch::Receiver<usize> {
        self.connected.subscribe()
    }

    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.lock().queued()
    }

    /// Registers a new stream; dropping the returned handle re-queues what it held.
    pub fn open_stream(&self, stateful_history: bool) -> StreamHandle<'_> {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        self.connected.send_modify(|n| *n += 1);
        metrics::gauge!("weft_connected_workers").increment(1.0);
        StreamHandle {
            hub: self,
            id,
            stateful_history,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps half-updated in a way that
        // matters more than losing the process, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn take(&self, stream: u64) -> (Job, String) {
        loop {
            let notified = self.ready.notified();
            let open = self.gate_open();
            if open && !self.paused.load(Ordering::SeqCst) {
                let mut st = self.lock();
                if let Some((key, job)) = st.pop() {
                    let n = self.next_token.fetch_add(1, Ordering::Relaxed);
                    let origin = self.origin.get().map_or("", String::as_str);
                    let token = format!("{}-{n}{origin}", self.boot);
                    st.inflight.insert(
                        key,
                        InFlight {
                            stream,
                            job: job.clone(),
                            token: token.clone(),
                            since: std::time::Instant::now(),
                        },
                    );
                    self.count_inflight(&st);
                    if st.queued() > 0 {
                        // Others may be waiting for the rest.
                        self.ready.notify_one();
                    }
                    return (job, token);
                }
            }
            if open {
                notified.await;
            } else {
                // Closed until the lease is renewed or its buckets are withdrawn; nothing
                // signals the former, so look again shortly.
                let _ = tokio::time::timeout(GATE_RECHECK, notified).await;
            }
        }
    }

    /// A stream could not send a turn (too large for it): drop its record and report it.
    fn refuse_oversize(&self, stream: u64, instance_id: &str, token: &str, size: usize) {
        {
            let mut st = self.lock();
            st.warm.forget(stream, instance_id);
            let key = Key::Workflow(instance_id.to_string());
            if st.inflight.get(&key).is_some_and(|f| f.token == token) {
                st.drop_inflight(&key);
                let freed = st.limits.release(&key);
                let admitted = st.enqueue_admitted(freed);
                self.after_release(&st, admitted);
            }
        }
        let _ = self.oversize_tx.send(Oversize {
            instance_id: instance_id.to_string(),
            size,
            limit: self.max_work_item,
        });
    }

    fn release_stream(&self, stream: u64) {
        let mut st = self.lock();
        let lost: Vec<Key> = st
            .inflight
            .iter()
            .filter(|(_, f)| f.stream == stream)
            .map(|(k, _)| k.clone())
            .collect();
        tracing::debug!(stream, requeued = lost.len(), "stream released");
        for k in lost {
            if let Some(f) = st.inflight.remove(&k) {
                st.enqueue(k, f.job, true);
            }
        }
        self.count_inflight(&st);
        st.warm.forget_stream(stream);
        drop(st);
        self.ready.notify_one();
        self.connected.send_modify(|n| *n = n.saturating_sub(1));
        metrics::gauge!("weft_connected_workers").decrement(1.0);
    }
}

#[cfg(test)]
mod tests;
