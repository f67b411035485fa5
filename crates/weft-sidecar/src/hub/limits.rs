//! Concurrency limits on work handed to workers (`spec.workflow` of the configuration): each job
//! counts against the buckets that limit it; work over a limit waits here, in arrival order,
//! until a slot frees. Cluster-wide buckets get their capacity from leases in the store.
//!
//! The hub calls in at four places only: `admit` (push), `release` (completion), `withdraw` (a
//! turn taken back) and `forget` (purge / finished instance). Nothing here does I/O.

use super::{Job, Key};
use std::collections::{BTreeMap, HashMap, HashSet};
use weft_config::WorkflowConfig;
use weft_proto::durabletask::history_event::EventType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Workflow,
    Activity,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Workflow => "workflow",
            Kind::Activity => "activity",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

/// Which limit a bucket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Per sidecar: a plain counter.
    Sidecar,
    /// Cluster-wide for the kind: capacity is the leases this sidecar holds.
    Global,
    /// Cluster-wide for one name: capacity is the leases this sidecar holds.
    Name(String),
}

pub(crate) struct Bucket {
    pub(crate) kind: Kind,
    pub(crate) scope: Scope,
    pub(crate) limit: u32,
    /// Admitted jobs counted here.
    pub(crate) in_use: u32,
    /// Parked jobs that need this bucket.
    pub(crate) waiting: u32,
    /// Cluster-wide buckets: the slot numbers leased from the store (the capacity here).
    pub(crate) leases: Vec<u32>,
}

impl Bucket {
    pub(crate) fn is_cluster_wide(&self) -> bool {
        self.scope != Scope::Sidecar
    }

    /// The store's name of this bucket's slots (shared by every sidecar).
    pub(crate) fn lease_key(&self) -> String {
        match &self.scope {
            Scope::Sidecar | Scope::Global => self.kind.as_str().to_string(),
            Scope::Name(n) => format!("{}:{n}", self.kind.as_str()),
        }
    }

    fn capacity(&self) -> u32 {
        if self.is_cluster_wide() {
            self.leases.len() as u32
        } else {
            self.limit
        }
    }

    fn has_room(&self) -> bool {
        self.in_use < self.capacity()
    }
}

/// One cluster-wide bucket's lease needs, from [`Limits::lease_plan`].
pub(crate) struct LeaseNeed {
    pub(crate) bucket: usize,
    pub(crate) key: String,
    pub(crate) limit: u32,
    pub(crate) want: u32,
    pub(crate) surplus: u32,
}

struct Held {
    kind: Kind,
    buckets: Vec<usize>,
    ticket: u64,
}

struct Parked {
    key: Key,
    job: Job,
    kind: Kind,
    buckets: Vec<usize>,
}

/// The limiter; lives inside the hub's lock. The default limits nothing.
#[derive(Default)]
pub(crate) struct Limits {
    pub(crate) buckets: Vec<Bucket>,
    sidecar: [Option<usize>; 2],
    global: [Option<usize>; 2],
    by_name: HashMap<(Kind, String), usize>,
    /// Admitted (queued for a worker or in flight) jobs, limited or not.
    held: HashMap<Key, Held>,
    in_flight: [u64; 2],
    /// Parked jobs by ticket: the order they first arrived in.
    waiting: BTreeMap<u64, Parked>,
    waiting_keys: HashMap<Key, u64>,
    waiting_by_kind: [u64; 2],
    /// Tickets of turns taken back while admitted or parked, so their next push keeps its place.
    returning: HashMap<Key, u64>,
    /// The keys in `held`, `waiting_keys` or `returning`, by instance: `forget` runs on every
    /// finished instance under the hub lock and must visit only that instance's jobs.
    by_instance: HashMap<String, HashSet<Key>>,
    next_ticket: u64,
    /// Keys `forget` looked at (tests check it is O(jobs of the instance)).
    #[cfg(test)]
    forget_visits: usize,
}

