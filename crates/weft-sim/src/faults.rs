//! Fault injection at the store boundary: a [`Store`] wrapper that numbers every call the engine
//! makes and, at the calls a seed chose, fails it before it reaches the database, or lets it
//! commit and then fails the reply — either as a transient error the engine sees and survives,
//! or as a crash: the engine incarnation is declared dead (every later call it makes fails) and
//! the supervisor kills its runtime and starts a fresh engine on the same database.

use crate::known_bugs::Enabled;
use crate::rng::Rng;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use weft_core::Micros;
use weft_store::layer::{self, Answer, Call, InnerCall, Layer};
use weft_store::{
    Checkpoint, CreateInstance, CreateOutcome, Fence, Reminder, Result, Scope, Store, StoreError,
};

/// What happens at a chosen store call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail without calling the store (nothing written).
    ErrorBefore,
    /// Call the store (it commits), then report failure: an ambiguous outcome.
    ErrorAfter,
    /// Crash the engine before the call reaches the store.
    CrashBefore,
    /// Let the call commit, then crash the engine before it sees the reply.
    CrashAfter,
}

impl Fault {
    fn crashes(self) -> bool {
        matches!(self, Fault::CrashBefore | Fault::CrashAfter)
    }
    fn after(self) -> bool {
        matches!(self, Fault::ErrorAfter | Fault::CrashAfter)
    }
}

/// Faults that fired, for the run's report.
#[derive(Debug, Default, Clone)]
pub struct FaultStats {
    pub calls: u64,
    pub crashes_before: u64,
    pub crashes_after: u64,
    pub errors_before: u64,
    pub errors_after: u64,
    /// `(k, operation, fault)` in firing order: the k-th call of that operation.
    pub log: Vec<(u64, &'static str, Fault)>,
    /// Calls per store operation.
    pub per_op: BTreeMap<&'static str, u64>,
    /// The fold fault, once it fired (at the first checkpoint that folded a result).
    pub fold: Option<Fault>,
}

impl FaultStats {
    pub fn crashes(&self) -> u64 {
        self.crashes_before + self.crashes_after
    }
    pub fn errors(&self) -> u64 {
        self.errors_before + self.errors_after
    }
}

/// The store operations the engine calls, with how many calls of each a typical seed makes:
/// a fault is planned at the k-th call of an operation, k drawn up to that figure. Counting per
/// operation (not globally) keeps a planned fault on the same kind of call when threads
/// interleave differently from one run of a seed to the next.
pub const OPS: &[(&str, u64)] = &[
    ("create_instance", 8),
    ("get_instance", 60),
    ("load", 20),
    ("get_history", 6),
    ("read_inbox", 50),
    ("append_inbox", 12),
    ("checkpoint_batch", 50),
    ("complete_activity_batch", 30),
    ("claim_activities", 2),
    ("instances_with_inbox", 2),
    ("claim_due_reminders", 15),
    ("fire_reminder", 8),
    ("next_reminder_due", 15),
    ("list_instances", 2),
    ("purge", 3),
];

/// The fault plan of one run, shared by every engine incarnation.
pub struct Faults {
    calls: AtomicU64,
    /// (operation, k) → the fault for the k-th call of that operation.
    plan: Mutex<BTreeMap<(&'static str, u64), Fault>>,
    stats: Mutex<FaultStats>,
    /// The live incarnation; a crash moves it on, which makes the old one's calls fail.
    epoch: watch::Sender<u64>,
    /// Whether faults may hit a claimed reminder (after `claim_due_reminders` commits, at
    /// `fire_reminder`, or a crash while one is claimed): the reminder then waits out the
    /// engine's 30 s lease, which makes a run slow, not wrong.
    slow_faults: bool,
    /// Slow mode: a fault for the first claim that returns reminders.
    lease_fault: Mutex<Option<Fault>>,
    /// Reminders claimed and not yet fired by the live incarnation: `(its epoch, how many)`.
    /// Keyed by epoch so a dead incarnation's calls (which fail) never count: they used to
    /// leave it above zero for good, and every later crash was then put off forever.
    claimed: Mutex<(u64, i64)>,
    /// Calls per operation so far.
    per_op: Mutex<BTreeMap<&'static str, u64>>,
    /// A fault for the first `checkpoint_batch` that folds an activity result (see
    /// [`Faults::arm_fold_fault`]).
    fold_fault: Mutex<Option<Fault>>,
}

impl Faults {
    /// Draws `crashes` crash points and `errors` transient errors, each at the k-th call of a
    /// random store operation.
    pub fn plan(rng: &mut Rng, crashes: u64, errors: u64, slow: bool, on: &Enabled) -> Self {
        let mut plan = BTreeMap::new();
        let mut put = |f: Fault, rng: &mut Rng| {
            for _ in 0..64 {
                let (op, typical) = OPS[rng.below(OPS.len() as u64) as usize];
                let lease = op == "fire_reminder" || (op == "claim_due_reminders" && f.after());
                if lease && !slow {
                    continue;
                }
                // Ambiguous commits the engine does not recover from yet without a restart.
                let lost_wake = f == Fault::ErrorAfter
                    && ((op == "complete_activity_batch" && !on.bug("N1"))
                        || (op == "create_instance" && !on.bug("N2")));
                if lost_wake {
                    continue;
                }
                let k = rng.range(1, typical);
                if let std::collections::btree_map::Entry::Vacant(v) = plan.entry((op, k)) {
                    v.insert(f);
                    return;
                }
            }
        };
        for _ in 0..crashes {
            let f = if rng.chance(50) {
                Fault::CrashBefore
            } else {
                Fault::CrashAfter
            };
            put(f, rng);
        }
        for _ in 0..errors {
            let f = if rng.chance(50) {
                Fault::ErrorBefore
            } else {
                Fault::ErrorAfter
            };
            put(f, rng);
        }
        Self {
            calls: AtomicU64::new(0),
            plan: Mutex::new(plan),
            stats: Mutex::default(),
            epoch: watch::channel(0).0,
            lease_fault: Mutex::new(slow.then(|| {
                if rng.chance(50) {
                    Fault::CrashAfter
                } else {
                    Fault::ErrorAfter
                }
            })),
            slow_faults: slow,
            claimed: Mutex::new((0, 0)),
            per_op: Mutex::default(),
            fold_fault: Mutex::default(),
        }
    }

