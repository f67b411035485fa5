//! `RerunWorkflowFromEvent`: a new instance from a finished one's history up to an activity.

use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::hub::Job;
use prost::Message;
use weft_core::RuntimeStatus;
use weft_core::ids::validate_instance_id;
use weft_core::rerun;
use weft_core::turn::new_instance;
use weft_proto::durabletask::RerunWorkflowFromEventRequest;
use weft_store::{ActivityTask, Checkpoint, CreateInstance, ReusePolicy};

impl Engine {
    /// Creates the new instance (two transactions: create, then the copied history; a crash in
    /// between leaves an instance that simply starts from the beginning).
    pub async fn rerun_from_event(&self, r: RerunWorkflowFromEventRequest) -> Result<String> {
        let inner = &self.inner;
        // Everything the request carries is checked before the store is asked anything.
        weft_core::ids::check_instance_ref("source instance ID", &r.source_instance_id)?;
        let new_id = r
            .new_instance_id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        validate_instance_id(&new_id)?;
        self.check_payload("input", r.input.as_deref())?;
        let src = inner
            .store
            .get_instance(&r.source_instance_id)
            .await?
            .ok_or_else(|| EngineError::no_such_instance(&r.source_instance_id))?;
        if !src.status.is_terminal() {
            // INVALID_ARGUMENT, as the dapr 1.19 SDK documents for this call.
            return Err(EngineError::InvalidArgument(format!(
                "workflow instance '{}' must be finished to be rerun",
                r.source_instance_id
            )));
        }
        // Unlike a start, a rerun never replaces an instance, finished or not.
        if inner.store.get_instance(&new_id).await?.is_some() {
            return Err(EngineError::AlreadyExists(format!(
                "a workflow with ID '{new_id}' already exists"
            )));
        }
        let history = inner
            .store
            .get_history(&r.source_instance_id)
            .await?
            .unwrap_or_default();
        let exec = uuid::Uuid::new_v4().to_string();
        let input = r.overwrite_input.then_some(r.input);
        let plan = rerun::plan(&history, r.event_id, &new_id, &exec, input)
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        let t = inner.now();
        let (meta, start) = new_instance(
            &new_id,
            &src.name,
            None,
            src.input.clone(),
            None,
            exec,
            inner.app_id(),
            t,
        );
        inner
            .store
            .create_instance(CreateInstance {
                meta,
                start_event: start,
                policy: ReusePolicy::Error,
            })
            .await?;
        let loaded = inner
            .store
            .load(&new_id)
            .await?
            .ok_or_else(|| EngineError::Internal("rerun instance vanished".into()))?;
        let mut meta = loaded.meta.clone();
        meta.status = RuntimeStatus::Running;
        meta.started_at = Some(t);
        meta.updated_at = t;
        let generation = meta.generation;
        let cp = Checkpoint {
            instance_id: new_id.clone(),
            expected_version: loaded.meta.version,
            meta,
            reset_history: true,
            append: plan.history,
            consumed_inbox: loaded.inbox.iter().map(|e| e.seq).collect(),
            completed_activities: vec![],
            new_activities: plan
                .activities
                .iter()
                .map(|a| ActivityTask {
                    app_id: String::new(),
                    claim: 0,
                    instance_id: new_id.clone(),
                    generation,
                    task_id: a.task_id,
                    request: a.encode_to_vec(),
                })
                .collect(),
            new_reminders: vec![],
            cancel_pending: false,
            outbound: vec![],
            fence: inner.view.owner_fence(&new_id).flatten(),
        };
        inner.store.checkpoint(cp).await?;
        for request in plan.activities {
            inner.hub.push(Job::Activity {
                generation,
                claim: 0,
                request,
            });
        }
        inner.actors.changed(&new_id);
        Ok(new_id)
    }
}
