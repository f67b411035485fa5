//! Plain data passed across the [`crate::Store`] trait.

use weft_core::{InstanceMeta, Micros, RuntimeStatus};
use weft_proto::durabletask::HistoryEvent;

/// What to do when `create_instance` meets an active instance with the same ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReusePolicy {
    /// Fail with `StoreError::AlreadyExists` (Dapr's default).
    #[default]
    Error,
    /// Leave the active instance alone and report `CreateOutcome::Existing`.
    Ignore,
    /// Replace the active instance (its pending work is dropped).
    Terminate,
}

#[derive(Debug, Clone)]
pub struct CreateInstance {
    /// The new row; `version` is ignored (the store assigns it), `status` should be Pending.
    pub meta: InstanceMeta,
    /// The `ExecutionStarted` event (the first inbox event of the instance).
    pub start_event: HistoryEvent,
    pub policy: ReusePolicy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// A terminal instance with that ID was replaced.
    Replaced,
    /// `ReusePolicy::Ignore` kept an active instance.
    Existing,
}

#[derive(Debug, Clone)]
pub struct InboxEntry {
    /// Store-assigned, increasing per store; used to consume exactly the entries a turn saw.
    pub seq: i64,
    pub event: HistoryEvent,
    /// The generation the event is addressed to (activity results, timer fires, child results,
    /// continue-as-new's start and carried events); `None` for events addressed to the instance
    /// (raised events, suspend, resume, terminate).
    pub generation: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct LoadedInstance {
    pub meta: InstanceMeta,
    pub history: Vec<HistoryEvent>,
    pub inbox: Vec<InboxEntry>,
}

/// An activity scheduled by a workflow turn and not yet completed.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityTask {
    pub instance_id: String,
    pub generation: i64,
    /// The `TaskScheduled` event ID (= action ID).
    pub task_id: i32,
    /// Encoded `ActivityRequest` as sent to workers.
    pub request: Vec<u8>,
    /// Which dispatch of the task may complete it: 0 when a turn schedules it, raised by every
    /// [`crate::Store::claim_activities`] (ignored in `Checkpoint::new_activities`).
    pub claim: i64,
    /// The app whose workers run the task when it is not the instance's own (a cross-app call,
    /// `TaskRouter.targetAppID`); empty for the instance's own app. A cross-app task is claimed
    /// and dispatched by the owner of the instance's bucket *on that app's ring*
    /// ([`crate::Store::claim_new_remote_activities`]), never by the instance's owner.
    pub app_id: String,
}

/// One activity result for [`crate::Store::complete_activity_batch`].
#[derive(Debug, Clone)]
pub struct ActivityCompletion {
    pub instance_id: String,
    pub task_id: i32,
    pub generation: i64,
    /// The claim the result's dispatch was made under; a task claimed since refuses it with
    /// [`crate::StoreError::Reclaimed`]. `None` accepts any claim.
    pub claim: Option<i64>,
    /// `TaskCompleted` / `TaskFailed`, appended to the instance's inbox.
    pub event: HistoryEvent,
}

/// A durable timer: at `due_at` its `event` moves into the instance's inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Reminder {
    /// Store-assigned on insert (ignored in `Checkpoint::new_reminders`).
    pub id: i64,
    pub instance_id: String,
    pub generation: i64,
    pub due_at: Micros,
    pub event: HistoryEvent,
}

/// Messages a turn sends to other instances, committed with the turn (transactional outbox).
// A turn sends a handful of these at most; boxing `Create` would only make the engine's code noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Outbound {
    /// Append an event to another instance's inbox; dropped if that instance does not exist.
    /// With `execution_id`, dropped unless that is the target's current execution, and stamped
    /// with the target's generation (see [`InboxEntry::generation`]).
    Deliver {
        instance_id: String,
        execution_id: Option<String>,
        event: HistoryEvent,
    },
    /// Create a child (or detached) instance. If an active instance already has that ID,
    /// `on_conflict` (if any) is delivered instead (e.g. a child-failed event to the parent).
    Create {
        create: CreateInstance,
        on_conflict: Option<(String, HistoryEvent)>,
    },
}

