//! Activity results taken from the hub and not yet recorded (issue 15 point 3): a recovery scan
//! of this sidecar that claims such a task must not dispatch it again, and the result, refused
//! under its old claim, is recorded under the scan's claim instead.

use super::{Hub, Job};
use crate::mailbox::ActivityResult;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// (instance, task ID, generation) of an activity.
pub(crate) type TaskKey = (String, i32, i64);

/// An entry older than this is ignored and dropped: whatever took the result has long given up
/// on it (an actor that vanished with a folded result, say), so a scan's dispatch is the one
/// that completes the task.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Past this many entries, each new one first drops the stale ones.
const SWEEP_ABOVE: usize = 4096;

enum Entry {
    /// On its way to the store (recording, or held by the actor for its next turn).
    Taken,
    /// As `Taken`, and this sidecar's scan claimed the task since, at this claim.
    Reclaimed(i64),
    /// Refused under its claim before this sidecar's scan (which may be the claimer) got to it.
    Refused(Box<ActivityResult>),
}

struct Slot {
    entry: Entry,
    since: Instant,
}

/// What a scan does with a task it claimed.
pub(crate) enum Absorb {
    /// Nothing of it is in transit here: dispatch it.
    No,
    /// Its result is on its way: the result takes the new claim; nothing is dispatched.
    Yes,
    /// Its result was refused meanwhile: record it again, under the new claim.
    Rerecord(Box<ActivityResult>),
}

#[derive(Default)]
pub(crate) struct Transit {
    map: HashMap<TaskKey, Slot>,
}

impl Transit {
    /// A result was taken from the hub.
    pub(crate) fn begin(&mut self, key: TaskKey) {
        if self.map.len() > SWEEP_ABOVE {
            self.map.retain(|_, s| s.since.elapsed() < FORGET_AFTER);
        }
        self.map.insert(
            key,
            Slot {
                entry: Entry::Taken,
                since: Instant::now(),
            },
        );
    }

    /// This sidecar's scan claimed `key` at `claim`.
    pub(crate) fn absorb(&mut self, key: &TaskKey, claim: i64) -> Absorb {
        let Some(slot) = self.map.get_mut(key) else {
            return Absorb::No;
        };
        if slot.since.elapsed() >= FORGET_AFTER {
            self.map.remove(key);
            return Absorb::No;
        }
        if let Entry::Taken | Entry::Reclaimed(_) = slot.entry {
            slot.entry = Entry::Reclaimed(claim);
            return Absorb::Yes;
        }
        match self.map.remove(key).map(|s| s.entry) {
            Some(Entry::Refused(mut r)) => {
                r.completion.claim = Some(claim);
                Absorb::Rerecord(r)
            }
            _ => Absorb::No,
        }
    }

    /// The claim a result in transit is to be recorded under, if this sidecar's scan raised it.
    pub(crate) fn claim(&self, key: &TaskKey) -> Option<i64> {
        match self.map.get(key).map(|s| &s.entry) {
            Some(Entry::Reclaimed(c)) => Some(*c),
            _ => None,
        }
    }

    /// `r` was refused under its claim. Returns it with this sidecar's newer claim to record
    /// again, if its scan claimed the task; otherwise keeps it for a scan still on its way
    /// (one that claimed it and has not looked here yet) and returns `None`.
    pub(crate) fn refused(&mut self, mut r: ActivityResult) -> Option<ActivityResult> {
        let key = task_key(&r);
        match self.map.get_mut(&key) {
            Some(Slot {
                entry: Entry::Reclaimed(c),
                ..
            }) if Some(*c) != r.completion.claim => {
                r.completion.claim = Some(*c);
                self.map.remove(&key);
                Some(r)
            }
            Some(slot) => {
                // Its worker waits no longer: what happens next is up to the claimer.
                r.acknowledge(Err(crate::error::EngineError::from(
                    weft_store::StoreError::Reclaimed {
                        instance_id: key.0.clone(),
                        task_id: key.1,
                    },
                )));
                slot.entry = Entry::Refused(Box::new(r));
                None
            }
            None => None,
        }
    }

    /// The result was recorded, or given up on.
    pub(crate) fn end(&mut self, key: &TaskKey) {
        self.map.remove(key);
    }

    /// Results on their way (not those refused and kept for a scan).
    pub(crate) fn pending(&self) -> usize {
        self.map
            .values()
            .filter(|s| !matches!(s.entry, Entry::Refused(_)) && s.since.elapsed() < FORGET_AFTER)
            .count()
    }

    /// Every result of an instance was lost (its actor panicked holding them).
    pub(crate) fn end_instance(&mut self, instance_id: &str) {
        self.map.retain(|k, _| k.0 != instance_id);
    }
}

pub(crate) fn task_key(r: &ActivityResult) -> TaskKey {
    (
        r.completion.instance_id.clone(),
        r.completion.task_id,
        r.completion.generation,
    )
}

impl Hub {
    /// A job a recovery scan of this sidecar claimed. If the task's result is on its way to the
    /// store here, nothing is dispatched: the result takes the new claim (`Absorb::Yes`), or,
    /// refused meanwhile, is handed back to be recorded under it (`Absorb::Rerecord`).
    pub(crate) fn push_claimed(&self, job: Job) -> Absorb {
        let mut st = self.lock();
        if let Job::Activity {
            generation,
            claim,
            request,
        } = &job
        {
            let id = request
                .workflow_instance
                .as_ref()
                .map(|w| w.instance_id.clone())
                .unwrap_or_default();
            match st
                .transit
                .absorb(&(id, request.task_id, *generation), *claim)
            {
                Absorb::No => {}
                absorbed => return absorbed,
            }
        }
        self.push_locked(st, job);
        Absorb::No
    }

    /// The claim a result in transit is to be recorded under, if a scan here raised it.
    pub(crate) fn transit_claim(&self, key: &TaskKey) -> Option<i64> {
        self.lock().transit.claim(key)
    }

    /// A result in transit was refused under its claim: see `Transit::refused`.
    pub(crate) fn transit_refused(&self, r: ActivityResult) -> Option<ActivityResult> {
        self.lock().transit.refused(r)
    }

    /// A result in transit was recorded, or given up on.
    pub(crate) fn transit_end(&self, key: &TaskKey) {
        self.lock().transit.end(key);
    }

    /// The results of an instance an actor held were lost with it.
    pub(crate) fn transit_lost(&self, instance_id: &str) {
        self.lock().transit.end_instance(instance_id);
    }

    /// Results taken and not yet recorded (the shutdown drain waits for them).
    pub(crate) fn results_in_transit(&self) -> usize {
        self.lock().transit.pending()
    }
}
