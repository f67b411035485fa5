//! Batched inbox reads: actors that need their inbox re-read while earlier reads run are
//! answered together by the next one, so a loaded engine pays one round trip for many steps
//! and an idle one pays nothing extra.

use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};
use weft_store::{InboxEntry, Store, StoreError};

/// The most instances one query reads.
const MAX_BATCH: usize = 256;
/// Reads in flight at once: an idle engine's read starts at once, a loaded one's waits for
/// a lane and joins whatever queued meanwhile.
const LANES: usize = 2;

type Reply = oneshot::Sender<Result<Vec<InboxEntry>, StoreError>>;

pub(crate) struct InboxReader {
    tx: mpsc::UnboundedSender<(String, Reply)>,
}

impl InboxReader {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, store));
        Self { tx }
    }

    /// The pending inbox of `id`, read after this call began.
    pub(crate) async fn read(&self, id: &str) -> Result<Vec<InboxEntry>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((id.to_string(), tx))
            .map_err(|_| StoreError::Unavailable("inbox reader stopped".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("inbox reader stopped".into())))
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<(String, Reply)>, store: Arc<dyn Store>) {
    let lanes = Arc::new(Semaphore::new(LANES));
    while let Some(first) = rx.recv().await {
        let Ok(lane) = lanes.clone().acquire_owned().await else {
            return;
        };
        let mut items = vec![first];
        while items.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => items.push(next),
                Err(_) => break,
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            answer(&*store, items).await;
            drop(lane);
        });
    }
}

async fn answer(store: &dyn Store, mut items: Vec<(String, Reply)>) {
    if items.len() == 1
        && let Some((id, reply)) = items.pop()
    {
        let _ = reply.send(store.read_inbox(&id).await);
        return;
    }
    let ids = items.iter().map(|(id, _)| id.clone()).collect();
    match store.read_inbox_batch(ids).await {
        Ok(lists) if lists.len() == items.len() => {
            for ((_, reply), list) in items.into_iter().zip(lists) {
                let _ = reply.send(Ok(list));
            }
        }
        // StoreError is not Clone: each reader gets its own answer (and error) alone.
        _ => {
            for (id, reply) in items {
                let _ = reply.send(store.read_inbox(&id).await);
            }
        }
    }
}
