//! The simulated worker: a few `GetWorkItems` streams answered by the replaying SDK
//! ([`crate::sdk`]). A stream may announce the stateful-history capability (and keep the
//! history it has seen) and may or may not echo completion tokens. Per work item, a hash of the
//! seed and the item decides whether the worker misbehaves: it dies holding the item (its
//! stream drops, the item goes back to the queue), answers late, answers on another stream's
//! connection, or answers twice. It also remembers every activity whose result the engine
//! acknowledged (`CompleteActivityTask` answered OK): one dispatched again is a violation.

use crate::program::{ACTIVITY_NAME, activity_result};
use crate::rng::hash;
use crate::sdk;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use weft_proto::durabletask::task_hub_sidecar_service_client::TaskHubSidecarServiceClient as Client;
use weft_proto::durabletask::{
    ActivityRequest, ActivityResponse, GetWorkItemsRequest, HistoryEvent, WorkItem,
    WorkerCapability, WorkflowRequest, WorkflowResponse, work_item::Request,
};

/// What the worker saw, shared with the checks at the end of a run.
#[derive(Default)]
pub struct Observed {
    /// (instance, execution) → the longest history (past + new events) a work item carried.
    histories: Mutex<HashMap<(String, String), Vec<HistoryEvent>>>,
    violations: Mutex<Vec<String>>,
    deliveries: Mutex<HashMap<String, u32>>,
    /// Activities whose `CompleteActivityTask` answered OK: never to be dispatched again.
    acknowledged: Mutex<HashSet<TaskKey>>,
    /// Raised at the first activity dispatched again after its result was acknowledged.
    redispatched: tokio::sync::Notify,
    redispatch_seen: std::sync::atomic::AtomicBool,
    pub misbehaviour: Mutex<Misbehaviour>,
}

/// One activity across all its dispatches: (instance ID, execution ID, task ID). An ID reused
/// (purge and re-create, continue-as-new) starts a new execution; a retry gets a new task ID.
pub type TaskKey = (String, String, i32);

/// Counts of the worker's misbehaviour in a run.
#[derive(Debug, Default, Clone)]
pub struct Misbehaviour {
    pub items: u64,
    pub died: u64,
    pub late: u64,
    pub other_stream: u64,
    pub twice: u64,
    /// Activity results the engine acknowledged (`CompleteActivityTask` answered OK).
    pub acknowledged: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Observed {
    pub fn violation(&self, v: String) {
        let mut vs = lock(&self.violations);
        if !vs.contains(&v) {
            vs.push(v);
        }
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.violations).clone()
    }

    /// Every execution's longest observed history: `(instance, execution, events)`.
    pub fn histories(&self) -> Vec<(String, String, Vec<HistoryEvent>)> {
        let mut v: Vec<_> = lock(&self.histories)
            .iter()
            .map(|((i, e), h)| (i.clone(), e.clone(), h.clone()))
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    fn record(&self, instance: &str, execution: Option<String>, events: Vec<HistoryEvent>) {
        let Some(exec) = execution else { return };
        let mut h = lock(&self.histories);
        let slot = h.entry((instance.to_string(), exec)).or_default();
        if events.len() >= slot.len() {
            *slot = events;
        }
    }

    /// The engine answered OK to this activity's result: it is recorded, for good.
    fn acknowledge(&self, key: TaskKey) {
        lock(&self.misbehaviour).acknowledged += 1;
        lock(&self.acknowledged).insert(key);
    }

    /// An activity was dispatched: a violation if its result was acknowledged before.
    fn dispatched(&self, key: &TaskKey) {
        if !lock(&self.acknowledged).contains(key) {
            return;
        }
        let (instance, execution, task) = key;
        self.violation(format!(
            "{instance}: activity {task} of execution {execution} re-dispatched after its result \
             was acknowledged"
        ));
        self.redispatch_seen
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.redispatched.notify_waiters();
    }

    /// Waits for the first activity dispatched again after its result was acknowledged.
    pub async fn first_redispatch(&self) {
        loop {
            let seen = self.redispatched.notified();
            if self
                .redispatch_seen
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return;
            }
            seen.await;
        }
    }

    fn delivery(&self, key: &str) -> u32 {
        let mut d = lock(&self.deliveries);
        let n = d.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n
    }
}

