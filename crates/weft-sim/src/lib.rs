//! Seeded crash simulation of Weft: random workflow programs run through the real engine
//! (`weft_sidecar::serve`, real gRPC) on a real store, with a misbehaving simulated worker and
//! faults injected at store calls, every outcome checked against a reference model and the
//! history invariants. See `docs/testing.md`.
//!
//! The seed determines the programs, the client's actions and their delays, the fault plan
//! (which store call numbers fail, and how) and the worker's misbehaviour per work item. Thread
//! scheduling is not simulated, so the order in which concurrent store calls are numbered — and
//! with it which call a planned fault hits — can differ between two runs of one seed; a failing
//! seed usually, not always, fails again.
//!
//! Owns the generator ([`program`]), the reference model ([`model`]), the replaying SDK
//! ([`sdk`]), the history invariants ([`invariants`]), the fault-injecting store wrapper
//! ([`faults`]) and the cluster simulation ([`cluster`], [`fence`], [`schedule`], [`probe`]).
//! Main types: [`SeedConfig`] and [`SeedReport`] (one seed), [`cluster::ClusterSeed`] and
//! [`cluster::ClusterReport`]. Test tooling only: it must never be a dependency of production
//! crates, never weaken an invariant to make a seed pass (a known engine bug is switched by a
//! [`known_bugs`] feature instead), and never run without a deadline.

pub mod cluster;
pub mod control;
pub mod driver;
pub mod faults;
pub mod fence;
pub mod invariants;
pub mod known_bugs;
pub mod model;
pub mod node;
pub mod op;
pub mod pending;
pub mod probe;
pub mod program;
pub mod rng;
pub mod schedule;
pub mod sdk;
pub mod worker;

use crate::driver::{Api, ScenarioStats, run_scenario};
use crate::faults::{Fault, FaultStats, Faults};
use crate::invariants::{check_history, check_timer_loop, describe, salt_of};
use crate::known_bugs::Enabled;
use crate::node::{Backend, NodeStats, supervise};
use crate::rng::Rng;
use crate::worker::{Misbehaviour, Observed, WorkerOpts};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weft_sidecar::EngineConfig;

/// How one seed is run.
#[derive(Debug, Clone)]
pub struct SeedConfig {
    pub seed: u64,
    pub backend: Backend,
    pub enabled: Enabled,
    /// Allow faults that only make a run slow (reminder leases held for 30 s).
    pub slow_faults: bool,
    /// Hang guard: the whole seed must finish within this.
    pub deadline: Duration,
    /// Mutation check: the engine answers a worker's `CompleteActivityTask` as soon as it holds
    /// the result in memory (`EngineConfig::unguarded_fold_answer`), the fold fault is armed
    /// (a crash before the first checkpoint that folds a result), and the run stops at the first
    /// activity dispatched again after its result was acknowledged.
    pub unguarded_fold_answer: bool,
}

impl SeedConfig {
    /// A seed's normal run.
    pub fn new(seed: u64, backend: Backend, enabled: Enabled, slow_faults: bool) -> Self {
        Self {
            seed,
            backend,
            enabled,
            slow_faults,
            deadline: Duration::from_secs(if slow_faults { 150 } else { 90 }),
            unguarded_fold_answer: false,
        }
    }
}

/// What one seed did and found.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub seed: u64,
    pub backend: &'static str,
    pub instances: usize,
    pub problems: Vec<String>,
    pub faults: FaultStats,
    pub node: NodeStats,
    pub worker: Misbehaviour,
    pub client: ScenarioStats,
    pub elapsed: Duration,
}

