//! Executes checkpoint plans on PostgreSQL: the multi-row statements (over `unnest` arrays) that
//! write the rows of one plan or of a whole group commit (`batch`), and the single checkpoint.

use std::future::Future;
use std::pin::Pin;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Statement;
use weft_core::Micros;

use super::ops::{Arg, INSERT_REMINDERS, col, create, deliver, lock_children, row_args};
use super::{R, leases};
use crate::plan::{CheckpointPlan, Outgoing};
use crate::{Checkpoint, CreateOutcome, StoreError};

/// One statement's answer, boxed so statements of different shapes share one pipeline.
pub(super) type Pending<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// Runs `futs` pipelined (sent together, answered in order) and returns the first error.
pub(super) async fn pipeline(futs: Vec<Pending<'_>>) -> R<()> {
    for r in futures::future::join_all(futs).await {
        r?;
    }
    Ok(())
}

/// Deletes the task rows of activity results folded into turns (`Checkpoint::completed_activities`,
/// as `(instance, task, generation, claim)` arrays) unless claimed since. `l` locks the rows and
/// reads their latest committed claim, as `batch::complete_activities` does. [`FOLD`] returns the
/// tasks claimed since (their turn must be refused); [`FOLD_ASSERT`] fails the transaction.
macro_rules! fold_ctes {
    () => {
        "WITH u AS (SELECT * FROM unnest($1::text[], $2::int[], \
             $3::bigint[], $4::bigint[]) AS u(id, task, generation, claim)), \
         l AS (SELECT a.instance_id, a.task_id, (u.claim IS NULL OR a.claim = u.claim) AS ok \
               FROM activities AS a JOIN u ON a.instance_id = u.id AND a.task_id = u.task \
                 AND a.generation = u.generation \
               ORDER BY a.instance_id, a.task_id FOR UPDATE OF a), \
         d AS (DELETE FROM activities AS a USING l \
               WHERE l.ok AND a.instance_id = l.instance_id AND a.task_id = l.task_id) "
    };
}
const FOLD: &str = concat!(
    fold_ctes!(),
    "SELECT instance_id, task_id FROM l WHERE NOT ok"
);
/// The fold of the one-trip batch (`onetrip`): a task claimed since aborts the transaction.
const FOLD_ASSERT: &str = concat!(
    fold_ctes!(),
    "SELECT weft_assert(NOT EXISTS (SELECT 1 FROM l WHERE NOT ok), 'an activity claim')"
);

/// Step 1 of one plan: the fenced row update.
const UPDATE_ROW: &str = "UPDATE instances SET name = $2, status = $3, execution_id = $4, \
     generation = $5, input = $6, output = $7, custom_status = $8, failure = $9, \
     parent_instance_id = $10, created_at = $11, updated_at = $12, started_at = $13, \
     completed_at = $14, scheduled_start_at = $15, version = version + 1 \
     WHERE instance_id = $1 AND version = $16";

/// The statements of steps 2–6 of any number of plans, and of the deliveries of local plans.
pub(super) struct Writes {
    reset: Statement,
    append: Statement,
    consume: Statement,
    fold: Statement,
    fold_assert: Statement,
    cancel_tasks: Statement,
    cancel_timers: Statement,
    schedule: Statement,
    remind: Statement,
    deliver: Statement,
}