    /// Aims `f` at the first checkpoint that folds an activity result into its turn (its
    /// worker's answer waits for that commit): a crash before it is where a result acknowledged
    /// from memory would be lost. It replaces whatever the plan had for that call.
    pub fn arm_fold_fault(&self, f: Fault) {
        *lock(&self.fold_fault) = Some(f);
    }

    /// The fold fault, for a checkpoint batch that folds a result; left armed while a crash
    /// would strand claimed reminders (unless slow faults are allowed).
    fn take_fold_fault(&self) -> Option<Fault> {
        let mut armed = lock(&self.fold_fault);
        let f = (*armed)?;
        if f.crashes() && self.claimed() > 0 && !self.slow_faults {
            return None;
        }
        armed.take()
    }

    /// In slow mode, the first non-empty claim of reminders is answered with a fault.
    fn take_lease_fault(&self) -> Option<Fault> {
        lock(&self.lease_fault).take()
    }

    pub fn epoch(&self) -> u64 {
        *self.epoch.borrow()
    }

    /// Waits until the incarnation `epoch` has crashed.
    pub async fn crashed(&self, epoch: u64) {
        let mut rx = self.epoch.subscribe();
        let _ = rx.wait_for(|e| *e != epoch).await;
    }

    /// Declares the incarnation `epoch` dead (no-op if it already is).
    pub fn crash(&self, epoch: u64) {
        self.epoch.send_if_modified(|e| {
            if *e == epoch {
                *e += 1;
                // The next incarnation starts with nothing claimed by it.
                *lock(&self.claimed) = (*e, 0);
                true
            } else {
                false
            }
        });
    }

    /// Reminders the live incarnation holds claimed (or is claiming).
    fn claimed(&self) -> i64 {
        lock(&self.claimed).1
    }

    /// Counts reminders claimed (`d` > 0) or fired by incarnation `epoch`, if it is the live one.
    fn claim(&self, epoch: u64, d: i64) {
        let mut c = lock(&self.claimed);
        if c.0 == epoch {
            c.1 += d;
        }
    }

    pub fn stats(&self) -> FaultStats {
        let mut s = lock(&self.stats).clone();
        s.calls = self.calls.load(Ordering::Relaxed);
        s.per_op = lock(&self.per_op).clone();
        s
    }

    /// Numbers a call: `(k, fault)` for the k-th call of `op`; `forced` replaces its planned fault.
    fn next(&self, op: &'static str, forced: Option<Fault>) -> (u64, Option<Fault>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let k = {
            let mut per = lock(&self.per_op);
            let c = per.entry(op).or_insert(0);
            *c += 1;
            *c
        };
        let mut plan = lock(&self.plan);
        let planned = plan.remove(&(op, k));
        if forced.is_some() {
            return (k, forced);
        }
        let Some(f) = planned else {
            return (k, None);
        };
        // A crash while reminders are claimed and not yet fired strands them for the lease.
        if f.crashes() && self.claimed() > 0 && !self.slow_faults {
            plan.insert((op, k + 1), f); // the next call of this operation instead
            return (k, None);
        }
        (k, Some(f))
    }

