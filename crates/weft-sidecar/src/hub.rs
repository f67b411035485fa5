//! The worker hub: a queue of work items shared by every connected `GetWorkItems` stream, and the
//! record of which stream holds which item, so items on a stream that dies go back to the queue.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use tokio::sync::{Notify, mpsc, watch};
use weft_proto::durabletask::{
    ActivityRequest, CachedHistory, WorkItem, WorkflowRequest, work_item::Request,
};

/// A unit of work for a worker.
#[derive(Debug, Clone)]
pub enum Job {
    Workflow(WorkflowRequest),
    Activity {
        generation: i64,
        request: ActivityRequest,
    },
}

impl Job {
    fn key(&self) -> Key {
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
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Workflow(String),
    Activity(String, i32),
}

/// A dispatched job: the stream holding it and the completion token sent with it.
struct InFlight {
    stream: u64,
    job: Job,
    token: String,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Dispatched and not yet completed: which stream holds it.
    inflight: HashMap<Key, InFlight>,
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
    /// Number of dispatched, unanswered items (for the shutdown drain).
    inflight_count: watch::Sender<usize>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            ready: Notify::new(),
            next_stream: AtomicU64::new(1),
            next_token: AtomicU64::new(1),
            boot: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            origin: OnceLock::new(),
            connected: watch::channel(0).0,
            paused: AtomicBool::new(false),
            inflight_count: watch::channel(0).0,
        }
    }
}

impl Hub {
    pub fn push(&self, job: Job) {
        let key = job.key();
        {
            let mut st = self.lock();
            // One copy of a job at a time: a re-dispatch replaces a queued copy, and an
            // in-flight copy stays with its stream.
            if st.inflight.contains_key(&key) {
                st.inflight.remove(&key);
            }
            st.queue.retain(|j| j.key() != key);
            st.queue.push_back(job);
            self.count_inflight(&st);
        }
        self.ready.notify_one();
    }

    /// Removes the in-flight record a completion answers. A worker that echoes the completion
    /// token (the Python SDKs do) must echo the one of the current dispatch: a late answer to
    /// an earlier dispatch of the same key (re-dispatched after its stream died) is refused and
    /// leaves the record alone. Workers without tokens (JS) are matched by key, as daprd does.
    fn take_inflight(&self, key: Key, token: &str) -> Option<Job> {
        let mut st = self.lock();
        let taken = match st.inflight.get(&key) {
            Some(f) if token.is_empty() || f.token == token => {
                st.inflight.remove(&key).map(|f| f.job)
            }
            _ => None,
        };
        self.count_inflight(&st);
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

    /// Number of dispatched, unanswered items, observable.
    pub fn inflight(&self) -> watch::Receiver<usize> {
        self.inflight_count.subscribe()
    }

    /// Drops queued (not yet dispatched) items of instances `moved` says are no longer ours;
    /// their new owner dispatches them again from the store.
    pub fn withdraw_queued(&self, moved: impl Fn(&str) -> bool) {
        let mut st = self.lock();
        st.queue.retain(|j| match j.key() {
            Key::Workflow(i) | Key::Activity(i, _) => !moved(&i),
        });
    }

    /// Forgets an in-flight workflow turn (its actor gave up on it at hand-off): a late answer
    /// finds nothing.
    pub fn forget_workflow(&self, instance_id: &str) {
        let mut st = self.lock();
        st.inflight.remove(&Key::Workflow(instance_id.to_string()));
        self.count_inflight(&st);
    }

    /// Removes a workflow turn's in-flight record; `None` if no such turn is pending.
    pub fn take_workflow(&self, instance_id: &str, token: &str) -> Option<WorkflowRequest> {
        match self.take_inflight(Key::Workflow(instance_id.to_string()), token) {
            Some(Job::Workflow(r)) => Some(r),
            _ => None,
        }
    }

    /// Removes an activity's in-flight record, returning its generation and request.
    pub fn take_activity(
        &self,
        instance_id: &str,
        task_id: i32,
        token: &str,
    ) -> Option<(i64, ActivityRequest)> {
        match self.take_inflight(Key::Activity(instance_id.to_string(), task_id), token) {
            Some(Job::Activity {
                generation,
                request,
            }) => Some((generation, request)),
            _ => None,
        }
    }

    /// Sets the token suffix naming this sidecar (once, before workers connect).
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
            st.queue.push_front(f.job);
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
        let before = st.queue.len();
        st.queue.retain(|j| j.key() != key);
        st.queue.len() != before
    }

    /// Forgets everything queued or in flight for an instance (purge).
    pub fn forget_instance(&self, instance_id: &str) {
        let mut st = self.lock();
        let mine = |k: &Key| match k {
            Key::Workflow(i) | Key::Activity(i, _) => i == instance_id,
        };
        st.queue.retain(|j| !mine(&j.key()));
        st.inflight.retain(|k, _| !mine(k));
        self.count_inflight(&st);
    }

    pub fn connected(&self) -> watch::Receiver<usize> {
        self.connected.subscribe()
    }

    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
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
            warm: HashMap::new(),
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
            if !self.paused.load(Ordering::SeqCst) {
                let mut st = self.lock();
                if let Some(job) = st.queue.pop_front() {
                    let n = self.next_token.fetch_add(1, Ordering::Relaxed);
                    let origin = self.origin.get().map_or("", String::as_str);
                    let token = format!("{}-{n}{origin}", self.boot);
                    st.inflight.insert(
                        job.key(),
                        InFlight {
                            stream,
                            job: job.clone(),
                            token: token.clone(),
                        },
                    );
                    self.count_inflight(&st);
                    if !st.queue.is_empty() {
                        // Others may be waiting for the rest.
                        self.ready.notify_one();
                    }
                    return (job, token);
                }
            }
            notified.await;
        }
    }

    fn release_stream(&self, stream: u64) {
        let mut st = self.lock();
        let lost: Vec<Key> = st
            .inflight
            .iter()
            .filter(|(_, f)| f.stream == stream)
            .map(|(k, _)| k.clone())
            .collect();
        for k in lost.into_iter().rev() {
            if let Some(f) = st.inflight.remove(&k) {
                st.queue.push_front(f.job);
            }
        }
        self.count_inflight(&st);
        drop(st);
        self.ready.notify_one();
        self.connected.send_modify(|n| *n = n.saturating_sub(1));
        metrics::gauge!("weft_connected_workers").decrement(1.0);
    }
}