impl Limits {
    pub(crate) fn new(cfg: &WorkflowConfig) -> Self {
        let mut l = Limits {
            buckets: Vec::new(),
            sidecar: [None; 2],
            global: [None; 2],
            by_name: HashMap::new(),
            held: HashMap::new(),
            in_flight: [0; 2],
            waiting: BTreeMap::new(),
            waiting_keys: HashMap::new(),
            waiting_by_kind: [0; 2],
            returning: HashMap::new(),
            by_instance: HashMap::new(),
            next_ticket: 1,
            #[cfg(test)]
            forget_visits: 0,
        };
        let add = |l: &mut Limits, kind, scope, limit| {
            l.buckets.push(Bucket {
                kind,
                scope,
                limit,
                in_use: 0,
                waiting: 0,
                leases: Vec::new(),
            });
            l.buckets.len() - 1
        };
        for (kind, local, global, names) in [
            (
                Kind::Workflow,
                cfg.max_concurrent_workflow_invocations,
                cfg.global_max_concurrent_workflow_invocations,
                &cfg.workflow_concurrency_limits,
            ),
            (
                Kind::Activity,
                cfg.max_concurrent_activity_invocations,
                cfg.global_max_concurrent_activity_invocations,
                &cfg.activity_concurrency_limits,
            ),
        ] {
            if let Some(n) = local {
                l.sidecar[kind.idx()] = Some(add(&mut l, kind, Scope::Sidecar, n));
            }
            if let Some(n) = global {
                l.global[kind.idx()] = Some(add(&mut l, kind, Scope::Global, n));
            }
            for nl in names {
                let b = add(
                    &mut l,
                    kind,
                    Scope::Name(nl.name.clone()),
                    nl.max_concurrent,
                );
                l.by_name.insert((kind, nl.name.clone()), b);
            }
        }
        l
    }

    pub(crate) fn has_cluster_wide(&self) -> bool {
        self.buckets.iter().any(Bucket::is_cluster_wide)
    }

    fn classify(&self, job: &Job) -> (Kind, Vec<usize>) {
        let (kind, name) = match job {
            Job::Workflow(r) => (
                Kind::Workflow,
                r.past_events
                    .iter()
                    .chain(&r.new_events)
                    .find_map(|e| match &e.event_type {
                        Some(EventType::ExecutionStarted(s)) => Some(s.name.as_str()),
                        _ => None,
                    }),
            ),
            Job::Activity { request, .. } => (Kind::Activity, Some(request.name.as_str())),
        };
        let mut buckets = Vec::new();
        buckets.extend(self.sidecar[kind.idx()]);
        buckets.extend(self.global[kind.idx()]);
        if let Some(name) = name
            && !self.by_name.is_empty()
            && let Some(&b) = self.by_name.get(&(kind, name.to_string()))
        {
            buckets.push(b);
        }
        (kind, buckets)
    }

    /// A job pushed to the hub: `Some` to queue it now (it holds its slots), `None` if it
    /// waits here. A job whose key already holds slots (a re-dispatch) keeps them.
    pub(crate) fn admit(&mut self, key: Key, job: Job) -> Option<Job> {
        if self.held.contains_key(&key) {
            return Some(job);
        }
        let (kind, buckets) = self.classify(&job);
        if let Some(old) = self.waiting_keys.get(&key).copied() {
            // A newer copy of a parked job replaces it in its place.
            self.unpark(old);
            self.park(old, key, job, kind, buckets);
            return None;
        }
        let ticket = match self.returning.remove(&key) {
            // `hold` or `park` below indexes the key again.
            Some(t) => t,
            None => {
                self.next_ticket += 1;
                self.next_ticket
            }
        };
        // Every release hands freed room to the oldest parked jobs that fit before returning,
        // so room seen here is room no parked job can use: taking it keeps the order.
        if buckets.iter().all(|&b| self.buckets[b].has_room()) {
            self.hold(key, kind, buckets, ticket);
            Some(job)
        } else {
            self.park(ticket, key, job, kind, buckets);
            None
        }
    }

