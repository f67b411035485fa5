//! What one checkpoint writes, derived once from a [`Checkpoint`] and free of SQL: both backends
//! (and PostgreSQL's group commit) execute a [`CheckpointPlan`] with their own statements.
//!
//! The plan is pure data. Its fields are the steps of docs/storage.md "What one checkpoint
//! writes", and executors apply them in field order: the fenced row update, history reset,
//! history append, consumed inbox, folded results, cancellation, new tasks, new reminders, then
//! the outbound messages. The fence check of the bucket lease is not part of the plan: it is
//! the executor's first statement, in the same transaction (docs/cluster.md).

use weft_core::InstanceMeta;
use weft_core::bucket::bucket_of;
use weft_proto::durabletask::HistoryEvent;

use crate::codec::encode_event;
use crate::{Checkpoint, CreateInstance, Outbound, Reminder, ReusePolicy};

/// One checkpoint as rows and operations, in the order they are applied.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointPlan<'a> {
    /// The instance whose turn this is.
    pub id: &'a str,
    /// Step 1: the row, written only if its version is still `expected_version`.
    pub expected_version: i64,
    pub row: MetaRow<'a>,
    /// Step 2: delete the instance's whole history first.
    pub reset_history: bool,
    /// Step 3: encoded events appended to history (after the highest seq), in order.
    pub append: Vec<Vec<u8>>,
    /// Step 4: inbox entries the turn consumed.
    pub consume: &'a [i64],
    /// Step 4: task rows of results folded into the turn.
    pub fold: Vec<FoldedTask>,
    /// Step 5: drop the instance's tasks and reminders of a generation below this.
    pub cancel_below: Option<i64>,
    /// Step 6: task rows to upsert and reminder rows to insert.
    pub schedule: Vec<TaskRow<'a>>,
    pub remind: Vec<ReminderRow>,
    /// Step 7: messages to other instances, in the turn's order.
    pub outbound: Vec<Outgoing<'a>>,
}

/// The columns of an instance row (all but `version`, which the store assigns).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetaRow<'a> {
    pub instance_id: &'a str,
    pub name: &'a str,
    pub status: i32,
    pub execution_id: &'a str,
    pub generation: i64,
    pub input: Option<&'a [u8]>,
    pub output: Option<&'a [u8]>,
    pub custom_status: Option<&'a [u8]>,
    pub failure: Option<&'a [u8]>,
    pub parent_instance_id: Option<&'a str>,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub scheduled_start_at: Option<i64>,
    pub app_id: &'a str,
    pub bucket: i32,
}

/// The columns of a [`MetaRow`] a checkpoint rewrites (all but the ID, app, bucket and
/// version), in the order both backends bind them after the ID (`$2`/`?2` to `$15`/`?15`), as
/// references of whatever parameter type the caller expects.
macro_rules! rewritten_columns {
    ($m:expr) => {
        [
            &$m.name,
            &$m.status,
            &$m.execution_id,
            &$m.generation,
            &$m.input,
            &$m.output,
            &$m.custom_status,
            &$m.failure,
            &$m.parent_instance_id,
            &$m.created_at,
            &$m.updated_at,
            &$m.started_at,
            &$m.completed_at,
            &$m.scheduled_start_at,
        ]
    };
}
pub(crate) use rewritten_columns;

/// A folded activity result's task row: deleted unless claimed since `claim` (when given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FoldedTask {
    pub task_id: i32,
    pub generation: i64,
    pub claim: Option<i64>,
}

/// A new activity task row (claim 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRow<'a> {
    pub instance_id: &'a str,
    pub task_id: i32,
    pub generation: i64,
    pub request: &'a [u8],
    pub bucket: i32,
    /// The app whose workers run it (empty: the instance's own).
    pub app_id: &'a str,
}

/// A new reminder row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReminderRow {
    pub instance_id: String,
    pub generation: i64,
    pub due_at: i64,
    pub event: Vec<u8>,
    pub bucket: i32,
}

/// An event for another instance's inbox: dropped if the target does not exist or, with
/// `execution_id`, is no longer in that execution (then stamped with the target's generation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery<'a> {
    pub target: &'a str,
    pub execution_id: Option<&'a str>,
    pub event: Vec<u8>,
    pub bucket: i32,
}

/// One outbound message of the turn.
// A turn sends a handful of these; boxing the create would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Outgoing<'a> {
    Deliver(Delivery<'a>),
    /// Create as `create_instance` does (policy already narrowed: only `Terminate` replaces an
    /// active target); if an active target is kept, deliver `on_conflict` instead.
    Create {
        create: CreateInstance,
        on_conflict: Option<Delivery<'a>>,
    },
}

