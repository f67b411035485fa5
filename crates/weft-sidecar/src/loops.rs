//! The engine's background loops and their start: recovery scans on demand, oversize turns
//! handed back, change hints from other processes, stalled instances retried (timers, slots,
//! retention and ownership have modules of their own).

use crate::engine::Engine;
use crate::error::Result;
use crate::mailbox::ActorMsg;
use crate::parts::Parts;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use weft_store::Wakeup;

impl Engine {
    /// Re-activates unfinished work after a restart and starts the background loops.
    pub async fn start(&self, shutdown: CancellationToken) -> Result<()> {
        let store = &self.inner.store;
        crate::recovery::resync(&self.inner).await?;
        if let Some(rx) = store.subscribe() {
            tokio::spawn(follow_store(self.inner.clone(), rx, shutdown.clone()));
        }
        tokio::spawn(crate::timers::timer_loop(
            self.inner.clone(),
            shutdown.clone(),
        ));
        if let Some(rx) = self.inner.hub.oversize_reports() {
            tokio::spawn(oversize_loop(self.inner.clone(), rx));
        }
        tokio::spawn(resync_loop(self.inner.clone(), shutdown.clone()));
        if self.inner.hub.has_cluster_wide_limits() {
            let lease = self.inner.settings.slot_lease;
            tokio::spawn(crate::slots::slot_loop(
                self.inner.clone(),
                lease,
                shutdown.clone(),
            ));
        }
        tokio::spawn(crate::retention::retention_loop(
            self.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(crate::cluster::ownership::ownership_loop(
            self.inner.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(crate::remote::remote_task_loop(
            self.inner.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(stalled_retry_loop(self.inner.clone(), shutdown));
        Ok(())
    }
}

/// Least time between two recovery scans: requests meanwhile are served by one scan.
const RESYNC_GAP: Duration = Duration::from_secs(1);

/// Runs a recovery scan whenever asked (at most one per [`RESYNC_GAP`]), retrying with backoff
/// until the store answers.
pub(crate) async fn resync_loop(inner: Arc<Parts>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = inner.resync_needed.notified() => {}
        }
        let mut wait = Duration::from_millis(200);
        while let Err(e) = crate::recovery::resync(&inner).await {
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
    inner: Arc<Parts>,
    mut rx: mpsc::UnboundedReceiver<crate::hub::Oversize>,
) {
    while let Some(o) = rx.recv().await {
        inner.actors.send(
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
    inner: Arc<Parts>,
    mut rx: broadcast::Receiver<Wakeup>,
    shutdown: CancellationToken,
) {
    loop {
        let hint = tokio::select! {
            _ = shutdown.cancelled() => return,
            h = rx.recv() => h,
        };
        match hint {
            Ok(Wakeup::Inbox(id)) => inner.actors.wake(&id),
            Ok(Wakeup::Instance(id)) => inner.actors.changed(&id),
            Ok(Wakeup::Reminders) => inner.timers_changed.notify_one(),
            Ok(Wakeup::RemoteTasks(app)) => {
                if app == inner.app_id() {
                    inner.remote_tasks.notify_one();
                }
            }
            Ok(Wakeup::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                // Hints were missed: poll everything once, as at start-up.
                inner.timers_changed.notify_one();
                inner.remote_tasks.notify_one();
                if let Ok(ids) = inner.store.instances_with_inbox(&inner.view.scope()).await {
                    for id in ids {
                        inner.actors.wake(&id);
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// When a worker connects, stalled instances get another chance with it.
pub(crate) async fn stalled_retry_loop(inner: Arc<Parts>, shutdown: CancellationToken) {
    let mut connected = inner.hub.connected();
    let mut last = *connected.borrow();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = connected.changed() => if r.is_err() { return },
        }
        let n = *connected.borrow();
        if n > last {
            crate::recovery::retry_stalled(&inner, &inner.view.scope()).await;
        }
        last = n;
    }
}
