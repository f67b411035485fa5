//! The SQL of the owned buckets' background work: claiming pending activity tasks, recording
//! activity results, and the inbox, reminder and stalled-instance scans, each limited to a scope.

use deadpool_postgres::Transaction;
use weft_core::Micros;
use weft_core::bucket::bucket_of;
use weft_proto::durabletask::HistoryEvent;

use super::R;
use super::ops::{IN_SCOPE, col, insert_inbox};
use crate::codec::decode_event;
use crate::{ActivityTask, Reminder, Scope};

/// Makes the rest of the transaction use generic plans. The reminder polls filter on the
/// scope's bucket array (all 4,096 buckets for a lone sidecar), and a per-call plan estimates
/// the selectivity of every element: 38 ms of planning per `next_reminder_due` and 5 ms per
/// claim under load, for statements that run in well under a millisecond (docs/benchmarks.md).
pub(crate) async fn generic_plans(tx: &tokio_postgres::Transaction<'_>) -> R<()> {
    tx.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
        .await?;
    Ok(())
}

pub(crate) async fn claim_activities(tx: &Transaction<'_>, scope: &Scope) -> R<Vec<ActivityTask>> {
    // A row being completed meanwhile is waited for: once deleted it is not claimed. The
    // instances' own tasks, and the tasks other apps' instances address to this app.
    claim(
        tx,
        &format!("(app_id = '' AND {IN_SCOPE}) OR (app_id = $2 AND bucket = ANY($1::int[]))"),
        scope,
    )
    .await
}

/// Claims the cross-app tasks addressed to `scope`'s app in its buckets that nobody has claimed
/// yet (claim 0: written by the calling instance's turn, never dispatched).
pub(crate) async fn claim_new_remote(tx: &Transaction<'_>, scope: &Scope) -> R<Vec<ActivityTask>> {
    claim(
        tx,
        "app_id = $2 AND bucket = ANY($1::int[]) AND claim = 0",
        scope,
    )
    .await
}

async fn claim(tx: &Transaction<'_>, filter: &str, scope: &Scope) -> R<Vec<ActivityTask>> {
    let st = tx
        .prepare_cached(&format!(
            "WITH c AS (UPDATE activities SET claim = claim + 1 WHERE {filter} \
                 RETURNING instance_id, generation, task_id, request, claim, app_id) \
             SELECT * FROM c ORDER BY instance_id, task_id"
        ))
        .await?;
    let rows = tx.query(&st, &[&scope.buckets, &scope.app_id]).await?;
    rows.iter()
        .map(|r| {
            Ok(ActivityTask {
                instance_id: col(r, 0)?,
                generation: col(r, 1)?,
                task_id: col(r, 2)?,
                request: col(r, 3)?,
                claim: col(r, 4)?,
                app_id: col(r, 5)?,
            })
        })
        .collect()
}

pub(crate) async fn cross_app_backlog(
    c: &impl deadpool_postgres::GenericClient,
) -> R<Vec<(String, i64)>> {
    let st = c
        .prepare_cached(
            "SELECT app_id, count(*) FROM activities WHERE app_id <> '' AND claim = 0 \
             GROUP BY app_id ORDER BY app_id",
        )
        .await?;
    let rows = c.query(&st, &[]).await?;
    rows.iter().map(|r| Ok((col(r, 0)?, col(r, 1)?))).collect()
}

pub(crate) async fn complete_activity(
    tx: &Transaction<'_>,
    id: &str,
    task_id: i32,
    generation: i64,
    event: &HistoryEvent,
) -> R<bool> {
    // The instance row first (lock order, docs/cluster.md): waits for a concurrent (forced)
    // purge, which locks the row before deleting the task.
    let lock = tx
        .prepare_cached("SELECT 1 FROM instances WHERE instance_id = $1 FOR KEY SHARE")
        .await?;
    let exists = tx.query_opt(&lock, &[&id]).await?.is_some();
    let st = tx
        .prepare_cached(
            "DELETE FROM activities WHERE instance_id = $1 AND task_id = $2 AND generation = $3",
        )
        .await?;
    if tx.execute(&st, &[&id, &task_id, &generation]).await? == 0 {
        return Ok(false);
    }
    if exists {
        // For the generation that scheduled it.
        insert_inbox(tx, id, event, Some(generation)).await?;
    }
    Ok(true)
}

