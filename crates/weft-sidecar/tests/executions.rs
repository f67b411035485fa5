//! Executions kept apart, over gRPC with a hand-written worker: a late activity result of an
//! execution that continued as new is not delivered to the next one; purge refuses active
//! instances and running children (as daprd); an instance purged while its turn was with a worker
//! can be created again and runs.

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

async fn sidecar() -> Sidecar {
    let store = Arc::new(SqliteStore::open_in_memory().expect("in-memory store"));
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
    Sidecar { client, shutdown }
}

async fn workflow_item(stream: &mut tonic::Streaming<WorkItem>) -> WorkflowRequest {
    let item = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a work item within the deadline")
        .expect("stream ok")
        .expect("stream open");
    match item.request {
        Some(work_item::Request::WorkflowRequest(r)) => r,
        other => panic!("expected a workflow item, got {other:?}"),
    }
}

fn start_req(id: &str, scheduled: bool) -> CreateInstanceRequest {
    CreateInstanceRequest {
        instance_id: id.into(),
        name: "wf".into(),
        // An explicit (past) scheduled start returns at once; without, the call waits for the
        // first turn to run.
        scheduled_start_timestamp: scheduled.then(prost_types::Timestamp::default),
        ..Default::default()
    }
}

fn respond(id: &str, actions: Vec<WorkflowAction>) -> WorkflowResponse {
    WorkflowResponse {
        instance_id: id.into(),
        actions,
        ..Default::default()
    }
}

fn action(id: i32, t: workflow_action::WorkflowActionType) -> WorkflowAction {
    WorkflowAction {
        id,
        workflow_action_type: Some(t),
        router: None,
    }
}

fn complete(id: i32) -> WorkflowAction {
    action(
        id,
        workflow_action::WorkflowActionType::CompleteWorkflow(CompleteWorkflowAction {
            workflow_status: OrchestrationStatus::Completed as i32,
            result: Some("\"ok\"".into()),
            ..Default::default()
        }),
    )
}

fn purge_req(id: &str, recursive: bool, force: bool) -> PurgeInstancesRequest {
    PurgeInstancesRequest {
        request: Some(purge_instances_request::Request::InstanceId(id.into())),
        recursive,
        force: Some(force),
        ..Default::default()
    }
}

fn execution_of(r: &WorkflowRequest) -> String {
    r.new_events
        .iter()
        .find_map(|e| match &e.event_type {
            Some(history_event::EventType::ExecutionStarted(s)) => s
                .workflow_instance
                .as_ref()
                .and_then(|w| w.execution_id.clone()),
            _ => None,
        })
        .expect("the first turn carries ExecutionStarted")
}

