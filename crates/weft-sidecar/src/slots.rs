//! The cluster-wide concurrency lease loop: leases slots from the store for work waiting on a
//! cluster-wide or per-name limit, renews them while held, and gives back what is not needed.
//! A sidecar that dies stops renewing, so its slots return to the pool after one lease period.

use crate::parts::Parts;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(crate) async fn slot_loop(inner: Arc<Parts>, lease: Duration, shutdown: CancellationToken) {
    // A slot grant is an owner write: with an ownership lease, slots are held under its holder
    // (the current incarnation), which the store grants and renews only while that lease is
    // live. Without one (a single engine owning all), under a name of this process.
    let own = format!("{}-{}", inner.app_id(), uuid::Uuid::new_v4().simple());
    let holder_now = || match &inner.view.lease {
        Some(l) => l.state().holder,
        None => own.clone(),
    };
    let lease_us = lease.as_micros() as i64;
    let renew_every = lease / 3;
    // Other sidecars free slots without telling us: while work waits, look again this often.
    let poll = (lease / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let mut last_renew = tokio::time::Instant::now();
    let hub = &inner.hub;
    let mut holder = holder_now();
    let mut renew_now = false;
    loop {
        let mut waiting = false;
        let current = holder_now();
        if current != holder {
            // A new incarnation: what the old one held is not ours any more.
            holder = current;
            renew_now = true;
        }
        if holder.is_empty() {
            // No incarnation yet (or between two): nothing may be granted.
        } else if let Err(e) = pass(&inner, &holder, lease_us, &mut waiting).await {
            tracing::warn!(error = %e, "concurrency slot leases: store call failed; retrying");
        }
        if !holder.is_empty() && (renew_now || last_renew.elapsed() >= renew_every) {
            renew_now = false;
            let t = inner.now();
            match inner.store.renew_slots(&holder, t, t + lease_us).await {
                Ok(held) => {
                    last_renew = tokio::time::Instant::now();
                    hub.limiter(|l| ((), l.set_leases(&held)));
                }
                Err(e) => tracing::warn!(error = %e, "renewing concurrency slot leases failed"),
            }
        }
        let wait = if waiting { poll } else { renew_every };
        tracing::debug!(?wait, waiting, "concurrency slot loop sleeps");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = hub.slots_changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // Give everything back so other sidecars need not wait for the leases to end.
    let held = hub.limiter(|l| (l.all_leases(), Vec::new()));
    for (bucket, slots) in held {
        let _ = inner.store.release_slots(&bucket, &holder, &slots).await;
    }
}

/// One round: per-name buckets first, then global ones, then give back surplus.
async fn pass(
    inner: &Arc<Parts>,
    holder: &str,
    lease_us: i64,
    waiting: &mut bool,
) -> Result<(), weft_store::StoreError> {
    let hub = &inner.hub;
    for names in [true, false] {
        let plan = hub.limiter(|l| (l.lease_plan(names), Vec::new()));
        for need in plan.iter().filter(|n| n.want > 0) {
            let t = inner.now();
            let got = inner
                .store
                .acquire_slots(&need.key, need.limit, holder, need.want, t, t + lease_us)
                .await?;
            tracing::debug!(bucket = %need.key, want = need.want, got = got.len(), "leased concurrency slots");
            if (got.len() as u32) < need.want {
                *waiting = true;
            }
            if !got.is_empty() {
                hub.limiter(|l| ((), l.add_leases(need.bucket, got)));
            }
        }
    }
    let plan = hub.limiter(|l| (l.lease_plan(false), Vec::new()));
    for need in plan.iter().filter(|n| n.surplus > 0) {
        let spare = hub.limiter(|l| (l.take_surplus(need.bucket, need.surplus), Vec::new()));
        if !spare.is_empty() {
            inner.store.release_slots(&need.key, holder, &spare).await?;
        }
    }
    Ok(())
}
