//! Durable state of the engine behind one [`Store`] trait, with an embedded SQLite backend and a
//! PostgreSQL backend; both must pass the same conformance suite (`conformance`).
//!
//! **Owns** every row the engine keeps: instances (with their fencing `version`), history,
//! inboxes, activity tasks (with their dispatch `claim`), reminders, bucket leases and their
//! holders, and cluster-wide concurrency slots — and the rule that each [`Store`] method is one
//! transaction. **Main types**: [`Store`] (the trait), [`SqliteStore`] (`weft dev`), [`PgStore`]
//! (production, set-based group commit), [`Checkpoint`] (one turn's writes), [`Fence`] and
//! [`Scope`] (what an owner may write and scan), [`StoreError`]. Internally a checkpoint is
//! planned once, without SQL (`plan`: the rows and the order of the steps in docs/storage.md),
//! and executed by each backend with its own statements (`sqlite/checkpoint.rs`,
//! `postgres/checkpoint.rs`, `postgres/batch.rs`). Store wrappers (test spies, fault injection,
//! timing) are written as a [`layer::Layer`], which forwards every call they do not intercept.
//!
//! **Never**: commit an owner write without checking its [`Fence`] in the same transaction, before
//! its other statements (docs/cluster.md, "Leases and fencing"); commit a checkpoint whose
//! `version` no longer matches; lock out of the PostgreSQL lock order (lease rows, child advisory
//! locks, instance rows by ID, then their tasks, inbox and reminders); panic on stored bytes
//! (corrupt data is [`StoreError::Corrupt`]); decide anything about workflows — the engine does.

mod codec;
/// The suite every backend must pass (and fixtures other crates' tests use); compiled only for
/// tests and the `testing` feature, never into the production binary.
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod layer;
mod plan;
pub mod postgres;
pub mod sqlite;
pub mod types;

pub use postgres::{PgOptions, PgStore, redact_url};
pub use sqlite::SqliteStore;
pub use types::*;

use async_trait::async_trait;
use weft_core::{InstanceMeta, Micros};
use weft_proto::durabletask::HistoryEvent;

/// Errors every backend maps its own failures into.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The fencing value did not match: another writer (a newer owner) changed the instance.
    #[error("fencing conflict on instance '{instance_id}': expected version {expected}")]
    Conflict { instance_id: String, expected: i64 },
    /// `create_instance` found an active instance with that ID and the policy says error.
    #[error("an active workflow with ID '{0}' already exists")]
    AlreadyExists(String),
    #[error("no such instance exists: '{0}'")]
    NotFound(String),
    /// `purge` without `force` found the instance still active.
    #[error("workflow instance '{0}' has not yet completed")]
    NotTerminal(String),
    /// The backend is unreachable or failed; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes could not be decoded, or a schema/version problem.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// The connection was lost while the transaction committed: it may or may not have landed.
    /// Every other error means nothing was written.
    #[error("store commit outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// An activity result carried a claim older than the task's: a recovery scan (on this
    /// sidecar or the bucket's new owner) claimed the task for a new dispatch, which completes it.
    #[error("activity task {task_id} of '{instance_id}' was claimed for another dispatch")]
    Reclaimed { instance_id: String, task_id: i32 },
    /// An owner write carried a lease epoch that is no longer current: another holder has taken
    /// the bucket since (or the lease was released). Nothing was written.
    #[error("bucket {bucket} of app '{app_id}' is no longer leased at epoch {epoch}")]
    Fenced {
        app_id: String,
        bucket: i32,
        epoch: i64,
    },
}

