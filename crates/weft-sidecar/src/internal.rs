//! The internal node-to-node API (`proto/internal.proto`): runs forwarded client calls if this
//! sidecar owns the instance (else answers "not owner" with its view of the owner), and applies
//! worker answers routed here by the sidecar they reached.

use crate::cluster::{ActorKind, Owner};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::route::{Call, Ownership, Reply, WireReply, abandon_here, execute};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use weft_config::{AccessPolicies, Operation, Target};
use weft_proto::durabletask::{ActivityResponse, WorkflowResponse};
use weft_proto::internal::internal_server::Internal;
use weft_proto::internal::*;
use weft_tls::authz::authorize;
use weft_tls::{Peer, caller};

type Answer<T> = std::result::Result<Response<T>, Status>;

/// Most instance IDs one wake hint may name.
const MAX_WAKE_IDS: usize = 1024;

pub struct InternalService {
    engine: Engine,
    ownership: Arc<dyn Ownership>,
}

impl InternalService {
    pub fn new(engine: Engine, ownership: Arc<dyn Ownership>) -> Self {
        Self { engine, ownership }
    }

    /// Runs a forwarded call if this sidecar owns its instance (or nobody does: then the store
    /// write is all there is and the future owner picks it up).
    async fn run(&self, peer: &Peer, call: Call) -> std::result::Result<Reply, Status> {
        let app = if call.app().is_empty() {
            self.engine.inner.app_id().to_string()
        } else {
            call.app().to_string()
        };
        // A forwarded client call comes from a sidecar (of any app: cross-app calls are
        // allowed or refused by the target app's access policy below, on this side).
        authorize(
            peer,
            "internal",
            &format!("forward calls for app `{app}`"),
            |id| id.app().is_some(),
        )?;
        // The caller: the peer's certificate when there is one, else what the sender says
        // (trusting the network, docs/multi-app.md).
        let caller = match peer {
            Peer::Verified(id) => id.app().unwrap_or_default().to_string(),
            _ if call.caller().is_empty() => app.clone(),
            _ => call.caller().to_string(),
        };
        if let Owner::Remote { host_id, address } =
            self.ownership.owner(&app, ActorKind::Workflow, call.key())
        {
            return Err(EngineError::NotOwner {
                hint: Some(format!("{host_id}@{address}")),
            }
            .into());
        }
        if caller != app {
            check_call(&self.engine, &caller, &call).await?;
        }
        Ok(execute(&self.engine, call).await?)
    }

    /// Runs a forwarded call and answers with its reply message.
    async fn serve<W: WireReply>(&self, peer: &Peer, call: Call) -> Answer<W> {
        let reply = self.run(peer, call).await?;
        let what = format!("{reply:?}");
        W::from_reply(reply)
            .map(Response::new)
            .ok_or_else(|| EngineError::Internal(format!("unexpected engine reply {what}")).into())
    }
}

#[tonic::async_trait]
impl Internal for InternalService {
    async fn start(&self, req: Request<StartCall>) -> Answer<StartReply> {
        self.serve(&caller(&req), Call::Start(req.into_inner()))
            .await
    }

    async fn raise_event(&self, req: Request<RaiseEventCall>) -> Answer<Ack> {
        self.serve(&caller(&req), Call::Raise(req.into_inner()))
            .await
    }

    async fn terminate(&self, req: Request<TerminateCall>) -> Answer<Changed> {
        self.serve(&caller(&req), Call::Terminate(req.into_inner()))
            .await
    }

    async fn suspend(&self, req: Request<SuspendCall>) -> Answer<Changed> {
        self.serve(&caller(&req), Call::Suspend(req.into_inner()))
            .await
    }

    async fn resume(&self, req: Request<ResumeCall>) -> Answer<Changed> {
        self.serve(&caller(&req), Call::Resume(req.into_inner()))
            .await
    }

    async fn purge(&self, req: Request<PurgeCall>) -> Answer<PurgeReply> {
        self.serve(&caller(&req), Call::Purge(req.into_inner()))
            .await
    }

