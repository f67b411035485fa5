//! The one-round-trip checkpoint batch: BEGIN, the fence checks, every write and COMMIT sent
//! together. A fence that no longer holds aborts the transaction (`weft_assert`, SQLSTATE
//! WF001) instead of being reported, and the store then reruns the batch on the reporting path
//! (`batch::checkpoints`), which says which member was refused.
//!
//! Why this is as safe as the reporting path: the statements, their order and their locks are
//! the same (lease rows `FOR SHARE` in lease order, instance rows in ID order, then the writes),
//! so every fence is checked under the same lock before any write and holds until COMMIT. What
//! differs is who acts on a failed check: there the client rolls back, here the server does —
//! once a statement of a transaction block fails, the rest fail and COMMIT rolls back.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use deadpool_postgres::Object;

use super::batch::MetaColumns;
use super::checkpoint::{Fold, Pending, Rows, Writes};
use super::ops::Arg;
use super::{PgErr, PgStore, R};
use crate::plan::{CheckpointPlan, MetaRow};
use crate::{Checkpoint, Result, StoreError};

/// SQLSTATE of `weft_assert` (schema migration 10).
const ASSERT_FAILED: &str = "WF001";

/// The outcome of one attempt.
#[derive(Debug)]
pub(crate) enum Trip {
    /// Every member committed.
    Committed,
    /// Not committed (a fence failed, a statement failed, or the batch is not for this path):
    /// run the batch on the reporting path.
    Rerun,
    /// The connection broke after the batch was sent: it may have committed.
    Unknown(PgErr),
}

/// Whether `cps` can take the one trip: members that only touch their own rows, one turn per
/// instance, and one expected epoch per lease (two members expecting different epochs of one
/// lease cannot both hold it, and the reporting path says which one).
pub(crate) fn eligible(cps: &[Checkpoint], plans: &[CheckpointPlan<'_>]) -> bool {
    let mut ids = HashSet::with_capacity(cps.len());
    let mut epochs: HashMap<(&str, i32), i64> = HashMap::new();
    for (cp, plan) in cps.iter().zip(plans) {
        if !plan.is_local() || !ids.insert(plan.id) {
            return false;
        }
        if let Some(f) = &cp.fence
            && *epochs
                .entry((f.app_id.as_str(), f.bucket))
                .or_insert(f.epoch)
                != f.epoch
        {
            return false;
        }
    }
    !cps.is_empty()
}

/// Sends the whole batch as one pipeline on `c` (outside any transaction) and reads the answers.
pub(crate) async fn checkpoints(
    c: Object,
    cps: &[Checkpoint],
    plans: &[CheckpointPlan<'_>],
) -> R<Trip> {
    match send(&c, cps, plans).await? {
        Some(trip) => Ok(trip),
        None => {
            // A statement failed before it left (its arguments did not encode): what was sent
            // before it is an open transaction block without COMMIT. The connection leaves the
            // pool, and closing it aborts the block.
            drop(Object::take(c));
            Ok(Trip::Rerun)
        }
    }
}

/// The trip itself; `None` if it stopped before sending everything.
async fn send(c: &Object, cps: &[Checkpoint], plans: &[CheckpointPlan<'_>]) -> R<Option<Trip>> {
    let st = Statements::prepare(c).await?;
    let writes = Writes::prepare(c).await?;

    let mut fences: Vec<(&str, i32, i64)> = cps
        .iter()
        .filter_map(|cp| cp.fence.as_ref())
        .map(|f| (f.app_id.as_str(), f.bucket, f.epoch))
        .collect();
    fences.sort_unstable();
    fences.dedup();
    let f_apps: Vec<&str> = fences.iter().map(|f| f.0).collect();
    let f_buckets: Vec<i32> = fences.iter().map(|f| f.1).collect();
    let f_epochs: Vec<i64> = fences.iter().map(|f| f.2).collect();

    let mut cols = MetaColumns::default();
    let mut expected: Vec<i64> = Vec::with_capacity(plans.len());
    for plan in plans {
        // The row is the checkpoint's, whatever ID its meta carries.
        cols.push(&MetaRow {
            instance_id: plan.id,
            ..plan.row.clone()
        });
        expected.push(plan.expected_version);
    }
    let members = i64::try_from(plans.len()).unwrap_or(i64::MAX);
    let lock_args: Vec<Arg> = vec![&cols.ids];
    let mut update_args = cols.args();
    update_args.push(&expected);
    update_args.push(&members);

    let mut rows = Rows::default();
    for plan in plans {
        rows.add(plan);
        rows.add_deliveries(plan);
    }

    // A lone checkpoint (the idle step) spent about as long being planned as being run: its
    // fence statements and history append are planned once per connection instead. Their
    // generic plans are index look-ups on tables that are never small for long (leases,
    // instances, history); the statements on tables that swing between empty and large (inbox,
    // activities, reminders) keep per-call plans, as batches do.
    let generic = plans.len() == 1;
    let begin = if generic {
        "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan"
    } else {
        "BEGIN"
    };
    let mut trip: Vec<Pending> = vec![Box::pin(
        async move { c.batch_execute(begin).await.map(|()| 0) },
    )];
    if !fences.is_empty() {
        let args: Vec<Arg> = vec![&f_apps, &f_buckets, &f_epochs];
        trip.push(Box::pin(c.execute_raw(&st.leases, args)));
    }
    trip.push(Box::pin(c.execute_raw(&st.lock, lock_args)));
    trip.push(Box::pin(c.execute_raw(&st.update, update_args)));
    let auto = generic.then(|| -> Pending {
        Box::pin(async {
            c.batch_execute("SET LOCAL plan_cache_mode = auto")
                .await
                .map(|()| 0)
        })
    });
    trip.extend(rows.send(c, &writes, Fold::Assert, auto).0);
    trip.push(Box::pin(async {
        c.batch_execute("COMMIT").await.map(|()| 0)
    }));

    let Some(answers) = send_in_order(trip).await else {
        return Ok(None);
    };
    // The first failure decides: the server answered it (the block is aborted, nothing
    // committed), or the connection broke with the batch sent (COMMIT may have run).
    match answers.into_iter().find_map(Result::err) {
        None => Ok(Some(Trip::Committed)),
        Some(e) => match e.as_db_error() {
            Some(db) => {
                if db.code().code() != ASSERT_FAILED {
                    tracing::debug!(error = %db, "one-trip checkpoint batch failed; rerunning it");
                }
                Ok(Some(Trip::Rerun))
            }
            None => Ok(Some(Trip::Unknown(PgErr::Db(e)))),
        },
    }
}

/// Polls each statement once, in order — a statement is sent on its first poll — then waits
/// for all the answers. `None` if one failed on its first poll, which means it was never sent:
/// the rest are then not sent either (above all not the COMMIT).
async fn send_in_order(
    mut trip: Vec<Pending<'_>>,
) -> Option<Vec<std::result::Result<u64, tokio_postgres::Error>>> {
    let mut early: Vec<Option<std::result::Result<u64, tokio_postgres::Error>>> =
        Vec::with_capacity(trip.len());
    for f in &mut trip {
        match futures::poll!(f.as_mut()) {
            // Nothing waits for what was sent: the caller closes the connection.
            std::task::Poll::Ready(Err(_)) => return None,
            std::task::Poll::Ready(ok) => early.push(Some(ok)),
            std::task::Poll::Pending => early.push(None),
        }
    }
    let mut out = Vec::with_capacity(trip.len());
    for (f, a) in trip.iter_mut().zip(early) {
        out.push(match a {
            Some(r) => r,
            None => f.as_mut().await,
        });
    }
    Some(out)
}

impl PgStore {
    /// The batch in one round trip (this module), if it can take it and every fence held;
    /// `None` sends it down the reporting path (`batch::checkpoints`).
    pub(super) async fn checkpoint_one_trip(&self, cps: &[Checkpoint]) -> Option<Vec<Result<()>>> {
        if !self.inner.try_one_trip {
            return None;
        }
        let plans: Vec<CheckpointPlan> = cps.iter().map(CheckpointPlan::of).collect();
        if !eligible(cps, &plans) {
            return None;
        }
        // Any failure to get going (no connection, a statement to prepare) is the reporting
        // path's to retry or report.
        let client = self.client().await.ok()?;
        let trip = match checkpoints(client, cps, &plans).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = ?e, "one-trip checkpoint batch not sent");
                Trip::Rerun
            }
        };
        match trip {
            Trip::Committed => {
                self.inner.commits.fetch_add(1, Ordering::Relaxed);
                self.inner.one_trip.fetch_add(1, Ordering::Relaxed);
            }
            Trip::Rerun => {
                self.inner.reruns.fetch_add(1, Ordering::Relaxed);
            }
            Trip::Unknown(_) => {}
        }
        trip.answers(cps.len())
    }
}

