//! Routing between two sidecars on one throwaway PostgreSQL database, each with a stubbed
//! ownership view: client calls that reach the non-owner are forwarded, worker answers sent to
//! the wrong sidecar are routed to the dispatcher, and a call that reaches a sidecar that no
//! longer owns the key is retried once the table changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use weft_proto::durabletask::task_hub_sidecar_service_client::TaskHubSidecarServiceClient as Client;
use weft_proto::durabletask::*;
use weft_sidecar::cluster::{ActorKind, Owner};
use weft_sidecar::route::Ownership;
use weft_sidecar::{EngineConfig, SidecarConfig};
use weft_store::PgStore;

const DEADLINE: Duration = Duration::from_secs(20);

/// One sidecar's view of the table: instance → owning host (else `default`), host → address.
struct ViewData {
    default: String,
    owners: HashMap<String, String>,
    addrs: HashMap<String, String>,
}

struct Stub {
    host: String,
    view: Mutex<ViewData>,
    version: watch::Sender<u64>,
}

impl Stub {
    fn new(host: &str, default: &str) -> Arc<Self> {
        Arc::new(Self {
            host: host.into(),
            view: Mutex::new(ViewData {
                default: default.into(),
                owners: HashMap::new(),
                addrs: HashMap::new(),
            }),
            version: watch::channel(1).0,
        })
    }

    /// Applies a "new table": the change a real registry announces on its watch.
    fn apply(&self, f: impl FnOnce(&mut ViewData)) {
        f(&mut self.view.lock().unwrap());
        self.version.send_modify(|v| *v += 1);
    }
}

impl Ownership for Stub {
    fn host_id(&self) -> &str {
        &self.host
    }
    fn owner(&self, _app: &str, _kind: ActorKind, key: &str) -> Owner {
        // Executor and activity keys start with the instance ID: placed with their workflow.
        let instance = key.split("::").next().unwrap_or(key);
        let v = self.view.lock().unwrap();
        let host = v.owners.get(instance).unwrap_or(&v.default);
        if *host == self.host {
            return Owner::Local;
        }
        match v.addrs.get(host) {
            Some(a) => Owner::Remote {
                host_id: host.clone(),
                address: a.clone(),
            },
            None => Owner::Nobody,
        }
    }
    fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
    fn is_sidecar(&self, host_id: &str, address: &str) -> bool {
        self.view
            .lock()
            .unwrap()
            .addrs
            .get(host_id)
            .map(String::as_str)
            == Some(address)
    }
}

