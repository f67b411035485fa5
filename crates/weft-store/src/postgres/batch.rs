//! Set-based group commit on PostgreSQL: a batch of checkpoints, activity results or creations
//! costs a constant number of round trips (multi-row statements over `unnest` arrays, one fenced
//! `UPDATE … FROM … RETURNING`, no savepoints) whatever its size.

use std::collections::HashSet;

use deadpool_postgres::Transaction;
use weft_core::Micros;
use weft_core::bucket::bucket_of;

use super::checkpoint::{self, Fold, Pending, Rows, Writes, pipeline};
use super::ops::Arg;
use super::{R, leases, ops};
use crate::codec::{encode_event, start_due_at};
use crate::plan::{CheckpointPlan, MetaRow};
use crate::{ActivityCompletion, Checkpoint, CreateInstance, CreateOutcome, Result, StoreError};

/// `Store::checkpoint_batch` inside the caller's transaction. Members are answered by index; a
/// member whose fence failed gets `Conflict` and none of its writes are issued.
///
/// Round trips: row locks + fenced UPDATE (one pipeline), then every other write of the winners
/// (one pipeline), then the rare members that are not local ([`CheckpointPlan::is_local`]:
/// child creates, work filed under another instance), each by `checkpoint::checkpoint` under a
/// savepoint. A statement error (not a fence) fails the whole transaction; the caller then
/// falls back to the per-member path to isolate it.
pub(crate) async fn checkpoints(
    tx: &mut Transaction<'_>,
    cps: &[Checkpoint],
    now: Micros,
) -> R<Vec<Result<()>>> {
    let mut results: Vec<Result<()>> = (0..cps.len()).map(|_| Ok(())).collect();
    // Lease rows first (in lease order), then the children to create, then instance rows: every
    // owner write locks in this order, so concurrent batches and take-overs cannot deadlock.
    let epochs = leases::lock_epochs(tx, cps.iter().filter_map(|c| c.fence.as_ref())).await?;
    ops::lock_children(tx, cps).await?;
    let plans: Vec<CheckpointPlan> = cps.iter().map(CheckpointPlan::of).collect();
    let (mut simple, mut single) = (Vec::new(), Vec::new());
    let mut seen = HashSet::new();
    for i in in_id_order(cps, |c| &c.instance_id) {
        if let Some(f) = &cps[i].fence
            && epochs.get(&(f.app_id.clone(), f.bucket)) != Some(&f.epoch)
        {
            results[i] = Err(StoreError::fenced(f));
        } else if plans[i].is_local() && seen.insert(plans[i].id) {
            simple.push(i);
        } else {
            // A second turn of the same instance in one batch (never sent by the engine) is
            // fenced after the first, as sequential commits would be.
            single.push(i);
        }
    }
    if !simple.is_empty() {
        let winners = fenced_update(tx, &plans, &simple).await?;
        let mut won = Vec::with_capacity(winners.len());
        for &i in &simple {
            if winners.contains(plans[i].id) {
                won.push(i);
            } else {
                results[i] = Err(StoreError::Conflict {
                    instance_id: cps[i].instance_id.clone(),
                    expected: cps[i].expected_version,
                });
            }
        }
        write_winners(tx, &plans, &won).await?;
    }
    for i in single {
        // A savepoint per member: its failure rolls back only its own writes.
        let sp = tx.savepoint("weft_cp").await?;
        match checkpoint::checkpoint(&sp, &cps[i], now).await {
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

/// Indexes of `items` in the order of their instance IDs: rows are locked in it, so concurrent
/// batches cannot deadlock.
fn in_id_order<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<usize> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| id(&items[a]).cmp(id(&items[b])));
    order
}

/// Locks the rows of instances `$1` in ID order (before [`update_rows`] rewrites them).
pub(super) const LOCK_ROWS: &str = "SELECT 1 FROM instances WHERE instance_id = ANY($1::text[]) \
     ORDER BY instance_id FOR NO KEY UPDATE";

/// The fenced rewrite of many instance rows: `$1`–`$15` the columns ([`MetaColumns::args`]),
/// `$16` the expected versions; returns the IDs whose version matched.
macro_rules! update_rows {
    () => {
        "UPDATE instances AS i SET name = u.name, status = u.status, \
             execution_id = u.execution_id, generation = u.generation, input = u.input, \
             output = u.output, custom_status = u.custom_status, failure = u.failure, \
             parent_instance_id = u.parent, created_at = u.created_at, \
             updated_at = u.updated_at, started_at = u.started_at, \
             completed_at = u.completed_at, scheduled_start_at = u.scheduled_start_at, \
             version = i.version + 1 \
         FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bigint[], \
             $6::bytea[], $7::bytea[], $8::bytea[], $9::bytea[], $10::text[], \
             $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], \
             $16::bigint[]) \
             AS u(id, name, status, execution_id, generation, input, output, \
                  custom_status, failure, parent, created_at, updated_at, started_at, \
                  completed_at, scheduled_start_at, expected) \
         WHERE i.instance_id = u.id AND i.version = u.expected \
         RETURNING i.instance_id"
    };
}
pub(super) use update_rows;

/// Locks the members' rows in ID order, then applies every fenced row update in one statement;
/// returns the IDs whose `version` matched (the winners).
async fn fenced_update(
    tx: &Transaction<'_>,
    plans: &[CheckpointPlan<'_>],
    members: &[usize],
) -> R<HashSet<String>> {
    let lock = tx.prepare_cached(LOCK_ROWS).await?;
    let update = tx.prepare_cached(update_rows!()).await?;
    let mut cols = MetaColumns::default();
    let mut expected: Vec<i64> = Vec::with_capacity(members.len());
    for &i in members {
        // The row is the checkpoint's, whatever ID its meta carries.
        cols.push(&MetaRow {
            instance_id: plans[i].id,
            ..plans[i].row.clone()
        });
        expected.push(plans[i].expected_version);
    }
    let lock_args: [Arg; 1] = [&cols.ids];
    let mut args = cols.args();
    args.push(&expected);
    // Pipelined: the lock statement is sent first and runs first.
    let (locked, rows) = futures::join!(tx.query(&lock, &lock_args), tx.query(&update, &args));
    locked?;
    let mut out = HashSet::with_capacity(members.len());
    for r in rows? {
        out.insert(r.try_get::<_, String>(0)?);
    }
    Ok(out)
}

/// Every write of the winning members other than the row: one multi-row statement per step,
/// all pipelined, in the order of the single checkpoint (deliveries last). Each member only
/// touches its own instance's rows, so the outcome equals the members committed one by one.
/// A folded result whose task was claimed since refuses the whole batch, which the caller then
/// runs member by member to refuse that turn alone.
async fn write_winners(tx: &Transaction<'_>, plans: &[CheckpointPlan<'_>], won: &[usize]) -> R<()> {
    if won.is_empty() {
        return Ok(());
    }
    let st = Writes::prepare(tx).await?;
    let mut rows = Rows::default();
    for &i in won {
        rows.add(&plans[i]);
        rows.add_deliveries(&plans[i]);
    }
    let (batch, fold_at) = rows.send(tx, &st, Fold::Report, None);
    if checkpoint::reclaimed(futures::future::join_all(batch).await.into_iter(), fold_at)? {
        return Err(StoreError::Reclaimed {
            instance_id: String::new(),
            task_id: -1,
        }
        .into());
    }
    Ok(())
}

/// The columns of instance rows as `unnest` arrays, in the order the statements here take them.
#[derive(Default)]
pub(super) struct MetaColumns<'a> {
    pub(super) ids: Vec<&'a str>,
    names: Vec<&'a str>,
    status: Vec<i32>,
    exec: Vec<&'a str>,
    gens: Vec<i64>,
    input: Vec<Option<&'a [u8]>>,
    output: Vec<Option<&'a [u8]>>,
    custom: Vec<Option<&'a [u8]>>,
    failure: Vec<Option<&'a [u8]>>,
    parent: Vec<Option<&'a str>>,
    created: Vec<i64>,
    updated: Vec<i64>,
    started: Vec<Option<i64>>,
    completed: Vec<Option<i64>>,
    sched: Vec<Option<i64>>,
    apps: Vec<&'a str>,
    buckets: Vec<i32>,
}

