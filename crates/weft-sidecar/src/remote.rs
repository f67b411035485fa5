//! Cross-app tasks (multi-app workflows): activities that other apps' workflows address to this
//! app are claimed by this app's owner of the calling instance's bucket, checked against the
//! access policy, and dispatched to this app's workers; a denied one fails in the caller's
//! history. Their results take the durable path into the caller's inbox (`worker_ops`).

use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::hub::{Absorb, Job};
use crate::parts::Parts;
use crate::route::Call;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weft_config::{AccessPolicies, Operation, Target};
use weft_core::history::{event, failure};
use weft_proto::durabletask::{
    ActivityRequest, CompleteWorkflowAction, HistoryEvent, OrchestrationStatus, TaskFailedEvent,
    WorkflowAction, WorkflowResponse, history_event::EventType,
    workflow_action::WorkflowActionType,
};
use weft_store::{ActivityCompletion, ActivityTask};

/// How often new cross-app tasks are looked for without a hint (the store's notification is
/// the fast path; this covers hints lost while its connection was down).
const POLL: Duration = Duration::from_secs(2);

/// The error type a task denied by the access policy fails with.
pub(crate) const DENIED: &str = "PermissionDenied";

/// Claims new cross-app tasks whenever the store hints at them (or every [`POLL`]), while this
/// sidecar may act as owner.
pub(crate) async fn remote_task_loop(inner: Arc<Parts>, shutdown: CancellationToken) {
    if inner.view.registry.is_local_only() {
        return; // one sidecar serving one app: nobody else can address tasks to it
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = inner.remote_tasks.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        let scope = inner.view.scope();
        if scope.buckets.is_empty() || !inner.view.lease_valid() {
            continue;
        }
        match inner.store.claim_new_remote_activities(&scope).await {
            Ok(tasks) => {
                for t in tasks {
                    if let Err(e) = dispatch(&inner, t).await {
                        tracing::warn!(error = %e, "dispatching a cross-app task failed; a recovery scan retries it");
                        inner.resync_needed.notify_one();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "claiming cross-app tasks failed"),
        }
    }
}

/// Queues one claimed task (this app's own, or addressed to it by another app's instance) for
/// this app's workers, unless the access policy denies its caller: then it fails at once.
pub(crate) async fn dispatch(inner: &Arc<Parts>, t: ActivityTask) -> Result<()> {
    if !inner.view.owns(&t.instance_id) {
        return Ok(()); // handed off while the claim ran
    }
    let request = ActivityRequest::decode(t.request.as_slice())
        .map_err(|e| EngineError::Internal(format!("stored activity request: {e}")))?;
    if !t.app_id.is_empty() && !admitted(inner, &t, &request).await? {
        return Ok(());
    }
    let job = Job::Activity {
        generation: t.generation,
        claim: t.claim,
        request,
    };
    if let Absorb::Rerecord(r) = inner.hub.push_claimed(job) {
        // Refused under its old claim before this claim got here: recorded under the new
        // claim rather than run again.
        crate::recovery::spill(inner, vec![*r]);
    }
    Ok(())
}

/// Whether the app of the calling instance may have this app run the activity; a denied task is
/// recorded as failed in the caller's history (under the claim just taken).
async fn admitted(inner: &Arc<Parts>, t: &ActivityTask, request: &ActivityRequest) -> Result<bool> {
    let access: &AccessPolicies = &inner.settings.access;
    let me = inner.app_id();
    if !access.governs(me) {
        return Ok(true);
    }
    // The caller is the app recorded on the calling instance's row, which only that app's
    // fenced owner writes (docs/multi-app.md, "Who is the caller").
    let caller = match inner.store.get_instance(&t.instance_id).await? {
        Some(m) => m.app_id,
        None => return Ok(false), // purged: nothing to run or to tell
    };
    let target = Target::Activity(&request.name);
    if access.allows(me, &caller, Operation::Schedule, target) {
        return Ok(true);
    }
    let why = AccessPolicies::denial(me, &caller, Operation::Schedule, target);
    tracing::warn!(instance = %t.instance_id, task_id = t.task_id, caller = %caller, "{why}");
    metrics::counter!("weft_access_denied_total", "kind" => "activity").increment(1);
    let details = failure(DENIED, why);
    let completion = ActivityCompletion {
        instance_id: t.instance_id.clone(),
        task_id: t.task_id,
        generation: t.generation,
        claim: Some(t.claim),
        event: event(
            inner.now(),
            EventType::TaskFailed(TaskFailedEvent {
                task_scheduled_id: t.task_id,
                failure_details: Some(details),
                task_execution_id: request.task_execution_id.clone(),
                ..Default::default()
            }),
        ),
    };
    inner.committer.complete_activity(completion).await?;
    Ok(false)
}

/// Why the access policy refuses to run a new execution whose `ExecutionStarted` names a parent
/// of another app (a cross-app child workflow), or `None` if it may run. Enforced here, on the
/// callee's side, before the first turn reaches a worker.
pub(crate) fn denied_start(inner: &Parts, new_events: &[HistoryEvent]) -> Option<String> {
    let me = inner.app_id();
    let access: &AccessPolicies = &inner.settings.access;
    if !access.governs(me) {
        return None;
    }
    let started = new_events.iter().find_map(|e| match &e.event_type {
        Some(EventType::ExecutionStarted(s)) => Some(s),
        _ => None,
    })?;
    let caller = started
        .parent_instance
        .as_ref()
        .and_then(|p| p.app_id.as_deref())
        .filter(|a| !a.is_empty() && *a != me)?;
    let target = Target::Workflow(&started.name);
    if access.allows(me, caller, Operation::Schedule, target) {
        return None;
    }
    metrics::counter!("weft_access_denied_total", "kind" => "workflow").increment(1);
    Some(AccessPolicies::denial(
        me,
        caller,
        Operation::Schedule,
        target,
    ))
}

/// The answer the engine gives in the worker's place for a start the policy denies: the
/// execution fails with the policy error, which reaches the parent like any child failure.
pub(crate) fn denied_answer(instance_id: &str, why: String) -> WorkflowResponse {
    WorkflowResponse {
        instance_id: instance_id.to_string(),
        actions: vec![WorkflowAction {
            id: -1,
            workflow_action_type: Some(WorkflowActionType::CompleteWorkflow(
                CompleteWorkflowAction {
                    workflow_status: OrchestrationStatus::Failed as i32,
                    failure_details: Some(failure(DENIED, why)),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Refuses a client call forwarded from another app's sidecar unless this app's access policy
/// lets `caller` perform it on the instance's workflow (`PERMISSION_DENIED`).
pub(crate) async fn check_call(engine: &Engine, caller: &str, call: &Call) -> Result<()> {
    let me = engine.inner.app_id();
    let access: &AccessPolicies = &engine.inner.settings.access;
    if !access.governs(me) {
        return Ok(());
    }
    let (op, name) = match call {
        Call::Start(c) => (Operation::Schedule, Some(c.name.clone())),
        Call::Rerun(c) => {
            let source = c
                .request
                .as_ref()
                .map_or("", |r| r.source_instance_id.as_str());
            (Operation::Rerun, workflow_name(engine, source).await?)
        }
        Call::Raise(c) => (
            Operation::Raise,
            workflow_name(engine, &c.instance_id).await?,
        ),
        Call::Terminate(c) => (
            Operation::Terminate,
            workflow_name(engine, &c.instance_id).await?,
        ),
        Call::Suspend(c) => (
            Operation::Pause,
            workflow_name(engine, &c.instance_id).await?,
        ),
        Call::Resume(c) => (
            Operation::Resume,
            workflow_name(engine, &c.instance_id).await?,
        ),
        Call::Purge(c) => (
            Operation::Purge,
            workflow_name(engine, &c.instance_id).await?,
        ),
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

async fn workflow_name(engine: &Engine, id: &str) -> Result<Option<String>> {
    Ok(engine.get_instance(id).await?.map(|m| m.name))
}

/// Publishes `weft_cross_app_tasks_waiting{target_app}`: cross-app tasks no sidecar of their
/// app has claimed (the app has no serving sidecar, or none with a worker). Read from the store
/// at scrape time, so any sidecar shows what waits for an app that has none running; an app
/// whose backlog emptied is reported as 0 once.
pub(crate) async fn publish_backlog(engine: &Engine) {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let Ok(now) = engine.inner.store.cross_app_backlog().await else {
        return; // the store is down: the last values stay
    };
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    for app in seen.iter().filter(|a| !now.iter().any(|(b, _)| b == *a)) {
        metrics::gauge!("weft_cross_app_tasks_waiting", "target_app" => app.clone()).set(0.0);
    }
    seen.clear();
    for (app, n) in now {
        metrics::gauge!("weft_cross_app_tasks_waiting", "target_app" => app.clone()).set(n as f64);
        seen.push(app);
    }
}
