//! The engine's part of a clean shutdown (`server::Running::shutdown`): the drain, which lets
//! workers answer and records every result held in memory, then the end of the ownership lease.

use crate::Engine;
use crate::mailbox::ActorMsg;
use std::time::Duration;

impl Engine {
    /// Shutdown drain: stops handing out work, then waits (up to `deadline`) until every
    /// dispatched item has been answered and every activity result is in the store — results
    /// folded into turns that will not run here any more are recorded durably, so the next
    /// owner does not run those activities again. Returns how many items were still out at the
    /// deadline.
    pub async fn drain(&self, deadline: Duration) -> usize {
        let end = tokio::time::Instant::now() + deadline;
        self.inner.hub.pause();
        self.inner
            .actors
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut rx = self.inner.hub.inflight();
        let _ = tokio::time::timeout_at(end, rx.wait_for(|n| *n == 0)).await;
        let left = *rx.borrow();
        // Actors leave, recording the results they hold (`Actor::leave`).
        for id in self.inner.actors.active() {
            self.inner.actors.send_existing(&id, ActorMsg::Handoff);
        }
        while self.inner.hub.results_in_transit() > 0 && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        left
    }

    /// Ends this sidecar's ownership lease (clean shutdown, after the drain): it acts as owner
    /// no more, and every bucket it held is free for the next owner at once.
    pub async fn end_lease(&self) {
        if let Some(lease) = &self.inner.view.lease {
            lease.end(self.inner.store.as_ref()).await;
        }
    }
}
