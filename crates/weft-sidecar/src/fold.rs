//! Activity results folded into the turn they wake: handed to the instance's actor in memory and
//! committed by that turn's checkpoint, or recorded durably (task row deleted, result in the
//! inbox) whenever folding is not safe or not useful.

use crate::engine::Inner;
use crate::error::{EngineError, Result};
use crate::hub::Job;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use weft_core::bucket::bucket_of;
use weft_proto::durabletask::ActivityRequest;
use weft_store::{ActivityCompletion, Scope, StoreError};

/// One activity result taken from the hub: what to record, and the request to hand out again
/// should recording fail.
#[derive(Debug)]
pub(crate) struct ActivityResult {
    pub(crate) completion: ActivityCompletion,
    pub(crate) request: ActivityRequest,
}

impl ActivityResult {
    pub(crate) fn key(&self) -> (i32, i64) {
        (self.completion.task_id, self.completion.generation)
    }
}

/// Test hook (`WEFT_TEST_FOLD_DELAY_MS`): how long an actor waits before the turn that carries a
/// folded result, so a process test can SIGKILL the sidecar between the result's arrival and the
/// checkpoint. Unset (the default) means no delay.
pub(crate) fn test_delay() -> Option<Duration> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("WEFT_TEST_FOLD_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    })
}

/// The durable path: deletes the task row and appends the result to the inbox in one (group)
/// commit, then wakes the instance; on failure the task is handed out again.
pub(crate) async fn record_durably(inner: &Arc<Inner>, r: ActivityResult) -> Result<()> {
    let id = r.completion.instance_id.clone();
    let generation = r.completion.generation;
    let claim = r.completion.claim.unwrap_or(0);
    match record_with_retries(inner, &r.completion).await {
        Ok(recorded) => {
            if recorded {
                metrics::counter!("weft_activities_completed_total").increment(1);
            }
            // Not recorded: a late or duplicate result (the task is no longer pending). An
            // earlier copy may have landed with its reply lost, so wake the instance anyway.
            inner.wake(&id);
            Ok(())
        }
        // Claimed since by a recovery scan (here or on the bucket's new owner): that dispatch
        // completes the task; this result is refused, so the task is never handed out again
        // after a result was recorded.
        Err(e @ StoreError::Reclaimed { .. }) => {
            metrics::counter!("weft_activity_results_refused_total").increment(1);
            tracing::debug!(instance = %id, error = %e, "activity result refused: task reclaimed");
            let bucket = bucket_of(&id);
            if inner.owns(&id) && inner.may_reclaim(bucket) {
                // The owner's own dispatch lost to a claim (a recovery scan of this sidecar, or
                // of one that held the bucket before): claim the bucket's tasks again so one
                // dispatch that can complete the task exists; tasks this sidecar already runs
                // only take the newer claim (`Hub::push`). A sidecar that does not serve the
                // bucket never claims (its claim would refuse the owner's results in turn),
                // and the fenced scope makes a claim under a lost lease change nothing.
                let scope = inner.owned().scope.clone();
                let pos = scope.buckets.iter().position(|b| *b == bucket);
                let scope = Scope {
                    app_id: scope.app_id,
                    buckets: vec![bucket],
                    epochs: scope.epochs.zip(pos).map(|(e, i)| vec![e[i]]),
                };
                let inner = inner.clone();
                tokio::spawn(async move {
                    if let Err(e) = inner.resync_scope(&scope).await {
                        tracing::warn!(error = %e, "claiming a refused task again failed");
                    }
                });
            }
            Err(EngineError::from(e))
        }
        Err(e) => {
            // Not recorded: hand the task out again (the worker drops its result).
            inner.hub.push(Job::Activity {
                generation,
                claim,
                request: r.request,
            });
            Err(EngineError::from(e))
        }
    }
}

/// How long a result whose write failed (nothing written, or outcome unknown) is written again
/// before its task is handed out instead.
const RECORD_RETRY_FOR: Duration = Duration::from_secs(10);

/// Records one result, writing it again while the store is unavailable or a commit's outcome is
/// unknown: the write is idempotent under the task's claim (a landed copy makes the next attempt
/// find the task completed), so the worker's work is kept instead of dispatched again.
async fn record_with_retries(
    inner: &Arc<Inner>,
    completion: &ActivityCompletion,
) -> std::result::Result<bool, StoreError> {
    let deadline = tokio::time::Instant::now() + RECORD_RETRY_FOR;
    let mut wait = Duration::from_millis(20);
    let mut unknown = false;
    loop {
        match inner.committer.complete_activity(completion.clone()).await {
            // A copy that landed under an unknown outcome was recorded all the same.
            Ok(recorded) => return Ok(recorded || unknown),
            Err(StoreError::OutcomeUnknown(_) | StoreError::Unavailable(_))
                if tokio::time::Instant::now() + wait < deadline =>
            {
                unknown = true;
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Records results an actor accepted in memory but will not commit (it retires, hands off or
/// its instance stalled), each through the durable path, on a task of its own.
pub(crate) fn spill(inner: &Arc<Inner>, results: Vec<ActivityResult>) {
    if results.is_empty() {
        return;
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        for r in results {
            if let Err(e) = record_durably(&inner, r).await {
                tracing::warn!(error = %e, "recording a held activity result failed; the activity runs again");
            }
        }
    });
}