struct Node {
    grpc: SocketAddr,
    http: SocketAddr,
    internal: SocketAddr,
    stub: Arc<Stub>,
    shutdown: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Node {
    async fn start(url: &str, stub: Arc<Stub>) -> Node {
        let store = Arc::new(PgStore::connect(url).await.expect("store"));
        let any = "127.0.0.1:0".parse().unwrap();
        let cfg = SidecarConfig {
            grpc_addr: any,
            http_addr: any,
            internal_addr: any,
            engine: EngineConfig::default(),
            ..Default::default()
        };
        let shutdown = CancellationToken::new();
        let r = weft_sidecar::serve_with(store, cfg, stub.clone(), shutdown.clone())
            .await
            .expect("serve");
        Node {
            grpc: r.grpc_addr,
            http: r.http_addr,
            internal: r.internal_addr,
            stub,
            shutdown,
        }
    }

    async fn client(&self) -> Client<Channel> {
        Client::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect")
    }
}

/// Two sidecars "a" and "b" on one fresh database; `a_thinks`/`b_thinks` name the default owner
/// in each one's view.
async fn pair(a_thinks: &str, b_thinks: &str) -> Option<(weft_testkit::TestDb, Node, Node)> {
    let db = weft_testkit::test_database().await?;
    let a = Node::start(&db.url, Stub::new("a", a_thinks)).await;
    let b = Node::start(&db.url, Stub::new("b", b_thinks)).await;
    let addrs: HashMap<String, String> = [
        ("a".to_string(), a.internal.to_string()),
        ("b".to_string(), b.internal.to_string()),
    ]
    .into();
    for n in [&a, &b] {
        let addrs = addrs.clone();
        n.stub.apply(|v| v.addrs = addrs);
    }
    Some((db, a, b))
}

/// Sum of a Prometheus counter over the label sets containing `label` (the recorder is
/// process-wide, so both sidecars of a test show the same figures).
async fn metric(http: SocketAddr, name: &str, label: &str) -> f64 {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (bounded) until a counter exceeds `above`.
async fn metric_above(http: SocketAddr, name: &str, label: &str, above: f64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut pause = Duration::from_millis(10);
    while metric(http, name, label).await <= above {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{{{label}}} stayed at {above}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn action(id: i32, t: workflow_action::WorkflowActionType) -> WorkflowAction {
    WorkflowAction {
        id,
        workflow_action_type: Some(t),
        router: None,
    }
}

fn complete(id: i32, result: Option<String>) -> WorkflowAction {
    action(
        id,
        workflow_action::WorkflowActionType::CompleteWorkflow(CompleteWorkflowAction {
            workflow_status: OrchestrationStatus::Completed as i32,
            result,
            ..Default::default()
        }),
    )
}

/// The worker's workflows: "wait" completes with the first raised event's data; "act" runs
/// activity "double" once and completes with its result.
fn decide(r: &WorkflowRequest) -> Vec<WorkflowAction> {
    use history_event::EventType as E;
    let all: Vec<&HistoryEvent> = r.past_events.iter().chain(&r.new_events).collect();
    let mut name = String::new();
    for e in &all {
        match &e.event_type {
            Some(E::ExecutionStarted(s)) => name = s.name.clone(),
            Some(E::EventRaised(ev)) => return vec![complete(2, ev.input.clone())],
            Some(E::TaskCompleted(t)) => return vec![complete(2, t.result.clone())],
            _ => {}
        }
    }
    let scheduled = all
        .iter()
        .any(|e| matches!(e.event_type, Some(E::TaskScheduled(_))));
    if name == "act" && !scheduled {
        let t = ScheduleTaskAction {
            name: "double".into(),
            input: Some("21".into()),
            ..Default::default()
        };
        return vec![action(
            1,
            workflow_action::WorkflowActionType::ScheduleTask(t),
        )];
    }
    vec![]
}

/// A hand-written worker: takes work items from `stream` and answers through `answer` (which
/// may be connected to another sidecar), echoing completion tokens if `echo`. Errors of its
/// answers go to `errors`.
fn worker(
    mut stream: tonic::Streaming<WorkItem>,
    mut answer: Client<Channel>,
    echo: bool,
    errors: mpsc::UnboundedSender<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(Some(item)) = stream.message().await {
            let token = if echo {
                item.completion_token.clone()
            } else {
                String::new()
            };
            let res = match item.request {
                Some(work_item::Request::WorkflowRequest(r)) => answer
                    .complete_orchestrator_task(WorkflowResponse {
                        instance_id: r.instance_id.clone(),
                        actions: decide(&r),
                        completion_token: token,
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
                Some(work_item::Request::ActivityRequest(a)) => {
                    let n: i64 = a.input.as_deref().unwrap_or("0").parse().unwrap_or(0);
                    answer
                        .complete_activity_task(ActivityResponse {
                            instance_id: a
                                .workflow_instance
                                .map(|w| w.instance_id)
                                .unwrap_or_default(),
                            task_id: a.task_id,
                            result: Some((n * 2).to_string()),
                            completion_token: token,
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                }
                _ => Ok(()),
            };
            if let Err(e) = res {
                let _ = errors.send(format!("{}: {}", e.code(), e.message()));
            }
        }
    })
}

async fn work_items(node: &Node) -> tonic::Streaming<WorkItem> {
    node.client()
        .await
        .get_work_items(GetWorkItemsRequest::default())
        .await
        .expect("stream")
        .into_inner()
}

/// Every call of the tests has a deadline, so a broken route fails instead of hanging.
fn t<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(DEADLINE);
    req
}

fn get(id: &str) -> GetInstanceRequest {
    GetInstanceRequest {
        instance_id: id.into(),
        get_inputs_and_outputs: true,
        ..Default::default()
    }
}

async fn state(c: &mut Client<Channel>, id: &str) -> Option<WorkflowState> {
    c.get_instance(get(id))
        .await
        .expect("get")
        .into_inner()
        .workflow_state
}

async fn completion(c: &mut Client<Channel>, id: &str) -> WorkflowState {
    let mut req = tonic::Request::new(get(id));
    req.set_timeout(DEADLINE);
    c.wait_for_instance_completion(req)
        .await
        .expect("completion")
        .into_inner()
        .workflow_state
        .expect("state")
}

fn start_req(id: &str, name: &str) -> CreateInstanceRequest {
    CreateInstanceRequest {
        instance_id: id.into(),
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn client_calls_arriving_at_the_non_owner_are_forwarded_to_the_owner() {
    let Some((_db, a, b)) = pair("a", "a").await else {
        return;
    };
    let (etx, mut erx) = mpsc::unbounded_channel();
    let w = worker(work_items(&a).await, a.client().await, true, etx);
    let mut cb = b.client().await;
    let before = metric(b.http, "weft_forwarded_calls_total", "answered").await;

    // start (waits for the first turn, run by the owner's worker) → raise → completed
    cb.start_instance(t(start_req("fw-1", "wait")))
        .await
        .expect("start at b");
    cb.raise_event(t(RaiseEventRequest {
        instance_id: "fw-1".into(),
        name: "go".into(),
        input: Some("\"x\"".into()),
        ..Default::default()
    }))
    .await
    .expect("raise at b");
    let done = completion(&mut cb, "fw-1").await;
    assert_eq!(done.workflow_status, OrchestrationStatus::Completed as i32);
    assert_eq!(done.output.as_deref(), Some("\"x\""));

    // suspend → resume → terminate
    cb.start_instance(t(start_req("fw-2", "wait")))
        .await
        .expect("start");
    cb.suspend_instance(t(SuspendRequest {
        instance_id: "fw-2".into(),
        reason: None,
        ..Default::default()
    }))
    .await
    .expect("suspend at b");
    let st = state(&mut cb, "fw-2").await.expect("fw-2 exists");
    assert_eq!(st.workflow_status, OrchestrationStatus::Suspended as i32);
    cb.resume_instance(t(ResumeRequest {
        instance_id: "fw-2".into(),
        reason: None,
        ..Default::default()
    }))
    .await
    .expect("resume at b");
    cb.terminate_instance(t(TerminateRequest {
        instance_id: "fw-2".into(),
        output: Some("\"stop\"".into()),
        recursive: true,
        ..Default::default()
    }))
    .await
    .expect("terminate at b");
    let st = state(&mut cb, "fw-2").await.expect("fw-2 exists");
    assert_eq!(st.workflow_status, OrchestrationStatus::Terminated as i32);

    // The Dapr HTTP API routes the same way.
    let http = reqwest::Client::new();
    let base = format!("http://{}/v1.0/workflows/dapr", b.http);
    let r = http
        .post(format!("{base}/wait/start?instanceID=fw-3"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = http
        .post(format!("{base}/fw-3/raiseEvent/go"))
        .body("\"y\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        completion(&mut cb, "fw-3").await.output.as_deref(),
        Some("\"y\"")
    );

    // purge of each; then every sidecar agrees they are gone
    for id in ["fw-1", "fw-2"] {
        let n = cb
            .purge_instances(t(PurgeInstancesRequest {
                request: Some(purge_instances_request::Request::InstanceId(id.into())),
                recursive: false,
                force: None,
                ..Default::default()
            }))
            .await
            .expect("purge at b")
            .into_inner()
            .deleted_instance_count;
        assert_eq!(n, 1, "{id} purged");
    }
    let r = http
        .post(format!("{base}/fw-3/purge"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut ca = a.client().await;
    for id in ["fw-1", "fw-2", "fw-3"] {
        assert!(state(&mut ca, id).await.is_none(), "{id} gone at a");
    }
    // A call for an instance that does not exist is still a NOT_FOUND, answered by the owner.
    let err = cb
        .raise_event(t(RaiseEventRequest {
            instance_id: "nope".into(),
            name: "go".into(),
            input: None,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let after = metric(b.http, "weft_forwarded_calls_total", "answered").await;
    // 2 starts + raise + suspend + resume + terminate + http start/raise/purge + 2 purges + 1
    assert!(
        after - before >= 12.0,
        "calls at b were forwarded ({before} → {after})"
    );
    w.abort();
    assert!(
        erx.try_recv().is_err(),
        "the worker's answers all succeeded"
    );
}

#[tokio::test]
async fn completions_sent_to_the_wrong_sidecar_are_routed_to_the_dispatcher() {
    let Some((_db, a, b)) = pair("a", "a").await else {
        return;
    };
    let mut ca = a.client().await;
    // The worker takes work from a but answers through b (as behind an L4 balancer).
    let (etx, mut erx) = mpsc::unbounded_channel();
    let w = worker(work_items(&a).await, b.client().await, true, etx.clone());
    const WF: &str = "kind=\"workflow\"";
    const ACT: &str = "kind=\"activity\"";
    let (wf0, act0) = (
        metric(a.http, "weft_executor_routed_total", WF).await,
        metric(a.http, "weft_executor_routed_total", ACT).await,
    );
    ca.start_instance(t(start_req("ex-1", "act")))
        .await
        .expect("start");
    let done = completion(&mut ca, "ex-1").await;
    assert_eq!(done.workflow_status, OrchestrationStatus::Completed as i32);
    assert_eq!(done.output.as_deref(), Some("42"));
    // b counts a routed answer once a has answered it, which can be after the client saw the
    // completion: wait for the count rather than read it once.
    // (The metrics recorder is process-wide; only this test routes workflow and activity answers.)
    metric_above(a.http, "weft_executor_routed_total", WF, wf0 + 1.0).await;
    metric_above(a.http, "weft_executor_routed_total", ACT, act0).await;
    w.abort();

    // Workers that send no completion token (the JS SDK) are routed by the executor's owner.
    let w = worker(work_items(&a).await, b.client().await, false, etx);
    ca.start_instance(t(start_req("ex-2", "act")))
        .await
        .expect("start");
    let done = completion(&mut ca, "ex-2").await;
    assert_eq!(done.output.as_deref(), Some("42"));
    metric_above(a.http, "weft_executor_routed_total", WF, wf0 + 3.0).await;
    metric_above(a.http, "weft_executor_routed_total", ACT, act0 + 1.0).await;
    w.abort();
    assert!(erx.try_recv().is_err(), "every routed answer was accepted");
}

#[tokio::test]
async fn a_call_that_reaches_a_former_owner_is_retried_after_the_table_changes() {
    // b thinks a owns everything; a (newer table) thinks b does.
    let Some((_db, a, b)) = pair("b", "a").await else {
        return;
    };
    let scheduled = |id: &str| CreateInstanceRequest {
        // A past scheduled time: the start returns without waiting for a worker.
        scheduled_start_timestamp: Some(prost_types::Timestamp::default()),
        ..start_req(id, "wait")
    };
    let refused = metric(b.http, "weft_forwarded_calls_total", "not_owner").await;
    let mut cb = b.client().await;
    let call = tokio::spawn(async move { cb.start_instance(t(scheduled("rt-1"))).await });
    metric_above(b.http, "weft_forwarded_calls_total", "not_owner", refused).await;
    assert!(!call.is_finished(), "the call waits for a newer table");
    b.stub.apply(|v| v.default = "b".into());
    let r = tokio::time::timeout(DEADLINE, call).await.expect("in time");
    assert_eq!(
        r.unwrap()
            .expect("start after the table change")
            .into_inner()
            .instance_id,
        "rt-1"
    );
    assert!(state(&mut a.client().await, "rt-1").await.is_some());

    // An unreachable owner (a dead host) is waited out the same way.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    b.stub.apply(|v| {
        v.default = "c".into();
        v.addrs.insert("c".into(), dead_addr);
    });
    let unreachable = metric(b.http, "weft_forwarded_calls_total", "unreachable").await;
    let mut cb = b.client().await;
    let call = tokio::spawn(async move { cb.start_instance(t(scheduled("rt-2"))).await });
    metric_above(
        b.http,
        "weft_forwarded_calls_total",
        "unreachable",
        unreachable,
    )
    .await;
    assert!(!call.is_finished(), "the call waits for the owner");
    a.stub.apply(|v| v.default = "a".into());
    b.stub.apply(|v| v.default = "a".into());
    let r = tokio::time::timeout(DEADLINE, call).await.expect("in time");
    assert_eq!(
        r.unwrap()
            .expect("start at the new owner")
            .into_inner()
            .instance_id,
        "rt-2"
    );
    assert!(state(&mut a.client().await, "rt-2").await.is_some());
}

async fn next(s: &mut tonic::Streaming<WorkItem>) -> WorkItem {
    tokio::time::timeout(DEADLINE, s.message())
        .await
        .expect("a work item in time")
        .expect("stream ok")
        .expect("stream open")
}

#[tokio::test]
async fn an_abandoned_work_item_is_routed_back_and_dispatched_again() {
    let Some((_db, a, b)) = pair("a", "a").await else {
        return;
    };
    let mut stream = work_items(&a).await;
    let mut ca = a.client().await;
    ca.start_instance(t(CreateInstanceRequest {
        scheduled_start_timestamp: Some(prost_types::Timestamp::default()),
        ..start_req("ab-1", "wait")
    }))
    .await
    .expect("start");
    let first = next(&mut stream).await;
    let before = metric(a.http, "weft_executor_routed_total", "abandon").await;
    b.client()
        .await
        .abandon_task_orchestrator_work_item(t(AbandonOrchestrationTaskRequest {
            completion_token: first.completion_token.clone(),
        }))
        .await
        .expect("abandon through b");
    let again = next(&mut stream).await;
    let Some(work_item::Request::WorkflowRequest(r)) = again.request else {
        panic!("the turn again")
    };
    assert_eq!(r.instance_id, "ab-1");
    assert_ne!(again.completion_token, first.completion_token);
    let after = metric(a.http, "weft_executor_routed_total", "abandon").await;
    assert!(
        after > before,
        "the abandon was routed ({before} → {after})"
    );
    // An unknown token is a NOT_FOUND; a missing one is the caller's error.
    let err = b
        .client()
        .await
        .abandon_task_orchestrator_work_item(t(AbandonOrchestrationTaskRequest {
            completion_token: first.completion_token,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = ca
        .abandon_task_activity_work_item(t(AbandonActivityTaskRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