pub(crate) async fn instances_with_inbox(
    c: &impl deadpool_postgres::GenericClient,
    scope: &Scope,
) -> R<Vec<String>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT DISTINCT instance_id FROM inbox WHERE {IN_SCOPE} ORDER BY instance_id"
        ))
        .await?;
    let rows = c.query(&st, &[&scope.buckets, &scope.app_id]).await?;
    rows.iter().map(|r| col(r, 0)).collect()
}

/// Claims with `FOR UPDATE SKIP LOCKED`: concurrent claimers skip each other's rows instead of
/// waiting, and the re-checked lease keeps a just-claimed row from being handed out twice.
pub(crate) async fn claim_reminders(
    tx: &Transaction<'_>,
    scope: &Scope,
    now: Micros,
    lease_until: Micros,
    limit: usize,
) -> R<Vec<Reminder>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let st = tx
        .prepare_cached(&format!(
            "UPDATE reminders SET lease_until = $4 WHERE id IN ( \
                 SELECT id FROM reminders \
                 WHERE {IN_SCOPE} AND due_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
                 ORDER BY due_at, id LIMIT $5 FOR UPDATE SKIP LOCKED) \
             RETURNING id, instance_id, generation, due_at, event"
        ))
        .await?;
    let rows = tx
        .query(
            &st,
            &[&scope.buckets, &scope.app_id, &now, &lease_until, &limit],
        )
        .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(Reminder {
                id: col(r, 0)?,
                instance_id: col(r, 1)?,
                generation: col(r, 2)?,
                due_at: col(r, 3)?,
                event: decode_event(&col::<Vec<u8>>(r, 4)?)?,
            })
        })
        .collect::<R<Vec<_>>>()?;
    out.sort_by_key(|r| (r.due_at, r.id));
    Ok(out)
}

pub(crate) async fn fire_reminder(tx: &Transaction<'_>, reminder_id: i64) -> R<bool> {
    let st = tx
        .prepare_cached(
            "DELETE FROM reminders WHERE id = $1 RETURNING instance_id, event, generation",
        )
        .await?;
    let Some(row) = tx.query_opt(&st, &[&reminder_id]).await? else {
        return Ok(false);
    };
    let id: String = col(&row, 0)?;
    let event: Vec<u8> = col(&row, 1)?;
    let generation: i64 = col(&row, 2)?;
    // The stored bytes move as they are, for the generation that set the timer; dropped if the
    // instance is gone (the key-share lock waits for a concurrent purge).
    let st = tx
        .prepare_cached(
            "INSERT INTO inbox (instance_id, event, generation, bucket) \
             SELECT i.instance_id, $2, $3, $4 FROM (SELECT instance_id FROM instances \
                 WHERE instance_id = $1 FOR KEY SHARE) AS i",
        )
        .await?;
    tx.execute(&st, &[&id, &event, &generation, &bucket_of(&id)])
        .await?;
    Ok(true)
}

pub(crate) async fn next_reminder_due(
    c: &impl deadpool_postgres::GenericClient,
    scope: &Scope,
) -> R<Option<Micros>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT MIN(t) FROM ( \
             SELECT MIN(due_at) AS t FROM reminders WHERE lease_until IS NULL AND {IN_SCOPE} \
             UNION ALL \
             SELECT MIN(CASE WHEN lease_until > due_at THEN lease_until ELSE due_at END) \
             FROM reminders WHERE lease_until IS NOT NULL AND {IN_SCOPE}) AS next"
        ))
        .await?;
    let row = c.query_one(&st, &[&scope.buckets, &scope.app_id]).await?;
    col(&row, 0)
}

pub(crate) async fn stalled_instances(
    c: &impl deadpool_postgres::GenericClient,
    scope: &Scope,
    limit: usize,
) -> R<Vec<String>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let st = c
        .prepare_cached(
            "SELECT instance_id FROM instances WHERE bucket = ANY($1::int[]) \
             AND (app_id = $2 OR app_id = '') AND status = $3 ORDER BY instance_id LIMIT $4",
        )
        .await?;
    let stalled = weft_core::RuntimeStatus::Stalled.code();
    let rows = c
        .query(&st, &[&scope.buckets, &scope.app_id, &stalled, &limit])
        .await?;
    rows.iter().map(|r| col(r, 0)).collect()
}