impl SeedReport {
    pub fn summary(&self) -> String {
        let f = &self.faults;
        format!(
            "seed {} [{}]: {} instances, {} store calls, crashes {} (before {}, after {}), \
             errors {} (before {}, after {}), {} engine starts; worker: {} items, died {}, \
             late {}, other stream {}, twice {}, {} results acknowledged; client: {} events ({} \
             retried), {} terminated, {} suspended, {} re-created; {:.1}s{}{}{}",
            self.seed,
            self.backend,
            self.instances,
            f.calls,
            f.crashes(),
            f.crashes_before,
            f.crashes_after,
            f.errors(),
            f.errors_before,
            f.errors_after,
            self.node.incarnations,
            self.worker.items,
            self.worker.died,
            self.worker.late,
            self.worker.other_stream,
            self.worker.twice,
            self.worker.acknowledged,
            self.client.raised,
            self.client.raise_retries,
            self.client.terminated,
            self.client.suspended,
            self.client.recreated,
            self.elapsed.as_secs_f64(),
            match f.fold {
                Some(fault) => format!("; fold fault {fault:?}"),
                None => String::new(),
            },
            if f.log.is_empty() {
                String::new()
            } else {
                format!(
                    "; faults: {}",
                    f.log
                        .iter()
                        .map(|(k, op, f)| format!("{op}#{k} {f:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            if self.problems.is_empty() {
                String::new()
            } else {
                format!(" — {} PROBLEMS", self.problems.len())
            }
        )
    }
}

/// The invariants over every execution's history as the worker saw it, and the SDK's
/// replay violations.
pub fn observed_problems(obs: &Observed, client: &ScenarioStats) -> Vec<String> {
    let mut problems = Vec::new();
    for (inst, exec, events) in obs.histories() {
        let who = format!("{inst} execution {exec} (as the worker saw it)");
        let found = check_history(
            &who,
            false,
            Some(&exec),
            salt_of(&events).as_deref(),
            &events,
            &client.retried,
        );
        if !found.is_empty() {
            problems.extend(found);
            problems.push(format!("{who}: {}", describe(&events)));
        }
    }
    problems.extend(obs.violations());
    problems
}

/// Runs one seed to the end.
pub async fn run_seed(cfg: SeedConfig) -> SeedReport {
    let started = std::time::Instant::now();
    let mut rng = Rng::new(cfg.seed);
    let instances = rng.range(3, 6) as usize;
    let streams = rng.range(1, 3) as usize;
    let misbehave = rng.chance(85);
    let crashes = rng.range(1, 4);
    let errors = rng.range(0, 4);
    let scenarios = program::generate(
        &mut rng.fork(),
        &format!("s{}", cfg.seed),
        instances,
        &cfg.enabled,
    );
    if std::env::var("WEFT_SIM_VERBOSE").is_ok_and(|v| v == "1") {
        print_scenarios(cfg.seed, &scenarios);
    }
    let faults = Arc::new(Faults::plan(
        &mut rng.fork(),
        crashes,
        errors,
        cfg.slow_faults,
        &cfg.enabled,
    ));
    let stateful = stateful_streams(&scenarios, &cfg.enabled);
    // Half the seeds crash the engine before the first checkpoint that folds an activity
    // result (drawn from a hash, so the rest of the seed's plan is unchanged).
    if cfg.unguarded_fold_answer || rng::hash(cfg.seed, &["fold fault"]).is_multiple_of(2) {
        faults.arm_fold_fault(Fault::CrashBefore);
    }
    let engine = EngineConfig {
        unguarded_fold_answer: cfg.unguarded_fold_answer,
        ..EngineConfig::default()
    };

    let (addr_tx, addr_rx) = watch::channel(None);
    let stop = CancellationToken::new();
    let node = tokio::spawn(supervise(
        cfg.backend.clone(),
        engine,
        faults.clone(),
        addr_tx,
        stop.clone(),
    ));
    let obs = Arc::new(Observed::default());
    let workers = worker::spawn(
        WorkerOpts {
            seed: cfg.seed,
            streams,
            misbehave,
            stateful,
            completion_reuses_timer_id: cfg.enabled.bug("7.2"),
            tokenless_stale: cfg.enabled.bug("N3"),
        },
        addr_rx.clone(),
        obs.clone(),
        stop.clone(),
    );
    let api = Api::new(addr_rx, Instant::now() + cfg.deadline);
    let stats = Mutex::new(ScenarioStats::default());
    let runs = futures::future::join_all(scenarios.iter().map(|sc| run_scenario(sc, &api, &stats)));
    // A mutation run has done its job at the first activity run again after acknowledgement.
    let (mut problems, caught): (Vec<String>, bool) = tokio::select! {
        r = runs => (r.into_iter().flatten().collect(), false),
        _ = obs.first_redispatch(), if cfg.unguarded_fold_answer => (Vec::new(), true),
    };
    if !caught {
        quiet_system(&cfg, &api, &mut problems).await;
    }
    let client = stats.lock().expect("not poisoned").clone();
    problems.extend(observed_problems(&obs, &client));
    stop.cancel();
    let node = match node.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            problems.push(format!("engine: {e}"));
            NodeStats::default()
        }
        Err(e) => {
            problems.push(format!("supervisor panicked: {e}"));
            NodeStats::default()
        }
    };
    for w in workers {
        let _ = w.await;
    }
    let st = faults.stats();
    let polls = ["claim_due_reminders", "next_reminder_due"]
        .iter()
        .map(|op| st.per_op.get(op).copied().unwrap_or(0))
        .sum();
    if cfg.enabled.bug("7.6")
        && let Some(p) = check_timer_loop(polls, started.elapsed())
    {
        problems.push(p);
    }
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    let worker = obs.misbehaviour.lock().expect("not poisoned").clone();
    SeedReport {
        seed: cfg.seed,
        backend: cfg.backend.name(),
        instances,
        problems,
        faults: faults.stats(),
        node,
        worker,
        client,
        elapsed: started.elapsed(),
    }
}

/// `WEFT_SIM_VERBOSE=1`: the seed's programs and scenario.
fn print_scenarios(seed: u64, scenarios: &[program::Scenario]) {
    for sc in scenarios {
        for (k, inc) in sc.incarnations.iter().enumerate() {
            eprintln!(
                "seed {} {}#{k}: {:?} events {:?} gate {} terminate {:?} suspend {:?}",
                seed,
                sc.instance_id,
                inc.input.program,
                inc.event_delays,
                inc.gate,
                inc.terminate,
                inc.suspend
            );
        }
    }
}

/// Whether the worker's streams may keep what they have seen across work items.
fn stateful_streams(scenarios: &[program::Scenario], enabled: &Enabled) -> bool {
    // A stream's record of what it has seen outlives an execution (bug 7.8): stateful streams
    // only where no instance continues as new or is re-created, until that is fixed.
    let new_executions = scenarios.iter().any(|sc| {
        sc.incarnations.len() > 1
            || sc
                .incarnations
                .iter()
                .any(|i| i.input.program.gens.len() > 1)
    });
    enabled.bug("7.8") || !new_executions
}

/// Quiet system: nothing may be left unfinished (children included); for an instance that did
/// not finish, what the database holds for it.
async fn quiet_system(cfg: &SeedConfig, api: &Api, problems: &mut Vec<String>) {
    match api.list().await {
        Ok(ids) => {
            for id in ids {
                match api.wait_terminal(&id).await {
                    Ok(_) => {}
                    Err(s) => problems.push(format!("{id}: stuck: {}", s.message())),
                }
            }
        }
        Err(s) => problems.push(format!("listing instances failed: {s}")),
    }
    let stuck: Vec<String> = problems
        .iter()
        .filter(|p| {
            ["did not finish", "stuck", "deadline", "Timeout expired"]
                .iter()
                .any(|w| p.contains(w))
        })
        .filter(|p| p.starts_with(&format!("s{}-", cfg.seed)))
        .filter_map(|p| p.split([' ', ':']).next().map(str::to_string))
        .collect();
    for id in stuck {
        let d = node::diagnose(&cfg.backend, &id).await;
        problems.push(format!("{id}: in the database: {d}"));
    }
}
