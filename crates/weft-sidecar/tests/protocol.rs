//! Drives a real in-process sidecar over gRPC with a hand-written worker, checking the wire-level
//! contract the SDKs rely on: work-item shape, event IDs, re-dispatch, deltas, and error codes.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use weft_proto::durabletask::task_hub_sidecar_service_client::TaskHubSidecarServiceClient as Client;
use weft_proto::durabletask::*;
use weft_sidecar::{EngineConfig, SidecarConfig};
use weft_store::SqliteStore;

const DEADLINE: Duration = Duration::from_secs(10);

struct Sidecar {
    client: Client<Channel>,
    shutdown: CancellationToken,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn sidecar(max_payload: usize) -> Sidecar {
    let store = Arc::new(SqliteStore::open_in_memory().expect("in-memory store"));
    let cfg = SidecarConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        engine: EngineConfig {
            max_payload_bytes: max_payload,
            ..Default::default()
        },
        ..SidecarConfig::default()
    };
    let shutdown = CancellationToken::new();
    let running = weft_sidecar::serve(store, cfg, shutdown.clone())
        .await
        .expect("serve");
    let client = Client::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connect");
    Sidecar { client, shutdown }
}

async fn next_item(stream: &mut tonic::Streaming<WorkItem>) -> work_item::Request {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a work item within the deadline")
        .expect("stream ok")
        .expect("stream open")
        .request
        .expect("request set")
}

async fn workflow_item(stream: &mut tonic::Streaming<WorkItem>) -> WorkflowRequest {
    match next_item(stream).await {
        work_item::Request::WorkflowRequest(r) => r,
        other => panic!("expected a workflow item, got {other:?}"),
    }
}

fn kinds(evs: &[HistoryEvent]) -> Vec<&'static str> {
    evs.iter().map(weft_core::history::kind).collect()
}

async fn start(c: &mut Client<Channel>, id: &str) {
    // An explicit (past) scheduled start returns at once, as the JS SDK relies on.
    c.start_instance(CreateInstanceRequest {
        instance_id: id.into(),
        name: "wf".into(),
        input: Some("1".into()),
        scheduled_start_timestamp: Some(prost_types::Timestamp::default()),
        ..Default::default()
    })
    .await
    .expect("start");
}

fn action(id: i32, t: workflow_action::WorkflowActionType) -> WorkflowAction {
    WorkflowAction {
        id,
        workflow_action_type: Some(t),
        router: None,
    }
}

fn schedule(id: i32) -> WorkflowAction {
    action(
        id,
        workflow_action::WorkflowActionType::ScheduleTask(ScheduleTaskAction {
            name: "add".into(),
            input: Some("1".into()),
            ..Default::default()
        }),
    )
}

fn complete(id: i32, result: &str) -> WorkflowAction {
    action(
        id,
        workflow_action::WorkflowActionType::CompleteWorkflow(CompleteWorkflowAction {
            workflow_status: OrchestrationStatus::Completed as i32,
            result: Some(result.into()),
            ..Default::default()
        }),
    )
}

