//! Strings a store cannot hold (NUL bytes, oversize names and IDs) sent to every gRPC method, every
//! HTTP endpoint and inside a worker's answer, on SQLite and on PostgreSQL: each is refused with
//! INVALID_ARGUMENT / 400 (or fails the instance with a clear error), never INTERNAL / 5xx.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use weft_proto::durabletask::task_hub_sidecar_service_client::TaskHubSidecarServiceClient as Client;
use weft_proto::durabletask::workflow_action::WorkflowActionType as A;
use weft_proto::durabletask::*;
use weft_sidecar::{EngineConfig, SidecarConfig};
use weft_store::{PgOptions, PgStore, SqliteStore, Store};

const DEADLINE: Duration = Duration::from_secs(20);
const NUL: &str = "a\0b";

fn long(n: usize) -> String {
    "x".repeat(n)
}

struct Sidecar {
    client: Client<Channel>,
    http: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn sidecar(store: Arc<dyn Store>) -> Sidecar {
    let cfg = SidecarConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        api_token: None,
        engine: EngineConfig::default(),
        ..SidecarConfig::default()
    };
    let shutdown = CancellationToken::new();
    let running = weft_sidecar::serve(store, cfg, shutdown.clone())
        .await
        .expect("serve");
    let client = Client::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connect");
    Sidecar {
        client,
        http: running.http_addr,
        shutdown,
    }
}

/// A refused call: INVALID_ARGUMENT, and never a server-side failure.
#[track_caller]
fn refused<T: std::fmt::Debug>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) {
    let e = r.expect_err(what);
    assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
}

/// One HTTP/1.1 request over a fresh connection; returns the status code.
async fn http(addr: SocketAddr, method: &str, path: &str) -> u16 {
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: weft\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, conn.read_to_end(&mut out))
        .await
        .expect("HTTP answer within the deadline")
        .unwrap();
    let head = String::from_utf8_lossy(&out);
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}

