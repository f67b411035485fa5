//! Cross-app work on the callee's side (multi-app workflows): the loop that claims activities
//! other apps' workflows address to this app (dispatched by `recovery::dispatch`, which checks
//! the access policy), the policy check of a cross-app child's start, and the backlog gauge.

use crate::parts::Parts;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weft_config::{AccessPolicies, Operation, Target};
use weft_core::history::failure;
use weft_proto::durabletask::{
    CompleteWorkflowAction, HistoryEvent, OrchestrationStatus, WorkflowAction, WorkflowResponse,
    history_event::EventType, workflow_action::WorkflowActionType,
};

/// How often new cross-app tasks are looked for without a hint: a backstop where the store
/// notifies (a reconnect also asks for a look), the only way where it does not.
const POLL_NOTIFIED: Duration = Duration::from_secs(10);
const POLL_UNNOTIFIED: Duration = Duration::from_secs(2);

/// Claims new cross-app tasks whenever the store hints at them (or every few seconds), while this
/// sidecar may act as owner.
pub(crate) async fn remote_task_loop(inner: Arc<Parts>, shutdown: CancellationToken) {
    if inner.view.registry.is_local_only() {
        return; // one sidecar serving one app: nobody else can address tasks to it
    }
    let poll = if inner.store.subscribe().is_some() {
        POLL_NOTIFIED
    } else {
        POLL_UNNOTIFIED
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = inner.remote_tasks.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
        let scope = inner.view.scope();
        if scope.buckets.is_empty() || !inner.view.lease_valid() {
            continue;
        }
        match inner.store.claim_new_remote_activities(&scope).await {
            Ok(tasks) => {
                for t in tasks {
                    if let Err(e) = crate::recovery::dispatch(&inner, t).await {
                        tracing::warn!(error = %e, "dispatching a cross-app task failed; a recovery scan retries it");
                        inner.resync_needed.notify_one();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "claiming cross-app tasks failed"),
        }
    }
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
                    failure_details: Some(failure(weft_config::DENIED_ERROR_TYPE, why)),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Publishes `weft_cross_app_tasks_waiting{target_app}`: cross-app tasks no sidecar of their
/// app has claimed (the app has no serving sidecar, or none with a worker). Read from the store
/// at scrape time, so any sidecar shows what waits for an app that has none running; an app
/// whose backlog emptied is reported as 0 once.
pub(crate) async fn publish_backlog(inner: &Parts) {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let Ok(now) = inner.store.cross_app_backlog().await else {
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
