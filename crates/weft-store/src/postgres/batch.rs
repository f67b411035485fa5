//! Set-based group commit on PostgreSQL: a batch of checkpoints, activity results or creations
//! costs a constant number of round trips (multi-row statements over `unnest` arrays, one fenced
//! `UPDATE … FROM … RETURNING`, no savepoints) whatever its size.

use std::collections::HashSet;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use weft_core::Micros;
use weft_core::bucket::bucket_of;

use super::R;
use super::{leases, ops};
use crate::codec::{encode_event, start_due_at};
use crate::{
    ActivityCompletion, Checkpoint, CreateInstance, CreateOutcome, Outbound, Result, StoreError,
};

type Arg<'a> = &'a (dyn ToSql + Sync);

fn bytes(s: &Option<String>) -> Option<&[u8]> {
    s.as_deref().map(str::as_bytes)
}

/// Whether a checkpoint can go through the set-based statements. An outbound `Create` (child
/// workflows: its outcome decides whether `on_conflict` is delivered, and it may replace an
/// instance) and work filed under another instance are rare; those members take the
/// per-member path (`ops::checkpoint` under a savepoint) inside the same transaction.
fn set_based(cp: &Checkpoint) -> bool {
    cp.outbound
        .iter()
        .all(|o| matches!(o, Outbound::Deliver { .. }))
        && cp
            .new_activities
            .iter()
            .all(|a| a.instance_id == cp.instance_id)
        && cp
            .new_reminders
            .iter()
            .all(|r| r.instance_id == cp.instance_id)
}

/// One statement's answer, boxed so statements of different shapes share one pipeline.
type Pending<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = std::result::Result<u64, tokio_postgres::Error>>
            + Send
            + 'a,
    >,
>;

/// Runs `futs` pipelined (sent together, answered in order) and returns the first error.
async fn pipeline(futs: Vec<Pending<'_>>) -> R<()> {
    for r in futures::future::join_all(futs).await {
        r?;
    }
    Ok(())
}

/// `Store::checkpoint_batch` inside the caller's transaction. Members are answered by index; a
/// member whose fence failed gets `Conflict` and none of its writes are issued.
///
/// Round trips: row locks + fenced UPDATE (one pipeline), then every other write of the winners
/// (one pipeline), then the rare per-member members. A statement error (not a fence) fails the
/// whole transaction; the caller then falls back to the per-member path to isolate it.
pub(crate) async fn checkpoints(
    tx: &mut Transaction<'_>,
    cps: &[Checkpoint],
    now: Micros,
) -> R<Vec<Result<()>>> {
    let n = cps.len();
    let mut results: Vec<Result<()>> = (0..n).map(|_| Ok(())).collect();
    // Lease rows first (in lease order), then instance rows: every owner write locks in this
    // order, so concurrent batches and take-overs cannot deadlock.
    let epochs = leases::lock_epochs(tx, cps.iter().filter_map(|c| c.fence.as_ref())).await?;
    let mut fenced = vec![false; n];
    for (i, cp) in cps.iter().enumerate() {
        if let Some(f) = &cp.fence
            && epochs.get(&(f.app_id.clone(), f.bucket)) != Some(&f.epoch)
        {
            fenced[i] = true;
            results[i] = Err(StoreError::fenced(f));
        }
    }
    // Instance-ID order: rows are locked in it, so concurrent batches cannot deadlock.
    let mut order: Vec<usize> = (0..n).filter(|i| !fenced[*i]).collect();
    order.sort_by(|&a, &b| cps[a].instance_id.cmp(&cps[b].instance_id));
    let mut seen = HashSet::new();
    let (mut simple, mut single) = (Vec::new(), Vec::new());
    for &i in &order {
        // A second turn of the same instance in one batch (never sent by the engine) is fenced
        // after the first, as sequential commits would be.
        if set_based(&cps[i]) && seen.insert(cps[i].instance_id.as_str()) {
            simple.push(i);
        } else {
            single.push(i);
        }
    }

    if !simple.is_empty() {
        let winners = fenced_update(tx, cps, &simple).await?;
        let mut won = Vec::with_capacity(winners.len());
        for &i in &simple {
            if winners.contains(cps[i].instance_id.as_str()) {
                won.push(i);
            } else {
                results[i] = Err(StoreError::Conflict {
                    instance_id: cps[i].instance_id.clone(),
                    expected: cps[i].expected_version,
                });
            }
        }
        write_winners(tx, cps, &won).await?;
    }

    for i in single {
        // A savepoint per member: its failure rolls back only its own writes.
        let sp = tx.savepoint("weft_cp").await?;
        match ops::checkpoint(&sp, &cps[i], now).await {
            Ok(()) => sp.commit().await?,
            Err(e) if e.retryable() => return Err(e),
            Err(e) => {
                sp.rollback().await?;
                results[i] = Err(e.into_store());
            }
        }
    }
    Ok(results)
}