/// The fence statements of the trip, each asserting instead of reporting.
struct Statements {
    /// Locks the leases (shared, in lease order) and asserts each has the expected epoch.
    leases: tokio_postgres::Statement,
    /// Locks the members' rows in ID order.
    lock: tokio_postgres::Statement,
    /// Rewrites the rows and asserts every member's version matched.
    update: tokio_postgres::Statement,
}

impl Statements {
    async fn prepare(c: &Object) -> R<Self> {
        Ok(Self {
            leases: c
                .prepare_cached(
                    "SELECT weft_assert(count(*) = cardinality($1::text[]) \
                         AND COALESCE(bool_and(x.ok), true), 'a bucket lease') \
                     FROM (SELECT l.epoch = k.epoch AS ok FROM bucket_leases l \
                           JOIN unnest($1::text[], $2::int[], $3::bigint[]) \
                             AS k(app_id, bucket, epoch) \
                             ON l.app_id = k.app_id AND l.bucket = k.bucket \
                           ORDER BY l.app_id, l.bucket FOR SHARE OF l) AS x",
                )
                .await?,
            lock: c.prepare_cached(super::batch::LOCK_ROWS).await?,
            update: c
                .prepare_cached(concat!(
                    "WITH up AS (",
                    super::batch::update_rows!(),
                    ") SELECT weft_assert(count(*) = $17, 'an instance version') FROM up"
                ))
                .await?,
        })
    }
}

impl Trip {
    /// The per-member answers of a trip that did not ask for a rerun.
    pub(crate) fn answers(self, n: usize) -> Option<Vec<Result<()>>> {
        match self {
            Self::Committed => Some((0..n).map(|_| Ok(())).collect()),
            Self::Rerun => None,
            Self::Unknown(e) => {
                let e: StoreError = e.at_commit();
                Some((0..n).map(|_| Err(e.duplicate())).collect())
            }
        }
    }
}