impl Writes {
    /// Prepared once per connection; after that this costs no round trip.
    pub(super) async fn prepare(tx: &impl GenericClient) -> R<Self> {
        Ok(Self {
            reset: tx
                .prepare_cached("DELETE FROM history WHERE instance_id = ANY($1::text[])")
                .await?,
            // Each plan's events continue after the highest seq of its instance's generation
            // (history is read per generation in seq order, and the key includes the
            // generation); the subquery sees the table as it was before this statement.
            // With the generation in it, the MAX is one step down the primary key: over the
            // instance alone it read every index entry of its history (5 ms per turn of a
            // 10,000-activity fan-out). MATERIALIZED: inlined, the planner ran the MAX once per
            // inserted row, over the rows inserted so far (4-5 s for that turn, not 75 ms).
            append: tx
                .prepare_cached(
                    "WITH u AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], \
                         $4::bytea[]) AS u(id, generation, ord, ev)), \
                     b AS MATERIALIZED (SELECT d.id, d.generation, COALESCE((SELECT MAX(h.seq) + 1 \
                             FROM history h WHERE h.instance_id = d.id \
                             AND h.generation = d.generation), 0) AS base \
                           FROM (SELECT DISTINCT id, generation FROM u) AS d) \
                     INSERT INTO history (instance_id, generation, seq, event) \
                     SELECT u.id, u.generation, b.base + u.ord, u.ev FROM u \
                     JOIN b ON b.id = u.id AND b.generation = u.generation",
                )
                .await?,
            consume: tx
                .prepare_cached(
                    "DELETE FROM inbox AS b USING unnest($1::text[], $2::bigint[]) AS u(id, seq) \
                     WHERE b.seq = u.seq AND b.instance_id = u.id",
                )
                .await?,
            fold: tx.prepare_cached(FOLD).await?,
            fold_assert: tx.prepare_cached(FOLD_ASSERT).await?,
            cancel_tasks: tx
                .prepare_cached(
                    "DELETE FROM activities AS a \
                     USING unnest($1::text[], $2::bigint[]) AS u(id, below) \
                     WHERE a.instance_id = u.id AND a.generation < u.below",
                )
                .await?,
            cancel_timers: tx
                .prepare_cached(
                    "DELETE FROM reminders AS r \
                     USING unnest($1::text[], $2::bigint[]) AS u(id, below) \
                     WHERE r.instance_id = u.id AND r.generation < u.below",
                )
                .await?,
            // Upsert: a task ID re-used by a newer generation replaces the stale task.
            schedule: tx
                .prepare_cached(
                    "INSERT INTO activities (instance_id, task_id, generation, request, bucket, \
                         app_id) \
                     SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bytea[], \
                         $5::int[], $6::text[]) \
                     ON CONFLICT (instance_id, task_id) DO UPDATE \
                     SET generation = excluded.generation, request = excluded.request, claim = 0, \
                         app_id = excluded.app_id",
                )
                .await?,
            remind: tx.prepare_cached(INSERT_REMINDERS).await?,
            // As `ops::deliver`, many at once, in plan then outbound order (inbox seqs follow it).
            deliver: tx
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
                .await?,
        })
    }
}

/// What the fold statement does with a folded result whose task was claimed since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fold {
    /// Returns it (see [`reclaimed`]); the caller refuses the turn.
    Report,
    /// Fails the transaction (the one-trip batch, which has already sent its COMMIT).
    Assert,
}

/// The rows of steps 2–6 of some plans (and their deliveries, if added), as the array
/// arguments of the [`Writes`] statements.
#[derive(Default)]
pub(super) struct Rows<'p> {
    reset: Vec<&'p str>,
    /// History: instance, generation, position in its plan's events, event.
    h_ids: Vec<&'p str>,
    h_gens: Vec<i64>,
    h_ord: Vec<i64>,
    h_ev: Vec<&'p [u8]>,
    /// Consumed inbox entries: instance, seq.
    c_ids: Vec<&'p str>,
    c_seqs: Vec<i64>,
    /// Folded results: instance, task, generation, claim.
    f_ids: Vec<&'p str>,
    f_tasks: Vec<i32>,
    f_gens: Vec<i64>,
    f_claims: Vec<Option<i64>>,
    /// Cancellations: instance, generation bound.
    x_ids: Vec<&'p str>,
    x_below: Vec<i64>,
    /// New tasks: instance, task, generation, request, bucket, app.
    a_ids: Vec<&'p str>,
    a_tasks: Vec<i32>,
    a_gens: Vec<i64>,
    a_reqs: Vec<&'p [u8]>,
    a_buckets: Vec<i32>,
    a_apps: Vec<&'p str>,
    /// New reminders: instance, generation, due time, event, bucket.
    r_ids: Vec<&'p str>,
    r_gens: Vec<i64>,
    r_due: Vec<i64>,
    r_ev: Vec<&'p [u8]>,
    r_buckets: Vec<i32>,
    /// Deliveries: target, event, execution, bucket.
    d_ids: Vec<&'p str>,
    d_ev: Vec<&'p [u8]>,
    d_exec: Vec<Option<&'p str>>,
    d_buckets: Vec<i32>,
}