async fn wait_failed(c: &mut Client<Channel>, id: &str) -> TaskFailureDetails {
    let st = tokio::time::timeout(
        DEADLINE,
        c.wait_for_instance_completion(GetInstanceRequest {
            instance_id: id.into(),
            get_inputs_and_outputs: true,
            ..Default::default()
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("{id} did not finish within the deadline"))
    .expect("wait")
    .into_inner()
    .workflow_state
    .expect("state");
    assert_eq!(
        st.workflow_status,
        OrchestrationStatus::Failed as i32,
        "{id}: {st:?}"
    );
    st.failure_details.expect("failure details")
}

async fn run(store: Arc<dyn Store>) {
    let mut s = sidecar(store).await;
    let c = &mut s.client;
    let now = Some(prost_types::Timestamp::default());

    // -- client calls over gRPC
    for (what, id, name, version) in [
        ("NUL instance ID", NUL.to_string(), "wf".to_string(), None),
        ("NUL name", "ok".into(), NUL.into(), None),
        ("long name", "ok".into(), long(5000), None),
        (
            "NUL version",
            "ok".into(),
            "wf".into(),
            Some(NUL.to_string()),
        ),
        ("long version", "ok".into(), "wf".into(), Some(long(5000))),
    ] {
        let r = c
            .start_instance(CreateInstanceRequest {
                instance_id: id,
                name,
                version,
                scheduled_start_timestamp: now,
                ..Default::default()
            })
            .await;
        refused(what, r);
    }
    for id in [NUL.to_string(), long(2000), "a\u{1}".into()] {
        let get = GetInstanceRequest {
            instance_id: id.clone(),
            get_inputs_and_outputs: true,
            ..Default::default()
        };
        refused("GetInstance", c.get_instance(get.clone()).await);
        refused("WaitForStart", c.wait_for_instance_start(get.clone()).await);
        refused(
            "WaitForCompletion",
            c.wait_for_instance_completion(get).await,
        );
        refused(
            "RaiseEvent id",
            c.raise_event(RaiseEventRequest {
                instance_id: id.clone(),
                name: "e".into(),
                input: None,
                ..Default::default()
            })
            .await,
        );
        refused(
            "Terminate",
            c.terminate_instance(TerminateRequest {
                instance_id: id.clone(),
                ..Default::default()
            })
            .await,
        );
        refused(
            "Suspend",
            c.suspend_instance(SuspendRequest {
                instance_id: id.clone(),
                reason: None,
                ..Default::default()
            })
            .await,
        );
        refused(
            "Resume",
            c.resume_instance(ResumeRequest {
                instance_id: id.clone(),
                reason: None,
                ..Default::default()
            })
            .await,
        );
        refused(
            "Purge",
            c.purge_instances(PurgeInstancesRequest {
                request: Some(purge_instances_request::Request::InstanceId(id.clone())),
                ..Default::default()
            })
            .await,
        );
        refused(
            "History",
            c.get_instance_history(GetInstanceHistoryRequest {
                instance_id: id.clone(),
            })
            .await,
        );
        refused(
            "Rerun source",
            c.rerun_workflow_from_event(RerunWorkflowFromEventRequest {
                source_instance_id: id.clone(),
                ..Default::default()
            })
            .await,
        );
    }
    refused(
        "Rerun new ID",
        c.rerun_workflow_from_event(RerunWorkflowFromEventRequest {
            source_instance_id: "ok".into(),
            new_instance_id: Some(NUL.into()),
            ..Default::default()
        })
        .await,
    );
    refused(
        "List token",
        c.list_instance_i_ds(ListInstanceIDsRequest {
            continuation_token: Some(NUL.into()),
            ..Default::default()
        })
        .await,
    );
    c.start_instance(CreateInstanceRequest {
        instance_id: "target".into(),
        name: "wf".into(),
        scheduled_start_timestamp: Some(prost_types::Timestamp {
            seconds: 4_000_000_000,
            nanos: 0,
        }),
        ..Default::default()
    })
    .await
    .expect("a later start of a well-formed instance");
    for name in [NUL.to_string(), long(5000)] {
        refused(
            "RaiseEvent name",
            c.raise_event(RaiseEventRequest {
                instance_id: "target".into(),
                name,
                input: None,
                ..Default::default()
            })
            .await,
        );
    }
    // Worker calls name no store row; an unknown ID is NOT_FOUND, never a store error.
    for id in [NUL.to_string(), long(5000)] {
        let e = c
            .complete_activity_task(ActivityResponse {
                instance_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = c
            .complete_orchestrator_task(WorkflowResponse {
                instance_id: id,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    }

    // -- the same over HTTP
    for (method, path) in [
        ("GET", "/weft/v1/instances/a%00b/history"),
        ("GET", "/v1.0/workflows/dapr/a%00b"),
        ("POST", "/v1.0/workflows/dapr/wf/start?instanceID=a%00b"),
        ("POST", "/v1.0/workflows/dapr/a%00b/start?instanceID=ok"),
        ("POST", "/v1.0/workflows/dapr/a%00b/raiseEvent/e"),
        ("POST", "/v1.0/workflows/dapr/target/raiseEvent/e%00"),
        ("POST", "/v1.0/workflows/dapr/a%00b/terminate"),
        ("POST", "/v1.0/workflows/dapr/a%00b/pause"),
        ("POST", "/v1.0/workflows/dapr/a%00b/resume"),
        ("POST", "/v1.0/workflows/dapr/a%00b/purge"),
        ("GET", "/weft/v1/instances?name=a%00b"),
        ("GET", "/weft/v1/instances?after=a%00b"),
    ] {
        assert_eq!(http(s.http, method, path).await, 400, "{method} {path}");
    }
    let long_name = format!("/v1.0/workflows/dapr/{}/start?instanceID=ok2", long(5000));
    assert_eq!(http(s.http, "POST", &long_name).await, 400, "long name");

    // -- a worker's answer naming what no store can hold fails that instance with a clear error
    let mut stream = c
        .get_work_items(GetWorkItemsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let bad_actions: Vec<(&str, A, &str)> = vec![
        (
            "nul-child",
            A::CreateChildWorkflow(CreateChildWorkflowAction {
                name: NUL.into(),
                ..Default::default()
            }),
            "child workflow name contains a NUL byte",
        ),
        (
            "long-child",
            A::CreateChildWorkflow(CreateChildWorkflowAction {
                name: long(5000),
                instance_id: "long-child-c".into(),
                ..Default::default()
            }),
            "child workflow name is 5000 bytes",
        ),
        (
            "nul-target",
            A::SendEvent(SendEventAction {
                instance: Some(WorkflowInstance {
                    instance_id: NUL.into(),
                    execution_id: None,
                }),
                name: "e".into(),
                data: None,
            }),
            "event target instance ID contains a NUL byte",
        ),
        (
            "nul-exec",
            A::CreateDetachedWorkflow(CreateDetachedWorkflowAction {
                instance_id: "detached".into(),
                name: "wf".into(),
                execution_id: Some(NUL.into()),
                ..Default::default()
            }),
            "detached workflow execution ID contains a NUL byte",
        ),
    ];
    for (id, action, why) in bad_actions {
        c.start_instance(CreateInstanceRequest {
            instance_id: id.into(),
            name: "wf".into(),
            scheduled_start_timestamp: now,
            ..Default::default()
        })
        .await
        .unwrap();
        let item = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("a work item")
            .unwrap()
            .unwrap();
        let token = item.completion_token;
        let reply = c
            .complete_orchestrator_task(WorkflowResponse {
                instance_id: id.into(),
                actions: vec![WorkflowAction {
                    id: 0,
                    workflow_action_type: Some(action),
                    router: None,
                }],
                completion_token: token,
                ..Default::default()
            })
            .await;
        refused(id, reply);
        let f = wait_failed(c, id).await;
        assert!(f.error_message.contains(why), "{id}: {f:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_are_refused_on_sqlite() {
    run(Arc::new(SqliteStore::open_in_memory().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_are_refused_on_postgres() {
    let Some(db) = weft_testkit::test_database().await else {
        return;
    };
    let mut opts = PgOptions::new(db.url.clone());
    opts.pool_size = 4;
    opts.retry_for = Duration::from_secs(2);
    let store = PgStore::connect_with(opts).await.expect("connect");
    run(Arc::new(store)).await;
}
