//! The history a child workflow was handed by its parent (`propagation=`), rebuilt from the
//! parents' histories in the store: nothing extra is stored, and every sidecar that comes to own
//! the child rebuilds the same thing.

use crate::error::Result;
use weft_core::history::execution_started;
use weft_core::propagation::{Caller, MAX_LINEAGE, build, child_creation};
use weft_proto::durabletask::{ExecutionStartedEvent, HistoryPropagationScope, PropagatedHistory};
use weft_store::Store;

/// What `started` (this instance's `ExecutionStarted`) inherits: its parent's events up to the
/// child's creation, after the parent's own inheritance for `LINEAGE`. `None` when no parent
/// asked for propagation, or a parent's history is gone (purged, or moved on by
/// continue-as-new): the child then runs without it.
pub(crate) async fn inherited(
    store: &dyn Store,
    instance_id: &str,
    started: &ExecutionStartedEvent,
) -> Result<Option<PropagatedHistory>> {
    // Walk up while each link asked for the lineage, then fold from the oldest.
    let mut links = Vec::new();
    let (mut child, mut started) = (instance_id.to_string(), started.clone());
    for _ in 0..MAX_LINEAGE {
        let Some(p) = started.parent_instance.clone() else {
            break;
        };
        let Some(parent_id) = p.workflow_instance.map(|w| w.instance_id) else {
            break;
        };
        let Some(history) = store.get_history(&parent_id).await? else {
            break;
        };
        let Some((at, scope)) = child_creation(&history, p.task_scheduled_id, &child) else {
            break;
        };
        let next = execution_started(&history).cloned();
        let app = p.app_id.unwrap_or_default();
        let name = p.name.unwrap_or_default();
        links.push((history, at, scope, app, parent_id.clone(), name));
        if scope != HistoryPropagationScope::Lineage as i32 {
            break;
        }
        let Some(next) = next else { break };
        (child, started) = (parent_id, next);
    }
    let mut acc: Option<PropagatedHistory> = None;
    for (history, at, scope, app, id, name) in links.into_iter().rev() {
        let caller = Caller {
            app_id: &app,
            instance_id: &id,
            workflow_name: &name,
        };
        acc = build(Some(scope), acc.as_ref(), caller, &history[..=at]);
    }
    Ok(acc)
}