    fn hold(&mut self, key: Key, kind: Kind, buckets: Vec<usize>, ticket: u64) {
        for &b in &buckets {
            self.buckets[b].in_use += 1;
        }
        self.in_flight[kind.idx()] += 1;
        self.index(&key);
        self.held.insert(
            key,
            Held {
                kind,
                buckets,
                ticket,
            },
        );
    }

    fn park(&mut self, ticket: u64, key: Key, job: Job, kind: Kind, buckets: Vec<usize>) {
        for &b in &buckets {
            self.buckets[b].waiting += 1;
        }
        self.waiting_by_kind[kind.idx()] += 1;
        self.index(&key);
        self.waiting_keys.insert(key.clone(), ticket);
        self.waiting.insert(
            ticket,
            Parked {
                key,
                job,
                kind,
                buckets,
            },
        );
    }

    fn unpark(&mut self, ticket: u64) -> Option<Parked> {
        let p = self.waiting.remove(&ticket)?;
        for &b in &p.buckets {
            self.buckets[b].waiting -= 1;
        }
        self.waiting_by_kind[p.kind.idx()] -= 1;
        self.waiting_keys.remove(&p.key);
        self.unindex(&p.key);
        Some(p)
    }

    fn index(&mut self, key: &Key) {
        self.by_instance
            .entry(key.instance().to_string())
            .or_default()
            .insert(key.clone());
    }