#[derive(Debug, Clone, Copy)]
pub struct WorkerOpts {
    pub seed: u64,
    pub streams: usize,
    pub misbehave: bool,
    /// Whether streams may announce the stateful-history capability.
    pub stateful: bool,
    /// Like durabletask-dapr 0.17.4 after a retry policy gave up, sometimes number the
    /// completion action with the ID of an earlier timer (valid: daprd accepts it).
    pub completion_reuses_timer_id: bool,
    /// Token-less streams may answer after their stream ended or on another connection
    /// (off until N3 is fixed: a token-less worker's connection dies with its stream).
    pub tokenless_stale: bool,
}

/// How one stream behaves, drawn from the seed per stream slot.
#[derive(Debug, Clone, Copy)]
struct StreamKind {
    /// Announces the stateful-history capability (dapr 1.19): workflow items then carry only
    /// the history this stream has not seen, and the worker keeps the rest.
    stateful: bool,
    /// Echoes completion tokens (the Python SDKs); a token-less worker (JS) is matched by key.
    tokens: bool,
}

impl StreamKind {
    fn of(opts: &WorkerOpts, slot: usize) -> Self {
        let h = hash(opts.seed, &["stream", &slot.to_string()]);
        Self {
            stateful: opts.stateful && h % 100 < 50,
            tokens: (h >> 8) % 100 >= 25,
        }
    }
}

/// A stateful stream's cache: instance → the full past events of its last work item.
type Cache = Arc<Mutex<HashMap<String, Vec<HistoryEvent>>>>;

type Clients = Arc<Mutex<Vec<Option<Client<Channel>>>>>;

/// Starts the worker's streams; they follow the engine across restarts until `stop`.
pub fn spawn(
    opts: WorkerOpts,
    addr: watch::Receiver<Option<String>>,
    obs: Arc<Observed>,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let clients: Clients = Arc::new(Mutex::new(vec![None; opts.streams.max(1)]));
    (0..opts.streams.max(1))
        .map(|slot| {
            tokio::spawn(stream_slot(
                slot,
                opts,
                addr.clone(),
                clients.clone(),
                obs.clone(),
                stop.clone(),
            ))
        })
        .collect()
}

pub async fn connect(url: &str) -> Option<Client<Channel>> {
    let ep = Endpoint::from_shared(url.to_string())
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    ep.connect().await.ok().map(Client::new)
}

async fn pause(stop: &CancellationToken, ms: u64) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
    }
}

