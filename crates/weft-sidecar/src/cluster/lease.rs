//! This sidecar's ownership lease: one holder (an incarnation of the sidecar) kept alive in the
//! store, and the local deadline after which the sidecar stops acting as owner by itself.
//!
//! The store judges expiry on its own clock (`expires_at` = its time at renewal + `ttl`); this
//! side counts `ttl × LOCAL_SHARE` on its monotonic clock from the moment it *sent* the renewal,
//! which precedes the store's time of it. So this sidecar's deadline falls before the store's
//! as long as the two clocks' rates differ by less than 1/7 (docs/cluster.md, "Leases").

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weft_store::{Store, StoreError};

/// Part of the lease this side counts on (the rest absorbs clock-rate drift and the renewal's
/// time in flight).
const LOCAL_SHARE: f64 = 0.75;

/// What this sidecar may do now as an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseState {
    /// The current incarnation's holder name (`{host_id}.{n}`); empty before the first start.
    pub(crate) holder: String,
    /// Until when (monotonic clock) this sidecar may act as owner; `None`: it may not.
    pub(crate) valid_until: Option<Instant>,
}

impl LeaseState {
    pub(crate) fn valid(&self) -> bool {
        self.valid_until.is_some_and(|t| Instant::now() < t)
    }
}

/// The lease as the engine sees it: cheap to clone.
#[derive(Clone)]
pub(crate) struct Lease {
    state: watch::Sender<LeaseState>,
    ttl: Duration,
}

impl Lease {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            state: watch::channel(LeaseState {
                holder: String::new(),
                valid_until: None,
            })
            .0,
            ttl,
        }
    }

    pub(crate) fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }

    /// Whether this sidecar may act as owner at this instant.
    pub(crate) fn valid(&self) -> bool {
        self.state.borrow().valid()
    }

    fn local_ttl(&self) -> Duration {
        self.ttl.mul_f64(LOCAL_SHARE)
    }

    fn set(&self, holder: &str, valid_until: Option<Instant>) {
        self.state.send_if_modified(|s| {
            let next = LeaseState {
                holder: holder.to_string(),
                valid_until,
            };
            if *s == next {
                return false;
            }
            *s = next;
            true
        });
    }

    /// Keeps the lease: starts an incarnation, renews it every `ttl / 8`, lets it lapse locally
    /// when no renewal succeeded in time, and starts a new incarnation when the store says the
    /// old one ran out (others may have taken its buckets: it must never act again).
    pub(crate) async fn run(self, store: Arc<dyn Store>, host_id: String, stop: CancellationToken) {
        let ttl_us = self.ttl.as_micros() as i64;
        let every = self.ttl / 8;
        let mut n = 0u64;
        'incarnations: loop {
            n += 1;
            let holder = format!("{host_id}.{n}");
            let mut backoff = Duration::from_millis(50);
            loop {
                let sent = Instant::now();
                match store.start_holder(&holder, ttl_us).await {
                    Ok(()) => {
                        tracing::info!(%holder, ttl = ?self.ttl, "ownership lease started");
                        self.set(&holder, Some(sent + self.local_ttl()));
                        break;
                    }
                    Err(StoreError::AlreadyExists(_)) => continue 'incarnations,
                    Err(e) => {
                        tracing::warn!(error = %e, "starting the ownership lease failed; retrying")
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(every);
            }
            loop {
                let deadline = self.state.borrow().valid_until;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                    _ = sleep_until_opt(deadline) => self.lapse_if_due(&holder),
                }
                let sent = Instant::now();
                let deadline = self.state.borrow().valid_until;
                let renewed = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = store.renew_holder(&holder, ttl_us) => Some(r),
                    // A renewal that hangs (database unreachable) must not keep us owner.
                    _ = sleep_until_opt(deadline) => None,
                };
                match renewed {
                    Some(Ok(true)) => self.set(&holder, Some(sent + self.local_ttl())),
                    Some(Ok(false)) => {
                        tracing::warn!(%holder, "ownership lease ran out; starting a new incarnation");
                        metrics::counter!("weft_lease_lost_total").increment(1);
                        self.set(&holder, None);
                        continue 'incarnations;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "renewing the ownership lease failed");
                        self.lapse_if_due(&holder);
                    }
                    None => self.lapse_if_due(&holder),
                }
            }
        }
    }

    fn lapse_if_due(&self, holder: &str) {
        if !self.valid() && self.state.borrow().valid_until.is_some() {
            tracing::warn!(%holder, "ownership lease not renewed in time: acting as owner stops");
            metrics::counter!("weft_lease_lapsed_total").increment(1);
            self.set(holder, None);
        }
    }

    /// Ends the lease for good (clean shutdown): the store frees every bucket at once.
    pub(crate) async fn end(&self, store: &dyn Store) {
        let holder = self.state().holder;
        self.set(&holder, None);
        if holder.is_empty() {
            return;
        }
        if let Err(e) = store.end_holder(&holder).await {
            tracing::warn!(error = %e, "ending the ownership lease failed; it runs out by itself");
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
