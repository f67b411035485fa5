//! The cluster simulation: two or three engines — each a real `weft_sidecar::serve_placed` with
//! leases on, its own store handle on one SQLite file, and its own simulated worker — run the
//! seed's workload while a seeded schedule moves buckets between them (new placement tables),
//! **pauses** one (every store call of it, renewals included, frozen at an owner write of a
//! chosen kind until another engine took its buckets over) and **cuts** one off the database.
//! Checked: the usual invariants (model output, history consistency, replay, quiet system) and
//! "no write by a stale owner" over the lease history ([`crate::fence::FenceLog`]).
//!
//! The schedule runs on the simulation's own clock (seeded delays between steps); a pause ends
//! when the take-over it waits for is seen in the lease log, or after a bound.

use crate::control::Control;
use crate::driver::{Api, ScenarioStats, run_scenario};
use crate::fence::{FenceLog, FenceStats, FenceStore};
use crate::known_bugs::Enabled;
use crate::node::Backend;
use crate::op::Op;
use crate::rng::Rng;
use crate::schedule::{Placement, ScheduleStats, seeded};
use crate::worker::{Observed, WorkerOpts};
use crate::{observed_problems, program};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use weft_sidecar::cluster::Registry;
use weft_sidecar::{Running, SidecarConfig};

/// Lease length of the simulated engines (renewed every ttl/8, valid locally for 3/4 of it).
pub const LEASE_TTL: Duration = Duration::from_millis(800);
/// How one cluster seed is run.
#[derive(Debug, Clone)]
pub struct ClusterSeed {
    pub seed: u64,
    pub backend: Backend,
    /// The owner-write kinds pauses are armed with, in turn.
    pub pause_ops: Vec<Op>,
    /// Mutation check: forward this kind of owner write without its fence (the run then stops
    /// at the first write by a stale owner).
    pub strip: Option<Op>,
    /// Instead of the seeded schedule, the targeted one of [`crate::probe`] aimed at this kind.
    pub probe: Option<Op>,
    /// Mutation check: answer `CompleteActivityTask` from memory, before the folding turn
    /// commits (`EngineConfig::unguarded_fold_answer`); the run stops at the first activity
    /// dispatched again after its result was acknowledged.
    pub unguarded_fold_answer: bool,
    pub deadline: Duration,
}

/// What one cluster seed did and found.
#[derive(Debug, Clone)]
pub struct ClusterReport {
    pub seed: u64,
    pub engines: usize,
    pub instances: usize,
    pub problems: Vec<String>,
    pub schedule: ScheduleStats,
    pub fence: FenceStats,
    /// Activity results the workers were told are recorded.
    pub acknowledged: u64,
    pub elapsed: Duration,
}