impl StoreError {
    /// The same error again, for answering every member of a batch whose transaction failed.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::Conflict {
                instance_id,
                expected,
            } => Self::Conflict {
                instance_id: instance_id.clone(),
                expected: *expected,
            },
            Self::AlreadyExists(id) => Self::AlreadyExists(id.clone()),
            Self::NotFound(id) => Self::NotFound(id.clone()),
            Self::NotTerminal(id) => Self::NotTerminal(id.clone()),
            Self::Unavailable(m) => Self::Unavailable(m.clone()),
            Self::Corrupt(m) => Self::Corrupt(m.clone()),
            Self::OutcomeUnknown(m) => Self::OutcomeUnknown(m.clone()),
            Self::Reclaimed {
                instance_id,
                task_id,
            } => Self::Reclaimed {
                instance_id: instance_id.clone(),
                task_id: *task_id,
            },
            Self::Fenced {
                app_id,
                bucket,
                epoch,
            } => Self::Fenced {
                app_id: app_id.clone(),
                bucket: *bucket,
                epoch: *epoch,
            },
        }
    }

    /// The error of a write refused by `fence`.
    pub fn fenced(fence: &Fence) -> Self {
        Self::Fenced {
            app_id: fence.app_id.clone(),
            bucket: fence.bucket,
            epoch: fence.epoch,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The durable state of workflows. Every method is one atomic unit: it commits fully or not at all.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates (or, for a terminal instance, replaces) an instance: the row in PENDING plus its
    /// `ExecutionStarted` event, delivered to the inbox now or as a reminder at
    /// `meta.scheduled_start_at`. Active instance with that ID → per `policy`. The store assigns
    /// `generation` and `version`: a new ID starts at `meta.generation` and 1; a replaced or
    /// purged one continues above the old values.
    async fn create_instance(&self, req: CreateInstance) -> Result<CreateOutcome>;

    /// Group commit for creations: every request as by [`Store::create_instance`], in as few
    /// transactions as possible. Each result answers the request at the same index; a request
    /// repeating an ID earlier in the batch sees that one as existing.
    async fn create_instance_batch(&self, reqs: Vec<CreateInstance>) -> Vec<Result<CreateOutcome>> {
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            out.push(self.create_instance(r).await);
        }
        out
    }

    /// The instance row, if any.
    async fn get_instance(&self, instance_id: &str) -> Result<Option<InstanceMeta>>;

    /// Row + committed history of the current generation + pending inbox, in order.
    async fn load(&self, instance_id: &str) -> Result<Option<LoadedInstance>>;

    /// The committed history of the current generation (None if the instance is unknown).
    async fn get_history(&self, instance_id: &str) -> Result<Option<Vec<HistoryEvent>>>;

    /// Pending inbox events of one instance, oldest first.
    async fn read_inbox(&self, instance_id: &str) -> Result<Vec<InboxEntry>>;

    /// What [`Store::read_inbox`] returns for each of `ids`, in their order, read together
    /// (one query where the store can): a loaded engine's actors re-read their inboxes at the
    /// same time, and one round trip for all of them is what keeps reads per step low.
    async fn read_inbox_batch(&self, ids: Vec<String>) -> Result<Vec<Vec<InboxEntry>>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            out.push(self.read_inbox(id).await?);
        }
        Ok(out)
    }

    /// Appends one event (addressed to no particular execution) to an existing instance's
    /// inbox. `Ok(false)` if the instance is unknown. Serialised with `purge` of the instance.
    async fn append_inbox(&self, instance_id: &str, event: HistoryEvent) -> Result<bool>;

    /// Commits one workflow turn atomically, fenced on `cp.expected_version`.
    async fn checkpoint(&self, cp: Checkpoint) -> Result<()>;

    /// Commits several turns (of different instances) in as few transactions as possible. Each
    /// result answers the checkpoint at the same index; a conflict fails only its own checkpoint.
    async fn checkpoint_batch(&self, cps: Vec<Checkpoint>) -> Vec<Result<()>> {
        let mut out = Vec::with_capacity(cps.len());
        for cp in cps {
            out.push(self.checkpoint(cp).await);
        }
        out
    }

    /// Claims every activity task scheduled and not yet completed of instances in `scope`, for
    /// dispatch after a restart or when a sidecar takes over buckets: raises each task's claim
    /// and returns the tasks with their new claim, ordered by instance and task ID. A result
    /// made under an earlier claim is refused from then on ([`StoreError::Reclaimed`]), so the
    /// claimer's dispatch is the only one that can complete the task, and a task completed
    /// before the claim is not returned.
    async fn claim_activities(&self, scope: &Scope) -> Result<Vec<ActivityTask>>;

    /// Claims the cross-app tasks (`ActivityTask::app_id` = `scope.app_id`) of `scope`'s buckets
    /// that were never claimed: the tasks other apps' turns addressed to this app since it last
    /// looked. Fenced like [`Store::claim_activities`]; [`Store::claim_activities`] also claims
    /// them (all of them, claimed or not) when a sidecar takes buckets over.
    async fn claim_new_remote_activities(&self, scope: &Scope) -> Result<Vec<ActivityTask>>;

    /// Records an activity's result under any claim: deletes the task row and appends `event`
    /// to the instance's inbox in one transaction. `Ok(false)` (and no change) if no such task
    /// is pending: a duplicate or late completion.
    async fn complete_activity(
        &self,
        instance_id: &str,
        task_id: i32,
        generation: i64,
        event: HistoryEvent,
    ) -> Result<bool>;

    /// Group commit for activity results: every completion as by [`Store::complete_activity`],
    /// in as few transactions as possible, except that a completion with a `claim` is refused
    /// with [`StoreError::Reclaimed`] (and changes nothing) if the task has been claimed since.
    /// Each result answers the completion at the same index.
    async fn complete_activity_batch(&self, items: Vec<ActivityCompletion>) -> Vec<Result<bool>>;

    /// IDs of instances in `scope` that have pending inbox events (work to do after a restart).
    async fn instances_with_inbox(&self, scope: &Scope) -> Result<Vec<String>>;

    /// Claims up to `limit` reminders of instances in `scope` due at `now` that are not leased,
    /// leasing them until `lease_until`. Concurrent claimers never get the same reminder while
    /// its lease runs.
    async fn claim_due_reminders(
        &self,
        scope: &Scope,
        now: Micros,
        lease_until: Micros,
        limit: usize,
    ) -> Result<Vec<Reminder>>;

    /// Fires a claimed reminder: moves its event into the instance's inbox and deletes it, in
    /// one transaction. `Ok(false)` if it no longer exists (cancelled or fired by someone else);
    /// [`StoreError::Fenced`] (and no change) if `fence` is given and no longer current.
    async fn fire_reminder(&self, reminder_id: i64, fence: Option<&Fence>) -> Result<bool>;

    /// When the next reminder of an instance in `scope` may be claimed, for sleeping until
    /// then: the earliest due time among unleased reminders and `max(due_at, lease_until)` among
    /// leased ones (a leased reminder is claimable once `lease_until < now`).
    async fn next_reminder_due(&self, scope: &Scope) -> Result<Option<Micros>>;

    /// IDs of STALLED instances in `scope`, at most `limit`, ordered by ID (retried when a
    /// worker connects).
    async fn stalled_instances(&self, scope: &Scope, limit: usize) -> Result<Vec<String>>;

    /// Instance rows matching `filter`, ordered by instance ID, paged by `filter.after`.
    async fn list_instances(&self, filter: ListFilter) -> Result<InstancePage>;

    /// Deletes an instance and everything it owns (history, inbox, tasks, reminders), after
    /// locking its row, so nothing written concurrently for it survives. `Ok(false)` if it did
    /// not exist; `Err(NotTerminal)` (and no change) if it is still active and `force` is false.
    /// Its generation and version are remembered, so a re-created instance with that ID
    /// continues both sequences (no stale owner or late result can mistake it for the old one).
    /// With `fence`, refused with [`StoreError::Fenced`] (and no change) unless it is current.
    async fn purge(&self, instance_id: &str, force: bool, fence: Option<&Fence>) -> Result<bool>;

    /// Leases up to `want` free slots among `0..limit` of `bucket` for `holder` until `until`
    /// (a slot is free if nobody holds it or its lease ended before `now`). Returns the slots
    /// leased; concurrent callers never get the same slot while its lease runs. A slot grant is
    /// an owner write: if `holder` names an ownership-lease holder ([`Store::start_holder`]),
    /// nothing is granted unless that lease is live (checked in the same transaction), and a
    /// dead holder's slots are freed.
    async fn acquire_slots(
        &self,
        bucket: &str,
        limit: u32,
        holder: &str,
        want: u32,
        now: Micros,
        until: Micros,
    ) -> Result<Vec<u32>>;

    /// Extends every lease of `holder` that has not ended by `now` to `until`, and returns the
    /// slots it still holds (a lease that ended may have been taken by another holder). Like
    /// [`Store::acquire_slots`], nothing is renewed (and nothing held) for a dead
    /// ownership-lease holder.
    async fn renew_slots(&self, holder: &str, now: Micros, until: Micros)
    -> Result<Vec<SlotLease>>;

    /// Gives back slots of `bucket` held by `holder` (others' slots are left alone).
    async fn release_slots(&self, bucket: &str, holder: &str, slots: &[u32]) -> Result<()>;

    /// Starts the lease of a new holder (one incarnation of a sidecar) for `ttl` micros of the
    /// store's clock. A holder name is never reused: an existing one is refused
    /// ([`StoreError::AlreadyExists`]).
    async fn start_holder(&self, holder: &str, ttl: Micros) -> Result<()>;

    /// Extends a holder's lease to `ttl` from now. `Ok(false)` if it had already run out or was
    /// ended: such a holder is dead for good (others may have taken its buckets) and must start
    /// again under a new name.
    async fn renew_holder(&self, holder: &str, ttl: Micros) -> Result<bool>;

    /// Ends a holder's lease now (clean shutdown): every bucket it held is free at once.
    async fn end_holder(&self, holder: &str) -> Result<()>;

    /// Takes the leases of those `buckets` of `app_id` that are free for `holder`: never held,
    /// released, held by a holder whose lease ran out, or held by `holder` itself (epoch kept).
    /// A bucket taken from anyone else gets a higher epoch. Nothing is taken while `holder`'s
    /// own lease has run out. Returns the leases now held, ascending; a bucket a live holder
    /// keeps is left out (ask again after it is released or that lease runs out).
    async fn acquire_buckets(
        &self,
        app_id: &str,
        holder: &str,
        buckets: &[i32],
    ) -> Result<Vec<BucketLease>>;

    /// Gives up `holder`'s leases of `buckets` (others' are left alone): free for the next owner.
    async fn release_buckets(&self, app_id: &str, holder: &str, buckets: &[i32]) -> Result<()>;

    /// Hints that other processes changed something (PostgreSQL LISTEN/NOTIFY). `None` when the
    /// backend has no cross-process notifications (SQLite: one process owns the file, so the
    /// engine's own in-process signals suffice). Hints may be lost or duplicated: polling stays
    /// the source of truth. A subscriber polls once after subscribing, and again on
    /// [`Wakeup::Resync`] or a `Lagged` receive error (hints were missed).
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Wakeup>> {
        None
    }

    /// Cross-app tasks no sidecar of their app has claimed yet, counted per target app: the
    /// work that waits for an app without a serving sidecar or worker (`/metrics`).
    async fn cross_app_backlog(&self) -> Result<Vec<(String, i64)>> {
        Ok(Vec::new())
    }

    /// Whether the backend is reachable right now (for readiness probes). `Err(Unavailable)`
    /// while the database cannot be reached.
    async fn health(&self) -> Result<()> {
        Ok(())
    }
}
