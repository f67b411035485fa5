//! The durabletask `TaskHubSidecarService` over gRPC: validation at the edge, then the owner of
//! the instance (through the router) for writes, and the shared store for reads and waits.

use crate::engine::{Engine, StartRequest};
use crate::error::EngineError;
use crate::route::Router;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use weft_core::time::{from_micros, to_micros};
use weft_core::turn::decode_failure;
use weft_core::{InstanceMeta, RuntimeStatus};
use weft_proto::durabletask::*;
use weft_proto::framed::task_hub_sidecar_service_server::TaskHubSidecarService;
use weft_proto::wire::WorkItemFrame;
use weft_store::{ListFilter, ReusePolicy};

type Result<T> = std::result::Result<Response<T>, Status>;

pub struct Service {
    engine: Engine,
    router: Router,
    shutdown: CancellationToken,
}

impl Service {
    pub fn new(router: Router, shutdown: CancellationToken) -> Self {
        Self {
            engine: router.engine().clone(),
            router,
            shutdown,
        }
    }

    /// The router for a call whose `router.targetAppID` names the app it is for (1.19 SDKs).
    fn at(&self, router: Option<&TaskRouter>) -> Router {
        self.router
            .at(router.and_then(|r| r.target_app_id.as_deref()))
    }

    /// Waits (within the caller's deadline) until `pred` holds for the instance.
    async fn wait_until(
        &self,
        limit: Option<std::time::Duration>,
        id: &str,
        pred: impl Fn(&InstanceMeta) -> bool,
    ) -> std::result::Result<Option<InstanceMeta>, Status> {
        within(limit, async { Ok(self.engine.wait_for(id, pred).await?) }).await
    }

    async fn wait(
        &self,
        req: Request<GetInstanceRequest>,
        pred: impl Fn(&InstanceMeta) -> bool,
    ) -> Result<GetInstanceResponse> {
        let limit = deadline(&req);
        let req = req.into_inner();
        let meta = self.wait_until(limit, &req.instance_id, pred).await?;
        Ok(Response::new(instance_response(
            meta,
            req.get_inputs_and_outputs,
        )))
    }
}

/// The caller's deadline from the `grpc-timeout` header (`<digits><H|M|S|m|u|n>`).
fn deadline<T>(req: &Request<T>) -> Option<std::time::Duration> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    use std::time::Duration as D;
    Some(match unit {
        "H" => D::from_secs(n.saturating_mul(3600)),
        "M" => D::from_secs(n.saturating_mul(60)),
        "S" => D::from_secs(n),
        "m" => D::from_millis(n),
        "u" => D::from_micros(n),
        "n" => D::from_nanos(n),
        _ => return None,
    })
}

/// Runs a long poll within the caller's deadline and ends it as `DEADLINE_EXCEEDED` just before
/// tonic's own timeout would end it as `CANCELLED` (the SDKs map only the former to a timeout).
async fn within<T>(
    limit: Option<std::time::Duration>,
    fut: impl std::future::Future<Output = std::result::Result<T, Status>>,
) -> std::result::Result<T, Status> {
    let Some(limit) = limit else { return fut.await };
    let early = limit.saturating_sub(std::time::Duration::from_millis(5));
    tokio::time::timeout(early, fut).await.unwrap_or_else(|_| {
        Err(EngineError::DeadlineExceeded("deadline exceeded while waiting".into()).into())
    })
}

/// The wire `WorkflowState` of an instance row.
pub fn instance_response(meta: Option<InstanceMeta>, with_payloads: bool) -> GetInstanceResponse {
    let Some(m) = meta else {
        return GetInstanceResponse {
            exists: false,
            workflow_state: None,
        };
    };
    let mut st = WorkflowState {
        instance_id: m.instance_id.clone(),
        name: m.name.clone(),
        workflow_status: m.status.code(),
        created_timestamp: Some(from_micros(m.created_at)),
        last_updated_timestamp: Some(from_micros(m.updated_at)),
        completed_timestamp: m.completed_at.map(from_micros),
        scheduled_start_timestamp: m.scheduled_start_at.map(from_micros),
        started_at: m.started_at.map(from_micros),
        execution_id: Some(m.execution_id.clone()),
        parent_instance_id: m.parent_instance_id.clone(),
        ..Default::default()
    };
    if with_payloads {
        st.input = m.input.clone();
        st.output = m.output.clone();
        st.custom_status = m.custom_status.clone();
        st.failure_details = decode_failure(m.failure.as_deref());
    }
    GetInstanceResponse {
        exists: true,
        workflow_state: Some(st),
    }
}

fn reuse_policy(p: Option<&OrchestrationIdReusePolicy>) -> ReusePolicy {
    match p.map(|p| p.action) {
        Some(a) if a == CreateOrchestrationAction::Ignore as i32 => ReusePolicy::Ignore,
        Some(a) if a == CreateOrchestrationAction::Terminate as i32 => ReusePolicy::Terminate,
        _ => ReusePolicy::Error,
    }
}

