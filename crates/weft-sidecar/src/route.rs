//! Routing at the API edge: client calls that need an instance's owner run here or are forwarded
//! to the owner over the internal API (retried after placement changes, never dropped), and
//! worker answers that reach a sidecar other than the dispatching one are routed to it.

use crate::cluster::registry::activity_key;
use crate::cluster::{ActorKind, Owner, Registry};
use crate::engine::{Engine, StartRequest};
use crate::error::{EngineError, KIND_HEADER, Result};
use crate::telemetry::workflow::{self as workflow_metrics, Op, Stage, stage};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;
use weft_proto::durabletask::{ActivityResponse, RerunWorkflowFromEventRequest, WorkflowResponse};
use weft_proto::internal::{self as pb, internal_client::InternalClient};
use weft_store::ReusePolicy;
use weft_tls::{Dial, Expect};

mod calls;

pub use calls::{Call, WireReply};

/// How long a routed client call may look for its owner when the caller set no deadline.
pub const DEFAULT_ROUTE_DEADLINE: Duration = Duration::from_secs(30);
/// Upper bound on a caller's deadline for finding the owner.
pub const MAX_ROUTE_DEADLINE: Duration = Duration::from_secs(120);
/// Longest single forwarded call (a completion waits for the owner's commit).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// Most peer channels kept open: a sidecar talks to the other sidecars of the table, so this
/// only bounds what addresses from elsewhere could make it hold.
pub const MAX_PEER_CHANNELS: usize = 256;
/// How long an answer whose token names a host missing from our table waits for a newer table
/// (the dispatcher may have joined in a table that has not reached us yet).
const TOKEN_TABLE_WAIT: Duration = Duration::from_secs(2);

/// Who owns which key. The cluster's [`Registry`] in production; tests may stub it.
pub trait Ownership: Send + Sync + 'static {
    /// This sidecar's host id.
    fn host_id(&self) -> &str;
    fn owner(&self, app_id: &str, kind: ActorKind, key: &str) -> Owner;
    /// Whether `host_id` at internal `address` is a sidecar of this cluster (worker answers
    /// are forwarded only to those).
    fn is_peer(&self, host_id: &str, address: &str) -> bool;
    /// Changes whenever a new placement table applies.
    fn watch(&self) -> watch::Receiver<u64>;
}

impl Ownership for Registry {
    fn host_id(&self) -> &str {
        Registry::host_id(self)
    }
    fn owner(&self, app_id: &str, kind: ActorKind, key: &str) -> Owner {
        Registry::owner(self, app_id, kind, key)
    }
    fn is_peer(&self, host_id: &str, address: &str) -> bool {
        Registry::is_peer(self, host_id, address)
    }
    fn watch(&self) -> watch::Receiver<u64> {
        Registry::watch(self)
    }
}

/// The suffix the hub appends to completion tokens so answers can find their way back.
pub fn token_suffix(host_id: &str, internal_address: &str) -> String {
    format!("@{host_id}@{internal_address}")
}

/// The dispatching sidecar named in a completion token: `(host_id, internal address)`.
pub fn token_origin(token: &str) -> Option<(&str, &str)> {
    let (_, rest) = token.split_once('@')?;
    let (host, addr) = rest.rsplit_once('@')?;
    (!host.is_empty() && !addr.is_empty()).then_some((host, addr))
}

/// What a [`Call`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Id(String),
    Done,
    Changed(bool),
    Purged(i32),
}

fn policy_to_wire(p: ReusePolicy) -> pb::ReusePolicy {
    match p {
        ReusePolicy::Error => pb::ReusePolicy::Error,
        ReusePolicy::Ignore => pb::ReusePolicy::Ignore,
        ReusePolicy::Terminate => pb::ReusePolicy::Terminate,
    }
}

