//! An indexed FIFO of jobs: push, removal by key, replacement in place and pop all cost
//! O(log n), so a fan-out of many thousands of items never makes the hub lock scan a queue.

use super::{Job, Key};
use std::collections::{BTreeMap, HashMap};

#[derive(Default)]
pub(super) struct JobQueue {
    /// Position → key; positions come from the hub's shared counters, so two queues can be
    /// merged by comparing their heads.
    order: BTreeMap<i64, Key>,
    jobs: HashMap<Key, (i64, Job)>,
}

impl JobQueue {
    pub(super) fn len(&self) -> usize {
        self.jobs.len()
    }

    pub(super) fn get(&self, key: &Key) -> Option<&Job> {
        self.jobs.get(key).map(|(_, j)| j)
    }

    pub(super) fn get_mut(&mut self, key: &Key) -> Option<&mut Job> {
        self.jobs.get_mut(key).map(|(_, j)| j)
    }

    /// Inserts at position `pos`, or replaces the job's content in place if the key is queued.
    pub(super) fn put(&mut self, pos: i64, key: Key, job: Job) {
        if let Some(slot) = self.jobs.get_mut(&key) {
            slot.1 = job;
            return;
        }
        self.order.insert(pos, key.clone());
        self.jobs.insert(key, (pos, job));
    }

    pub(super) fn remove(&mut self, key: &Key) -> Option<Job> {
        let (pos, job) = self.jobs.remove(key)?;
        self.order.remove(&pos);
        Some(job)
    }

    /// Position of the oldest job.
    pub(super) fn head(&self) -> Option<i64> {
        self.order.first_key_value().map(|(p, _)| *p)
    }

    pub(super) fn pop(&mut self) -> Option<(Key, Job)> {
        let (_, key) = self.order.pop_first()?;
        let (_, job) = self.jobs.remove(&key)?;
        Some((key, job))
    }
}