#[tonic::async_trait]
impl TaskHubSidecarService for Service {
    async fn hello(&self, _: Request<()>) -> Result<()> {
        Ok(Response::new(()))
    }

    async fn start_instance(
        &self,
        req: Request<CreateInstanceRequest>,
    ) -> Result<CreateInstanceResponse> {
        let limit = deadline(&req);
        // The SDK's own trace context wins over a `traceparent` header on the call.
        let header = crate::telemetry::spans::on()
            .then(|| {
                let m = req.metadata();
                let get = |k: &str| m.get(k).and_then(|v| v.to_str().ok());
                crate::telemetry::trace_context::from_headers(
                    get("traceparent")?,
                    get("tracestate"),
                )
            })
            .flatten();
        let r = req.into_inner();
        // JS sends epoch 0 for "now"; only a future time schedules the start.
        let scheduled = r.scheduled_start_timestamp.as_ref().map(to_micros);
        let wait = scheduled.is_none();
        let id = self
            .at(r.router.as_ref())
            .start_instance(
                StartRequest {
                    instance_id: r.instance_id,
                    name: r.name,
                    version: r.version.filter(|v| !v.is_empty()),
                    input: r.input,
                    scheduled_start_at: scheduled,
                    policy: reuse_policy(r.orchestration_id_reuse_policy.as_ref()),
                    parent_trace: r.parent_trace_context.or(header),
                },
                limit,
            )
            .await?;
        if wait {
            // Dapr semantics: a plain start returns once the first turn has run.
            self.wait_until(limit, &id, |m| m.status != RuntimeStatus::Pending)
                .await?;
        }
        Ok(Response::new(CreateInstanceResponse { instance_id: id }))
    }

    async fn get_instance(&self, req: Request<GetInstanceRequest>) -> Result<GetInstanceResponse> {
        let r = req.into_inner();
        let meta = self
            .at(r.router.as_ref())
            .get_instance(&r.instance_id)
            .await?;
        Ok(Response::new(instance_response(
            meta,
            r.get_inputs_and_outputs,
        )))
    }

    async fn wait_for_instance_start(
        &self,
        req: Request<GetInstanceRequest>,
    ) -> Result<GetInstanceResponse> {
        self.wait(req, |m| m.status != RuntimeStatus::Pending).await
    }

    async fn wait_for_instance_completion(
        &self,
        req: Request<GetInstanceRequest>,
    ) -> Result<GetInstanceResponse> {
        self.wait(req, |m| m.status.is_terminal()).await
    }

    async fn raise_event(&self, req: Request<RaiseEventRequest>) -> Result<RaiseEventResponse> {
        let limit = deadline(&req);
        let r = req.into_inner();
        self.at(r.router.as_ref())
            .raise_event(&r.instance_id, &r.name, r.input, limit)
            .await?;
        Ok(Response::new(RaiseEventResponse {}))
    }

    async fn terminate_instance(
        &self,
        req: Request<TerminateRequest>,
    ) -> Result<TerminateResponse> {
        let limit = deadline(&req);
        let r = req.into_inner();
        self.at(r.router.as_ref())
            .terminate(&r.instance_id, r.output, r.recursive, limit)
            .await?;
        self.wait_until(limit, &r.instance_id, |m| m.status.is_terminal())
            .await?;
        Ok(Response::new(TerminateResponse {}))
    }

    async fn suspend_instance(&self, req: Request<SuspendRequest>) -> Result<SuspendResponse> {
        let limit = deadline(&req);
        let r = req.into_inner();
        self.at(r.router.as_ref())
            .suspend(&r.instance_id, r.reason, limit)
            .await?;
        self.wait_until(limit, &r.instance_id, |m| {
            m.status == RuntimeStatus::Suspended || m.status.is_terminal()
        })
        .await?;
        Ok(Response::new(SuspendResponse {}))
    }

    async fn resume_instance(&self, req: Request<ResumeRequest>) -> Result<ResumeResponse> {
        let limit = deadline(&req);
        let r = req.into_inner();
        let resumed = self
            .at(r.router.as_ref())
            .resume(&r.instance_id, r.reason, limit)
            .await?;
        if resumed {
            self.wait_until(limit, &r.instance_id, |m| {
                m.status == RuntimeStatus::Running || m.status.is_terminal()
            })
            .await?;
        }
        Ok(Response::new(ResumeResponse {}))
    }