/// Locks the members' rows in ID order, then applies every fenced row update in one statement;
/// returns the IDs whose `version` matched (the winners).
async fn fenced_update(
    tx: &Transaction<'_>,
    cps: &[Checkpoint],
    members: &[usize],
) -> R<HashSet<String>> {
    let lock = tx
        .prepare_cached(
            "SELECT 1 FROM instances WHERE instance_id = ANY($1::text[]) \
             ORDER BY instance_id FOR NO KEY UPDATE",
        )
        .await?;
    let update = tx
        .prepare_cached(
            "UPDATE instances AS i SET name = u.name, status = u.status, \
                 execution_id = u.execution_id, generation = u.generation, input = u.input, \
                 output = u.output, custom_status = u.custom_status, failure = u.failure, \
                 parent_instance_id = u.parent, created_at = u.created_at, \
                 updated_at = u.updated_at, started_at = u.started_at, \
                 completed_at = u.completed_at, scheduled_start_at = u.scheduled_start_at, \
                 version = i.version + 1 \
             FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::text[], \
                 $6::bigint[], $7::bytea[], $8::bytea[], $9::bytea[], $10::bytea[], $11::text[], \
                 $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[]) \
                 AS u(id, expected, name, status, execution_id, generation, input, output, \
                      custom_status, failure, parent, created_at, updated_at, started_at, \
                      completed_at, scheduled_start_at) \
             WHERE i.instance_id = u.id AND i.version = u.expected \
             RETURNING i.instance_id",
        )
        .await?;
    let cp = |i: &usize| &cps[*i];
    let ids: Vec<&str> = members.iter().map(|i| cp(i).instance_id.as_str()).collect();
    let expected: Vec<i64> = members.iter().map(|i| cp(i).expected_version).collect();
    let names: Vec<&str> = members.iter().map(|i| cp(i).meta.name.as_str()).collect();
    let status: Vec<i32> = members.iter().map(|i| cp(i).meta.status.code()).collect();
    let exec: Vec<&str> = members
        .iter()
        .map(|i| cp(i).meta.execution_id.as_str())
        .collect();
    let gens: Vec<i64> = members.iter().map(|i| cp(i).meta.generation).collect();
    let input: Vec<Option<&[u8]>> = members.iter().map(|i| bytes(&cp(i).meta.input)).collect();
    let output: Vec<Option<&[u8]>> = members.iter().map(|i| bytes(&cp(i).meta.output)).collect();
    let custom: Vec<Option<&[u8]>> = members
        .iter()
        .map(|i| bytes(&cp(i).meta.custom_status))
        .collect();
    let failure: Vec<Option<&[u8]>> = members
        .iter()
        .map(|i| cp(i).meta.failure.as_deref())
        .collect();
    let parent: Vec<Option<&str>> = members
        .iter()
        .map(|i| cp(i).meta.parent_instance_id.as_deref())
        .collect();
    let created: Vec<i64> = members.iter().map(|i| cp(i).meta.created_at).collect();
    let updated: Vec<i64> = members.iter().map(|i| cp(i).meta.updated_at).collect();
    let started: Vec<Option<i64>> = members.iter().map(|i| cp(i).meta.started_at).collect();
    let completed: Vec<Option<i64>> = members.iter().map(|i| cp(i).meta.completed_at).collect();
    let sched: Vec<Option<i64>> = members
        .iter()
        .map(|i| cp(i).meta.scheduled_start_at)
        .collect();
    let lock_args: [Arg; 1] = [&ids];
    let args: [Arg; 16] = [
        &ids, &expected, &names, &status, &exec, &gens, &input, &output, &custom, &failure,
        &parent, &created, &updated, &started, &completed, &sched,
    ];
    // Pipelined: the lock statement is sent first and runs first.
    let (locked, rows) = futures::join!(tx.query(&lock, &lock_args), tx.query(&update, &args));
    locked?;
    let mut out = HashSet::with_capacity(members.len());
    for r in rows? {
        out.insert(r.try_get::<_, String>(0)?);
    }
    Ok(out)
}