impl<'a> MetaRow<'a> {
    pub fn of(m: &'a InstanceMeta) -> Self {
        Self {
            instance_id: &m.instance_id,
            name: &m.name,
            status: m.status.code(),
            execution_id: &m.execution_id,
            generation: m.generation,
            input: m.input.as_deref().map(str::as_bytes),
            output: m.output.as_deref().map(str::as_bytes),
            custom_status: m.custom_status.as_deref().map(str::as_bytes),
            failure: m.failure.as_deref(),
            parent_instance_id: m.parent_instance_id.as_deref(),
            created_at: m.created_at,
            updated_at: m.updated_at,
            started_at: m.started_at,
            completed_at: m.completed_at,
            scheduled_start_at: m.scheduled_start_at,
            app_id: &m.app_id,
            bucket: bucket_of(&m.instance_id),
        }
    }
}

impl ReminderRow {
    pub fn of(r: &Reminder) -> Self {
        Self {
            instance_id: r.instance_id.clone(),
            generation: r.generation,
            due_at: r.due_at,
            event: encode_event(&r.event),
            bucket: bucket_of(&r.instance_id),
        }
    }
}

impl<'a> Delivery<'a> {
    pub fn new(target: &'a str, execution_id: Option<&'a str>, event: &HistoryEvent) -> Self {
        Self {
            target,
            execution_id,
            event: encode_event(event),
            bucket: bucket_of(target),
        }
    }
}

impl<'a> CheckpointPlan<'a> {
    pub fn of(cp: &'a Checkpoint) -> Self {
        let m = &cp.meta;
        let id = cp.instance_id.as_str();
        // A terminal instance drops everything; otherwise only older generations' leftovers.
        let below = if m.status.is_terminal() {
            i64::MAX
        } else {
            m.generation
        };
        Self {
            id,
            expected_version: cp.expected_version,
            row: MetaRow::of(m),
            reset_history: cp.reset_history,
            append: cp.append.iter().map(encode_event).collect(),
            consume: &cp.consumed_inbox,
            fold: cp
                .completed_activities
                .iter()
                .map(|&(task_id, generation, claim)| FoldedTask {
                    task_id,
                    generation,
                    claim,
                })
                .collect(),
            cancel_below: cp.cancel_pending.then_some(below),
            schedule: cp
                .new_activities
                .iter()
                .map(|t| TaskRow {
                    instance_id: &t.instance_id,
                    task_id: t.task_id,
                    generation: t.generation,
                    request: &t.request,
                    bucket: bucket_of(&t.instance_id),
                    app_id: &t.app_id,
                })
                .collect(),
            remind: cp.new_reminders.iter().map(ReminderRow::of).collect(),
            outbound: cp.outbound.iter().map(|o| outgoing(id, m, o)).collect(),
        }
    }

    /// The generation of the appended history rows: the row's own.
    pub fn generation(&self) -> i64 {
        self.row.generation
    }

    /// Whether every write lands on this instance's rows or is a plain delivery (no create,
    /// no task or reminder filed under another instance): such plans can be merged with other
    /// instances' into multi-row statements and give the same result as one by one.
    pub fn is_local(&self) -> bool {
        self.outbound
            .iter()
            .all(|o| matches!(o, Outgoing::Deliver(_)))
            && self.schedule.iter().all(|t| t.instance_id == self.id)
            && self.remind.iter().all(|r| r.instance_id == self.id)
    }

    /// The deliveries of a local plan (creates are left out: see [`Self::is_local`]).
    pub fn deliveries(&self) -> impl Iterator<Item = &Delivery<'a>> {
        self.outbound.iter().filter_map(|o| match o {
            Outgoing::Deliver(d) => Some(d),
            Outgoing::Create { .. } => None,
        })
    }
}

fn outgoing<'a>(id: &'a str, m: &'a InstanceMeta, o: &'a Outbound) -> Outgoing<'a> {
    match o {
        Outbound::Deliver {
            instance_id,
            execution_id,
            event,
        } => Outgoing::Deliver(Delivery::new(instance_id, execution_id.as_deref(), event)),
        Outbound::Create {
            create,
            on_conflict,
        } => Outgoing::Create {
            // Only `Terminate` may replace an active target; with `Error` or `Ignore` an active
            // target is a conflict the parent must hear about.
            create: CreateInstance {
                policy: match create.policy {
                    ReusePolicy::Terminate => ReusePolicy::Terminate,
                    _ => ReusePolicy::Ignore,
                },
                ..create.clone()
            },
            on_conflict: on_conflict.as_ref().map(|(target, event)| {
                // Addressed to the execution this checkpoint writes, when it is our own.
                let exec = (target == id).then_some(m.execution_id.as_str());
                Delivery::new(target, exec, event)
            }),
        },
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