/// Most instances one stream remembers as cached by its worker.
const WARM_LIMIT: usize = 10_000;

/// One connected `GetWorkItems` stream.
pub struct StreamHandle<'a> {
    hub: &'a Hub,
    id: u64,
    stateful_history: bool,
    /// Stateful-history capability: how many past events this stream's worker has cached.
    warm: HashMap<String, usize>,
}

impl StreamHandle<'_> {
    /// Feeds work items into `tx` until the client goes away or `shutdown` fires.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<Result<WorkItem, tonic::Status>>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let (job, token) = tokio::select! {
                taken = self.hub.take(self.id) => taken,
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => {
                    let _ = tx.send(Err(tonic::Status::cancelled("shutting down"))).await;
                    return;
                }
            };
            let item = self.shape_for_worker(job, token);
            if tx.send(Ok(item)).await.is_err() {
                return;
            }
            metrics::counter!("weft_work_items_dispatched_total").increment(1);
        }
    }

    fn shape_for_worker(&mut self, job: Job, completion_token: String) -> WorkItem {
        let request = match job {
            Job::Workflow(mut r) => {
                if self.stateful_history {
                    let past = r.past_events.len();
                    if let Some(&n) = self.warm.get(&r.instance_id)
                        && n > 0
                        && n <= past
                    {
                        r.past_events.drain(..n);
                        r.cached_history = Some(CachedHistory {
                            event_count: n as i32,
                        });
                    }
                    if self.warm.len() >= WARM_LIMIT {
                        // Bounded: forgetting only costs a full history on the next turn.
                        self.warm.clear();
                    }
                    self.warm.insert(r.instance_id.clone(), past);
                }
                Request::WorkflowRequest(r)
            }
            Job::Activity { request, .. } => Request::ActivityRequest(request),
        };
        WorkItem {
            request: Some(request),
            completion_token,
        }
    }
}

impl Drop for StreamHandle<'_> {
    fn drop(&mut self) {
        self.hub.release_stream(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;
    use weft_proto::durabletask::HistoryEvent;

    fn wf(id: &str, past: usize) -> Job {
        Job::Workflow(WorkflowRequest {
            instance_id: id.into(),
            past_events: vec![HistoryEvent::default(); past],
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn dispatch_take_and_redeliver_on_disconnect() {
        let hub = std::sync::Arc::new(Hub::default());
        hub.push(wf("a", 0));
        let shutdown = CancellationToken::new();
        let (tx, mut rx) = mpsc::channel(4);
        let h = hub.clone();
        let sd = shutdown.clone();
        let t = tokio::spawn(async move { h.open_stream(false).run(tx, sd).await });
        let item = rx.recv().await.unwrap().unwrap();
        assert!(matches!(item.request, Some(Request::WorkflowRequest(_))));
        assert_eq!(hub.queued(), 0);
        drop(rx); // the worker goes away without completing
        t.await.unwrap();
        assert_eq!(hub.queued(), 1, "the unanswered turn is queued again");
        assert!(hub.take_workflow("a", "").is_none());
        assert_eq!(*hub.connected().borrow(), 0);
    }

    #[tokio::test]
    async fn a_late_answer_to_an_earlier_dispatch_is_refused() {
        let hub = Hub::default();
        hub.push(wf("a", 0));
        let (_, first) = hub.take(1).await;
        hub.release_stream(1); // the first worker died: the turn is queued again
        let (_, second) = hub.take(2).await;
        assert_ne!(first, second);
        assert!(
            hub.take_workflow("a", &first).is_none(),
            "stale token refused"
        );
        assert!(
            hub.take_workflow("a", &second).is_some(),
            "the record was left for the current dispatch"
        );
        hub.push(wf("b", 0));
        hub.take(3).await;
        assert!(
            hub.take_workflow("b", "").is_some(),
            "workers without tokens match by key"
        );
    }

    #[tokio::test]
    async fn stateful_streams_send_deltas() {
        let hub = Hub::default();
        let mut s = hub.open_stream(true);
        let first = s.shape_for_worker(wf("a", 3), String::new());
        let second = s.shape_for_worker(wf("a", 5), String::new());
        let Some(Request::WorkflowRequest(r1)) = first.request else {
            panic!()
        };
        let Some(Request::WorkflowRequest(r2)) = second.request else {
            panic!()
        };
        assert_eq!(r1.past_events.len(), 3);
        assert!(r1.cached_history.is_none());
        assert_eq!(r2.past_events.len(), 2);
        assert_eq!(r2.cached_history.unwrap().event_count, 3);
        // After continue-as-new the history is shorter than the cache: full send.
        let third = s.shape_for_worker(wf("a", 1), String::new());
        let Some(Request::WorkflowRequest(r3)) = third.request else {
            panic!()
        };
        assert_eq!(r3.past_events.len(), 1);
        let mut plain = hub.open_stream(false);
        let Some(Request::WorkflowRequest(r)) =
            plain.shape_for_worker(wf("a", 5), String::new()).request
        else {
            panic!()
        };
        assert!(r.cached_history.is_none() && r.past_events.len() == 5);
    }
}
