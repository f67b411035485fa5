//! What an owner's claims could find, as the cluster simulation's store wrapper saw it commit:
//! pending activity tasks and unclaimed reminders per instance. Lets a targeted pause freeze a
//! claim only when it would return rows (an approximation: a wrong guess only costs an attempt).

use std::collections::{HashMap, HashSet};
use weft_core::Micros;
use weft_core::bucket::bucket_of;
use weft_store::{Checkpoint, Reminder, Scope};

/// The part of a checkpoint that changes pending work, taken before the checkpoint is forwarded.
#[derive(Debug, Clone)]
pub struct Effect {
    instance: String,
    /// `Some(generation)` when older work is cancelled (`None` inside: all of it, terminal).
    cancel: Option<Option<i64>>,
    completed: Vec<(i32, i64)>,
    new_tasks: Vec<(i32, i64)>,
    new_reminders: Vec<(i64, Micros)>,
}

impl Effect {
    pub fn of(cp: &Checkpoint) -> Self {
        let cancel = cp
            .cancel_pending
            .then(|| (!cp.meta.status.is_terminal()).then_some(cp.meta.generation));
        Self {
            instance: cp.instance_id.clone(),
            cancel,
            completed: cp
                .completed_activities
                .iter()
                .map(|&(task, generation, _claim)| (task, generation))
                .collect(),
            new_tasks: cp
                .new_activities
                .iter()
                .map(|t| (t.task_id, t.generation))
                .collect(),
            new_reminders: cp
                .new_reminders
                .iter()
                .map(|r| (r.generation, r.due_at))
                .collect(),
        }
    }
}

/// Pending activity tasks `(task_id, generation)` and unclaimed reminders `(generation, due)`.
#[derive(Default)]
pub struct Pending {
    tasks: HashMap<String, HashSet<(i32, i64)>>,
    reminders: HashMap<String, Vec<(i64, Micros)>>,
}

impl Pending {
    /// A checkpoint with this effect committed.
    pub fn apply(&mut self, e: Effect) {
        match e.cancel {
            Some(None) => self.purged(&e.instance),
            Some(Some(g)) => {
                if let Some(t) = self.tasks.get_mut(&e.instance) {
                    t.retain(|(_, tg)| *tg >= g);
                }
                if let Some(r) = self.reminders.get_mut(&e.instance) {
                    r.retain(|(rg, _)| *rg >= g);
                }
            }
            None => {}
        }
        let tasks = self.tasks.entry(e.instance.clone()).or_default();
        for t in &e.completed {
            tasks.remove(t);
        }
        tasks.extend(e.new_tasks);
        self.reminders
            .entry(e.instance)
            .or_default()
            .extend(e.new_reminders);
    }

    /// An activity result was recorded (its task row deleted).
    pub fn completed(&mut self, instance: &str, task_id: i32, generation: i64) {
        if let Some(t) = self.tasks.get_mut(instance) {
            t.remove(&(task_id, generation));
        }
    }

    /// These reminders were claimed (leased): no longer claimable for a while.
    pub fn claimed(&mut self, rs: &[Reminder]) {
        for r in rs {
            if let Some(v) = self.reminders.get_mut(&r.instance_id)
                && let Some(i) = v
                    .iter()
                    .position(|(g, d)| *g == r.generation && *d == r.due_at)
            {
                v.swap_remove(i);
            }
        }
    }

    pub fn purged(&mut self, instance: &str) {
        self.tasks.remove(instance);
        self.reminders.remove(instance);
    }

    /// Whether a claim of activities in `scope` would return a task.
    pub fn has_tasks(&self, scope: &Scope) -> bool {
        self.tasks
            .iter()
            .any(|(id, t)| !t.is_empty() && scope.buckets.contains(&bucket_of(id)))
    }

    /// Whether a claim of reminders in `scope` at `now` would return one.
    pub fn has_due_reminder(&self, scope: &Scope, now: Micros) -> bool {
        self.reminders.iter().any(|(id, r)| {
            r.iter().any(|(_, due)| *due <= now) && scope.buckets.contains(&bucket_of(id))
        })
    }

    /// The buckets of instances with pending activity tasks.
    pub fn task_buckets(&self) -> Vec<i32> {
        self.tasks
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(id, _)| bucket_of(id))
            .collect()
    }
}