    /// Drops `key` from the index once no map holds it.
    fn unindex(&mut self, key: &Key) {
        if self.held.contains_key(key)
            || self.waiting_keys.contains_key(key)
            || self.returning.contains_key(key)
        {
            return;
        }
        if let Some(keys) = self.by_instance.get_mut(key.instance()) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_instance.remove(key.instance());
            }
        }
    }

    /// The job under `key` finished (or was dropped): frees its slots. Returns parked jobs that
    /// now fit, in order, to be queued.
    pub(crate) fn release(&mut self, key: &Key) -> Vec<Job> {
        let Some(h) = self.held.remove(key) else {
            return Vec::new();
        };
        self.unindex(key);
        crate::census::shrink_after_burst(&mut self.held);
        self.unhold(&h);
        if h.buckets.is_empty() {
            return Vec::new();
        }
        self.admit_waiting()
    }

    fn unhold(&mut self, h: &Held) {
        for &b in &h.buckets {
            self.buckets[b].in_use -= 1;
        }
        self.in_flight[h.kind.idx()] -= 1;
    }

    /// Admits every parked job that fits now, oldest first. A job blocked on one bucket (say a
    /// busy activity name) does not hold back younger jobs that fit: no head-of-line blocking.
    pub(crate) fn admit_waiting(&mut self) -> Vec<Job> {
        let mut out = Vec::new();
        let tickets: Vec<u64> = self.waiting.keys().copied().collect();
        for t in tickets {
            if !self.buckets.iter().any(Bucket::has_room) {
                break;
            }
            let p = &self.waiting[&t];
            if p.buckets.iter().all(|&b| self.buckets[b].has_room()) {
                let p = self.unpark(t).expect("present");
                self.hold(p.key, p.kind, p.buckets, t);
                out.push(p.job);
            }
        }
        out
    }

    /// A workflow turn taken back before any worker got it (it will be re-prepared). Returns
    /// whether it was parked here (then it is gone from the hub) and the parked jobs that now fit.
    pub(crate) fn withdraw(&mut self, key: &Key, was_queued: bool) -> (bool, Vec<Job>) {
        if let Some(t) = self.waiting_keys.get(key).copied() {
            self.unpark(t);
            self.index(key);
            self.returning.insert(key.clone(), t);
            return (true, Vec::new());
        }
        if was_queued && let Some(h) = self.held.remove(key) {
            self.unhold(&h);
            self.returning.insert(key.clone(), h.ticket);
            return (false, self.admit_waiting());
        }
        (false, Vec::new())
    }

    /// Drops everything of one instance (purged or finished); returns parked jobs that now fit.
    /// Visits only that instance's jobs (through `by_instance`).
    pub(crate) fn forget(&mut self, instance_id: &str) -> Vec<Job> {
        let Some(keys) = self.by_instance.remove(instance_id) else {
            return Vec::new();
        };
        let mut freed = false;
        for k in keys {
            #[cfg(test)]
            {
                self.forget_visits += 1;
            }
            if let Some(h) = self.held.remove(&k) {
                self.unhold(&h);
                freed |= !h.buckets.is_empty();
            }
            if let Some(t) = self.waiting_keys.get(&k).copied() {
                self.unpark(t);
                freed = true;
            }
            self.returning.remove(&k);
        }
        if freed {
            self.admit_waiting()
        } else {
            Vec::new()
        }
    }

    /// Drops the parked jobs (and kept places) of instances `moved` selects: handed off, their
    /// new owner queues them afresh.
    pub(crate) fn withdraw_parked(&mut self, moved: &impl Fn(&str) -> bool) {
        let parked: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, p)| moved(p.key.instance()))
            .map(|(t, _)| *t)
            .collect();
        for t in parked {
            self.unpark(t);
        }
        let kept: Vec<Key> = self
            .returning
            .keys()
            .filter(|k| moved(k.instance()))
            .cloned()
            .collect();
        for k in kept {
            self.returning.remove(&k);
            self.unindex(&k);
        }
    }

    /// Forgets the place kept for a withdrawn turn (its actor left memory: no re-push follows).
    pub(crate) fn forget_returning(&mut self, key: &Key) {
        self.returning.remove(key);
        self.unindex(key);
        crate::census::shrink_after_burst(&mut self.returning);
    }

    /// Per-job records: holding slots, parked, or keeping a place.
    pub(crate) fn records(&self) -> usize {
        self.held.len() + self.waiting.len() + self.returning.len()
    }

    /// A new execution of the instance began: parked activities of older generations will never
    /// be wanted, so they stop waiting.
    pub(crate) fn drop_stale(&mut self, instance_id: &str, generation: i64) {
        let stale: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, p)| {
                p.key.instance() == instance_id
                    && p.job.generation().is_some_and(|g| g < generation)
            })
            .map(|(t, _)| *t)
            .collect();
        for t in stale {
            self.unpark(t);
        }
    }

    /// Whether any work of this instance waits for a slot.
    #[cfg(test)]
    pub(crate) fn is_waiting(&self, instance_id: &str) -> bool {
        self.waiting_keys
            .keys()
            .any(|k| k.instance() == instance_id)
    }

    /// Instances with work waiting for a slot.
    pub(crate) fn waiting_instances(&self) -> std::collections::HashSet<String> {
        self.waiting_keys
            .keys()
            .map(|k| k.instance().to_string())
            .collect()
    }

    /// Cluster-wide buckets: how many more leases each would use now (`want`) and how many it
    /// holds and does not need (`surplus`). Per-name buckets are planned first; a global bucket
    /// counts only waiting jobs whose name slots are in hand, so a sidecar never sits on global
    /// slots for work blocked on a busy name.
    pub(crate) fn lease_plan(&self, names: bool) -> Vec<LeaseNeed> {
        let mut free: Vec<i64> = self
            .buckets
            .iter()
            .map(|b| i64::from(b.capacity()) - i64::from(b.in_use))
            .collect();
        let mut demand = vec![0u32; self.buckets.len()];
        for p in self.waiting.values() {
            let local_ok = p
                .buckets
                .iter()
                .all(|&b| self.buckets[b].is_cluster_wide() || free[b] > 0);
            if !local_ok {
                continue;
            }
            let names_ok = p
                .buckets
                .iter()
                .all(|&b| !matches!(self.buckets[b].scope, Scope::Name(_)) || free[b] > 0);
            for &b in &p.buckets {
                match self.buckets[b].scope {
                    Scope::Sidecar => free[b] -= 1,
                    Scope::Name(_) => {
                        demand[b] += 1;
                        free[b] -= 1;
                    }
                    Scope::Global if names_ok => demand[b] += 1,
                    Scope::Global => {}
                }
            }
        }
        let mut out = Vec::new();
        for (i, b) in self.buckets.iter().enumerate() {
            let wanted_kind = match b.scope {
                Scope::Sidecar => continue,
                Scope::Name(_) => names,
                Scope::Global => !names,
            };
            let target = b.limit.min(b.in_use + demand[i]);
            let held = b.leases.len() as u32;
            out.push(LeaseNeed {
                bucket: i,
                key: b.lease_key(),
                limit: b.limit,
                want: if wanted_kind {
                    target.saturating_sub(held)
                } else {
                    0
                },
                surplus: held.saturating_sub(target.max(b.in_use)),
            });
        }
        out
    }

    /// Adds leased slots to a bucket and admits what now fits.
    pub(crate) fn add_leases(&mut self, bucket: usize, slots: Vec<u32>) -> Vec<Job> {
        self.buckets[bucket].leases.extend(slots);
        self.admit_waiting()
    }

    /// Takes up to `n` unused leases out of a bucket, to be given back to the store.
    pub(crate) fn take_surplus(&mut self, bucket: usize, n: u32) -> Vec<u32> {
        let b = &mut self.buckets[bucket];
        let spare = (b.leases.len() as u32).saturating_sub(b.in_use).min(n) as usize;
        let at = b.leases.len() - spare;
        b.leases.split_off(at)
    }

    /// Replaces every bucket's leases with what the store says this sidecar still holds.
    pub(crate) fn set_leases(&mut self, held: &[weft_store::SlotLease]) -> Vec<Job> {
        for b in self.buckets.iter_mut().filter(|b| b.is_cluster_wide()) {
            let key = b.lease_key();
            b.leases = held
                .iter()
                .filter(|l| l.bucket == key)
                .map(|l| l.slot)
                .collect();
        }
        self.admit_waiting()
    }

    /// Every lease held, per bucket key (for giving them all back at shutdown).
    pub(crate) fn all_leases(&self) -> Vec<(String, Vec<u32>)> {
        self.buckets
            .iter()
            .filter(|b| b.is_cluster_wide() && !b.leases.is_empty())
            .map(|b| (b.lease_key(), b.leases.clone()))
            .collect()
    }

    /// Publishes the gauges (called after every change, under the hub lock).
    pub(crate) fn publish(&self) {
        for kind in [Kind::Workflow, Kind::Activity] {
            metrics::gauge!("weft_work_in_flight", "kind" => kind.as_str())
                .set(self.in_flight[kind.idx()] as f64);
            metrics::gauge!("weft_work_waiting", "kind" => kind.as_str())
                .set(self.waiting_by_kind[kind.idx()] as f64);
        }
        for b in &self.buckets {
            let (scope, name) = match &b.scope {
                Scope::Sidecar => ("sidecar", String::new()),
                Scope::Global => ("cluster", String::new()),
                Scope::Name(n) => ("name", n.clone()),
            };
            let labels = [
                ("kind", b.kind.as_str().to_string()),
                ("limit", scope.to_string()),
                ("name", name),
            ];
            metrics::gauge!("weft_limit_in_flight", &labels).set(b.in_use as f64);
            metrics::gauge!("weft_limit_waiting", &labels).set(b.waiting as f64);
            if b.is_cluster_wide() {
                metrics::gauge!("weft_limit_slots_held", &labels).set(b.leases.len() as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests;
