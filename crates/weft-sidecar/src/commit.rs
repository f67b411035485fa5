//! Group commit: checkpoints, activity results and instance creations that become ready while a
//! commit is running are written together by the next one, so under load many steps share one transaction and an idle
//! system pays no extra latency.

use crate::telemetry::workflow::{Stage, stage};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use weft_store::{
    ActivityCompletion, Checkpoint, CreateInstance, CreateOutcome, Store, StoreError,
};

/// The most writes one transaction carries; bounds latency and transaction size.
const MAX_BATCH: usize = 256;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
/// A write, where to answer it, and when it was handed over.
type Queued<T, R> = (T, Reply<R>, Instant);

pub(crate) struct Committer {
    checkpoints: mpsc::UnboundedSender<Queued<Checkpoint, ()>>,
    activities: mpsc::UnboundedSender<Queued<ActivityCompletion, bool>>,
    creates: mpsc::UnboundedSender<Queued<CreateInstance, CreateOutcome>>,
}

impl Committer {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        let (cp_tx, cp_rx) = mpsc::unbounded_channel();
        let (act_tx, act_rx) = mpsc::unbounded_channel();
        let (create_tx, create_rx) = mpsc::unbounded_channel();
        let s = store.clone();
        tokio::spawn(run(create_rx, "create", move |batch| {
            let s = s.clone();
            async move { s.create_instance_batch(batch).await }
        }));
        let s = store.clone();
        tokio::spawn(run(cp_rx, "checkpoint", move |batch| {
            let s = s.clone();
            async move { s.checkpoint_batch(batch).await }
        }));
        tokio::spawn(run(act_rx, "result", move |batch| {
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
            .send((cp, tx, Instant::now()))
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
            .send((c, tx, Instant::now()))
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
            .send((c, tx, Instant::now()))
            .map_err(|_| StoreError::Unavailable("committer stopped".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("committer stopped".into())))
    }
}

async fn run<T, R, F, Fut>(
    mut rx: mpsc::UnboundedReceiver<Queued<T, R>>,
    kind: &'static str,
    write: F,
) where
    F: Fn(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = Vec<Result<R, StoreError>>>,
{
    while let Some(first) = rx.recv().await {
        let mut items = vec![first];
        while items.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => items.push(next),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut batch = Vec::with_capacity(items.len());
        let mut replies = Vec::with_capacity(items.len());
        for (item, reply, queued) in items {
            stage(
                Stage::GroupCommitWait,
                Some(kind),
                started.saturating_duration_since(queued),
            );
            batch.push(item);
            replies.push(reply);
        }
        metrics::histogram!("weft_group_commit_size").record(batch.len() as f64);
        let mut results = write(batch).await.into_iter();
        stage(Stage::Commit, Some(kind), started.elapsed());
        for reply in replies {
            let r = results
                .next()
                .unwrap_or_else(|| Err(StoreError::Unavailable("missing batch result".into())));
            let _ = reply.send(r);
        }
    }
}