impl<'p> Rows<'p> {
    /// Adds steps 2–6 of `p`.
    pub(super) fn add(&mut self, p: &'p CheckpointPlan<'p>) {
        if p.reset_history {
            self.reset.push(p.id);
        }
        for (k, ev) in p.append.iter().enumerate() {
            self.h_ids.push(p.id);
            self.h_gens.push(p.generation());
            self.h_ord.push(k as i64);
            self.h_ev.push(ev);
        }
        for seq in p.consume {
            self.c_ids.push(p.id);
            self.c_seqs.push(*seq);
        }
        for t in &p.fold {
            self.f_ids.push(p.id);
            self.f_tasks.push(t.task_id);
            self.f_gens.push(t.generation);
            self.f_claims.push(t.claim);
        }
        if let Some(below) = p.cancel_below {
            self.x_ids.push(p.id);
            self.x_below.push(below);
        }
        for t in &p.schedule {
            self.a_ids.push(t.instance_id);
            self.a_tasks.push(t.task_id);
            self.a_gens.push(t.generation);
            self.a_reqs.push(t.request);
            self.a_buckets.push(t.bucket);
            self.a_apps.push(t.app_id);
        }
        for r in &p.remind {
            self.r_ids.push(&r.instance_id);
            self.r_gens.push(r.generation);
            self.r_due.push(r.due_at);
            self.r_ev.push(&r.event);
            self.r_buckets.push(r.bucket);
        }
    }

    /// Adds the deliveries of a local plan ([`CheckpointPlan::is_local`]): they run after every
    /// other write of the rows added.
    pub(super) fn add_deliveries(&mut self, p: &'p CheckpointPlan<'p>) {
        for d in p.deliveries() {
            self.d_ids.push(d.target);
            self.d_ev.push(&d.event);
            self.d_exec.push(d.execution_id);
            self.d_buckets.push(d.bucket);
        }
    }

    fn fold_args(&self) -> [Arg<'_>; 4] {
        [&self.f_ids, &self.f_tasks, &self.f_gens, &self.f_claims]
    }

    /// The statements these rows need, in step order; each is sent when first polled, and the
    /// server runs them in that order. Also the index of the fold statement, if any. With
    /// `Fold::Assert` a folded task claimed since fails the transaction instead. `after_history`
    /// goes right after the history statements (the one-trip batch changes a setting there).
    pub(super) fn send<'s>(
        &'s self,
        tx: &'s impl GenericClient,
        st: &'s Writes,
        fold: Fold,
        after_history: Option<Pending<'s>>,
    ) -> (Vec<Pending<'s>>, Option<usize>) {
        let mut out: Vec<Pending<'s>> = Vec::new();
        if !self.reset.is_empty() {
            let args: Vec<Arg<'s>> = vec![&self.reset];
            out.push(tx.execute_raw(&st.reset, args));
        }
        if !self.h_ids.is_empty() {
            let args: Vec<Arg<'s>> = vec![&self.h_ids, &self.h_gens, &self.h_ord, &self.h_ev];
            out.push(tx.execute_raw(&st.append, args));
        }
        out.extend(after_history);
        let mut run = |stmt: &'s Statement, args: Vec<Arg<'s>>| {
            out.push(tx.execute_raw(stmt, args));
            out.len() - 1
        };
        if !self.c_ids.is_empty() {
            run(&st.consume, vec![&self.c_ids, &self.c_seqs]);
        }
        let fold_st = match fold {
            Fold::Report => &st.fold,
            Fold::Assert => &st.fold_assert,
        };
        let fold_at = (!self.f_ids.is_empty()).then(|| run(fold_st, self.fold_args().into()));
        if !self.x_ids.is_empty() {
            run(&st.cancel_tasks, vec![&self.x_ids, &self.x_below]);
            run(&st.cancel_timers, vec![&self.x_ids, &self.x_below]);
        }
        if !self.a_ids.is_empty() {
            run(
                &st.schedule,
                vec![
                    &self.a_ids,
                    &self.a_tasks,
                    &self.a_gens,
                    &self.a_reqs,
                    &self.a_buckets,
                    &self.a_apps,
                ],
            );
        }
        if !self.r_ids.is_empty() {
            run(
                &st.remind,
                vec![
                    &self.r_ids,
                    &self.r_gens,
                    &self.r_due,
                    &self.r_ev,
                    &self.r_buckets,
                ],
            );
        }
        if !self.d_ids.is_empty() {
            run(
                &st.deliver,
                vec![&self.d_ids, &self.d_ev, &self.d_exec, &self.d_buckets],
            );
        }
        (out, fold_at)
    }
}

