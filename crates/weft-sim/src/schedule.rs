//! The cluster simulation's schedules: the placement membership they change (published as new
//! tables to every engine's registry) and the seeded schedule of moves, pauses and cuts. The
//! targeted schedule of the mutation check is [`crate::probe`].

use crate::control::Control;
use crate::fence::FenceLog;
use crate::op::Op;
use crate::rng::Rng;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use weft_placement::PlacementTable;
use weft_placement::proto::placement::{HostInfo, Table};
use weft_sidecar::cluster::Registry;
use weft_sidecar::cluster::registry::{ActorKind, actor_type};

/// How long a pause waits for the take-over before letting the engine go anyway.
const TAKEOVER_BOUND: Duration = Duration::from_secs(4);

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
pub(crate) struct Placement {
    app: String,
    registries: Vec<Registry>,
    addrs: Vec<String>,
    pub(crate) members: Vec<bool>,
    version: u64,
    pub(crate) stats: ScheduleStats,
}

impl Placement {
    /// Every engine a member, no table published yet.
    pub(crate) fn new(app: String, registries: Vec<Registry>, addrs: Vec<String>) -> Placement {
        let n = registries.len();
        Placement {
            app,
            registries,
            addrs,
            members: vec![true; n],
            version: 0,
            stats: ScheduleStats::default(),
        }
    }

    /// Publishes the membership as a new table to every engine but `skip` (a paused one).
    pub(crate) fn publish(&mut self, skip: Option<usize>) {
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

pub(crate) async fn nap(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = sleep(d) => {}
    }
}

/// Waits until every `(bucket, epoch)` of a paused write has been granted at a higher epoch.
pub(crate) async fn taken_over(log: &FenceLog, fences: &[(i32, i64)]) -> bool {
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
pub(crate) async fn seeded(
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