    async fn rerun(&self, req: Request<RerunCall>) -> Answer<RerunReply> {
        self.serve(&caller(&req), Call::Rerun(req.into_inner()))
            .await
    }

    // A routed answer is applied to this sidecar's in-flight records and never forwarded again,
    // so a wrong route costs one NOT_FOUND, not a loop.

    async fn complete_workflow(&self, req: Request<WorkflowResponse>) -> Answer<Ack> {
        self.engine.complete_workflow(req.into_inner()).await?;
        Ok(Response::new(Ack {}))
    }

    async fn complete_activity(&self, req: Request<ActivityResponse>) -> Answer<Ack> {
        self.engine.complete_activity(req.into_inner()).await?;
        Ok(Response::new(Ack {}))
    }

    async fn abandon(&self, req: Request<AbandonCall>) -> Answer<Ack> {
        abandon_here(&self.engine, &req.into_inner().completion_token)?;
        Ok(Response::new(Ack {}))
    }

    async fn wake(&self, req: Request<WakeHint>) -> Answer<Ack> {
        let h = req.into_inner();
        // A hint activates actors: bound it and refuse IDs no instance can have, so a caller
        // cannot fill memory with actors of made-up IDs (issue 15, point 7).
        if h.instance_ids.len() > MAX_WAKE_IDS {
            return Err(EngineError::InvalidArgument(format!(
                "a wake hint names {} instances; the limit is {MAX_WAKE_IDS}",
                h.instance_ids.len()
            ))
            .into());
        }
        if let Some(e) = h
            .instance_ids
            .iter()
            .find_map(|id| weft_core::ids::validate_child_instance_id(id).err())
        {
            return Err(EngineError::InvalidInstanceId(e.to_string()).into());
        }
        let app = if h.app_id.is_empty() {
            self.engine.inner.app_id().to_string()
        } else {
            h.app_id
        };
        for id in &h.instance_ids {
            if self.ownership.owner(&app, ActorKind::Workflow, id) == Owner::Local {
                self.engine.inner.actors.wake(id);
            }
        }
        Ok(Response::new(Ack {}))
    }
}

/// Refuses a client call forwarded from another app's sidecar unless this app's access policy
/// lets `caller` perform it on the instance's workflow (`PERMISSION_DENIED`).
async fn check_call(engine: &Engine, caller: &str, call: &Call) -> crate::error::Result<()> {
    let me = engine.inner.app_id();
    let access: &AccessPolicies = &engine.inner.settings.access;
    if !access.governs(me) {
        return Ok(());
    }
    let op = match call {
        Call::Start(_) => Operation::Schedule,
        Call::Rerun(_) => Operation::Rerun,
        Call::Raise(_) => Operation::Raise,
        Call::Terminate(_) => Operation::Terminate,
        Call::Suspend(_) => Operation::Pause,
        Call::Resume(_) => Operation::Resume,
        Call::Purge(_) => Operation::Purge,
    };
    // The workflow the call is about: a start names it; a rerun is of its source instance;
    // the others act on the instance they are keyed by.
    let name = match call {
        Call::Start(c) => Some(c.name.clone()),
        Call::Rerun(c) => {
            let source = c
                .request
                .as_ref()
                .map_or("", |r| r.source_instance_id.as_str());
            workflow_name(engine, source).await?
        }
        _ => workflow_name(engine, call.key()).await?,
    };
    // An unknown instance is answered NOT_FOUND by the call itself.
    let Some(name) = name else { return Ok(()) };
    let target = Target::Workflow(&name);
    if access.allows(me, caller, op, target) {
        return Ok(());
    }
    metrics::counter!("weft_access_denied_total", "kind" => "client_call").increment(1);
    let why = AccessPolicies::denial(me, caller, op, target);
    tracing::warn!(instance = call.key(), "{why}");
    Err(EngineError::PermissionDenied(why))
}

async fn workflow_name(engine: &Engine, id: &str) -> crate::error::Result<Option<String>> {
    Ok(engine.get_instance(id).await?.map(|m| m.name))
}