/// Every write of the winning members other than the row: one multi-row statement per kind, all
/// pipelined. The statements run in the order of `ops::checkpoint` (reset before append, cancel
/// before schedule, deliveries last) and each member only touches its own instance's rows, so
/// the outcome equals the members committed one by one.
async fn write_winners(tx: &Transaction<'_>, cps: &[Checkpoint], won: &[usize]) -> R<()> {
    if won.is_empty() {
        return Ok(());
    }
    let reset = tx
        .prepare_cached("DELETE FROM history WHERE instance_id = ANY($1::text[])")
        .await?;
    // Each member's events continue after the highest seq its instance has (its whole history,
    // as in `ops::checkpoint`); the subquery sees the table as it was before this statement.
    let append = tx
        .prepare_cached(
            "WITH u AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[]) \
                 AS u(id, generation, ord, ev)), \
             b AS (SELECT d.id, COALESCE((SELECT MAX(h.seq) + 1 FROM history h \
                     WHERE h.instance_id = d.id), 0) AS base \
                   FROM (SELECT DISTINCT id FROM u) AS d) \
             INSERT INTO history (instance_id, generation, seq, event) \
             SELECT u.id, u.generation, b.base + u.ord, u.ev FROM u JOIN b ON b.id = u.id",
        )
        .await?;
    let consume = tx
        .prepare_cached(
            "DELETE FROM inbox AS b USING unnest($1::text[], $2::bigint[]) AS u(id, seq) \
             WHERE b.seq = u.seq AND b.instance_id = u.id",
        )
        .await?;
    // Activity results folded into the turn: their task rows go with it (no row: recorded
    // durably meanwhile, nothing to do — as in `ops::checkpoint`).
    let fold = tx
        .prepare_cached(
            "DELETE FROM activities AS a \
             USING unnest($1::text[], $2::int[], $3::bigint[]) AS u(id, task, generation) \
             WHERE a.instance_id = u.id AND a.task_id = u.task AND a.generation = u.generation",
        )
        .await?;
    let cancel_tasks = tx
        .prepare_cached(
            "DELETE FROM activities AS a USING unnest($1::text[], $2::bigint[]) AS u(id, below) \
             WHERE a.instance_id = u.id AND a.generation < u.below",
        )
        .await?;
    let cancel_timers = tx
        .prepare_cached(
            "DELETE FROM reminders AS r USING unnest($1::text[], $2::bigint[]) AS u(id, below) \
             WHERE r.instance_id = u.id AND r.generation < u.below",
        )
        .await?;
    // Upsert: a task ID re-used by a newer generation replaces the stale task.
    let schedule = tx
        .prepare_cached(
            "INSERT INTO activities (instance_id, task_id, generation, request, bucket) \
             SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bytea[], $5::int[]) \
             ON CONFLICT (instance_id, task_id) DO UPDATE \
             SET generation = excluded.generation, request = excluded.request, claim = 0",
        )
        .await?;
    let timers = tx
        .prepare_cached(
            "INSERT INTO reminders (instance_id, generation, due_at, event, bucket) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[], $5::int[])",
        )
        .await?;
    // As `ops::deliver`, many at once, in member then outbound order (inbox seqs follow it).
    let deliver = tx
        .prepare_cached(
            "INSERT INTO inbox (instance_id, event, generation, bucket) \
             SELECT i.instance_id, u.ev, \
                 CASE WHEN u.exec IS NULL THEN NULL ELSE i.generation END, u.bucket \
             FROM unnest($1::text[], $2::bytea[], $3::text[], $4::int[]) \
                 WITH ORDINALITY AS u(id, ev, exec, bucket, ord) \
             JOIN (SELECT instance_id, generation, execution_id FROM instances \
                   WHERE instance_id = ANY($1::text[]) FOR KEY SHARE) AS i \
               ON i.instance_id = u.id AND (u.exec IS NULL OR i.execution_id = u.exec) \
             ORDER BY u.ord",
        )
        .await?;

    let mut reset_ids: Vec<&str> = Vec::new();
    let (mut h_ids, mut h_gens, mut h_ord, mut h_ev) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut c_ids, mut c_seqs): (Vec<&str>, Vec<i64>) = (Vec::new(), Vec::new());
    let (mut x_ids, mut x_below): (Vec<&str>, Vec<i64>) = (Vec::new(), Vec::new());
    let (mut f_ids, mut f_tasks, mut f_gens): (Vec<&str>, Vec<i32>, Vec<i64>) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut a_ids, mut a_tasks, mut a_gens, mut a_reqs, mut a_buckets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut r_ids, mut r_gens, mut r_due, mut r_ev, mut r_buckets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut d_ids, mut d_ev, mut d_exec, mut d_buckets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &i in won {
        let cp = &cps[i];
        let id = cp.instance_id.as_str();
        if cp.reset_history {
            reset_ids.push(id);
        }
        for (k, ev) in cp.append.iter().enumerate() {
            h_ids.push(id);
            h_gens.push(cp.meta.generation);
            h_ord.push(k as i64);
            h_ev.push(encode_event(ev));
        }
        for seq in &cp.consumed_inbox {
            c_ids.push(id);
            c_seqs.push(*seq);
        }
        for (task, generation) in &cp.completed_activities {
            f_ids.push(id);
            f_tasks.push(*task);
            f_gens.push(*generation);
        }
        if cp.cancel_pending {
            // A terminal instance drops everything; otherwise only older generations' leftovers.
            x_ids.push(id);
            x_below.push(if cp.meta.status.is_terminal() {
                i64::MAX
            } else {
                cp.meta.generation
            });
        }
        for t in &cp.new_activities {
            a_ids.push(t.instance_id.as_str());
            a_tasks.push(t.task_id);
            a_gens.push(t.generation);
            a_reqs.push(t.request.as_slice());
            a_buckets.push(bucket_of(&t.instance_id));
        }
        for r in &cp.new_reminders {
            r_ids.push(r.instance_id.as_str());
            r_gens.push(r.generation);
            r_due.push(r.due_at);
            r_ev.push(encode_event(&r.event));
            r_buckets.push(bucket_of(&r.instance_id));
        }
        for o in &cp.outbound {
            if let Outbound::Deliver {
                instance_id,
                execution_id,
                event,
            } = o
            {
                d_ids.push(instance_id.as_str());
                d_ev.push(encode_event(event));
                d_exec.push(execution_id.as_deref());
                d_buckets.push(bucket_of(instance_id));
            }
        }
    }
    let reset_args: [Arg; 1] = [&reset_ids];
    let append_args: [Arg; 4] = [&h_ids, &h_gens, &h_ord, &h_ev];
    let consume_args: [Arg; 2] = [&c_ids, &c_seqs];
    let cancel_args: [Arg; 2] = [&x_ids, &x_below];
    let fold_args: [Arg; 3] = [&f_ids, &f_tasks, &f_gens];
    let schedule_args: [Arg; 5] = [&a_ids, &a_tasks, &a_gens, &a_reqs, &a_buckets];
    let timer_args: [Arg; 5] = [&r_ids, &r_gens, &r_due, &r_ev, &r_buckets];
    let deliver_args: [Arg; 4] = [&d_ids, &d_ev, &d_exec, &d_buckets];

    // Futures are polled (so sent) in this order, and the server runs them in that order.
    let mut batch: Vec<Pending<'_>> = Vec::new();
    if !reset_ids.is_empty() {
        batch.push(Box::pin(tx.execute(&reset, &reset_args)));
    }
    if !h_ids.is_empty() {
        batch.push(Box::pin(tx.execute(&append, &append_args)));
    }
    if !c_ids.is_empty() {
        batch.push(Box::pin(tx.execute(&consume, &consume_args)));
    }
    if !f_ids.is_empty() {
        batch.push(Box::pin(tx.execute(&fold, &fold_args)));
    }
    if !x_ids.is_empty() {
        batch.push(Box::pin(tx.execute(&cancel_tasks, &cancel_args)));
        batch.push(Box::pin(tx.execute(&cancel_timers, &cancel_args)));
    }
    if !a_ids.is_empty() {
        batch.push(Box::pin(tx.execute(&schedule, &schedule_args)));
    }
    if !r_ids.is_empty() {
        batch.push(Box::pin(tx.execute(&timers, &timer_args)));
    }
    if !d_ids.is_empty() {
        batch.push(Box::pin(tx.execute(&deliver, &deliver_args)));
    }
    pipeline(batch).await
}