/// Checks the answers of statements sent by [`Rows::send`]: the first error, else whether the
/// fold statement found a task claimed since its result's dispatch.
pub(super) fn reclaimed(
    answers: impl Iterator<Item = std::result::Result<u64, tokio_postgres::Error>>,
    fold_at: Option<usize>,
) -> R<bool> {
    let mut refused = false;
    for (k, r) in answers.enumerate() {
        refused |= r? > 0 && Some(k) == fold_at;
    }
    Ok(refused)
}

/// One checkpoint inside the caller's transaction: the fence check of its bucket lease first,
/// then the children it creates, then its steps. Steps 1–6 are pipelined (sent together,
/// answered in order, one round trip); the fenced UPDATE goes first and takes the row lock, so
/// same-instance checkpoints serialise on it. If it matched no row the caller's transaction is
/// rolled back, so nothing the later statements did survives.
pub(crate) async fn checkpoint(tx: &Transaction<'_>, cp: &Checkpoint, now: Micros) -> R<()> {
    leases::check(tx, cp.fence.as_ref()).await?;
    lock_children(tx, std::slice::from_ref(cp)).await?;
    let plan = CheckpointPlan::of(cp);
    let update = tx.prepare_cached(UPDATE_ROW).await?;
    let st = Writes::prepare(tx).await?;
    let mut rows = Rows::default();
    rows.add(&plan);
    let mut update_args: Vec<Arg> = vec![&plan.id];
    update_args.extend(row_args(&plan.row));
    update_args.push(&plan.expected_version);
    let (writes, fold_at) = rows.send(tx, &st, Fold::Report, None);
    let mut batch: Vec<Pending> = vec![Box::pin(tx.execute_raw(&update, update_args))];
    batch.extend(writes);
    let mut answers = futures::future::join_all(batch).await.into_iter();
    if answers.next().transpose()? != Some(1) {
        return Err(StoreError::Conflict {
            instance_id: plan.id.to_string(),
            expected: plan.expected_version,
        }
        .into());
    }
    if reclaimed(answers, fold_at)? {
        // Rare: which task, for the error (the rows are locked by now, so this is exact).
        let task_id = match tx.query(&st.fold, &rows.fold_args()).await?.first() {
            Some(row) => col(row, 1)?,
            None => -1,
        };
        return Err(StoreError::Reclaimed {
            instance_id: plan.id.to_string(),
            task_id,
        }
        .into());
    }
    send_outbound(tx, &plan, now).await
}

/// Step 7 one message at a time, in the turn's order (inbox seqs follow it).
async fn send_outbound(tx: &Transaction<'_>, plan: &CheckpointPlan<'_>, now: Micros) -> R<()> {
    for out in &plan.outbound {
        match out {
            Outgoing::Deliver(d) => {
                deliver(tx, d).await?;
            }
            Outgoing::Create {
                create: req,
                on_conflict,
            } => {
                if create(tx, req, now).await? == CreateOutcome::Existing
                    && let Some(d) = on_conflict
                {
                    deliver(tx, d).await?;
                }
            }
        }
    }
    Ok(())
}