fn policy_from_wire(p: i32) -> ReusePolicy {
    match pb::ReusePolicy::try_from(p) {
        Ok(pb::ReusePolicy::Ignore) => ReusePolicy::Ignore,
        Ok(pb::ReusePolicy::Terminate) => ReusePolicy::Terminate,
        _ => ReusePolicy::Error,
    }
}

/// Runs a call on this sidecar's engine (the owner, or nobody owns it yet: then the store write
/// is all there is, and the future owner's recovery picks the instance up).
pub(crate) async fn execute(engine: &Engine, call: Call) -> Result<Reply> {
    match call {
        Call::Start(c) => engine
            .start_instance(StartRequest {
                instance_id: c.instance_id,
                name: c.name,
                version: c.version,
                input: c.input,
                scheduled_start_at: c.scheduled_start_at,
                policy: policy_from_wire(c.policy),
                parent_trace: c.traceparent.as_deref().and_then(|tp| {
                    crate::telemetry::trace_context::from_headers(tp, c.tracestate.as_deref())
                }),
            })
            .await
            .map(Reply::Id),
        Call::Raise(c) => engine
            .raise_event(&c.instance_id, &c.name, c.input)
            .await
            .map(|()| Reply::Done),
        Call::Terminate(c) => engine
            .terminate(&c.instance_id, c.output, c.recursive)
            .await
            .map(Reply::Changed),
        Call::Suspend(c) => engine
            .suspend(&c.instance_id, c.reason)
            .await
            .map(Reply::Changed),
        Call::Resume(c) => engine
            .resume(&c.instance_id, c.reason)
            .await
            .map(Reply::Changed),
        Call::Purge(c) => engine
            .purge(&c.instance_id, c.recursive, c.force)
            .await
            .map(Reply::Purged),
        Call::Rerun(c) => {
            let r = c.request.ok_or_else(|| {
                EngineError::InvalidArgument("a rerun request is required".into())
            })?;
            engine.rerun_from_event(r).await.map(Reply::Id)
        }
    }
}

/// Why a forwarded call did not produce an answer from the owner.
enum Miss {
    /// The peer does not own the key; its view of the owner (`host_id@address`), if any.
    NotOwner(Option<String>),
    /// The peer could not be reached or did not answer (nothing says it acted).
    Unreachable(String),
}

/// A forwarded call's outcome: the owner's answer (success or its error), or a miss.
type Forwarded<T> = std::result::Result<Result<T>, Miss>;

fn classify<T>(r: std::result::Result<tonic::Response<T>, tonic::Status>) -> Forwarded<T> {
    match r {
        Ok(resp) => Ok(Ok(resp.into_inner())),
        Err(st) => match EngineError::from_status(&st) {
            EngineError::NotOwner { hint } => Err(Miss::NotOwner(hint)),
            // Without our kind header the status came from the transport, not from a sidecar.
            e if st.metadata().get(KIND_HEADER).is_none() => Err(Miss::Unreachable(e.to_string())),
            e => Ok(Err(e)),
        },
    }
}

struct RouterInner {
    engine: Engine,
    ownership: Arc<dyn Ownership>,
    peers: Mutex<HashMap<String, InternalClient<Channel>>>,
    max_msg: usize,
    api_token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    dial: Dial,
}

/// The edge's view of the cluster: every API handler asks it instead of the engine for the calls
/// that need an owner. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
    /// The app a client named for its call (`router.targetAppID`, the HTTP `appID` parameter);
    /// `None`: the instance's own app (or, for a start, this sidecar's).
    target: Option<Arc<str>>,
}

impl Router {
    pub fn new(
        engine: Engine,
        ownership: Arc<dyn Ownership>,
        max_msg: usize,
        api_token: Option<&str>,
        tls: Option<Arc<weft_tls::TlsContext>>,
    ) -> Self {
        Self {
            inner: Arc::new(RouterInner {
                engine,
                ownership,
                peers: Mutex::default(),
                max_msg,
                api_token: api_token.and_then(|t| t.parse().ok()),
                dial: Dial::new(tls, Expect::Sidecar),
            }),
            target: None,
        }
    }