impl<'a> MetaColumns<'a> {
    pub(super) fn push(&mut self, m: &MetaRow<'a>) {
        self.ids.push(m.instance_id);
        self.names.push(m.name);
        self.status.push(m.status);
        self.exec.push(m.execution_id);
        self.gens.push(m.generation);
        self.input.push(m.input);
        self.output.push(m.output);
        self.custom.push(m.custom_status);
        self.failure.push(m.failure);
        self.parent.push(m.parent_instance_id);
        self.created.push(m.created_at);
        self.updated.push(m.updated_at);
        self.started.push(m.started_at);
        self.completed.push(m.completed_at);
        self.sched.push(m.scheduled_start_at);
        self.apps.push(m.app_id);
        self.buckets.push(m.bucket);
    }

    /// `$1`–`$15`: the ID and the columns a checkpoint rewrites.
    pub(super) fn args(&self) -> Vec<Arg<'_>> {
        vec![
            &self.ids,
            &self.names,
            &self.status,
            &self.exec,
            &self.gens,
            &self.input,
            &self.output,
            &self.custom,
            &self.failure,
            &self.parent,
            &self.created,
            &self.updated,
            &self.started,
            &self.completed,
            &self.sched,
        ]
    }
}

/// `Store::complete_activity_batch` as one statement: delete the matching tasks, and for each
/// one deleted append its result to the inbox (for the generation that scheduled it; dropped if
/// the instance is gone, the key-share lock waiting for a concurrent purge). Returns, per
/// completion, whether its task was pending. A repeated completion in one batch answers false.
pub(crate) async fn complete_activities(
    tx: &Transaction<'_>,
    items: &[ActivityCompletion],
) -> R<Vec<Result<bool>>> {
    // Lock order (docs/cluster.md): the instance rows first, in ID order, then their task rows.
    // A purge or replace-on-create locks the row and then deletes its tasks; taking the tasks
    // first here would close a cycle with it.
    let lock = tx
        .prepare_cached(
            "SELECT instance_id FROM instances WHERE instance_id = ANY($1::text[]) \
             ORDER BY instance_id FOR KEY SHARE",
        )
        .await?;
    // `l` locks the pending rows (in key order) and reads their latest committed claim (a
    // claim that committed after this statement's snapshot is seen, not missed), so a refused
    // result is reported as refused rather than as already completed.
    let st = tx
        .prepare_cached(
            "WITH u AS (SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bytea[], \
                     $5::int[], $6::int[], $7::bigint[]) \
                     AS u(id, task, generation, ev, bucket, ord, claim)), \
             l AS (SELECT u.ord, (u.claim IS NULL OR a.claim = u.claim) AS ok \
                   FROM activities AS a JOIN u ON a.instance_id = u.id AND a.task_id = u.task \
                     AND a.generation = u.generation \
                   ORDER BY a.instance_id, a.task_id FOR UPDATE OF a), \
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
    let lock_args: [Arg; 1] = [&ids];
    let args: [Arg; 7] = [&ids, &tasks, &gens, &evs, &buckets, &ords, &claims];
    // Pipelined: the server runs them in order (the locks first), one round trip for both.
    let (_, rows) = futures::try_join!(tx.query(&lock, &lock_args), tx.query(&st, &args))?;
    for r in rows {
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
    let mut results: Vec<Option<Result<CreateOutcome>>> = (0..reqs.len()).map(|_| None).collect();
    let mut first = Vec::with_capacity(reqs.len());
    let mut single = Vec::new();
    let mut seen = HashSet::new();
    for i in in_id_order(reqs, |r| &r.meta.instance_id) {
        if seen.insert(reqs[i].meta.instance_id.as_str()) {
            first.push(i);
        } else {
            single.push(i);
        }
    }
    let inserted = insert_new(tx, reqs, &first).await?;
    // Start events in the callers' order.
    first.sort_unstable();
    let mut created = Vec::with_capacity(first.len());
    for i in first {
        if inserted.contains(reqs[i].meta.instance_id.as_str()) {
            results[i] = Some(Ok(CreateOutcome::Created));
            created.push(i);
        } else {
            single.push(i); // exists already: its policy decides
        }
    }
    start_events(tx, reqs, &created, now).await?;
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

/// Inserts the rows of `members` (distinct IDs) that do not exist yet, continuing a purged
/// instance's generation and version; returns the IDs inserted.
async fn insert_new(
    tx: &Transaction<'_>,
    reqs: &[CreateInstance],
    members: &[usize],
) -> R<HashSet<String>> {
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
    let rows: Vec<MetaRow> = members
        .iter()
        .map(|&i| MetaRow::of(&reqs[i].meta))
        .collect();
    let mut cols = MetaColumns::default();
    for r in &rows {
        cols.push(r);
    }
    let mut args = cols.args();
    args.push(&cols.apps);
    args.push(&cols.buckets);
    let mut inserted = HashSet::new();
    for r in tx.query(&insert, &args).await? {
        inserted.insert(r.try_get::<_, String>(0)?);
    }
    Ok(inserted)
}

/// The start events of the instances `created` just inserted (one pipeline), after taking
/// over any purge record of theirs.
async fn start_events(
    tx: &Transaction<'_>,
    reqs: &[CreateInstance],
    created: &[usize],
    now: Micros,
) -> R<()> {
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
    let ids: Vec<&str> = created
        .iter()
        .map(|&i| reqs[i].meta.instance_id.as_str())
        .collect();
    let (mut b_ids, mut b_ev, mut b_buckets) = (Vec::new(), Vec::new(), Vec::new());
    let (mut r_ids, mut r_due, mut r_ev, mut r_buckets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (&i, &id) in created.iter().zip(&ids) {
        let req = &reqs[i];
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
    let unpurge_args: [Arg; 1] = [&ids];
    let inbox_args: [Arg; 3] = [&b_ids, &b_ev, &b_buckets];
    let timer_args: [Arg; 4] = [&r_ids, &r_due, &r_ev, &r_buckets];
    let mut batch: Vec<Pending<'_>> = Vec::new();
    if !ids.is_empty() {
        batch.push(Box::pin(tx.execute(&unpurge, &unpurge_args)));
    }
    if !b_ids.is_empty() {
        batch.push(Box::pin(tx.execute(&inbox, &inbox_args)));
    }
    if !r_ids.is_empty() {
        batch.push(Box::pin(tx.execute(&timers, &timer_args)));
    }
    pipeline(batch).await
}
