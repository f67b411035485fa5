//! The engine's background loops besides actors and timers: recovery scans on demand, oversize
//! turns handed back, change hints from other processes, and stalled instances retried.

use crate::actor::ActorMsg;
use crate::engine::Inner;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use weft_store::Wakeup;

/// Least time between two recovery scans: requests meanwhile are served by one scan.
const RESYNC_GAP: Duration = Duration::from_secs(1);

/// Runs a recovery scan whenever asked (at most one per [`RESYNC_GAP`]), retrying with backoff
/// until the store answers.
pub(crate) async fn resync_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = inner.resync_needed.notified() => {}
        }
        let mut wait = Duration::from_millis(200);
        while let Err(e) = inner.resync().await {
            tracing::warn!(error = %e, retry_in = ?wait, "recovery scan failed");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        metrics::counter!("weft_recovery_scans_total").increment(1);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESYNC_GAP) => {}
        }
    }
}

/// Hands turns that a stream found too large for its worker back to their actors (to stall).
pub(crate) async fn oversize_loop(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<crate::hub::Oversize>,
) {
    while let Some(o) = rx.recv().await {
        inner.send(
            &o.instance_id,
            ActorMsg::Oversize {
                size: o.size,
                limit: o.limit,
            },
        );
    }
}

/// Turns change hints from other processes sharing the store (PostgreSQL NOTIFY) into wakeups.
pub(crate) async fn follow_store(
    inner: Arc<Inner>,
    mut rx: broadcast::Receiver<Wakeup>,
    shutdown: CancellationToken,
) {
    loop {
        let hint = tokio::select! {
            _ = shutdown.cancelled() => return,
            h = rx.recv() => h,
        };
        match hint {
            Ok(Wakeup::Inbox(id)) => inner.wake(&id),
            Ok(Wakeup::Instance(id)) => inner.changed(&id),
            Ok(Wakeup::Reminders) => inner.timers_changed.notify_one(),
            Ok(Wakeup::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                // Hints were missed: poll everything once, as at start-up.
                inner.timers_changed.notify_one();
                if let Ok(ids) = inner.store.instances_with_inbox(&inner.scope()).await {
                    for id in ids {
                        inner.wake(&id);
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// When a worker connects, stalled instances get another chance with it.
pub(crate) async fn stalled_retry_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut connected = inner.hub.connected();
    let mut last = *connected.borrow();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = connected.changed() => if r.is_err() { return },
        }
        let n = *connected.borrow();
        if n > last {
            inner.retry_stalled(&inner.scope()).await;
        }
        last = n;
    }
}