    /// This router for calls a client addressed to `app` (a cross-app call when it is not this
    /// sidecar's app); `None` or empty: as [`Router`] itself.
    pub fn at(&self, app: Option<&str>) -> Router {
        Router {
            inner: self.inner.clone(),
            target: app.filter(|a| !a.is_empty()).map(Arc::from),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn ownership(&self) -> &Arc<dyn Ownership> {
        &self.inner.ownership
    }

    fn app(&self) -> String {
        self.inner.engine.inner.app_id().to_string()
    }

    /// The app an existing instance belongs to (its row says; an unknown instance is looked up
    /// in the app the client named, else this sidecar's, whose owner then answers NOT_FOUND).
    /// Instance IDs are unique across the apps sharing a store, so an instance of another app
    /// than the one named is not found.
    async fn app_of(&self, instance_id: &str) -> Result<String> {
        let row = match self.inner.engine.get_instance(instance_id).await? {
            Some(m) if !m.app_id.is_empty() => Some(m.app_id),
            _ => None,
        };
        match (self.target.as_deref(), row) {
            (Some(want), Some(app)) if want != app => Err(EngineError::NotFound(format!(
                "no workflow instance '{instance_id}' in app '{want}' (it belongs to app '{app}')"
            ))),
            (Some(want), _) => Ok(want.to_string()),
            (None, Some(app)) => Ok(app),
            (None, None) => Ok(self.app()),
        }
    }

    /// The app a new instance is created in: the one the client named, else this sidecar's.
    fn start_app(&self) -> String {
        self.target
            .as_deref()
            .map_or_else(|| self.app(), str::to_string)
    }

    fn client(&self, addr: &str) -> Result<InternalClient<Channel>> {
        let mut peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Dial::endpoint(addr)
            .map_err(|e| EngineError::Internal(format!("bad peer address '{addr}': {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let ch = self.inner.dial.connect_lazy(endpoint);
        if peers.len() >= MAX_PEER_CHANNELS {
            // Dropping a channel only costs a reconnect on its next use.
            if let Some(victim) = peers.keys().next().cloned() {
                peers.remove(&victim);
            }
        }
        let c = InternalClient::new(ch)
            .max_decoding_message_size(self.inner.max_msg)
            .max_encoding_message_size(self.inner.max_msg);
        peers.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn request<T>(&self, msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(timeout.max(Duration::from_millis(1)));
        if let Some(t) = &self.inner.api_token {
            req.metadata_mut().insert("dapr-api-token", t.clone());
        }
        req
    }

    async fn forward(&self, addr: &str, call: Call, timeout: Duration) -> Forwarded<Reply> {
        let mut c = match self.client(addr) {
            Ok(c) => c,
            Err(e) => return Err(Miss::Unreachable(e.to_string())),
        };
        let started = std::time::Instant::now();
        let r = self.send(&mut c, call, timeout).await;
        stage(Stage::Forward, None, started.elapsed());
        r
    }

    /// Runs `call` on the owner of its instance: here, or forwarded. A peer that is not (or no
    /// longer) the owner, or cannot be reached, is retried at its hint or after the next
    /// placement table, until `limit` (bounded) runs out; then the caller gets UNAVAILABLE —
    /// never NOT_FOUND for an instance that exists.
    pub async fn route(&self, call: Call, limit: Option<Duration>) -> Result<Reply> {
        // A start that reached a peer which then went away may have been committed there: its
        // retry would then find "its own" instance and must not answer ALREADY_EXISTS.
        let mut maybe_started = false;
        let r = self.route_inner(&call, limit, &mut maybe_started).await;
        match (r, &call) {
            (Err(EngineError::AlreadyExists(msg)), Call::Start(m)) if maybe_started => {
                match self.inner.engine.get_instance(&m.instance_id).await {
                    Ok(Some(meta)) if meta.name == m.name && meta.input == m.input => {
                        tracing::debug!(instance = %m.instance_id, "a start retried after an unknown outcome found its own instance");
                        Ok(Reply::Id(m.instance_id.clone()))
                    }
                    _ => Err(EngineError::AlreadyExists(msg)),
                }
            }
            (r, _) => r,
        }
    }

    async fn route_inner(
        &self,
        call: &Call,
        limit: Option<Duration>,
        maybe_started: &mut bool,
    ) -> Result<Reply> {
        let deadline = Instant::now()
            + limit
                .unwrap_or(DEFAULT_ROUTE_DEADLINE)
                .min(MAX_ROUTE_DEADLINE);
        let own = &self.inner.ownership;
        let mut table = own.watch();
        let mut hinted: Option<String> = None;
        let mut hint_used = false;
        let mut pause = Duration::from_millis(50);
        let foreign = !call.app().is_empty() && call.app() != self.app();
        loop {
            let addr = match hinted.take() {
                Some(a) => Some(a),
                None => match own.owner(call.app(), ActorKind::Workflow, call.key()) {
                    Owner::Local => return execute(&self.inner.engine, call.clone()).await,
                    // Another app's call runs only on that app's sidecar, which enforces its
                    // access policy: with none serving the instance now, wait for one.
                    Owner::Nobody if foreign => None,
                    Owner::Nobody => return execute(&self.inner.engine, call.clone()).await,
                    Owner::Remote { address, .. } => Some(address),
                },
            };
            let Some(addr) = addr else {
                let why = format!("no sidecar of app '{}' serves it", call.app());
                match wait_for_table(&mut table, &mut pause, deadline).await {
                    Some(changed) => hint_used &= !changed,
                    None => return Err(unreached(call, &why)),
                }
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let forwarded = self
                .forward(&addr, call.clone(), left.min(FORWARD_TIMEOUT))
                .await;
            let result = match &forwarded {
                Ok(_) => "answered",
                Err(Miss::NotOwner(_)) => "not_owner",
                Err(Miss::Unreachable(_)) => "unreachable",
            };
            metrics::counter!("weft_forwarded_calls_total", "result" => result).increment(1);
            let why = match forwarded {
                Ok(answer) => return answer,
                Err(Miss::NotOwner(hint)) => {
                    // The peer's view may be newer than ours: try where it points, once.
                    let next = hint.as_deref().and_then(|h| h.rsplit_once('@'));
                    if let Some((host, a)) = next
                        && !hint_used
                        && host != own.host_id()
                        && a != addr
                    {
                        hint_used = true;
                        hinted = Some(a.to_string());
                        continue;
                    }
                    format!("{addr} does not own it")
                }
                Err(Miss::Unreachable(e)) => {
                    *maybe_started |= matches!(call, Call::Start(_));
                    format!("{addr} unreachable: {e}")
                }
            };
            tracing::debug!(instance = call.key(), %why, "owner not reached; waiting for a newer table");
            match wait_for_table(&mut table, &mut pause, deadline).await {
                Some(changed) => hint_used &= !changed,
                None => return Err(unreached(call, &why)),
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // Client operations (the edge calls these instead of the engine)

    /// Routes a call and counts it as daprd does (`dapr_runtime_workflow_operation_*`), once
    /// at the edge that received it.
    async fn timed(&self, op: Op, call: Call, limit: Option<Duration>) -> Result<Reply> {
        let app = if call.app().is_empty() {
            self.app()
        } else {
            call.app().to_string()
        };
        workflow_metrics::timed(&app, op, self.route(call, limit)).await
    }

    /// Reads an instance's row, counted as daprd's `get_workflow`.
    /// With a named app, an instance of another app is not found.
    pub async fn get_instance(&self, id: &str) -> Result<Option<weft_core::InstanceMeta>> {
        let app = self.app();
        let meta =
            workflow_metrics::timed(&app, Op::Get, self.inner.engine.get_instance(id)).await?;
        Ok(meta.filter(|m| {
            self.target
                .as_deref()
                .is_none_or(|want| m.app_id.is_empty() || m.app_id == want)
        }))
    }

    pub async fn start_instance(
        &self,
        req: StartRequest,
        limit: Option<Duration>,
    ) -> Result<String> {
        let call = Call::Start(pb::StartCall {
            caller_app_id: self.app(),
            app_id: self.start_app(),
            instance_id: req.instance_id,
            name: req.name,
            version: req.version,
            input: req.input,
            scheduled_start_at: req.scheduled_start_at,
            policy: policy_to_wire(req.policy) as i32,
            traceparent: req.parent_trace.as_ref().map(|t| t.trace_parent.clone()),
            tracestate: req.parent_trace.and_then(|t| t.trace_state),
        });
        match self.timed(Op::Create, call, limit).await? {
            Reply::Id(id) => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    pub async fn raise_event(
        &self,
        id: &str,
        name: &str,
        input: Option<String>,
        limit: Option<Duration>,
    ) -> Result<()> {
        let call = Call::Raise(pb::RaiseEventCall {
            caller_app_id: self.app(),
            app_id: self.app_of(id).await?,
            instance_id: id.to_string(),
            name: name.to_string(),
            input,
        });
        self.timed(Op::AddEvent, call, limit).await.map(|_| ())
    }

    pub async fn terminate(
        &self,
        id: &str,
        output: Option<String>,
        recursive: bool,
        limit: Option<Duration>,
    ) -> Result<bool> {
        let call = Call::Terminate(pb::TerminateCall {
            caller_app_id: self.app(),
            app_id: self.app_of(id).await?,
            instance_id: id.to_string(),
            output,
            recursive,
        });
        changed(self.timed(Op::AddEvent, call, limit).await?)
    }

    pub async fn suspend(
        &self,
        id: &str,
        reason: Option<String>,
        limit: Option<Duration>,
    ) -> Result<bool> {
        let call = Call::Suspend(pb::SuspendCall {
            caller_app_id: self.app(),
            app_id: self.app_of(id).await?,
            instance_id: id.to_string(),
            reason,
        });
        changed(self.timed(Op::AddEvent, call, limit).await?)
    }

    pub async fn resume(
        &self,
        id: &str,
        reason: Option<String>,
        limit: Option<Duration>,
    ) -> Result<bool> {
        let call = Call::Resume(pb::ResumeCall {
            caller_app_id: self.app(),
            app_id: self.app_of(id).await?,
            instance_id: id.to_string(),
            reason,
        });
        changed(self.timed(Op::AddEvent, call, limit).await?)
    }

    pub async fn purge(
        &self,
        id: &str,
        recursive: bool,
        force: bool,
        limit: Option<Duration>,
    ) -> Result<i32> {
        let call = Call::Purge(pb::PurgeCall {
            caller_app_id: self.app(),
            app_id: self.app_of(id).await?,
            instance_id: id.to_string(),
            recursive,
            force,
        });
        match self.timed(Op::Purge, call, limit).await? {
            Reply::Purged(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// A rerun runs on the owner of the instance it creates (its ID is chosen here if absent).
    pub async fn rerun_from_event(
        &self,
        mut r: RerunWorkflowFromEventRequest,
        limit: Option<Duration>,
    ) -> Result<String> {
        if r.new_instance_id.as_deref().is_none_or(str::is_empty) {
            r.new_instance_id = Some(uuid::Uuid::new_v4().to_string());
        }
        let call = Call::Rerun(pb::RerunCall {
            caller_app_id: self.app(),
            app_id: self.start_app(),
            request: Some(r),
        });
        match self.timed(Op::Create, call, limit).await? {
            Reply::Id(id) => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    // ------------------------------------------------------------------------------------------
    // Worker answers: the executor path

    /// Where the work item a worker answers was dispatched: `None` for this sidecar (or when
    /// nobody else can have it: answered here, as before), else the dispatcher's internal address.
    async fn dispatcher(
        &self,
        token: &str,
        id: &str,
        task_id: Option<i32>,
    ) -> Result<Option<String>> {
        let own = &self.inner.ownership;
        if let Some((host, addr)) = token_origin(token) {
            if host == own.host_id() {
                return Ok(None);
            }
            self.known_sidecar(host, addr).await?;
            return Ok(Some(addr.to_string()));
        }
        // No token (the JS SDK sends none): if the item is not in flight here, it was dispatched
        // by the owner of its executor actor, which lives with the actor it serves.
        if self.inner.engine.inner.hub.holds(id, task_id) {
            return Ok(None);
        }
        let key = match task_id {
            None => id.to_string(),
            Some(t) => {
                // An ID the store refuses names no work item: answered here (NOT_FOUND).
                let Ok(meta) = self.inner.engine.get_instance(id).await else {
                    return Ok(None);
                };
                activity_key(id, t, meta.map_or(0, |m| m.generation))
            }
        };
        Ok(match own.owner(&self.app(), ActorKind::Executor, &key) {
            Owner::Remote { address, .. } => Some(address),
            Owner::Local | Owner::Nobody => None,
        })
    }

    /// Refuses to route to a token's `host@addr` unless it is a sidecar of the placement table
    /// (waiting briefly for a newer table), so a forged token cannot make us dial anywhere.
    async fn known_sidecar(&self, host: &str, addr: &str) -> Result<()> {
        let own = &self.inner.ownership;
        let mut tables = own.watch();
        let deadline = Instant::now() + TOKEN_TABLE_WAIT;
        loop {
            if own.is_peer(host, addr) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, tables.changed()).await {
                Ok(Ok(())) => continue,
                _ => break,
            }
        }
        metrics::counter!("weft_completion_tokens_refused_total").increment(1);
        Err(EngineError::NotFound(format!(
            "the completion token names {host}@{addr}, which is not a sidecar of the placement table; the answer is not routed"
        )))
    }

    fn routed<T>(&self, addr: &str, kind: &'static str, r: Forwarded<T>) -> Result<()> {
        match r {
            Ok(answer) => {
                metrics::counter!("weft_executor_routed_total", "kind" => kind).increment(1);
                answer.map(|_| ())
            }
            Err(Miss::NotOwner(_)) => Err(EngineError::Internal(format!(
                "{addr} refused a routed {kind} answer"
            ))),
            Err(Miss::Unreachable(e)) => Err(EngineError::Unavailable(format!(
                "the sidecar that dispatched this work item ({addr}) is unreachable: {e}"
            ))),
        }
    }

    pub async fn complete_workflow(&self, resp: WorkflowResponse) -> Result<()> {
        let to = self
            .dispatcher(&resp.completion_token, &resp.instance_id, None)
            .await?;
        let Some(addr) = to else {
            return self.inner.engine.complete_workflow(resp).await;
        };
        let mut c = self.client(&addr)?;
        let r = classify(
            c.complete_workflow(self.request(resp, FORWARD_TIMEOUT))
                .await,
        );
        self.routed(&addr, "workflow", r)
    }

    pub async fn complete_activity(&self, resp: ActivityResponse) -> Result<()> {
        let to = self
            .dispatcher(
                &resp.completion_token,
                &resp.instance_id,
                Some(resp.task_id),
            )
            .await?;
        let Some(addr) = to else {
            return self.inner.engine.complete_activity(resp).await;
        };
        let mut c = self.client(&addr)?;
        let r = classify(
            c.complete_activity(self.request(resp, FORWARD_TIMEOUT))
                .await,
        );
        self.routed(&addr, "activity", r)
    }

    /// A worker gives a work item back: to the queue of the sidecar that dispatched it.
    pub async fn abandon(&self, token: &str, workflow: bool) -> Result<()> {
        let own = &self.inner.ownership;
        match token_origin(token) {
            Some((host, addr)) if host != own.host_id() => {
                self.known_sidecar(host, addr).await?;
                let mut c = self.client(addr)?;
                let call = pb::AbandonCall {
                    completion_token: token.to_string(),
                    workflow,
                };
                let r = classify(c.abandon(self.request(call, FORWARD_TIMEOUT)).await);
                self.routed(addr, "abandon", r)
            }
            _ => abandon_here(&self.inner.engine, token),
        }
    }
}

/// Puts an abandoned work item back in this sidecar's queue.
pub(crate) fn abandon_here(engine: &Engine, token: &str) -> Result<()> {
    if token.is_empty() {
        return Err(EngineError::InvalidArgument(
            "a completion token is required to abandon a work item".into(),
        ));
    }
    if engine.inner.hub.abandon(token) {
        Ok(())
    } else {
        Err(EngineError::NotFound(format!(
            "no work item with completion token '{token}' is in flight"
        )))
    }
}

/// Waits for a newer placement table or the next backoff step: `Some(true)` if the table
/// changed, `Some(false)` after the pause, `None` at the deadline.
async fn wait_for_table(
    table: &mut watch::Receiver<u64>,
    pause: &mut Duration,
    deadline: Instant,
) -> Option<bool> {
    tokio::select! {
        r = table.changed() => {
            if r.is_err() {
                tokio::time::sleep(*pause).await;
            }
            *pause = Duration::from_millis(50);
            Some(true)
        }
        _ = tokio::time::sleep(*pause) => {
            *pause = (*pause * 2).min(Duration::from_secs(1));
            Some(false)
        }
        _ = tokio::time::sleep_until(deadline) => None,
    }
}

fn unreached(call: &Call, why: &str) -> EngineError {
    EngineError::Unavailable(format!(
        "the owner of workflow instance '{}' could not be reached in time ({why}); retry",
        call.key()
    ))
}

fn changed(r: Reply) -> Result<bool> {
    match r {
        Reply::Changed(c) => Ok(c),
        other => Err(unexpected(other)),
    }
}

fn unexpected(r: Reply) -> EngineError {
    EngineError::Internal(format!("unexpected reply from the owner: {r:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_dispatcher() {
        let t = format!("ab12cd34-7{}", token_suffix("host-1", "10.0.0.5:50002"));
        assert_eq!(token_origin(&t), Some(("host-1", "10.0.0.5:50002")));
        let odd = format!("x-1{}", token_suffix("a@b", "h:1"));
        assert_eq!(token_origin(&odd), Some(("a@b", "h:1")));
        assert_eq!(
            token_origin("ab12cd34-7"),
            None,
            "tokens of a single sidecar"
        );
        assert_eq!(token_origin(""), None);
    }

    /// Found by the fuzzer (`crates/weft-fuzz`, target `durabletask`): a worker's answer whose
    /// completion token named another sidecar was forwarded to whatever address the token
    /// carried — a made-up one answered INTERNAL ("bad peer address"), a real one was dialled.
    #[tokio::test]
    async fn a_token_naming_a_sidecar_outside_the_cluster_is_not_forwarded() {
        let router = crate::testing::local_router();
        // A closed loopback port and an address that is no URI at all.
        for addr in ["127.0.0.1:1", "17.0.0.1\x01:1"] {
            let token = format!("1{}", token_suffix("other", addr));
            let wf = WorkflowResponse {
                instance_id: "wf-1".into(),
                completion_token: token.clone(),
                ..Default::default()
            };
            let act = ActivityResponse {
                instance_id: "wf-1".into(),
                completion_token: token.clone(),
                ..Default::default()
            };
            for err in [
                router.complete_workflow(wf).await.unwrap_err(),
                router.complete_activity(act).await.unwrap_err(),
                router.abandon(&token, true).await.unwrap_err(),
            ] {
                assert!(matches!(err, EngineError::NotFound(_)), "{addr}: {err:?}");
            }
        }
    }
}
