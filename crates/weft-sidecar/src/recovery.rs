//! Recovery: the durable path of activity results (task row deleted, result in the inbox)
//! whenever folding one into its actor's turn is not safe or not useful, and the recovery scan
//! that claims pending tasks again (start-up, unknown outcomes, take-overs, refused results).

use crate::error::{EngineError, Result};
use crate::hub::transit_key as task_key;
use crate::hub::{Absorb, Job};
use crate::mailbox::ActivityResult;
use crate::mailbox::ActorMsg;
use crate::parts::Parts;
use crate::telemetry::workflow::{Stage, stage};
use prost::Message;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use weft_config::{AccessPolicies, Operation, Target};
use weft_core::bucket::bucket_of;
use weft_core::history::{event, failure};
use weft_proto::durabletask::{ActivityRequest, TaskFailedEvent, history_event::EventType};
use weft_store::{ActivityCompletion, ActivityTask, Scope, StoreError};

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
/// commit, then wakes the instance; on failure the task is handed out again. The worker that
/// delivered the result (if it still waits) hears the outcome.
pub(crate) async fn record_durably(inner: &Arc<Parts>, mut r: ActivityResult) -> Result<()> {
    let ack = r.ack.take();
    let outcome = record(inner, r).await;
    if let Some(ack) = ack {
        let _ = ack.send(outcome.clone());
    }
    outcome
}

async fn record(inner: &Arc<Parts>, mut r: ActivityResult) -> Result<()> {
    let id = r.completion.instance_id.clone();
    let key = task_key(&r);
    loop {
        if let Some(c) = inner.hub.transit_claim(&key) {
            // This sidecar's scan claimed the task while its result was on the way here.
            r.completion.claim = Some(c);
        }
        let outcome = record_with_retries(inner, &r.completion).await;
        if !matches!(outcome, Err(StoreError::Reclaimed { .. })) {
            inner.hub.transit_end(&key);
        }
        match outcome {
            Ok(recorded) => {
                if recorded {
                    metrics::counter!("weft_activities_completed_total").increment(1);
                }
                // Not recorded: a late or duplicate result (the task is no longer pending). An
                // earlier copy may have landed with its reply lost, so wake the instance anyway.
                inner.actors.wake(&id);
                return Ok(());
            }
            // Claimed since by a recovery scan (here or on the bucket's new owner): that
            // dispatch completes the task; this result is refused, so the task is never handed
            // out again after a result was recorded. Unless the claim is this sidecar's own
            // scan's, which dispatched nothing for a result in transit: then it is recorded
            // under that claim.
            Err(e @ StoreError::Reclaimed { .. }) => match inner.hub.transit_refused(r) {
                Some(again) => r = again,
                None => return Err(refused(inner, &id, e)),
            },
            Err(e) => {
                // Not recorded: hand the task out again (the worker drops its result).
                inner.hub.push(Job::Activity {
                    generation: r.completion.generation,
                    claim: r.completion.claim.unwrap_or(0),
                    request: r.request,
                });
                return Err(EngineError::from(e));
            }
        }
    }
}

/// A result refused because its task was claimed for another dispatch.
fn refused(inner: &Arc<Parts>, id: &str, e: StoreError) -> EngineError {
    metrics::counter!("weft_activity_results_refused_total").increment(1);
    tracing::debug!(instance = %id, error = %e, "activity result refused: task reclaimed");
    let bucket = bucket_of(id);
    if inner.view.owns(id) && inner.view.may_reclaim(bucket) {
        // The owner's own dispatch lost to a claim (a recovery scan of one that held the
        // bucket before): claim the bucket's tasks again so one dispatch that can complete the
        // task exists; tasks this sidecar already runs only take the newer claim (`Hub::push`).
        // A sidecar that does not serve the bucket never claims (its claim would refuse the
        // owner's results in turn), and the fenced scope makes a claim under a lost lease
        // change nothing.
        inner
            .view
            .reclaims
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        metrics::counter!("weft_activity_reclaims_total").increment(1);
        let scope = inner.view.owned().scope.clone();
        let pos = scope.buckets.iter().position(|b| *b == bucket);
        let scope = Scope {
            app_id: scope.app_id,
            buckets: vec![bucket],
            epochs: scope.epochs.zip(pos).map(|(e, i)| vec![e[i]]),
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            if let Err(e) = resync_scope(&inner, &scope).await {
                tracing::warn!(error = %e, "claiming a refused task again failed");
            }
        });
    }
    EngineError::from(e)
}

/// How long a result whose write failed (nothing written, or outcome unknown) is written again
/// before its task is handed out instead.
const RECORD_RETRY_FOR: Duration = Duration::from_secs(10);

/// Records one result, writing it again while the store is unavailable or a commit's outcome is
/// unknown: the write is idempotent under the task's claim (a landed copy makes the next attempt
/// find the task completed), so the worker's work is kept instead of dispatched again.
async fn record_with_retries(
    inner: &Arc<Parts>,
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
pub(crate) fn spill(inner: &Arc<Parts>, results: Vec<ActivityResult>) {
    if results.is_empty() {
        return;
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        // Together, so the group committer writes them in one transaction.
        let recorded = results.into_iter().map(|r| record_durably(&inner, r));
        for outcome in futures::future::join_all(recorded).await {
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "recording a held activity result failed; the activity runs again");
            }
        }
    });
}

/// Claims and re-queues every pending activity and wakes every instance with inbox events: the
/// start-up recovery, also run after a commit whose outcome is unknown (it may have landed, and
/// then its effects were never carried out).
pub(crate) async fn resync(inner: &Arc<Parts>) -> Result<()> {
    let scope = inner.view.scope();
    resync_scope(inner, &scope).await
}

/// The recovery scan limited to `scope` (all that is owned, or buckets just taken over).
pub(crate) async fn resync_scope(inner: &Arc<Parts>, scope: &Scope) -> Result<()> {
    let scanning = std::time::Instant::now();
    let claimed = inner.store.claim_activities(scope).await?;
    stage(Stage::ClaimScan, None, scanning.elapsed());
    for a in claimed {
        // This app's own tasks and those other apps address to it (checked against the
        // access policy); a task of a bucket handed off while the scan ran is skipped.
        dispatch(inner, a).await?;
    }
    for id in inner.store.instances_with_inbox(scope).await? {
        inner.actors.wake(&id);
    }
    inner.timers_changed.notify_one();
    Ok(())
}

/// Gives stalled instances in `scope` another chance (a worker connected, or the buckets
/// were just taken over).
pub(crate) async fn retry_stalled(inner: &Arc<Parts>, scope: &Scope) {
    match inner.store.stalled_instances(scope, 1000).await {
        Ok(ids) => {
            for id in ids {
                inner.actors.send(&id, ActorMsg::Retry);
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing stalled instances failed"),
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
        spill(inner, vec![*r]);
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
    let details = failure(weft_config::DENIED_ERROR_TYPE, why);
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
