//! The work-item size limit applies to what a stream actually sends: a worker with the
//! stateful-history capability gets a delta that fits even when the whole history does not, and
//! a worker without it gets the instance stalled (`PAYLOAD_SIZE_EXCEEDED`), not a broken stream.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use weft_proto::durabletask::task_hub_sidecar_service_client::TaskHubSidecarServiceClient as Client;
use weft_proto::durabletask::workflow_action::WorkflowActionType as A;
use weft_proto::durabletask::*;
use weft_sidecar::{EngineConfig, SidecarConfig};
use weft_store::SqliteStore;

const DEADLINE: Duration = Duration::from_secs(10);
const LIMIT: usize = 3000;

async fn next(stream: &mut tonic::Streaming<WorkItem>) -> WorkItem {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a work item within the deadline")
        .expect("stream ok")
        .expect("stream open")
}

fn workflow(item: &WorkItem) -> &WorkflowRequest {
    match &item.request {
        Some(work_item::Request::WorkflowRequest(r)) => r,
        other => panic!("expected a workflow item, got {other:?}"),
    }
}

async fn stream(c: &mut Client<Channel>, stateful: bool) -> tonic::Streaming<WorkItem> {
    let capabilities = if stateful {
        vec![WorkerCapability::StatefulHistory as i32]
    } else {
        vec![]
    };
    c.get_work_items(GetWorkItemsRequest {
        capabilities,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

async fn schedule_and_run(
    c: &mut Client<Channel>,
    s: &mut tonic::Streaming<WorkItem>,
    turn: WorkItem,
    id: i32,
    input: usize,
) {
    let action = WorkflowAction {
        id,
        workflow_action_type: Some(A::ScheduleTask(ScheduleTaskAction {
            name: "act".into(),
            input: Some("i".repeat(input)),
            ..Default::default()
        })),
        router: None,
    };
    c.complete_orchestrator_task(WorkflowResponse {
        instance_id: "big".into(),
        actions: vec![action],
        completion_token: turn.completion_token,
        ..Default::default()
    })
    .await
    .unwrap();
    let activity = next(s).await;
    c.complete_activity_task(ActivityResponse {
        instance_id: "big".into(),
        task_id: id,
        result: Some("1".into()),
        completion_token: activity.completion_token,
        ..Default::default()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_limit_applies_to_the_delta_sent() {
    let shutdown = CancellationToken::new();
    let running = weft_sidecar::serve(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        SidecarConfig {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            api_token: None,
            engine: EngineConfig {
                max_work_item_bytes: LIMIT,
                ..Default::default()
            },
            ..SidecarConfig::default()
        },
        shutdown.clone(),
    )
    .await
    .expect("serve");
    let mut c = Client::connect(format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    let mut warm = stream(&mut c, true).await;
    c.start_instance(CreateInstanceRequest {
        instance_id: "big".into(),
        name: "wf".into(),
        input: Some("s".repeat(2000)),
        scheduled_start_timestamp: Some(prost_types::Timestamp::default()),
        ..Default::default()
    })
    .await
    .unwrap();
    let t1 = next(&mut warm).await;
    schedule_and_run(&mut c, &mut warm, t1, 0, 1).await;
    let t2 = next(&mut warm).await;
    schedule_and_run(&mut c, &mut warm, t2, 1, 900).await;
    // The whole history (≈ 3.1 KB) is now over the limit; the delta is not.
    let t3 = next(&mut warm).await;
    use prost::Message;
    assert!(t3.encoded_len() <= LIMIT, "{} bytes", t3.encoded_len());
    let r = workflow(&t3);
    assert!(r.cached_history.is_some_and(|h| h.event_count > 0), "{r:?}");

    // That worker goes away; a worker without the cache would need all of it.
    drop(warm);
    let _cold = stream(&mut c, false).await;
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let st = c
            .get_instance(GetInstanceRequest {
                instance_id: "big".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .workflow_state
            .unwrap();
        if st.workflow_status == OrchestrationStatus::Stalled as i32 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "not stalled within the deadline: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let history = c
        .get_instance_history(GetInstanceHistoryRequest {
            instance_id: "big".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let stalled = history.iter().rev().find_map(|e| match &e.event_type {
        Some(history_event::EventType::ExecutionStalled(s)) => Some(s.clone()),
        _ => None,
    });
    let s = stalled.expect("an ExecutionStalled event");
    assert_eq!(s.reason, StalledReason::PayloadSizeExceeded as i32);
    shutdown.cancel();
}
