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

use crate::driver::{Api, ScenarioStats, run_scenario};
use crate::fence::{Control, FenceLog, FenceStats, FenceStore, Op};
use crate::known_bugs::Enabled;
use crate::node::Backend;
use crate::rng::Rng;
use crate::worker::{Observed, WorkerOpts};
use crate::{observed_problems, program};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use weft_placement::PlacementTable;
use weft_placement::proto::placement::{HostInfo, Table};
use weft_sidecar::SidecarConfig;
use weft_sidecar::cluster::Registry;
use weft_sidecar::cluster::registry::{ActorKind, actor_type};

/// Lease length of the simulated engines (renewed every ttl/8, valid locally for 3/4 of it).
pub const LEASE_TTL: Duration = Duration::from_millis(800);
/// How long a pause waits for the take-over before letting the engine go anyway.
const TAKEOVER_BOUND: Duration = Duration::from_secs(4);

/// How one cluster seed is run.
#[derive(Debug, Clone)]
pub struct ClusterSeed {
    pub seed: u64,
    pub backend: Backend,
    /// The owner-write kinds pauses are armed with, in turn.
    pub pause_ops: Vec<Op>,
    /// Mutation check: forward this kind of owner write without its fence.
    pub strip: Option<Op>,
    pub deadline: Duration,
}

/// The schedule's figures.
#[derive(Debug, Default, Clone)]
pub struct ScheduleStats {
    pub tables: u64,
    pub moves: u64,
    /// Pauses armed / that froze an engine at an owner write / whose take-over was seen.
    pub armed: u64,
    pub paused: u64,
    pub taken_over: u64,
    pub cuts: u64,
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
             engine ({} taken over meanwhile), {} cuts; {} lease grants, {} owner writes, refused \
             as fenced: [{}], unfenced owner calls: [{}]; {:.1}s{}",
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
            map(&f.refused),
            map(&f.unfenced),
            self.elapsed.as_secs_f64(),
            if self.problems.is_empty() {
                String::new()
            } else {
                format!(" — {} PROBLEMS", self.problems.len())
            }
        )
    }
}

fn table(version: u64, app: &str, members: &[bool], addrs: &[String]) -> Arc<PlacementTable> {
    let hosts = members
        .iter()
        .enumerate()
        .filter(|(_, m)| **m)
        .map(|(i, _)| HostInfo {
            host_id: format!("e{i}"),
            address: addrs[i].clone(),
            app_id: app.to_string(),
            actor_types: ActorKind::ALL.iter().map(|k| actor_type(app, *k)).collect(),
            weight: 1,
            zone: String::new(),
        })
        .collect();
    PlacementTable::from_proto(Table {
        version,
        hosts,
        vnodes_per_host: 100,
        cluster_id: "weft-sim".into(),
    })
    .expect("a valid table")
}

/// The placement side: the engines' registries and the membership the schedule changes.
struct Placement {
    app: String,
    registries: Vec<Registry>,
    addrs: Vec<String>,
    members: Vec<bool>,
    version: u64,
    stats: ScheduleStats,
}

impl Placement {
    /// Publishes the membership as a new table to every engine but `skip` (a paused one).
    fn publish(&mut self, skip: Option<usize>) {
        if !self.members.iter().any(|m| *m) {
            self.members[0] = true;
        }
        self.version += 1;
        self.stats.tables += 1;
        let t = table(self.version, &self.app, &self.members, &self.addrs);
        for (i, r) in self.registries.iter().enumerate() {
            if Some(i) != skip {
                r.apply(t.clone());
            }
        }
    }

    /// The current table again, to an engine that missed it.
    fn resend(&self, to: usize) {
        let t = table(self.version, &self.app, &self.members, &self.addrs);
        self.registries[to].apply(t);
    }
}

async fn nap(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = sleep(d) => {}
    }
}

