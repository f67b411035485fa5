//! Group commit: checkpoints, activity results and instance creations that become ready while a
//! commit is running are written together by the next one, so under load many steps share one
//! transaction and an idle system pays no extra latency. Where the store commits transactions in
//! parallel (PostgreSQL), several batches of a kind run at once (`Store::concurrent_writes`).

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use weft_store::{
    ActivityCompletion, Checkpoint, CreateInstance, CreateOutcome, Store, StoreError,
};

/// The most writes one transaction carries; bounds latency and transaction size.
const MAX_BATCH: usize = 256;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(crate) struct Committer {
    checkpoints: mpsc::UnboundedSender<(Checkpoint, Reply<()>)>,
    activities: mpsc::UnboundedSender<(ActivityCompletion, Reply<bool>)>,
    creates: mpsc::UnboundedSender<(CreateInstance, Reply<CreateOutcome>)>,
}

impl Committer {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        let (cp_tx, cp_rx) = mpsc::unbounded_channel();
        let (act_tx, act_rx) = mpsc::unbounded_channel();
        let (create_tx, create_rx) = mpsc::unbounded_channel();
        let depth = store.concurrent_writes().max(1);
        let s = store.clone();
        tokio::spawn(run(create_rx, depth, move |batch| {
            let s = s.clone();
            async move { s.create_instance_batch(batch).await }
        }));
        let s = store.clone();
        tokio::spawn(run(cp_rx, depth, move |batch| {
            let s = s.clone();
            async move { s.checkpoint_batch(batch).await }
        }));
        tokio::spawn(run(act_rx, depth, move |batch| {
            let s = store.clone();
            async move { s.complete_activity_batch(batch).await }
        }));
        Self {
            checkpoints: cp_tx,
            activities: act_tx,
            creates: create_tx,
        }
    }

    pub(crate) async fn checkpoint(&self, cp: Checkpoint) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.checkpoints
            .send((cp, tx))
            .map_err(|_| StoreError::Unavailable("committer stopped".into()))?;
        // Sent but never answered: the write may have been under way.
        rx.await
            .unwrap_or_else(|_| Err(StoreError::OutcomeUnknown("committer stopped".into())))
    }

    pub(crate) async fn create_instance(
        &self,
        c: CreateInstance,
    ) -> Result<CreateOutcome, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.creates
            .send((c, tx))
            .map_err(|_| StoreError::Unavailable("committer stopped".into()))?;
        // Sent but never answered: the row may have landed.
        rx.await
            .unwrap_or_else(|_| Err(StoreError::OutcomeUnknown("committer stopped".into())))
    }

    pub(crate) async fn complete_activity(
        &self,
        c: ActivityCompletion,
    ) -> Result<bool, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.activities
            .send((c, tx))
            .map_err(|_| StoreError::Unavailable("committer stopped".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("committer stopped".into())))
    }
}

/// Writes what `rx` receives in batches, up to `depth` batches at once: a batch starts as soon as
/// a write slot is free and takes everything queued by then (so with one slot, everything that
/// arrived while the previous commit ran). Ordering between batches does not matter: an actor
/// has at most one checkpoint in flight, and a worker's result is taken from the hub once.
async fn run<T, R, F, Fut>(mut rx: mpsc::UnboundedReceiver<(T, Reply<R>)>, depth: usize, write: F)
where
    F: Fn(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = Vec<Result<R, StoreError>>>,
{
    let mut running = FuturesUnordered::new();
    let mut open = true;
    while open || !running.is_empty() {
        tokio::select! {
            Some(()) = running.next(), if !running.is_empty() => {}
            first = rx.recv(), if open && running.len() < depth => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let mut items = vec![first];
                while items.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => items.push(next),
                        Err(_) => break,
                    }
                }
                let (batch, replies): (Vec<T>, Vec<Reply<R>>) = items.into_iter().unzip();
                metrics::histogram!("weft_group_commit_size").record(batch.len() as f64);
                let written = write(batch);
                running.push(async move {
                    let mut results = written.await.into_iter();
                    for reply in replies {
                        let r = results.next().unwrap_or_else(|| {
                            Err(StoreError::Unavailable("missing batch result".into()))
                        });
                        let _ = reply.send(r);
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Semaphore;

    /// With `depth` write slots, at most `depth` batches run at once, a batch takes everything
    /// queued when it starts, and every item gets its own answer.
    #[tokio::test]
    async fn batches_run_up_to_depth_at_once_and_answer_each_item() {
        for depth in [1usize, 3] {
            let (tx, rx) = mpsc::unbounded_channel::<(u32, Reply<u32>)>();
            let gate = Arc::new(Semaphore::new(0));
            let (now, peak, batches) = (
                Arc::new(AtomicUsize::new(0)),
                Arc::new(AtomicUsize::new(0)),
                Arc::new(AtomicUsize::new(0)),
            );
            let (g, n, p, b) = (gate.clone(), now.clone(), peak.clone(), batches.clone());
            let runner = tokio::spawn(run(rx, depth, move |batch: Vec<u32>| {
                let (g, n, p, b) = (g.clone(), n.clone(), p.clone(), b.clone());
                async move {
                    let running = n.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(running, Ordering::SeqCst);
                    b.fetch_add(1, Ordering::SeqCst);
                    // Held until the test opens the gate: the batches pile up to `depth`.
                    g.acquire().await.expect("open").forget();
                    n.fetch_sub(1, Ordering::SeqCst);
                    batch.into_iter().map(|x| Ok(x * 10)).collect()
                }
            }));
            let mut answers = Vec::new();
            for i in 0..20u32 {
                let (rtx, rrx) = oneshot::channel();
                tx.send((i, rtx)).unwrap();
                answers.push(rrx);
                tokio::task::yield_now().await;
            }
            // Wait (bounded) until `depth` batches are running.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while now.load(Ordering::SeqCst) < depth && tokio::time::Instant::now() < deadline {
                tokio::task::yield_now().await;
            }
            assert_eq!(now.load(Ordering::SeqCst), depth, "depth {depth}");
            gate.add_permits(1000);
            for (i, a) in answers.into_iter().enumerate() {
                assert_eq!(a.await.unwrap().unwrap(), i as u32 * 10);
            }
            assert_eq!(
                peak.load(Ordering::SeqCst),
                depth,
                "never more than depth at once"
            );
            // One batch per slot while they were held, then one for everything queued meanwhile.
            assert_eq!(batches.load(Ordering::SeqCst), depth + 1, "depth {depth}");
            drop(tx);
            runner.await.unwrap();
        }
    }
}