async fn status(c: &mut Client<Channel>, id: &str) -> Option<i32> {
    let r = c
        .get_instance(GetInstanceRequest {
            instance_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.exists.then(|| r.workflow_state.unwrap().workflow_status)
}

#[tokio::test]
async fn an_instance_purged_with_a_turn_in_flight_can_be_created_again() {
    let mut s = sidecar().await;
    let mut stream = s
        .client
        .get_work_items(GetWorkItemsRequest::default())
        .await
        .unwrap()
        .into_inner();
    s.client
        .start_instance(start_req("pz", true))
        .await
        .unwrap();
    let old = workflow_item(&mut stream).await; // taken, never answered
    let refused = s
        .client
        .purge_instances(purge_req("pz", false, false))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let purged = s
        .client
        .purge_instances(purge_req("pz", false, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.deleted_instance_count, 1);
    // The worker's answer to the purged instance's turn is refused.
    let late = s
        .client
        .complete_orchestrator_task(respond("pz", vec![complete(1)]))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::NotFound);

    // Created again: StartInstance waits for the first turn, which must be dispatched.
    let mut c = s.client.clone();
    let starting = tokio::spawn(async move { c.start_instance(start_req("pz", false)).await });
    let new = workflow_item(&mut stream).await;
    assert_eq!(new.instance_id, "pz");
    assert_ne!(execution_of(&new), execution_of(&old), "a new execution");
    assert!(new.past_events.is_empty());
    s.client
        .complete_orchestrator_task(respond("pz", vec![complete(1)]))
        .await
        .unwrap();
    tokio::time::timeout(DEADLINE, starting)
        .await
        .expect("StartInstance returned")
        .unwrap()
        .expect("started");
    let done = tokio::time::timeout(
        DEADLINE,
        s.client.wait_for_instance_completion(GetInstanceRequest {
            instance_id: "pz".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("completed in time")
    .unwrap()
    .into_inner();
    assert_eq!(
        done.workflow_state.unwrap().workflow_status,
        OrchestrationStatus::Completed as i32
    );
}

#[tokio::test]
async fn a_recursive_purge_refuses_a_running_child() {
    let mut s = sidecar().await;
    let mut stream = s
        .client
        .get_work_items(GetWorkItemsRequest::default())
        .await
        .unwrap()
        .into_inner();
    s.client
        .start_instance(start_req("rp", true))
        .await
        .unwrap();
    workflow_item(&mut stream).await;
    // The parent starts a child and ends at once; the child keeps running.
    let child = action(
        1,
        workflow_action::WorkflowActionType::CreateChildWorkflow(CreateChildWorkflowAction {
            instance_id: "rp-kid".into(),
            name: "kid".into(),
            ..Default::default()
        }),
    );
    s.client
        .complete_orchestrator_task(respond("rp", vec![child, complete(2)]))
        .await
        .unwrap();
    let kid = workflow_item(&mut stream).await;
    assert_eq!(kid.instance_id, "rp-kid");
    assert_eq!(
        status(&mut s.client, "rp").await,
        Some(OrchestrationStatus::Completed as i32)
    );

    let refused = s
        .client
        .purge_instances(purge_req("rp", true, false))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("rp-kid"), "{refused:?}");
    assert!(
        status(&mut s.client, "rp").await.is_some(),
        "nothing purged"
    );
    assert!(status(&mut s.client, "rp-kid").await.is_some());

    s.client
        .complete_orchestrator_task(respond("rp-kid", vec![complete(1)]))
        .await
        .unwrap();
    tokio::time::timeout(
        DEADLINE,
        s.client.wait_for_instance_completion(GetInstanceRequest {
            instance_id: "rp-kid".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("child completed in time")
    .unwrap();
    let purged = s
        .client
        .purge_instances(purge_req("rp", true, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.deleted_instance_count, 2);
    assert!(status(&mut s.client, "rp").await.is_none());
    assert!(status(&mut s.client, "rp-kid").await.is_none());
}

fn kinds(evs: &[HistoryEvent]) -> Vec<&'static str> {
    evs.iter().map(weft_core::history::kind).collect()
}

async fn activity_item(stream: &mut tonic::Streaming<WorkItem>) -> ActivityRequest {
    let item = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a work item within the deadline")
        .expect("stream ok")
        .expect("stream open");
    match item.request {
        Some(work_item::Request::ActivityRequest(r)) => r,
        other => panic!("expected an activity item, got {other:?}"),
    }
}

fn schedule(id: i32) -> WorkflowAction {
    action(
        id,
        workflow_action::WorkflowActionType::ScheduleTask(ScheduleTaskAction {
            name: "add".into(),
            ..Default::default()
        }),
    )
}

fn result(id: &str, task_id: i32, value: &str, token: String) -> ActivityResponse {
    ActivityResponse {
        instance_id: id.into(),
        task_id,
        result: Some(value.into()),
        completion_token: token,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_result_for_the_previous_execution_does_not_reach_the_next() {
    let mut s = sidecar().await;
    let mut stream = s
        .client
        .get_work_items(GetWorkItemsRequest::default())
        .await
        .unwrap()
        .into_inner();
    s.client
        .start_instance(start_req("cg", true))
        .await
        .unwrap();
    workflow_item(&mut stream).await;
    s.client
        .complete_orchestrator_task(respond("cg", vec![schedule(1)]))
        .await
        .unwrap();
    let old_task = activity_item(&mut stream).await;
    let old_exec = old_task
        .workflow_instance
        .as_ref()
        .unwrap()
        .execution_id
        .clone();
    // A raised event starts a turn; while the worker has it, generation 0's activity finishes.
    s.client
        .raise_event(RaiseEventRequest {
            instance_id: "cg".into(),
            name: "go".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let turn = workflow_item(&mut stream).await;
    assert_eq!(kinds(&turn.new_events), ["WorkflowStarted", "EventRaised"]);
    s.client
        .complete_activity_task(result("cg", 1, "\"old\"", String::new()))
        .await
        .unwrap();
    // The turn continues as new: task IDs start again at 1 in generation 1.
    let can = action(
        2,
        workflow_action::WorkflowActionType::CompleteWorkflow(CompleteWorkflowAction {
            workflow_status: OrchestrationStatus::ContinuedAsNew as i32,
            result: Some("1".into()),
            ..Default::default()
        }),
    );
    s.client
        .complete_orchestrator_task(respond("cg", vec![can]))
        .await
        .unwrap();
    let first = workflow_item(&mut stream).await;
    assert_eq!(
        kinds(&first.new_events),
        ["WorkflowStarted", "ExecutionStarted"],
        "generation 0's result is not delivered to generation 1"
    );
    s.client
        .complete_orchestrator_task(respond("cg", vec![schedule(1)]))
        .await
        .unwrap();
    let new_task = activity_item(&mut stream).await;
    assert_ne!(
        new_task.workflow_instance.as_ref().unwrap().execution_id,
        old_exec
    );
    s.client
        .complete_activity_task(result("cg", 1, "\"new\"", String::new()))
        .await
        .unwrap();
    let second = workflow_item(&mut stream).await;
    let results: Vec<_> = second
        .new_events
        .iter()
        .filter_map(|e| match &e.event_type {
            Some(history_event::EventType::TaskCompleted(c)) => c.result.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(results, ["\"new\""]);
    s.client
        .complete_orchestrator_task(respond("cg", vec![complete(2)]))
        .await
        .unwrap();
}
