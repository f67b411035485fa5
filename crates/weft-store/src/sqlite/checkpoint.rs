//! Executes a [`CheckpointPlan`] on SQLite, one statement per row, inside the caller's IMMEDIATE
//! transaction (which has already checked the fence): the steps of `crate::plan`, in order.

use rusqlite::{Connection, OptionalExtension, ToSql, params, params_from_iter};
use weft_core::Micros;

use super::map_err;
use super::ops::{create, deliver, insert_reminder, row_params};
use crate::plan::{CheckpointPlan, FoldedTask, MetaRow, Outgoing, TaskRow};
use crate::{Checkpoint, CreateOutcome, Result, StoreError};

/// One checkpoint inside the caller's transaction. The fenced UPDATE runs first, so a conflict
/// returns before anything was written.
pub(crate) fn checkpoint(c: &Connection, cp: &Checkpoint, now: Micros) -> Result<()> {
    let plan = CheckpointPlan::of(cp);
    if !update_row(c, plan.id, plan.expected_version, &plan.row)? {
        return Err(StoreError::Conflict {
            instance_id: plan.id.to_string(),
            expected: plan.expected_version,
        });
    }
    if plan.reset_history {
        c.prepare_cached("DELETE FROM history WHERE instance_id = ?1")
            .map_err(map_err)?
            .execute([plan.id])
            .map_err(map_err)?;
    }
    append_history(c, plan.id, plan.generation(), &plan.append)?;
    consume_inbox(c, plan.id, plan.consume)?;
    fold(c, plan.id, &plan.fold)?;
    if let Some(below) = plan.cancel_below {
        cancel(c, plan.id, below)?;
    }
    for t in &plan.schedule {
        schedule(c, t)?;
    }
    for r in &plan.remind {
        insert_reminder(c, r)?;
    }
    send(c, &plan, now)
}

/// The fenced row update; `false` if the row's version was no longer `expected`.
fn update_row(c: &Connection, id: &str, expected: i64, m: &MetaRow<'_>) -> Result<bool> {
    let mut p: Vec<&dyn ToSql> = vec![&id];
    p.extend(row_params(m));
    p.push(&expected);
    let n = c
        .prepare_cached(
            "UPDATE instances SET name = ?2, status = ?3, execution_id = ?4, generation = ?5, \
             input = ?6, output = ?7, custom_status = ?8, failure = ?9, \
             parent_instance_id = ?10, created_at = ?11, updated_at = ?12, started_at = ?13, \
             completed_at = ?14, scheduled_start_at = ?15, version = version + 1 \
             WHERE instance_id = ?1 AND version = ?16",
        )
        .map_err(map_err)?
        .execute(params_from_iter(p))
        .map_err(map_err)?;
    Ok(n > 0)
}

/// Appends after the highest seq of the instance's generation (history is read per generation
/// in seq order; with the generation the MAX is one step down the primary key).
fn append_history(c: &Connection, id: &str, generation: i64, events: &[Vec<u8>]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let first: i64 = c
        .prepare_cached(
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM history WHERE instance_id = ?1 AND generation = ?2",
        )
        .map_err(map_err)?
        .query_row(params![id, generation], |r| r.get(0))
        .map_err(map_err)?;
    let mut ins = c
        .prepare_cached(
            "INSERT INTO history (instance_id, generation, seq, event) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(map_err)?;
    for (seq, ev) in (first..).zip(events) {
        ins.execute(params![id, generation, seq, ev])
            .map_err(map_err)?;
    }
    Ok(())
}

fn consume_inbox(c: &Connection, id: &str, seqs: &[i64]) -> Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    let mut del = c
        .prepare_cached("DELETE FROM inbox WHERE instance_id = ?1 AND seq = ?2")
        .map_err(map_err)?;
    for seq in seqs {
        del.execute(params![id, seq]).map_err(map_err)?;
    }
    Ok(())
}

/// Results folded into this turn: their rows go with it (none left is fine, see
/// `Checkpoint::completed_activities`; one claimed since refuses the turn).
fn fold(c: &Connection, id: &str, tasks: &[FoldedTask]) -> Result<()> {
    if tasks.is_empty() {
        return Ok(());
    }
    let mut claim_of = c
        .prepare_cached(
            "SELECT claim FROM activities WHERE instance_id = ?1 AND task_id = ?2 \
             AND generation = ?3",
        )
        .map_err(map_err)?;
    let mut del = c
        .prepare_cached(
            "DELETE FROM activities WHERE instance_id = ?1 AND task_id = ?2 AND generation = ?3",
        )
        .map_err(map_err)?;
    for t in tasks {
        if let Some(claim) = t.claim {
            let now: Option<i64> = claim_of
                .query_row(params![id, t.task_id, t.generation], |r| r.get(0))
                .optional()
                .map_err(map_err)?;
            if now.is_some_and(|n| n != claim) {
                return Err(StoreError::Reclaimed {
                    instance_id: id.to_string(),
                    task_id: t.task_id,
                });
            }
        }
        del.execute(params![id, t.task_id, t.generation])
            .map_err(map_err)?;
    }
    Ok(())
}

fn cancel(c: &Connection, id: &str, below: i64) -> Result<()> {
    for sql in [
        "DELETE FROM activities WHERE instance_id = ?1 AND generation < ?2",
        "DELETE FROM reminders WHERE instance_id = ?1 AND generation < ?2",
    ] {
        c.prepare_cached(sql)
            .map_err(map_err)?
            .execute(params![id, below])
            .map_err(map_err)?;
    }
    Ok(())
}

/// Upsert: a task ID re-used by a newer generation replaces the stale task.
fn schedule(c: &Connection, t: &TaskRow<'_>) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO activities (instance_id, task_id, generation, request, bucket, app_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (instance_id, task_id) DO UPDATE \
         SET generation = excluded.generation, request = excluded.request, claim = 0, \
             app_id = excluded.app_id",
    )
    .map_err(map_err)?
    .execute(params![
        t.instance_id,
        t.task_id,
        t.generation,
        t.request,
        t.bucket,
        t.app_id
    ])
    .map_err(map_err)?;
    Ok(())
}

/// The outbound messages, in the turn's order (inbox seqs follow it).
fn send(c: &Connection, plan: &CheckpointPlan<'_>, now: Micros) -> Result<()> {
    for out in &plan.outbound {
        match out {
            Outgoing::Deliver(d) => {
                deliver(c, d)?;
            }
            Outgoing::Create {
                create: req,
                on_conflict,
            } => {
                if create(c, req, now)? == CreateOutcome::Existing
                    && let Some(d) = on_conflict
                {
                    deliver(c, d)?;
                }
            }
        }
    }
    Ok(())
}