async fn stream_slot(
    slot: usize,
    opts: WorkerOpts,
    mut addr: watch::Receiver<Option<String>>,
    clients: Clients,
    obs: Arc<Observed>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let url = addr.borrow_and_update().clone();
        let Some(url) = url else {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = addr.changed() => if r.is_err() { return },
            }
            continue;
        };
        let Some(mut client) = connect(&url).await else {
            pause(&stop, 20).await;
            continue;
        };
        lock(&clients)[slot] = Some(client.clone());
        let kind = StreamKind::of(&opts, slot);
        let req = GetWorkItemsRequest {
            capabilities: if kind.stateful {
                vec![WorkerCapability::StatefulHistory as i32]
            } else {
                vec![]
            },
            ..Default::default()
        };
        // A new stream starts cold: the engine keeps what each stream has seen per stream.
        let cache: Cache = Arc::default();
        // Bounded: a connection to an engine that died mid-handshake must not hang the stream.
        let opened = tokio::time::timeout(Duration::from_secs(5), client.get_work_items(req)).await;
        let mut stream = match opened {
            Ok(Ok(s)) => s.into_inner(),
            _ => {
                pause(&stop, 20).await;
                continue;
            }
        };
        let die = CancellationToken::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = addr.changed() => if r.is_err() { return } else { break },
                _ = die.cancelled() => break,
                m = stream.message() => match m {
                    Ok(Some(item)) => {
                        tokio::spawn(handle(item, slot, kind, opts, clients.clone(), cache.clone(), obs.clone(), die.clone()));
                    }
                    _ => break,
                },
            }
        }
        // A token-less worker (unless N3's feature is on) never answers past its stream's end:
        // after an engine restart `clients[slot]` is a new connection, and such an answer is N3.
        die.cancel();
        drop(stream);
        pause(&stop, 5).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    item: WorkItem,
    slot: usize,
    kind: StreamKind,
    opts: WorkerOpts,
    clients: Clients,
    cache: Cache,
    obs: Arc<Observed>,
    die: CancellationToken,
) {
    let token = if kind.tokens {
        item.completion_token
    } else {
        String::new()
    };
    let (key, reply) = match item.request {
        Some(Request::WorkflowRequest(mut r)) => {
            if kind.stateful && !restore_history(&mut r, &cache, &clients, slot).await {
                return; // no history to run it with; the engine re-dispatches it
            }
            let quirk = opts.completion_reuses_timer_id
                && hash(opts.seed, &["quirk", &r.instance_id]) % 100 < 50;
            workflow(r, token, &obs, quirk)
        }
        Some(Request::ActivityRequest(a)) => activity(a, token, &obs),
        _ => return,
    };
    let attempt = obs.delivery(&key);
    let h = hash(opts.seed, &[&key, &attempt.to_string()]);
    let roll = |shift: u32| (h >> shift) % 100;
    lock(&obs.misbehaviour).items += 1;
    if opts.misbehave && attempt <= 2 && roll(0) < 4 {
        lock(&obs.misbehaviour).died += 1;
        die.cancel(); // the stream drops; the engine hands its items to another stream
        return;
    }
    if opts.misbehave && roll(8) < 30 {
        lock(&obs.misbehaviour).late += 1;
        tokio::time::sleep(Duration::from_millis((h >> 16) % 150)).await;
    }
    let loose = kind.tokens || opts.tokenless_stale;
    let other = opts.misbehave && loose && roll(24) < 20;
    let client = {
        let cs = lock(&clients);
        let n = cs.len();
        let pick = if other { (slot + 1) % n } else { slot };
        cs[pick].clone().or_else(|| cs[slot].clone())
    };
    let Some(mut client) = client else { return };
    if other {
        lock(&obs.misbehaviour).other_stream += 1;
    }
    // A token-less worker answering twice may answer the *next* turn (as with daprd), so only
    // workers that echo tokens do that.
    let twice = opts.misbehave && kind.tokens && roll(32) < 10;
    for round in 0..if twice { 2 } else { 1 } {
        if round == 1 {
            lock(&obs.misbehaviour).twice += 1;
            tokio::time::sleep(Duration::from_millis((h >> 40) % 30)).await;
        }
        if !loose && die.is_cancelled() {
            return; // this worker's connection ended with its stream
        }
        let r = match &reply {
            Reply::Workflow(resp) => {
                let mut req = tonic::Request::new(resp.clone());
                req.set_timeout(Duration::from_secs(10));
                client.complete_orchestrator_task(req).await.map(|_| ())
            }
            Reply::Activity(resp, task) => {
                let mut req = tonic::Request::new(resp.clone());
                req.set_timeout(Duration::from_secs(10));
                let r = client.complete_activity_task(req).await.map(|_| ());
                // Only an OK counts: an error tells the worker its result may not be recorded.
                if r.is_ok()
                    && let Some(task) = task
                {
                    obs.acknowledge(task.clone());
                }
                r
            }
        };
        if let Err(s) = r
            && !expected_refusal(&s)
        {
            obs.violation(format!(
                "engine refused a valid answer ({key}): {:?} {}",
                s.code(),
                s.message()
            ));
        }
    }
}

/// Rebuilds a delta work item's full past from this stream's cache, or from
/// `GetInstanceHistory` on a miss (as the dapr 1.19 SDK does), and caches it.
async fn restore_history(
    r: &mut WorkflowRequest,
    cache: &Cache,
    clients: &Clients,
    slot: usize,
) -> bool {
    if let Some(c) = &r.cached_history {
        let n = usize::try_from(c.event_count).unwrap_or(usize::MAX);
        let hit = lock(cache)
            .get(&r.instance_id)
            .filter(|h| h.len() == n)
            .cloned();
        let mut full = match hit {
            Some(h) => h,
            None => {
                let Some(mut client) = lock(clients)[slot].clone() else {
                    return false;
                };
                let mut req =
                    tonic::Request::new(weft_proto::durabletask::GetInstanceHistoryRequest {
                        instance_id: r.instance_id.clone(),
                    });
                req.set_timeout(Duration::from_secs(5));
                match client.get_instance_history(req).await {
                    Ok(h) => {
                        // The committed history is the cached part plus the delta.
                        let mut h = h.into_inner().events;
                        h.truncate(n);
                        h
                    }
                    Err(_) => return false,
                }
            }
        };
        full.append(&mut r.past_events);
        r.past_events = full;
        r.cached_history = None;
    }
    lock(cache).insert(r.instance_id.clone(), r.past_events.clone());
    true
}

