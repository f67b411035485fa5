//! The worker side of the engine: a worker's answers to turns and activities, recorded or
//! folded into the instance's next turn.

use crate::engine::{Engine, to_completion};
use crate::error::{EngineError, Result};
use crate::mailbox::ActivityResult;
use crate::mailbox::ActorMsg;
use crate::recovery;
use crate::telemetry::spans;
use crate::telemetry::workflow as workflow_metrics;
use prost::Message;
use tokio::sync::oneshot;
use weft_core::history::event;
use weft_proto::durabletask::{
    ActivityResponse, TaskCompletedEvent, TaskFailedEvent, WorkflowResponse,
    history_event::EventType,
};
use weft_store::ActivityCompletion;

impl Engine {
    pub async fn complete_workflow(&self, resp: WorkflowResponse) -> Result<()> {
        self.check_payload("custom status", resp.custom_status.as_deref())?;
        check_action_payloads(self, &resp)?;
        let id = resp.instance_id.clone();
        if self
            .inner
            .hub
            .take_workflow(&id, &resp.completion_token)
            .is_none()
        {
            tracing::debug!(instance = %id, "completion refused: no such turn in flight");
            return Err(EngineError::NotFound(format!("unknown instance ID: {id}")));
        }
        let (tx, rx) = oneshot::channel();
        self.inner
            .actors
            .send(&id, ActorMsg::Complete(Box::new(resp), tx));
        rx.await
            .unwrap_or_else(|_| Err(EngineError::Unavailable("workflow actor stopped".into())))
    }

    pub async fn complete_activity(&self, resp: ActivityResponse) -> Result<()> {
        let this = self.clone();
        to_completion(async move { this.record_activity(resp).await }).await
    }

    async fn record_activity(&self, resp: ActivityResponse) -> Result<()> {
        self.check_payload("activity result", resp.result.as_deref())?;
        if let Some(f) = &resp.failure_details {
            self.check_payload_len("activity failure details", f.encoded_len())?;
        }
        let id = resp.instance_id.clone();
        let Some(taken) = self
            .inner
            .hub
            .take_activity(&id, resp.task_id, &resp.completion_token)
        else {
            return Err(EngineError::NotFound(format!(
                "unknown instance ID/task ID combo: {id}/{}",
                resp.task_id
            )));
        };
        let (generation, claim, request) = (taken.generation, taken.claim, taken.request);
        spans::activity_answered(&id, resp.task_id, resp.failure_details.as_ref());
        workflow_metrics::activity_execution(
            self.inner.app_id(),
            &request.name,
            resp.failure_details.is_none(),
            taken.held_for,
        );
        let ty = match resp.failure_details {
            Some(f) => EventType::TaskFailed(TaskFailedEvent {
                task_scheduled_id: resp.task_id,
                failure_details: Some(f),
                task_execution_id: request.task_execution_id.clone(),
                ..Default::default()
            }),
            None => EventType::TaskCompleted(TaskCompletedEvent {
                task_scheduled_id: resp.task_id,
                result: resp.result,
                task_execution_id: request.task_execution_id.clone(),
                ..Default::default()
            }),
        };
        let (ack, acked) = oneshot::channel();
        let result = ActivityResult {
            completion: ActivityCompletion {
                instance_id: id.clone(),
                task_id: resp.task_id,
                generation,
                claim: Some(claim),
                event: event(self.inner.now(), ty),
            },
            request,
            ack: Some(ack),
        };
        // The task is out of the hub now: recording it and waking the instance (or handing the
        // task out again) must finish even if the caller goes away (a worker killed mid-call
        // drops this future), or the result would be committed with nobody woken.
        let inner = self.inner.clone();
        let key = result.key();
        let finish = tokio::spawn(async move {
            // Folded into the instance's next turn if its actor takes it: one commit per step,
            // and the worker is answered once that commit landed (docs/architecture.md, "fold").
            if let Some(result) = inner.actors.fold(result).await {
                return recovery::record_durably(&inner, result).await;
            }
            if inner.settings.unguarded_fold_answer {
                return Ok(());
            }
            let mut acked = acked;
            let wait = inner.settings.fold_wait;
            if let Ok(answer) = tokio::time::timeout(wait, &mut acked).await {
                return answered(answer);
            }
            // The turn has not committed in time: maybe it cannot run before this call returns
            // (a worker whose activities and turns share one pool). Recorded durably instead.
            inner.actors.fold_overdue(&id, key);
            answered(acked.await)
        });
        finish
            .await
            .unwrap_or_else(|e| Err(EngineError::Internal(format!("recording a result: {e}"))))
    }

    pub(crate) fn open_stream(&self, stateful: bool) -> crate::hub::StreamHandle<'_> {
        self.inner.hub.open_stream(stateful)
    }
}

/// The actor's answer to a held result; none at all means it vanished with the result (a bug
/// or a lost lease), and the task runs again.
fn answered(answer: std::result::Result<Result<()>, oneshot::error::RecvError>) -> Result<()> {
    answer.unwrap_or_else(|_| {
        Err(EngineError::Unavailable(
            "the activity result was not recorded; the activity runs again".into(),
        ))
    })
}

fn check_action_payloads(engine: &Engine, resp: &WorkflowResponse) -> Result<()> {
    use weft_proto::durabletask::workflow_action::WorkflowActionType as A;
    for a in &resp.actions {
        let payload = match &a.workflow_action_type {
            Some(A::ScheduleTask(t)) => t.input.as_deref(),
            Some(A::CreateChildWorkflow(c)) => c.input.as_deref(),
            Some(A::SendEvent(s)) => s.data.as_deref(),
            Some(A::CompleteWorkflow(c)) => c.result.as_deref(),
            Some(A::CreateDetachedWorkflow(d)) => d.input.as_deref(),
            _ => None,
        };
        engine.check_payload("workflow action payload", payload)?;
        if let Some(A::CompleteWorkflow(c)) = &a.workflow_action_type
            && let Some(f) = &c.failure_details
        {
            engine.check_payload_len("workflow failure details", f.encoded_len())?;
        }
    }
    Ok(())
}