/// Waits until every `(bucket, epoch)` of a paused write has been granted at a higher epoch.
async fn taken_over(log: &FenceLog, fences: &[(i32, i64)]) -> bool {
    let mut rx = log.grants_changed();
    let done = |log: &FenceLog| {
        fences
            .iter()
            .all(|(b, e)| log.epoch_of(*b).is_some_and(|x| x > *e))
    };
    let wait = async {
        loop {
            if done(log) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    timeout(TAKEOVER_BOUND, wait).await.is_ok() && done(log)
}

/// The seeded schedule of moves, pauses and cuts, until `stop`.
async fn schedule(
    mut rng: Rng,
    pause_ops: Vec<Op>,
    place: Arc<Mutex<Placement>>,
    ctls: Vec<Arc<Control>>,
    log: Arc<FenceLog>,
    stop: CancellationToken,
) {
    let n = ctls.len();
    let mut k = 0usize;
    let lock = || place.lock().unwrap_or_else(|p| p.into_inner());
    // Bounded: the run's deadline cancels `stop`.
    while !stop.is_cancelled() {
        nap(&stop, Duration::from_millis(rng.range(100, 350))).await;
        if stop.is_cancelled() {
            break;
        }
        let roll = rng.below(100);
        if roll < 35 || pause_ops.is_empty() && roll < 80 {
            let e = rng.below(n as u64) as usize;
            let mut p = lock();
            p.members[e] = !p.members[e];
            p.stats.moves += 1;
            p.publish(None);
        } else if roll < 80 {
            // A pause at the next owner write of the chosen kind by a member engine.
            let op = pause_ops[k % pause_ops.len()];
            k += 1;
            let e = {
                let mut p = lock();
                let members: Vec<usize> = (0..n).filter(|i| p.members[*i]).collect();
                let e = members[rng.below(members.len() as u64) as usize];
                if members.len() == 1 {
                    let other = (e + 1) % n;
                    p.members[other] = true;
                    p.publish(None);
                }
                p.stats.armed += 1;
                e
            };
            let mut frozen = ctls[e].frozen();
            ctls[e].arm(op);
            let hit = timeout(
                Duration::from_millis(1500),
                frozen.wait_for(|f| f.is_some()),
            )
            .await
            .ok()
            .and_then(|r| r.ok().map(|f| f.clone()))
            .flatten();
            ctls[e].disarm();
            let Some((_, fences)) = hit else { continue };
            {
                // Placement notices the silent host and gives its buckets to the others.
                let mut p = lock();
                p.stats.paused += 1;
                p.members[e] = false;
                if !p.members.iter().any(|m| *m) {
                    p.members[(e + 1) % n] = true;
                }
                p.publish(Some(e));
            }
            let ok = taken_over(&log, &fences).await;
            ctls[e].thaw();
            let mut p = lock();
            if ok {
                p.stats.taken_over += 1;
            }
            p.resend(e);
        } else {
            let e = rng.below(n as u64) as usize;
            ctls[e].set_cut(true);
            {
                let mut p = lock();
                p.stats.cuts += 1;
                if rng.chance(50) {
                    p.members[e] = false;
                    p.publish(None);
                }
            }
            nap(&stop, Duration::from_millis(rng.range(400, 1200))).await;
            ctls[e].set_cut(false);
        }
    }
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
    let mut problems = Vec::new();
    let mut ctls = Vec::new();
    let mut registries = Vec::new();
    let mut addrs = Vec::new();
    let mut grpc = Vec::new();
    let mut running = Vec::new();
    let mut sc = SidecarConfig::default();
    sc.engine.lease_ttl = LEASE_TTL;
    sc.engine.handoff_timeout = Duration::from_millis(500);
    let app = sc.engine.app_id.clone();
    for i in 0..engines {
        let ctl = Arc::new(Control::default());
        let store = match cfg.backend.open().await {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("opening the store: {e}"));
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
                addrs.push(r.internal_addr.to_string());
                grpc.push(format!("http://{}", r.grpc_addr));
                running.push(r);
            }
            Err(e) => {
                problems.push(format!("engine {i} did not start: {e}"));
                break;
            }
        }
        ctls.push(ctl);
        registries.push(registry);
    }
    if !problems.is_empty() {
        stop.cancel();
        return report(&cfg, engines, instances, problems, &log, started);
    }
    let place = Arc::new(Mutex::new(Placement {
        app,
        registries,
        addrs,
        members: vec![true; engines],
        version: 0,
        stats: ScheduleStats::default(),
    }));
    place
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .publish(None);

    let obs = Arc::new(Observed::default());
    let mut workers = Vec::new();
    let mut addr_keep = Vec::new();
    for (i, url) in grpc.iter().enumerate() {
        let (tx, rx) = watch::channel(Some(url.clone()));
        addr_keep.push(tx);
        let opts = WorkerOpts {
            seed: cfg.seed.wrapping_add(i as u64),
            streams: 1,
            misbehave: false,
            stateful: false,
            completion_reuses_timer_id: false,
            tokenless_stale: false,
        };
        workers.extend(crate::worker::spawn(opts, rx, obs.clone(), stop.clone()));
    }
    let sched_stop = stop.child_token();
    let sched = tokio::spawn(schedule(
        rng.fork(),
        cfg.pause_ops.clone(),
        place.clone(),
        ctls.clone(),
        log.clone(),
        sched_stop.clone(),
    ));
    let deadline = Instant::now() + cfg.deadline;
    let (_client_tx, client_rx) = watch::channel(Some(grpc[0].clone()));
    let api = Api::new(client_rx, deadline);
    let stats = Mutex::new(ScenarioStats::default());
    let runs = futures::future::join_all(scenarios.iter().map(|s| run_scenario(s, &api, &stats)));
    problems.extend(runs.await.into_iter().flatten());

    // Calm: the schedule stops, every engine is back in touch and a member.
    sched_stop.cancel();
    if sched.await.is_err() {
        problems.push("the schedule panicked".into());
    }
    for c in &ctls {
        c.set_cut(false);
        c.thaw();
    }
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
    problems.extend(observed_problems(&obs, &client));
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
        elapsed: started.elapsed(),
    }
}