/// Refusals a correct engine may give a correct worker: stale or duplicate answers, and
/// anything while the engine is crashing or restarting.
fn expected_refusal(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::NotFound
            | Code::FailedPrecondition
            | Code::Unavailable
            | Code::Cancelled
            | Code::Unknown
            | Code::DeadlineExceeded
    )
}

enum Reply {
    Workflow(WorkflowResponse),
    /// The answer, and the activity it is for (`None` without an execution ID to key it by).
    Activity(ActivityResponse, Option<TaskKey>),
}

fn workflow(r: WorkflowRequest, token: String, obs: &Observed, quirk: bool) -> (String, Reply) {
    let key = format!(
        "wf|{}|{}|{}",
        r.instance_id,
        r.past_events.len(),
        r.new_events.len()
    );
    let mut d = sdk::decide(&r.instance_id, &r.past_events, &r.new_events);
    if quirk {
        reuse_timer_id(&mut d.actions, &r.past_events);
    }
    if verbose() {
        eprintln!(
            "worker: {} exec {:?}: past [{}] new [{}] → {:?}",
            r.instance_id,
            d.execution_id,
            crate::invariants::describe(&r.past_events),
            crate::invariants::describe(&r.new_events),
            d.actions
                .iter()
                .map(|a| (a.id, action_kind(a)))
                .collect::<Vec<_>>()
        );
    }
    for v in d.violations {
        obs.violation(v);
    }
    let mut all = r.past_events.clone();
    all.extend(r.new_events.iter().cloned());
    obs.record(&r.instance_id, d.execution_id, all);
    let resp = WorkflowResponse {
        instance_id: r.instance_id,
        actions: d.actions,
        custom_status: d.custom_status,
        completion_token: token,
        ..Default::default()
    };
    (key, Reply::Workflow(resp))
}

fn activity(a: ActivityRequest, token: String, obs: &Observed) -> (String, Reply) {
    let instance_id = a
        .workflow_instance
        .as_ref()
        .map(|w| w.instance_id.clone())
        .unwrap_or_default();
    let input = a.input.clone().unwrap_or_default();
    if a.name != ACTIVITY_NAME {
        obs.violation(format!(
            "{instance_id}: activity named {:?} dispatched",
            a.name
        ));
    }
    let key = format!("act|{instance_id}|{}|{input}", a.task_id);
    let task = a
        .workflow_instance
        .as_ref()
        .and_then(|w| w.execution_id.clone())
        .map(|exec| (instance_id.clone(), exec, a.task_id));
    match &task {
        Some(t) => obs.dispatched(t),
        None => obs.violation(format!(
            "{instance_id}: activity {} dispatched without an execution ID",
            a.task_id
        )),
    }
    let resp = ActivityResponse {
        instance_id,
        task_id: a.task_id,
        result: Some(activity_result(&input)),
        completion_token: token,
        ..Default::default()
    };
    (key, Reply::Activity(resp, task))
}

/// Renumbers a final completion with the ID of the last timer in history (see
/// [`WorkerOpts::completion_reuses_timer_id`]).
fn reuse_timer_id(actions: &mut [weft_proto::durabletask::WorkflowAction], past: &[HistoryEvent]) {
    use weft_proto::durabletask::history_event::EventType;
    use weft_proto::durabletask::workflow_action::WorkflowActionType as A;
    let Some(timer) = past
        .iter()
        .rev()
        .find(|e| matches!(e.event_type, Some(EventType::TimerCreated(_))))
    else {
        return;
    };
    if let Some(last) = actions.last_mut()
        && matches!(&last.workflow_action_type, Some(A::CompleteWorkflow(c))
            if c.workflow_status == weft_proto::durabletask::OrchestrationStatus::Completed as i32)
    {
        last.id = timer.event_id;
    }
}

fn verbose() -> bool {
    std::env::var("WEFT_SIM_VERBOSE").is_ok_and(|v| v == "1")
}

fn action_kind(a: &weft_proto::durabletask::WorkflowAction) -> String {
    use weft_proto::durabletask::workflow_action::WorkflowActionType as A;
    match &a.workflow_action_type {
        Some(A::ScheduleTask(_)) => "task".into(),
        Some(A::CreateTimer(_)) => "timer".into(),
        Some(A::CreateChildWorkflow(c)) => format!("child {}", c.instance_id),
        Some(A::CompleteWorkflow(c)) => format!("complete status {}", c.workflow_status),
        other => format!("{other:?}"),
    }
}
