//! Target `durabletask`: the first byte picks a request type of `TaskHubSidecarService`, the rest
//! is its protobuf encoding; a decoded request goes through the real gRPC handler into the engine.

use crate::FuzzError;
use crate::call;
use crate::sidecar::{Sidecar, SidecarTarget, check_status, decode_checked, request};
use tokio_stream::StreamExt;
use weft_proto::durabletask::*;
use weft_proto::framed::task_hub_sidecar_service_server::TaskHubSidecarService;
use weft_sidecar::grpc::Service;

/// The request types, in selector order (the seed generator writes the same order).
pub const REQUESTS: &[&str] = &[
    "CreateInstanceRequest",
    "GetInstanceRequest (get)",
    "GetInstanceRequest (wait for start)",
    "GetInstanceRequest (wait for completion)",
    "RaiseEventRequest",
    "TerminateRequest",
    "SuspendRequest",
    "ResumeRequest",
    "PurgeInstancesRequest",
    "GetWorkItemsRequest",
    "ActivityResponse",
    "WorkflowResponse",
    "AbandonActivityTaskRequest",
    "AbandonOrchestrationTaskRequest",
    "RerunWorkflowFromEventRequest",
    "ListInstanceIDsRequest",
    "GetInstanceHistoryRequest",
];

/// The target: each input runs one handler of the gRPC service.
pub fn target() -> Result<SidecarTarget, FuzzError> {
    SidecarTarget::new("durabletask", run)
}

fn run(sc: &mut Sidecar, data: &[u8]) -> Result<(), String> {
    let Some((&sel, b)) = data.split_first() else {
        return Ok(());
    };
    let svc = Service::new(sc.router.clone(), sc.shutdown.clone());
    match usize::from(sel) % REQUESTS.len() {
        0 => call!(sc, svc, start_instance, CreateInstanceRequest, b),
        1 => call!(sc, svc, get_instance, GetInstanceRequest, b),
        2 => call!(sc, svc, wait_for_instance_start, GetInstanceRequest, b),
        3 => call!(sc, svc, wait_for_instance_completion, GetInstanceRequest, b),
        4 => call!(sc, svc, raise_event, RaiseEventRequest, b),
        5 => call!(sc, svc, terminate_instance, TerminateRequest, b),
        6 => call!(sc, svc, suspend_instance, SuspendRequest, b),
        7 => call!(sc, svc, resume_instance, ResumeRequest, b),
        8 => call!(sc, svc, purge_instances, PurgeInstancesRequest, b),
        9 => {
            if let Some(m) = decode_checked::<GetWorkItemsRequest>(b)? {
                // Open the stream, take what it hands out at once, and hang up.
                let r = sc.call(async {
                    let mut s = svc.get_work_items(request(m)).await?.into_inner();
                    let first =
                        tokio::time::timeout(std::time::Duration::from_millis(1), s.next()).await;
                    drop(first);
                    Ok::<_, tonic::Status>(())
                })?;
                check_status(r.as_ref().err())?;
            }
        }
        10 => call!(sc, svc, complete_activity_task, ActivityResponse, b),
        11 => call!(sc, svc, complete_orchestrator_task, WorkflowResponse, b),
        12 => call!(
            sc,
            svc,
            abandon_task_activity_work_item,
            AbandonActivityTaskRequest,
            b
        ),
        13 => call!(
            sc,
            svc,
            abandon_task_orchestrator_work_item,
            AbandonOrchestrationTaskRequest,
            b
        ),
        14 => call!(
            sc,
            svc,
            rerun_workflow_from_event,
            RerunWorkflowFromEventRequest,
            b
        ),
        15 => call!(sc, svc, list_instance_i_ds, ListInstanceIDsRequest, b),
        _ => call!(sc, svc, get_instance_history, GetInstanceHistoryRequest, b),
    }
    Ok(())
}