    async fn purge_instances(
        &self,
        req: Request<PurgeInstancesRequest>,
    ) -> Result<PurgeInstancesResponse> {
        let limit = deadline(&req);
        let r = req.into_inner();
        let id = match r.request {
            Some(purge_instances_request::Request::InstanceId(id)) => id,
            Some(purge_instances_request::Request::PurgeInstanceFilter(f)) => {
                let mut statuses = Vec::new();
                for code in &f.runtime_status {
                    statuses.push(RuntimeStatus::from_code(*code).ok_or_else(|| {
                        EngineError::InvalidArgument(format!("unknown runtime status {code}"))
                    })?);
                }
                let filter = crate::PurgeFilter {
                    created_from: f.created_time_from.as_ref().map(to_micros),
                    created_to: f.created_time_to.as_ref().map(to_micros),
                    statuses,
                    completed_to: None,
                };
                let n = self.engine.purge_by_filter(filter, r.recursive).await?;
                return Ok(Response::new(PurgeInstancesResponse {
                    deleted_instance_count: n,
                    is_complete: Some(true),
                }));
            }
            None => {
                return Err(
                    EngineError::InvalidArgument("an instance ID is required".into()).into(),
                );
            }
        };
        let n = self
            .at(r.router.as_ref())
            .purge(&id, r.recursive, r.force.unwrap_or(false), limit)
            .await?;
        Ok(Response::new(PurgeInstancesResponse {
            deleted_instance_count: n,
            is_complete: Some(true),
        }))
    }

    type GetWorkItemsStream = Pin<
        Box<dyn tokio_stream::Stream<Item = std::result::Result<WorkItemFrame, Status>> + Send>,
    >;

    async fn get_work_items(
        &self,
        req: Request<GetWorkItemsRequest>,
    ) -> Result<Self::GetWorkItemsStream> {
        let r = req.into_inner();
        let stateful = r
            .capabilities
            .iter()
            .chain(r.legacy_capabilities.iter())
            .any(|c| *c == WorkerCapability::StatefulHistory as i32);
        let (tx, rx) = mpsc::channel(8);
        let engine = self.engine.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            engine.open_stream(stateful).run(tx, shutdown).await;
        });
        tracing::info!(stateful, "worker connected");
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn complete_activity_task(
        &self,
        req: Request<ActivityResponse>,
    ) -> Result<CompleteTaskResponse> {
        self.router.complete_activity(req.into_inner()).await?;
        Ok(Response::new(CompleteTaskResponse {}))
    }

    async fn complete_orchestrator_task(
        &self,
        req: Request<WorkflowResponse>,
    ) -> Result<CompleteTaskResponse> {
        self.router.complete_workflow(req.into_inner()).await?;
        Ok(Response::new(CompleteTaskResponse {}))
    }

    async fn complete_workflow_task(
        &self,
        req: Request<WorkflowResponse>,
    ) -> Result<CompleteTaskResponse> {
        self.complete_orchestrator_task(req).await
    }

    async fn abandon_task_activity_work_item(
        &self,
        req: Request<AbandonActivityTaskRequest>,
    ) -> Result<AbandonActivityTaskResponse> {
        let token = req.into_inner().completion_token;
        self.router.abandon(&token, false).await?;
        Ok(Response::new(AbandonActivityTaskResponse {}))
    }

    async fn abandon_task_orchestrator_work_item(
        &self,
        req: Request<AbandonOrchestrationTaskRequest>,
    ) -> Result<AbandonOrchestrationTaskResponse> {
        let token = req.into_inner().completion_token;
        self.router.abandon(&token, true).await?;
        Ok(Response::new(AbandonOrchestrationTaskResponse {}))
    }

    async fn rerun_workflow_from_event(
        &self,
        req: Request<RerunWorkflowFromEventRequest>,
    ) -> Result<RerunWorkflowFromEventResponse> {
        let limit = deadline(&req);
        let r = req.into_inner();
        let at = self.at(r.router.as_ref());
        let id = at.rerun_from_event(r, limit).await?;
        self.wait_until(limit, &id, |m| m.status != RuntimeStatus::Pending)
            .await?;
        Ok(Response::new(RerunWorkflowFromEventResponse {
            new_instance_id: id,
        }))
    }

    async fn list_instance_i_ds(
        &self,
        req: Request<ListInstanceIDsRequest>,
    ) -> Result<ListInstanceIDsResponse> {
        let r = req.into_inner();
        let limit = r.page_size.unwrap_or(100).clamp(1, 10_000) as usize;
        let page = self
            .engine
            .list(ListFilter {
                after: r.continuation_token.filter(|t| !t.is_empty()),
                limit,
                ..Default::default()
            })
            .await?;
        Ok(Response::new(ListInstanceIDsResponse {
            instance_ids: page.items.into_iter().map(|m| m.instance_id).collect(),
            continuation_token: page.next,
        }))
    }

    async fn get_instance_history(
        &self,
        req: Request<GetInstanceHistoryRequest>,
    ) -> Result<GetInstanceHistoryResponse> {
        let id = req.into_inner().instance_id;
        match self.engine.history(&id).await? {
            Some(events) => Ok(Response::new(GetInstanceHistoryResponse { events })),
            None => {
                Err(EngineError::NotFound(format!("workflow instance '{id}' not found")).into())
            }
        }
    }
}
