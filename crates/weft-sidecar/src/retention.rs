//! Purging finished instances in bulk: `PurgeInstances` by filter (gRPC, HTTP, CLI) and the
//! background retention purge of `stateRetentionPolicy`. Both go through the single-instance
//! purge, which never deletes an unfinished instance, in batches that yield between them.

use crate::engine::Engine;
use crate::error::{EngineError, Result};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weft_config::RetentionPolicy;
use weft_core::{Micros, RuntimeStatus};
use weft_store::ListFilter;

/// Instances listed (and purged) per batch.
const BATCH: usize = 200;

/// Which finished instances a bulk purge deletes.
#[derive(Debug, Clone, Default)]
pub struct PurgeFilter {
    /// Inclusive bounds on the creation time.
    pub created_from: Option<Micros>,
    pub created_to: Option<Micros>,
    /// Statuses to purge; empty means every terminal status. Non-terminal statuses match nothing:
    /// only finished instances are ever purged.
    pub statuses: Vec<RuntimeStatus>,
    /// Inclusive upper bound on the completion time (retention).
    pub completed_to: Option<Micros>,
}

impl Engine {
    /// Purges every finished instance that matches `filter` (and, if `recursive`, the children
    /// each created); returns how many instances were deleted.
    pub async fn purge_by_filter(&self, filter: PurgeFilter, recursive: bool) -> Result<i32> {
        purge_matching(self, &filter, recursive, None).await
    }

    /// Instances with work waiting for a concurrency slot (for `list`).
    pub fn waiting_for_slot(&self) -> std::collections::HashSet<String> {
        self.inner.hub.waiting_for_slot()
    }
}

const TERMINAL: [RuntimeStatus; 4] = [
    RuntimeStatus::Completed,
    RuntimeStatus::Failed,
    RuntimeStatus::Terminated,
    RuntimeStatus::Canceled,
];

async fn purge_matching(
    engine: &Engine,
    filter: &PurgeFilter,
    recursive: bool,
    shutdown: Option<&CancellationToken>,
) -> Result<i32> {
    let statuses: Vec<RuntimeStatus> = if filter.statuses.is_empty() {
        TERMINAL.to_vec()
    } else {
        filter
            .statuses
            .iter()
            .copied()
            .filter(|s| s.is_terminal())
            .collect()
    };
    if statuses.is_empty() {
        return Ok(0);
    }
    let inner = &engine.inner;
    let mut deleted = 0;
    let mut after = None;
    loop {
        let page = inner
            .store
            .list_instances(ListFilter {
                statuses: statuses.clone(),
                created_from: filter.created_from,
                created_to: filter.created_to,
                completed_to: filter.completed_to,
                after: after.take(),
                limit: BATCH,
                ..Default::default()
            })
            .await?;
        for m in &page.items {
            // Another app's instances are its own sidecars' business, even in a shared bucket.
            let foreign = !m.app_id.is_empty() && m.app_id != inner.app_id();
            // The background purge covers what this sidecar serves (every sidecar runs it); a
            // client's purge by filter covers every matching instance of the app, wherever it
            // is served (each single purge locks its row and refuses an unfinished instance).
            if foreign || (shutdown.is_some() && !inner.view.owns(&m.instance_id)) {
                continue;
            }
            deleted += purge_finished_tree(engine, &m.instance_id, recursive).await?;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(deleted),
        }
        if shutdown.is_some_and(CancellationToken::is_cancelled) {
            return Ok(deleted);
        }
        // Let turns and API calls run between batches.
        tokio::task::yield_now().await;
    }
}

