//! Target `internal`: the first byte picks a request type of the node-to-node `Internal`
//! service, the rest is its protobuf encoding; a decoded request runs the real handler.

use crate::FuzzError;
use crate::call;
use crate::sidecar::{Sidecar, SidecarTarget};
use weft_proto::durabletask::{ActivityResponse, WorkflowResponse};
use weft_proto::internal::internal_server::Internal as _;
use weft_proto::internal::*;
use weft_sidecar::internal::InternalService;

/// The request types, in selector order.
pub const REQUESTS: &[&str] = &[
    "StartCall",
    "RaiseEventCall",
    "TerminateCall",
    "SuspendCall",
    "ResumeCall",
    "PurgeCall",
    "RerunCall",
    "WorkflowResponse",
    "ActivityResponse",
    "AbandonCall",
    "WakeHint",
];

/// The target: each input runs one handler of the internal service.
pub fn target() -> Result<SidecarTarget, FuzzError> {
    SidecarTarget::new("internal", run)
}

fn run(sc: &mut Sidecar, data: &[u8]) -> Result<(), String> {
    let Some((&sel, b)) = data.split_first() else {
        return Ok(());
    };
    let svc = InternalService::new(sc.engine.clone(), sc.ownership.clone());
    match usize::from(sel) % REQUESTS.len() {
        0 => call!(sc, svc, start, StartCall, b),
        1 => call!(sc, svc, raise_event, RaiseEventCall, b),
        2 => call!(sc, svc, terminate, TerminateCall, b),
        3 => call!(sc, svc, suspend, SuspendCall, b),
        4 => call!(sc, svc, resume, ResumeCall, b),
        5 => call!(sc, svc, purge, PurgeCall, b),
        6 => call!(sc, svc, rerun, RerunCall, b),
        7 => call!(sc, svc, complete_workflow, WorkflowResponse, b),
        8 => call!(sc, svc, complete_activity, ActivityResponse, b),
        9 => call!(sc, svc, abandon, AbandonCall, b),
        _ => call!(sc, svc, wake, WakeHint, b),
    }
    Ok(())
}
