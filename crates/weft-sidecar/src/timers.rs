//! The durable-timer loop: claims due reminders, moves their events into inboxes, and sleeps until
//! the next one may be claimed.

use crate::parts::Parts;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest sleep: polling is the source of truth, `timers_changed` only wakes early.
const MAX_SLEEP: Duration = Duration::from_secs(2);
/// How long a claimed reminder is ours; one whose fire failed is retried after it (by any node).
const LEASE: i64 = 30_000_000;

/// Fires due durable timers until `shutdown`.
pub(crate) async fn timer_loop(inner: Arc<Parts>, shutdown: CancellationToken) {
    loop {
        let t = inner.now();
        let mut next = MAX_SLEEP;
        // Only the reminders of instances this sidecar owns.
        let scope = inner.view.scope();
        match inner
            .store
            .claim_due_reminders(&scope, t, t + LEASE, 256)
            .await
        {
            Ok(due) => {
                for r in due {
                    // Fenced by the lease the claim was made under; handed off meanwhile, the
                    // reminder waits out its claim and fires on the new owner.
                    let Some(fence) = inner.view.owner_fence(&r.instance_id) else {
                        continue;
                    };
                    match inner.store.fire_reminder(r.id, fence.as_ref()).await {
                        Ok(true) => inner.actors.wake(&r.instance_id),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "firing a timer failed; it will be retried")
                        }
                    }
                }
                match inner.store.next_reminder_due(&scope).await {
                    // Leases count (a leased reminder is claimable once its lease is *past*), so
                    // a reminder another node holds, or one whose fire failed, is not "due now".
                    Ok(Some(at)) => {
                        let wait = at.saturating_add(1).saturating_sub(inner.now()).max(0) as u64;
                        next = next.min(Duration::from_micros(wait));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "reading timers failed"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "claiming timers failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = inner.timers_changed.notified() => {}
            _ = tokio::time::sleep(next) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::Spy;
    use crate::{Engine, EngineConfig};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;
    use weft_store::conformance::{create_req, empty_cp, row};
    use weft_store::{Reminder, ReusePolicy, SqliteStore, Store};

    /// A due reminder leased by another node (or whose fire failed) must not make the loop poll
    /// without pause: over a one-second window the loop claims once (then sleeps `MAX_SLEEP`);
    /// a spinning loop claims hundreds of times (the window ends early once it passes 100).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leased_reminder_does_not_make_the_loop_spin() {
        let db = Arc::new(SqliteStore::open_in_memory().unwrap());
        db.create_instance(create_req("t", ReusePolicy::Error))
            .await
            .unwrap();
        let m = row(db.as_ref(), "t").await;
        let mut cp = empty_cp(&m);
        let wall = weft_core::clock::Clock::now(&weft_core::clock::SystemClock);
        cp.new_reminders = vec![Reminder {
            id: 0,
            instance_id: "t".into(),
            generation: m.generation,
            due_at: wall - 1,
            event: weft_store::conformance::raised("timer", 1),
        }];
        db.checkpoint(cp).await.unwrap();
        let everything = weft_store::Scope::all(weft_store::conformance::APP);
        let other_node = db.claim_due_reminders(&everything, wall, wall + 600_000_000, 10);
        assert_eq!(other_node.await.unwrap().len(), 1);

        let spy = Spy::new(db);
        let shutdown = CancellationToken::new();
        let cfg = EngineConfig {
            app_id: weft_store::conformance::APP.into(),
            ..Default::default()
        };
        Engine::new(spy.clone(), cfg)
            .start(shutdown.clone())
            .await
            .unwrap();
        let window = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(window);
        let claims = || spy.counts.claims.load(Ordering::SeqCst);
        while claims() <= 100 {
            tokio::select! {
                _ = &mut window => break,
                _ = spy.changed.notified() => {}
            }
        }
        shutdown.cancel();
        let n = claims();
        println!("claims in 1 s with a leased reminder: {n}");
        // One at start (plus one per recovery-scan wake-up), then one per MAX_SLEEP (2 s).
        assert!(n <= 3, "the timer loop spins: {n} claims");
    }
}