/// Purges one finished instance and, if `recursive`, the children it created that have finished
/// too (a child still running — its parent was terminated without recursion, or finished without
/// waiting for it — is left alone with its own children). Each delete is the single-instance
/// purge, which refuses an unfinished instance; an instance already gone counts nothing.
async fn purge_finished_tree(engine: &Engine, id: &str, recursive: bool) -> Result<i32> {
    let mut count = 0;
    let mut todo = vec![id.to_string()];
    while let Some(next) = todo.pop() {
        match engine.get_instance(&next).await? {
            Some(m) if m.status.is_terminal() => {}
            _ => continue,
        }
        if recursive && let Some(h) = engine.history(&next).await? {
            todo.extend(weft_core::history::all_children(&h));
        }
        match engine.purge(&next, false, false).await {
            Ok(n) => count += n,
            // Gone already (purged with its parent) or running again (rerun) since we looked.
            Err(EngineError::NotFound(_) | EngineError::FailedPrecondition(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(count)
}

/// How long each terminal status is kept under `policy` (`None`: forever).
fn keep_for(policy: &RetentionPolicy, status: RuntimeStatus) -> Option<Duration> {
    let specific = match status {
        RuntimeStatus::Completed => policy.completed,
        RuntimeStatus::Failed => policy.failed,
        RuntimeStatus::Terminated => policy.terminated,
        _ => None,
    };
    specific.or(policy.any_terminal)
}

/// The background retention purge: every `period`, deletes finished instances kept longer than
/// the policy says (children with their parent).
pub(crate) async fn retention_loop(engine: Engine, shutdown: CancellationToken) {
    let policy = engine.inner.settings.retention;
    let shortest = TERMINAL.iter().filter_map(|s| keep_for(&policy, *s)).min();
    let Some(shortest) = shortest else { return };
    let period = (shortest / 2).clamp(Duration::from_millis(500), Duration::from_secs(60));
    tracing::info!(?period, "retention purge running");
    loop {
        for status in TERMINAL {
            let Some(keep) = keep_for(&policy, status) else {
                continue;
            };
            let filter = PurgeFilter {
                statuses: vec![status],
                completed_to: Some(engine.inner.now() - keep.as_micros() as i64),
                ..Default::default()
            };
            match purge_matching(&engine, &filter, true, Some(&shutdown)).await {
                Ok(0) => {}
                Ok(n) => {
                    metrics::counter!("weft_retention_purged_total").increment(n as u64);
                    tracing::debug!(purged = n, status = %status, "retention purge");
                }
                Err(e) => tracing::warn!(error = %e, "retention purge failed; retrying later"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, EngineConfig};
    use std::sync::Arc;
    use weft_store::{CreateInstance, ReusePolicy, SqliteStore, Store, conformance};

    /// A finished instance of app `app` in `store`.
    async fn finished(store: &SqliteStore, id: &str, app: &str) {
        let mut meta = conformance::meta(id, "wf");
        meta.app_id = app.into();
        store
            .create_instance(CreateInstance {
                meta,
                start_event: conformance::started("wf"),
                policy: ReusePolicy::Error,
            })
            .await
            .unwrap();
        let mut cp = conformance::empty_cp(&store.get_instance(id).await.unwrap().unwrap());
        cp.meta.status = RuntimeStatus::Completed;
        cp.meta.completed_at = Some(2);
        store.checkpoint(cp).await.unwrap();
    }

    /// Purging by filter (and so retention) deletes only the engine's own app's instances, even
    /// where apps share a database and buckets (issue 15, point 6).
    #[tokio::test]
    async fn purge_by_filter_leaves_other_apps_alone() {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        finished(&store, "mine", "a").await;
        finished(&store, "theirs", "b").await;
        let cfg = |app: &str| EngineConfig {
            app_id: app.into(),
            ..Default::default()
        };
        let a = Engine::new(store.clone(), cfg("a"));
        let all = PurgeFilter {
            statuses: vec![RuntimeStatus::Completed],
            ..Default::default()
        };
        assert_eq!(a.purge_by_filter(all.clone(), false).await.unwrap(), 1);
        assert!(store.get_instance("mine").await.unwrap().is_none());
        assert!(store.get_instance("theirs").await.unwrap().is_some());
    }
}