/// `Store::complete_activity_batch` as one statement: delete the matching tasks, and for each
/// one deleted append its result to the inbox (for the generation that scheduled it; dropped if
/// the instance is gone, the key-share lock waiting for a concurrent purge). Returns, per
/// completion, whether its task was pending. A repeated completion in one batch answers false.
pub(crate) async fn complete_activities(
    tx: &Transaction<'_>,
    items: &[ActivityCompletion],
) -> R<Vec<Result<bool>>> {
    // `l` locks the pending rows first and reads their latest committed claim (a claim that
    // committed after this statement's snapshot is seen, not missed), so a refused result is
    // reported as refused rather than as already completed.
    let st = tx
        .prepare_cached(
            "WITH u AS (SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bytea[], \
                     $5::int[], $6::int[], $7::bigint[]) \
                     AS u(id, task, generation, ev, bucket, ord, claim)), \
             l AS (SELECT u.ord, (u.claim IS NULL OR a.claim = u.claim) AS ok \
                   FROM activities AS a JOIN u ON a.instance_id = u.id AND a.task_id = u.task \
                     AND a.generation = u.generation FOR UPDATE OF a), \
             d AS (DELETE FROM activities AS a USING u, l \
                   WHERE l.ok AND l.ord = u.ord AND a.instance_id = u.id AND a.task_id = u.task \
                     AND a.generation = u.generation RETURNING u.ord), \
             k AS (SELECT instance_id FROM instances WHERE instance_id = ANY($1::text[]) \
                   FOR KEY SHARE), \
             ins AS (INSERT INTO inbox (instance_id, event, generation, bucket) \
                     SELECT u.id, u.ev, u.generation, u.bucket FROM u \
                     JOIN d ON d.ord = u.ord JOIN k ON k.instance_id = u.id ORDER BY u.ord) \
             SELECT ord, true FROM d UNION ALL SELECT ord, false FROM l WHERE NOT ok",
        )
        .await?;
    let mut done: Vec<Result<bool>> = (0..items.len()).map(|_| Ok(false)).collect();
    let mut seen = HashSet::new();
    let (mut ids, mut tasks, mut gens, mut evs, mut buckets, mut ords, mut claims) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (k, c) in items.iter().enumerate() {
        if !seen.insert((c.instance_id.as_str(), c.task_id, c.generation)) {
            continue;
        }
        ids.push(c.instance_id.as_str());
        tasks.push(c.task_id);
        gens.push(c.generation);
        evs.push(encode_event(&c.event));
        buckets.push(bucket_of(&c.instance_id));
        ords.push(k as i32);
        claims.push(c.claim);
    }
    let args: [Arg; 7] = [&ids, &tasks, &gens, &evs, &buckets, &ords, &claims];
    for r in tx.query(&st, &args).await? {
        let k: i32 = r.try_get(0)?;
        let recorded: bool = r.try_get(1)?;
        let Some(item) = usize::try_from(k).ok().and_then(|k| items.get(k)) else {
            continue;
        };
        done[k as usize] = if recorded {
            Ok(true)
        } else {
            Err(StoreError::Reclaimed {
                instance_id: item.instance_id.clone(),
                task_id: item.task_id,
            })
        };
    }
    Ok(done)
}