/// One workflow turn's writes, committed atomically.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub instance_id: String,
    /// The `version` this writer loaded; the commit fails with `Conflict` if it changed.
    pub expected_version: i64,
    /// The new row (the store sets `version = expected_version + 1`).
    pub meta: InstanceMeta,
    /// Delete the current history before appending (continue-as-new starts a new generation).
    pub reset_history: bool,
    /// Events appended to history, in order.
    pub append: Vec<HistoryEvent>,
    /// Inbox entries this turn consumed (deleted on commit).
    pub consumed_inbox: Vec<i64>,
    /// Activity results this turn folded in from memory, as `(task_id, generation, claim)`:
    /// their task rows are deleted in the same transaction that appends the result to history
    /// (the result itself is among `append`). A row already gone (a duplicate result recorded
    /// through [`crate::Store::complete_activity`] meanwhile, or a cancelled task) is not an
    /// error: the delete matches nothing and the rest of the checkpoint commits; the inbox copy
    /// of such a duplicate is dropped by the next turn, which finds the task completed in
    /// history. A row claimed since the result's dispatch (`claim` given and no longer the
    /// row's) refuses the whole checkpoint with [`crate::StoreError::Reclaimed`], as
    /// `complete_activity_batch` refuses such a result: the claimer's dispatch completes it.
    pub completed_activities: Vec<(i32, i64, Option<i64>)>,
    pub new_activities: Vec<ActivityTask>,
    pub new_reminders: Vec<Reminder>,
    /// Drop every pending activity task and reminder of this instance older than
    /// `meta.generation` or, when the instance became terminal, all of them.
    pub cancel_pending: bool,
    pub outbound: Vec<Outbound>,
    /// The writer's lease of the instance's bucket: the checkpoint commits only while that lease
    /// still has this epoch ([`crate::StoreError::Fenced`] otherwise). `None`: unfenced (tests,
    /// tools; an engine always fences).
    pub fence: Option<Fence>,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Empty means any status.
    pub statuses: Vec<RuntimeStatus>,
    pub name: Option<String>,
    /// Inclusive bounds on `created_at`.
    pub created_from: Option<Micros>,
    pub created_to: Option<Micros>,
    /// Inclusive upper bound on `completed_at` (rows without one never match).
    pub completed_to: Option<Micros>,
    /// Exclusive lower bound on instance ID (the previous page's last ID).
    pub after: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Clone, Default)]
pub struct InstancePage {
    pub items: Vec<InstanceMeta>,
    /// Set when more rows may follow: pass it as `ListFilter::after`.
    pub next: Option<String>,
}

/// A change notification from [`crate::Store::subscribe`]; a hint to poll, never the data itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wakeup {
    /// New inbox work for this instance.
    Inbox(String),
    /// Reminders were added (re-check `next_reminder_due`).
    Reminders,
    /// This instance's status changed (for waiters on start/completion).
    Instance(String),
    /// Another app's turn addressed new tasks to this app (its ID): claim them
    /// ([`crate::Store::claim_new_remote_activities`]).
    RemoteTasks(String),
    /// Notifications may have been missed (reconnected or lagged): re-poll everything.
    Resync,
}

/// A cluster-wide concurrency slot this holder has leased: slot `slot` of `bucket`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotLease {
    pub bucket: String,
    pub slot: u32,
}

/// Which part of the database a background scan covers: the instances of one app whose bucket
/// (`weft_core::bucket::bucket_of(instance_id)`) is listed. Rows written before instances
/// recorded their app (app ID empty) match every app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub app_id: String,
    pub buckets: Vec<i32>,
    /// The epoch of this holder's lease of each of `buckets` (same order). Set on an owner's
    /// claims (activities, reminders): only buckets whose lease still has that epoch are
    /// claimed, the others are skipped. `None`: unfenced (reads, tests).
    pub epochs: Option<Vec<i64>>,
}

impl Scope {
    /// Every bucket of one app (a sidecar that owns everything).
    pub fn all(app_id: &str) -> Self {
        Self {
            app_id: app_id.to_string(),
            buckets: weft_core::bucket::all_buckets(),
            epochs: None,
        }
    }

    /// The buckets a fenced claim may touch: those whose lease epoch is unchanged. `None` when
    /// the scope is unfenced (every bucket).
    pub fn fenced_pairs(&self) -> Option<Vec<(i32, i64)>> {
        let epochs = self.epochs.as_ref()?;
        Some(
            self.buckets
                .iter()
                .copied()
                .zip(epochs.iter().copied())
                .collect(),
        )
    }
}

/// An owner's proof for one write: the lease of `bucket` of `app_id` must still have `epoch` when
/// the write commits (the fencing token of the lease literature). Every take-over of a bucket
/// raises its epoch, so a writer that lost the lease — paused, cut off, or simply late — can no
/// longer change anything in that bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    pub app_id: String,
    pub bucket: i32,
    pub epoch: i64,
}

/// A bucket lease taken by [`crate::Store::acquire_buckets`]: the epoch to fence writes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BucketLease {
    pub bucket: i32,
    pub epoch: i64,
}