    fn fired(&self, n: u64, op: &'static str, f: Fault) {
        let mut s = lock(&self.stats);
        match f {
            Fault::ErrorBefore => s.errors_before += 1,
            Fault::ErrorAfter => s.errors_after += 1,
            Fault::CrashBefore => s.crashes_before += 1,
            Fault::CrashAfter => s.crashes_after += 1,
        }
        s.log.push((n, op, f));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The store one engine incarnation sees.
pub struct FaultStore {
    inner: Arc<dyn Store>,
    faults: Arc<Faults>,
    epoch: u64,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn Store>, faults: Arc<Faults>, epoch: u64) -> Self {
        Self {
            inner,
            faults,
            epoch,
        }
    }

    fn dead(&self) -> bool {
        self.faults.epoch() != self.epoch
    }

    fn refuse(why: &str) -> StoreError {
        StoreError::Unavailable(format!("simulated: {why}"))
    }

    /// Before the call: `Err` to fail it now, else the fault (if any) to apply after it.
    fn before(&self, op: &'static str, forced: Option<Fault>) -> Result<Option<(u64, Fault)>> {
        if self.dead() {
            return Err(Self::refuse("this engine process has crashed"));
        }
        let (n, fault) = self.faults.next(op, forced);
        match fault {
            None => Ok(None),
            Some(f) if f.after() => Ok(Some((n, f))),
            Some(f) => {
                self.faults.fired(n, op, f);
                if f.crashes() {
                    self.faults.crash(self.epoch);
                }
                Err(Self::refuse(
                    "store call failed before reaching the database",
                ))
            }
        }
    }

    /// After the call committed: the reply is lost if a fault was planned here.
    fn after(&self, op: &'static str, planned: Option<(u64, Fault)>) -> Result<()> {
        let Some((n, f)) = planned else { return Ok(()) };
        self.faults.fired(n, op, f);
        if f.crashes() {
            self.faults.crash(self.epoch);
        }
        Err(Self::lost_reply())
    }

    /// What a store reports when the connection dies while a call commits: the outcome is
    /// unknown (here it landed), which is how the engine tells it from "nothing written".
    fn lost_reply() -> StoreError {
        StoreError::OutcomeUnknown("simulated: the call committed but its reply was lost".into())
    }

    /// One numbered call, failed as planned (or as `forced`).
    async fn faulted<A: Answer>(
        &self,
        call: Call,
        n: usize,
        inner: InnerCall<'_, A>,
        forced: Option<Fault>,
    ) -> A {
        let planned = match self.before(call.name(), forced) {
            Ok(planned) => planned,
            Err(e) => return A::failed(n, e),
        };
        let out = inner.await;
        match self.after(call.name(), planned) {
            Ok(()) => out,
            Err(e) => A::failed(n, e),
        }
    }
}

// Every call is numbered and may fault (`around`), except lease calls; the
// reminder calls also track what is claimed.
#[async_trait]
impl Layer for FaultStore {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    async fn around<A: Answer>(&self, call: Call, n: usize, inner: InnerCall<'_, A>) -> A {
        // Concurrency-limit and ownership leases are not part of the simulated fault model (no
        // limits configured).
        if call.is_lease() {
            return inner.await;
        }
        if call == Call::Health {
            if self.dead() {
                return A::failed(n, Self::refuse("this engine process has crashed"));
            }
            return inner.await;
        }
        self.faulted(call, n, inner, None).await
    }
    async fn checkpoint_batch(&self, cps: Vec<Checkpoint>) -> Vec<Result<()>> {
        let folds = cps.iter().any(|c| !c.completed_activities.is_empty());
        let forced = if folds && !self.dead() {
            self.faults.take_fold_fault()
        } else {
            None
        };
        if let Some(f) = forced {
            lock(&self.faults.stats).fold = Some(f);
        }
        let n = cps.len();
        let inner = self.inner.checkpoint_batch(cps);
        self.faulted(Call::CheckpointBatch, n, inner, forced).await
    }
    // One by one, as `Store`'s default does: the fault plan numbers `create_instance` calls.
    async fn create_instance_batch(&self, reqs: Vec<CreateInstance>) -> Vec<Result<CreateOutcome>> {
        layer::one_by_one(reqs, |r| Layer::create_instance(self, r)).await
    }
    async fn claim_due_reminders(
        &self,
        scope: &Scope,
        now: Micros,
        lease_until: Micros,
        limit: usize,
    ) -> Result<Vec<Reminder>> {
        // Counted as claimed while in flight: a crash now may strand what it claims.
        self.faults.claim(self.epoch, 1);
        let inner = self
            .inner
            .claim_due_reminders(scope, now, lease_until, limit);
        let due = self.around(Call::ClaimDueReminders, 1, inner).await;
        self.faults.claim(self.epoch, -1);
        if let Ok(d) = &due
            && !d.is_empty()
            && let Some(f) = self.faults.take_lease_fault()
        {
            // The claim committed; its reply is lost, so the reminders wait out their lease.
            let k = lock(&self.faults.per_op)
                .get("claim_due_reminders")
                .copied()
                .unwrap_or(0);
            self.faults.fired(k, "claim_due_reminders", f);
            if f.crashes() {
                self.faults.crash(self.epoch);
            }
            return Err(Self::lost_reply());
        }
        if let Ok(d) = &due {
            self.faults.claim(self.epoch, d.len() as i64);
        }
        due
    }
    async fn fire_reminder(&self, reminder_id: i64, fence: Option<&Fence>) -> Result<bool> {
        let inner = self.inner.fire_reminder(reminder_id, fence);
        let fired = self.around(Call::FireReminder, 1, inner).await;
        self.faults.claim(self.epoch, -1);
        fired
    }
}
