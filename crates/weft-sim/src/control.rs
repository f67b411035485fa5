//! What the cluster simulation's driver does to one engine's store calls: pause it at an owner
//! write, hold it right after a take-over, cut it off the database.

use crate::op::Op;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;
use weft_store::{Result, StoreError};

/// A pause in progress: the kind of write it froze at and that write's `(bucket, epoch)` fences.
pub type Paused = Option<(Op, Vec<(i32, i64)>)>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One engine's controls.
#[derive(Default)]
pub struct Control {
    /// Freeze at the next fenced call of this kind that matters.
    armed: Mutex<Option<Op>>,
    /// While `Some` every call waits (the engine is paused); set to `Some((op, fences))` when a
    /// pause began, for the driver.
    frozen: watch::Sender<Paused>,
    /// While true every call waits too: the engine was just granted a paused engine's buckets and
    /// must not act on them before the paused write landed (see [`crate::fence::FenceLog`]).
    held: watch::Sender<bool>,
    /// Bumped when the call that started a pause returned from the store.
    landed: watch::Sender<u64>,
    /// While set every call fails as unreachable.
    cut: AtomicBool,
}

impl Control {
    pub fn arm(&self, op: Op) {
        *lock(&self.armed) = Some(op);
    }
    pub fn disarm(&self) {
        *lock(&self.armed) = None;
    }
    pub fn frozen(&self) -> watch::Receiver<Paused> {
        self.frozen.subscribe()
    }
    pub fn thaw(&self) {
        self.frozen.send_replace(None);
    }
    pub fn hold(&self) {
        self.held.send_replace(true);
    }
    pub fn release(&self) {
        self.held.send_replace(false);
    }
    pub fn landed(&self) -> watch::Receiver<u64> {
        self.landed.subscribe()
    }
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }

    /// Starts a pause if armed for `op`, the call is fenced and it `matters` (would change
    /// something); true if this call started it.
    pub(crate) fn trigger(&self, op: Op, fences: &[(i32, i64)], matters: bool) -> bool {
        if fences.is_empty() || !matters {
            return false;
        }
        let mut armed = lock(&self.armed);
        if *armed == Some(op) {
            *armed = None;
            self.frozen.send_replace(Some((op, fences.to_vec())));
            return true;
        }
        false
    }

    /// The call that started a pause returned.
    pub(crate) fn done(&self) {
        self.landed.send_modify(|n| *n += 1);
    }

    /// Waits while paused or held; fails while cut off.
    pub(crate) async fn pass(&self) -> Result<()> {
        // Bounded by the driver, which always thaws a pause it saw begin and releases holds.
        let _ = self.frozen.subscribe().wait_for(|f| f.is_none()).await;
        let _ = self.held.subscribe().wait_for(|h| !*h).await;
        if self.cut.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("simulated partition".into()));
        }
        Ok(())
    }
}