/// `Store::create_instance_batch` inside the caller's transaction. New IDs (the common case) are
/// inserted by one multi-row `INSERT … ON CONFLICT DO NOTHING` that continues a purged
/// instance's sequences, then their start events by one pipeline; an ID that exists already (or
/// repeats within the batch) goes through `ops::create` under a savepoint, so its reuse policy
/// applies exactly as for a single create.
pub(crate) async fn creates(
    tx: &mut Transaction<'_>,
    reqs: &[CreateInstance],
    now: Micros,
) -> R<Vec<Result<CreateOutcome>>> {
    let n = reqs.len();
    let mut results: Vec<Option<Result<CreateOutcome>>> = (0..n).map(|_| None).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| reqs[a].meta.instance_id.cmp(&reqs[b].meta.instance_id));
    let mut seen = HashSet::new();
    let mut first = Vec::with_capacity(n);
    let mut single = Vec::new();
    for &i in &order {
        if seen.insert(reqs[i].meta.instance_id.as_str()) {
            first.push(i);
        } else {
            single.push(i);
        }
    }

    let insert = tx
        .prepare_cached(
            "INSERT INTO instances (instance_id, name, status, execution_id, generation, input, \
                 output, custom_status, failure, parent_instance_id, created_at, updated_at, \
                 started_at, completed_at, scheduled_start_at, version, app_id, bucket) \
             SELECT u.id, u.name, u.status, u.execution_id, \
                 CASE WHEN p.generation IS NULL THEN u.generation \
                      ELSE GREATEST(u.generation, p.generation + 1) END, \
                 u.input, u.output, u.custom_status, u.failure, u.parent, u.created_at, \
                 u.updated_at, u.started_at, u.completed_at, u.scheduled_start_at, \
                 COALESCE(p.version + 1, 1), u.app_id, u.bucket \
             FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bigint[], \
                 $6::bytea[], $7::bytea[], $8::bytea[], $9::bytea[], $10::text[], $11::bigint[], \
                 $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::text[], \
                 $17::int[]) \
                 AS u(id, name, status, execution_id, generation, input, output, custom_status, \
                      failure, parent, created_at, updated_at, started_at, completed_at, \
                      scheduled_start_at, app_id, bucket) \
             LEFT JOIN purged_instances AS p ON p.instance_id = u.id \
             ORDER BY u.id \
             ON CONFLICT (instance_id) DO NOTHING \
             RETURNING instance_id, generation, version",
        )
        .await?;
    let m = |i: &usize| &reqs[*i].meta;
    let ids: Vec<&str> = first.iter().map(|i| m(i).instance_id.as_str()).collect();
    let names: Vec<&str> = first.iter().map(|i| m(i).name.as_str()).collect();
    let status: Vec<i32> = first.iter().map(|i| m(i).status.code()).collect();
    let exec: Vec<&str> = first.iter().map(|i| m(i).execution_id.as_str()).collect();
    let gens: Vec<i64> = first.iter().map(|i| m(i).generation).collect();
    let input: Vec<Option<&[u8]>> = first.iter().map(|i| bytes(&m(i).input)).collect();
    let output: Vec<Option<&[u8]>> = first.iter().map(|i| bytes(&m(i).output)).collect();
    let custom: Vec<Option<&[u8]>> = first.iter().map(|i| bytes(&m(i).custom_status)).collect();
    let failure: Vec<Option<&[u8]>> = first.iter().map(|i| m(i).failure.as_deref()).collect();
    let parent: Vec<Option<&str>> = first
        .iter()
        .map(|i| m(i).parent_instance_id.as_deref())
        .collect();
    let created: Vec<i64> = first.iter().map(|i| m(i).created_at).collect();
    let updated: Vec<i64> = first.iter().map(|i| m(i).updated_at).collect();
    let started: Vec<Option<i64>> = first.iter().map(|i| m(i).started_at).collect();
    let completed: Vec<Option<i64>> = first.iter().map(|i| m(i).completed_at).collect();
    let sched: Vec<Option<i64>> = first.iter().map(|i| m(i).scheduled_start_at).collect();
    let apps: Vec<&str> = first.iter().map(|i| m(i).app_id.as_str()).collect();
    let buckets: Vec<i32> = first.iter().map(|i| bucket_of(&m(i).instance_id)).collect();
    let args: [Arg; 17] = [
        &ids, &names, &status, &exec, &gens, &input, &output, &custom, &failure, &parent, &created,
        &updated, &started, &completed, &sched, &apps, &buckets,
    ];
    let mut inserted = HashSet::new();
    for r in tx.query(&insert, &args).await? {
        inserted.insert(r.try_get::<_, String>(0)?);
    }

    // The INSERT read `purged_instances` in its own snapshot; a purge of the same ID that
    // committed while the INSERT waited for its row is seen only now (a new statement, a new
    // snapshot): this statement consumes every record of the created IDs and continues their
    // sequences above it. The start events then take the generation from the row.
    let unpurge = tx
        .prepare_cached(
            "WITH p AS (DELETE FROM purged_instances WHERE instance_id = ANY($1::text[])                  RETURNING instance_id, generation, version)              UPDATE instances AS i SET version = GREATEST(i.version, p.version + 1),                  generation = GREATEST(i.generation, p.generation + 1)              FROM p WHERE i.instance_id = p.instance_id",
        )
        .await?;
    let inbox = tx
        .prepare_cached(
            "INSERT INTO inbox (instance_id, event, generation, bucket)              SELECT u.id, u.ev, i.generation, u.bucket              FROM unnest($1::text[], $2::bytea[], $3::int[]) WITH ORDINALITY AS u(id, ev, bucket, ord)              JOIN instances AS i ON i.instance_id = u.id ORDER BY u.ord",
        )
        .await?;
    let timers = tx
        .prepare_cached(
            "INSERT INTO reminders (instance_id, generation, due_at, event, bucket)              SELECT u.id, i.generation, u.due_at, u.ev, u.bucket              FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::int[])                  AS u(id, due_at, ev, bucket)              JOIN instances AS i ON i.instance_id = u.id",
        )
        .await?;
    let mut created: Vec<&str> = Vec::new();
    let (mut b_ids, mut b_ev, mut b_buckets) = (Vec::new(), Vec::new(), Vec::new());
    let (mut r_ids, mut r_due, mut r_ev, mut r_buckets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Start events in the callers' order.
    let mut firsts = first.clone();
    firsts.sort_unstable();
    for i in firsts {
        let req = &reqs[i];
        let id = req.meta.instance_id.as_str();
        if !inserted.contains(id) {
            single.push(i); // exists already: its policy decides
            continue;
        }
        results[i] = Some(Ok(CreateOutcome::Created));
        created.push(id);
        match start_due_at(req.meta.scheduled_start_at, now) {
            Some(due_at) => {
                r_ids.push(id);
                r_due.push(due_at);
                r_ev.push(encode_event(&req.start_event));
                r_buckets.push(bucket_of(id));
            }
            None => {
                b_ids.push(id);
                b_ev.push(encode_event(&req.start_event));
                b_buckets.push(bucket_of(id));
            }
        }
    }
    let unpurge_args: [Arg; 1] = [&created];
    let inbox_args: [Arg; 3] = [&b_ids, &b_ev, &b_buckets];
    let timer_args: [Arg; 4] = [&r_ids, &r_due, &r_ev, &r_buckets];
    let mut batch: Vec<Pending<'_>> = Vec::new();
    if !created.is_empty() {
        batch.push(Box::pin(tx.execute(&unpurge, &unpurge_args)));
    }
    if !b_ids.is_empty() {
        batch.push(Box::pin(tx.execute(&inbox, &inbox_args)));
    }
    if !r_ids.is_empty() {
        batch.push(Box::pin(tx.execute(&timers, &timer_args)));
    }
    pipeline(batch).await?;

    single.sort_by(|&a, &b| (&reqs[a].meta.instance_id, a).cmp(&(&reqs[b].meta.instance_id, b)));
    for i in single {
        let sp = tx.savepoint("weft_create").await?;
        match ops::create(&sp, &reqs[i], now).await {
            Ok(o) => {
                sp.commit().await?;
                results[i] = Some(Ok(o));
            }
            Err(e) if e.retryable() => return Err(e),
            Err(e) => {
                sp.rollback().await?;
                results[i] = Some(Err(e.into_store()));
            }
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StoreError::Unavailable("create not attempted".into()))))
        .collect())
}