impl ClusterReport {
    pub fn summary(&self) -> String {
        let s = &self.schedule;
        let f = &self.fence;
        let map = |m: &std::collections::BTreeMap<Op, u64>| {
            m.iter()
                .map(|(o, n)| format!("{} {n}", o.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "seed {}: {} engines, {} instances; {} tables ({} moves), pauses {}/{} armed froze an \
             engine ({} taken over meanwhile), {} cuts; {} lease grants, {} owner writes, stale \
             owner calls: [{}], refused as fenced: [{}], unfenced owner calls: [{}]; {} activity \
             results acknowledged; {:.1}s{}",
            self.seed,
            self.engines,
            self.instances,
            s.tables,
            s.moves,
            s.paused,
            s.armed,
            s.taken_over,
            s.cuts,
            f.grants,
            f.writes,
            map(&f.stale),
            map(&f.refused),
            map(&f.unfenced),
            self.acknowledged,
            self.elapsed.as_secs_f64(),
            if self.problems.is_empty() {
                String::new()
            } else {
                format!(" — {} PROBLEMS", self.problems.len())
            }
        )
    }
}

/// The engines of a run as they came up (fewer than asked if one did not: `problems` says why).
struct Engines {
    app: String,
    ctls: Vec<Arc<Control>>,
    registries: Vec<Registry>,
    addrs: Vec<String>,
    grpc: Vec<String>,
    running: Vec<Running>,
    problems: Vec<String>,
}

/// Starts `n` engines with leases, each over its own fenced store handle.
async fn start_engines(
    cfg: &ClusterSeed,
    n: usize,
    log: &Arc<FenceLog>,
    stop: &CancellationToken,
) -> Engines {
    let mut sc = SidecarConfig::default();
    sc.engine.lease_ttl = LEASE_TTL;
    sc.engine.handoff_timeout = Duration::from_millis(500);
    sc.engine.unguarded_fold_answer = cfg.unguarded_fold_answer;
    let mut e = Engines {
        app: sc.engine.app_id.clone(),
        ctls: Vec::new(),
        registries: Vec::new(),
        addrs: Vec::new(),
        grpc: Vec::new(),
        running: Vec::new(),
        problems: Vec::new(),
    };
    for i in 0..n {
        let ctl = Arc::new(Control::default());
        let store = match cfg.backend.open().await {
            Ok(s) => s,
            Err(err) => {
                e.problems.push(format!("opening the store: {err}"));
                break;
            }
        };
        let store = Arc::new(FenceStore::new(
            store,
            i,
            log.clone(),
            ctl.clone(),
            cfg.strip,
        ));
        let registry = Registry::placed(&format!("e{i}"));
        match weft_sidecar::serve_placed(store, sc.clone(), registry.clone(), stop.child_token())
            .await
        {
            Ok(r) => {
                e.addrs.push(r.internal_addr.to_string());
                e.grpc.push(format!("http://{}", r.grpc_addr));
                e.running.push(r);
            }
            Err(err) => {
                e.problems.push(format!("engine {i} did not start: {err}"));
                break;
            }
        }
        e.ctls.push(ctl);
        e.registries.push(registry);
    }
    e
}

/// One well-behaved simulated worker per engine; the returned senders keep their addresses.
fn spawn_workers(
    seed: u64,
    grpc: &[String],
    obs: &Arc<Observed>,
    stop: &CancellationToken,
) -> (Vec<JoinHandle<()>>, Vec<watch::Sender<Option<String>>>) {
    let mut workers = Vec::new();
    let mut addr_keep = Vec::new();
    for (i, url) in grpc.iter().enumerate() {
        let (tx, rx) = watch::channel(Some(url.clone()));
        addr_keep.push(tx);
        let opts = WorkerOpts {
            seed: seed.wrapping_add(i as u64),
            streams: 1,
            misbehave: false,
            stateful: false,
            completion_reuses_timer_id: false,
            tokenless_stale: false,
        };
        workers.extend(crate::worker::spawn(opts, rx, obs.clone(), stop.clone()));
    }
    (workers, addr_keep)
}

/// The targeted schedule if the seed asks for a probe, the seeded one otherwise.
fn spawn_schedule(
    cfg: &ClusterSeed,
    mut rng: Rng,
    place: &Arc<Mutex<Placement>>,
    ctls: &[Arc<Control>],
    log: &Arc<FenceLog>,
    stop: &CancellationToken,
) -> JoinHandle<()> {
    match cfg.probe {
        Some(op) => tokio::spawn(crate::probe::probe(
            op,
            place.clone(),
            ctls.to_vec(),
            log.clone(),
            stop.clone(),
        )),
        None => tokio::spawn(seeded(
            rng.fork(),
            cfg.pause_ops.clone(),
            place.clone(),
            ctls.to_vec(),
            log.clone(),
            stop.clone(),
        )),
    }
}

/// After the schedule stopped: every engine a member again, every instance finished, and the
/// invariants over what the workers saw.
async fn settle(
    place: &Mutex<Placement>,
    engines: usize,
    api: &Api,
    stats: &Mutex<ScenarioStats>,
    obs: &Observed,
) -> Vec<String> {
    let mut problems = Vec::new();
    {
        let mut p = place.lock().unwrap_or_else(|p| p.into_inner());
        p.members = vec![true; engines];
        p.publish(None);
    }
    match api.list().await {
        Ok(ids) => {
            for id in ids {
                if let Err(s) = api.wait_terminal(&id).await {
                    problems.push(format!("{id}: stuck: {}", s.message()));
                }
            }
        }
        Err(s) => problems.push(format!("listing instances failed: {s}")),
    }
    let client = stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    problems.extend(observed_problems(obs, &client));
    problems
}

/// Runs one cluster seed to the end.
pub async fn run_cluster_seed(cfg: ClusterSeed) -> ClusterReport {
    let started = std::time::Instant::now();
    let mut rng = Rng::new(cfg.seed ^ 0xc1u64 << 56);
    let engines = rng.range(2, 3) as usize;
    let instances = rng.range(3, 5) as usize;
    let enabled = Enabled::from_env();
    let scenarios = program::generate(
        &mut rng.fork(),
        &format!("c{}", cfg.seed),
        instances,
        &enabled,
    );
    let log = Arc::new(FenceLog::default());
    let stop = CancellationToken::new();
    let Engines {
        app,
        ctls,
        registries,
        addrs,
        grpc,
        running,
        mut problems,
    } = start_engines(&cfg, engines, &log, &stop).await;
    if !problems.is_empty() {
        stop.cancel();
        return report(&cfg, engines, instances, problems, &log, started);
    }
    let place = Arc::new(Mutex::new(Placement::new(app, registries, addrs)));
    place
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .publish(None);

    let obs = Arc::new(Observed::default());
    let (workers, _addr_keep) = spawn_workers(cfg.seed, &grpc, &obs, &stop);
    let sched_stop = stop.child_token();
    let sched = spawn_schedule(&cfg, rng, &place, &ctls, &log, &sched_stop);
    let deadline = Instant::now() + cfg.deadline;
    let (_client_tx, client_rx) = watch::channel(Some(grpc[0].clone()));
    let api = Api::new(client_rx, deadline);
    let stats = Mutex::new(ScenarioStats::default());
    let runs = futures::future::join_all(scenarios.iter().map(|s| run_scenario(s, &api, &stats)));
    // A mutation run has done its job at the first stale write (or activity dispatched again
    // after its result was acknowledged): the rest would only wait.
    let caught = tokio::select! {
        r = runs => {
            problems.extend(r.into_iter().flatten());
            false
        }
        _ = log.first_violation(), if cfg.strip.is_some() => true,
        _ = obs.first_redispatch(), if cfg.unguarded_fold_answer => true,
    };

    // Calm: the schedule stops, every engine is back in touch and a member.
    sched_stop.cancel();
    if sched.await.is_err() {
        problems.push("the schedule panicked".into());
    }
    for c in &ctls {
        c.set_cut(false);
        c.thaw();
        c.release();
    }
    if caught {
        problems.extend(obs.violations());
    } else {
        problems.extend(settle(&place, engines, &api, &stats, &obs).await);
    }
    problems.extend(log.violations());
    stop.cancel();
    for w in workers {
        let _ = w.await;
    }
    for r in running {
        let _ = timeout(Duration::from_secs(5), r.shutdown(Duration::from_secs(1))).await;
    }
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    let mut r = report(&cfg, engines, instances, problems, &log, started);
    r.acknowledged = obs
        .misbehaviour
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .acknowledged;
    r.schedule = place
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .stats
        .clone();
    r
}

fn report(
    cfg: &ClusterSeed,
    engines: usize,
    instances: usize,
    problems: Vec<String>,
    log: &FenceLog,
    started: std::time::Instant,
) -> ClusterReport {
    ClusterReport {
        seed: cfg.seed,
        engines,
        instances,
        problems,
        schedule: ScheduleStats::default(),
        fence: log.stats(),
        acknowledged: 0,
        elapsed: started.elapsed(),
    }
}
