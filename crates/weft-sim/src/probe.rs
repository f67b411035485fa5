//! The targeted schedule of the cluster simulation's mutation check: pauses aimed at one kind of
//! owner write at a moment it matters, a take-over of the paused engine's buckets, then the paused
//! write released while the new owners are held — so a write whose fence was stripped lands, every
//! time, as a stale owner's write.

use crate::control::Control;
use crate::fence::FenceLog;
use crate::op::Op;
use crate::schedule::{Placement, nap, taken_over};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

/// Stale writes released per run (each taken over before it was let go).
const ROUNDS: u64 = 2;
/// How long a provoked take-over claim may take to come (the cut engine's lease must run out).
const CLAIM_BOUND: Duration = Duration::from_secs(3);
/// How long the released write may take to answer.
const LANDING_BOUND: Duration = Duration::from_secs(2);

type Shared = Arc<Mutex<Placement>>;

fn lock(p: &Shared) -> std::sync::MutexGuard<'_, Placement> {
    p.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs rounds aimed at `op` until [`ROUNDS`] stale writes were released or `stop`.
pub(crate) async fn probe(
    op: Op,
    place: Shared,
    ctls: Vec<Arc<Control>>,
    log: Arc<FenceLog>,
    stop: CancellationToken,
) {
    let n = ctls.len();
    let mut rounds = 0;
    while rounds < ROUNDS && !stop.is_cancelled() {
        nap(&stop, Duration::from_millis(100)).await;
        // Activities are claimed on a take-over: provoke one of buckets with tasks out.
        let cut = if op == Op::ClaimActivities {
            match provoke(&place, &ctls, &log, &stop).await {
                Some(a) => Some(a),
                None => continue,
            }
        } else {
            None
        };
        let armed: Vec<usize> = {
            let p = lock(&place);
            (0..n)
                .filter(|i| p.members[*i] && Some(*i) != cut)
                .collect()
        };
        lock(&place).stats.armed += 1;
        let bound = cut.map(|_| CLAIM_BOUND);
        let Some((e, fences)) = freeze(&ctls, &armed, op, bound, &stop).await else {
            if let Some(a) = cut {
                ctls[a].set_cut(false);
                rejoin(&place);
            }
            continue;
        };
        // Whoever is granted the paused write's buckets waits until that write landed.
        log.watch_takeover(&fences);
        {
            let mut p = lock(&place);
            p.stats.paused += 1;
            p.members[e] = false;
            if !p.members.iter().any(|m| *m) {
                // Only the cut engine is left to take over: back in touch (its late results
                // may then land before the paused claim; with three engines it stays cut).
                if let Some(a) = cut {
                    ctls[a].set_cut(false);
                    p.members[a] = true;
                }
            }
            p.publish(Some(e));
        }
        let ok = !stop.is_cancelled() && taken_over(&log, &fences).await;
        let mut landed = ctls[e].landed();
        ctls[e].thaw();
        let _ = timeout(LANDING_BOUND, landed.changed()).await;
        log.unwatch();
        for c in &ctls {
            c.release();
        }
        if let Some(a) = cut {
            ctls[a].set_cut(false);
        }
        if ok {
            lock(&place).stats.taken_over += 1;
            rounds += 1;
        }
        rejoin(&place);
    }
}

fn rejoin(place: &Shared) {
    let mut p = lock(place);
    p.members.iter_mut().for_each(|m| *m = true);
    p.publish(None);
}

/// Cuts a member engine off the database while activity tasks of its buckets are out and drops
/// it from the table: the engine taking those buckets over claims the tasks. Returns it.
async fn provoke(
    place: &Shared,
    ctls: &[Arc<Control>],
    log: &FenceLog,
    stop: &CancellationToken,
) -> Option<usize> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stop.is_cancelled() && Instant::now() < deadline {
        let found = {
            let p = lock(place);
            let others = p.members.iter().filter(|m| **m).count() >= 2;
            log.task_buckets()
                .into_iter()
                .filter_map(|b| log.holder_of(b))
                .find(|a| others && p.members[*a])
        };
        if let Some(a) = found {
            ctls[a].set_cut(true);
            let mut p = lock(place);
            p.stats.cuts += 1;
            p.members[a] = false;
            p.publish(Some(a));
            return Some(a);
        }
        // A poll of the wrapper's record, bounded by the deadline above.
        sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Arms `armed` at `op` and waits (until `bound`, if any, or `stop`) for one to freeze; returns
/// it and its paused fences. A second engine that froze meanwhile is let go at once.
async fn freeze(
    ctls: &[Arc<Control>],
    armed: &[usize],
    op: Op,
    bound: Option<Duration>,
    stop: &CancellationToken,
) -> Option<(usize, Vec<(i32, i64)>)> {
    if armed.is_empty() {
        return None;
    }
    let mut rxs: Vec<_> = armed.iter().map(|e| ctls[*e].frozen()).collect();
    for e in armed {
        ctls[*e].arm(op);
    }
    let any = futures::future::select_all(rxs.iter_mut().map(|rx| {
        Box::pin(async move {
            let _ = rx.wait_for(|f| f.is_some()).await;
        })
    }));
    let limit = async {
        match bound {
            Some(b) => sleep(b).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = limit => {}
        _ = any => {}
    }
    for e in armed {
        ctls[*e].disarm();
    }
    let mut hit = None;
    for e in armed {
        let f = ctls[*e].frozen().borrow().clone();
        if let Some((_, fences)) = f {
            if hit.is_none() && !stop.is_cancelled() {
                hit = Some((*e, fences));
            } else {
                ctls[*e].thaw();
            }
        }
    }
    hit
}