fn respond(id: &str, actions: Vec<WorkflowAction>) -> WorkflowResponse {
    WorkflowResponse {
        instance_id: id.into(),
        actions,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_workflow_with_one_activity_runs_to_completion() {
    let mut s = sidecar(1024 * 1024).await;
    let mut stream = s
        .client
        .get_work_items(GetWorkItemsRequest::default())
        .await
        .unwrap()
        .into_inner();
    start(&mut s.client, "p1").await;

    let first = workflow_item(&mut stream).await;
    assert!(first.past_events.is_empty());
    assert_eq!(
        kinds(&first.new_events),
        ["WorkflowStarted", "ExecutionStarted"]
    );
    assert!(first.new_events.iter().all(|e| e.event_id == -1));
    s.client
        .complete_orchestrator_task(respond("p1", vec![schedule(1)]))
        .await
        .unwrap();

    let work_item::Request::ActivityRequest(act) = next_item(&mut stream).await else {
        panic!("activity expected")
    };
    assert_eq!((act.name.as_str(), act.task_id), ("add", 1));
    assert_eq!(act.workflow_instance.unwrap().instance_id, "p1");
    s.client
        .complete_activity_task(ActivityResponse {
            instance_id: "p1".into(),
            task_id: 1,
            result: Some("2".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    // A second result for the same task is refused the way daprd does.
    let dup = s
        .client
        .complete_activity_task(ActivityResponse {
            instance_id: "p1".into(),
            task_id: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::NotFound);
    assert!(dup.message().contains("unknown instance ID/task ID combo"));

    let second = workflow_item(&mut stream).await;
    assert_eq!(
        kinds(&second.past_events),
        ["WorkflowStarted", "ExecutionStarted", "TaskScheduled"]
    );
    assert_eq!(
        second.past_events[2].event_id, 1,
        "event ID equals the action ID"
    );
    assert_eq!(
        kinds(&second.new_events),
        ["WorkflowStarted", "TaskCompleted"]
    );
    s.client
        .complete_orchestrator_task(respond("p1", vec![complete(2, "2")]))
        .await
        .unwrap();

    let done = s
        .client
        .wait_for_instance_completion(GetInstanceRequest {
            instance_id: "p1".into(),
            get_inputs_and_outputs: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let st = done.workflow_state.unwrap();
    assert_eq!(st.workflow_status, OrchestrationStatus::Completed as i32);
    assert_eq!(st.output.as_deref(), Some("2"));
    // Duplicate completion of a finished turn.
    let again = s
        .client
        .complete_orchestrator_task(respond("p1", vec![complete(3, "x")]))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let history = s
        .client
        .get_instance_history(GetInstanceHistoryRequest {
            instance_id: "p1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kinds(&history.events).last(), Some(&"ExecutionCompleted"));
}

#[tokio::test]
async fn an_unanswered_turn_is_redispatched_to_the_next_worker() {
    let mut s = sidecar(1024 * 1024).await;
    let mut stream = s
        .client
        .get_work_items(GetWorkItemsRequest::default())
        .await
        .unwrap()
        .into_inner();
    start(&mut s.client, "p2").await;
    let first = workflow_item(&mut stream).await;
    drop(stream); // the worker dies without answering
    let mut stream = s
        .client
        .get_work_items(GetWorkItemsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let again = workflow_item(&mut stream).await;
    assert_eq!(kinds(&again.new_events), kinds(&first.new_events));
    s.client
        .complete_orchestrator_task(respond("p2", vec![complete(1, "ok")]))
        .await
        .unwrap();
}

#[tokio::test]
async fn stateful_workers_get_history_deltas() {
    let mut s = sidecar(1024 * 1024).await;
    let req = GetWorkItemsRequest {
        capabilities: vec![
            WorkerCapability::HealthPing as i32,
            WorkerCapability::StatefulHistory as i32,
        ],
        ..Default::default()
    };
    let mut stream = s.client.get_work_items(req).await.unwrap().into_inner();
    start(&mut s.client, "p3").await;
    workflow_item(&mut stream).await;
    s.client
        .complete_orchestrator_task(respond("p3", vec![schedule(1)]))
        .await
        .unwrap();
    next_item(&mut stream).await; // the activity
    s.client
        .complete_activity_task(ActivityResponse {
            instance_id: "p3".into(),
            task_id: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let second = workflow_item(&mut stream).await;
    // First send had 0 past events, so this one is full; cache now 3.
    assert_eq!(second.past_events.len(), 3);
    s.client
        .complete_orchestrator_task(respond("p3", vec![schedule(2)]))
        .await
        .unwrap();
    next_item(&mut stream).await;
    s.client
        .complete_activity_task(ActivityResponse {
            instance_id: "p3".into(),
            task_id: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let third = workflow_item(&mut stream).await;
    assert_eq!(third.cached_history.map(|c| c.event_count), Some(3));
    assert_eq!(
        kinds(&third.past_events),
        ["WorkflowStarted", "TaskCompleted", "TaskScheduled"]
    );
}

#[tokio::test]
async fn bad_input_gets_clear_codes_and_changes_nothing() {
    let mut s = sidecar(1000).await;
    let bad_id = s
        .client
        .start_instance(CreateInstanceRequest {
            instance_id: "a b".into(),
            name: "wf".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    let too_big = s
        .client
        .start_instance(CreateInstanceRequest {
            instance_id: "big".into(),
            name: "wf".into(),
            input: Some("x".repeat(1001)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::ResourceExhausted);
    let gone = s
        .client
        .get_instance(GetInstanceRequest {
            instance_id: "big".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!gone.into_inner().exists, "a refused start creates nothing");

    let unknown = s
        .client
        .raise_event(RaiseEventRequest {
            instance_id: "nope".into(),
            name: "e".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("no such instance exists"));
    let unknown_turn = s
        .client
        .complete_orchestrator_task(respond("nope", vec![]))
        .await
        .unwrap_err();
    assert_eq!(unknown_turn.code(), Code::NotFound);
    let purge_filter = s
        .client
        .purge_instances(PurgeInstancesRequest {
            request: Some(purge_instances_request::Request::PurgeInstanceFilter(
                PurgeInstanceFilter::default(),
            )),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        purge_filter.deleted_instance_count, 0,
        "purge by filter: nothing has finished yet"
    );

    start(&mut s.client, "active").await;
    let dup = s
        .client
        .start_instance(CreateInstanceRequest {
            instance_id: "active".into(),
            name: "wf".into(),
            scheduled_start_timestamp: Some(prost_types::Timestamp::default()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    let purge_active = s
        .client
        .purge_instances(PurgeInstancesRequest {
            request: Some(purge_instances_request::Request::InstanceId(
                "active".into(),
            )),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(purge_active.code(), Code::FailedPrecondition);
    // Terminating an instance no worker ever ran needs no worker.
    s.client
        .terminate_instance(TerminateRequest {
            instance_id: "active".into(),
            output: Some("\"stop\"".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let st = s
        .client
        .get_instance(GetInstanceRequest {
            instance_id: "active".into(),
            get_inputs_and_outputs: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let st = st.into_inner().workflow_state.unwrap();
    assert_eq!(st.workflow_status, OrchestrationStatus::Terminated as i32);
    assert_eq!(st.output.as_deref(), Some("\"stop\""));
}

#[tokio::test]
async fn an_invalid_action_list_fails_the_instance() {
    let mut s = sidecar(1024 * 1024).await;
    let mut stream = s
        .client
        .get_work_items(GetWorkItemsRequest::default())
        .await
        .unwrap()
        .into_inner();
    start(&mut s.client, "p5").await;
    workflow_item(&mut stream).await;
    let err = s
        .client
        .complete_orchestrator_task(respond(
            "p5",
            vec![WorkflowAction {
                id: 1,
                workflow_action_type: None,
                router: None,
            }],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let st = s
        .client
        .get_instance(GetInstanceRequest {
            instance_id: "p5".into(),
            get_inputs_and_outputs: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .workflow_state
        .unwrap();
    assert_eq!(st.workflow_status, OrchestrationStatus::Failed as i32);
    assert_eq!(
        st.failure_details.unwrap().error_type,
        "WeftInvalidWorkflowResponse"
    );
}
