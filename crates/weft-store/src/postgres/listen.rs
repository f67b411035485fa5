//! LISTEN on one dedicated connection (pooled connections would drop notifications), turned into
//! [`Wakeup`] broadcasts; hints of this handle's own writes are dropped (the engine wakes itself
//! for those). Reconnects with backoff and announces `Resync` after every (re)connect, because
//! notifications sent while we were away are lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::AsyncMessage;

use crate::Wakeup;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Splits a payload `writer/rest` (see migration 6); a payload without a writer has none.
fn split_writer(payload: &str) -> (&str, &str) {
    payload.split_once('/').unwrap_or(("", payload))
}

/// The wake-up a notification stands for, or `None` if `writer` (this handle) sent it.
pub(crate) fn hint(channel: &str, payload: &str, writer: &str) -> Option<Wakeup> {
    let (from, rest) = match channel {
        "weft_reminders" => (payload, ""),
        _ => split_writer(payload),
    };
    if from == writer {
        return None;
    }
    Some(match channel {
        "weft_inbox" => Wakeup::Inbox(rest.to_string()),
        "weft_instance" => Wakeup::Instance(rest.to_string()),
        "weft_remote" => Wakeup::RemoteTasks(rest.to_string()),
        _ => Wakeup::Reminders,
    })
}

pub(crate) fn spawn(
    cfg: tokio_postgres::Config,
    tls: super::tls::Connector,
    writer: String,
    wake: broadcast::Sender<Wakeup>,
    listening: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        loop {
            match cfg.connect(tls.clone()).await {
                Ok((client, mut conn)) => {
                    let (ntx, mut nrx) = mpsc::unbounded_channel();
                    // Notifications only surface while the connection itself is polled.
                    let driver = tokio::spawn(async move {
                        let mut msgs = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
                        while let Some(Ok(msg)) = msgs.next().await {
                            if let AsyncMessage::Notification(n) = msg
                                && ntx.send(n).is_err()
                            {
                                break;
                            }
                        }
                    });
                    let listened = client
                        .batch_execute(
                            "LISTEN weft_inbox; LISTEN weft_reminders; LISTEN weft_instance; \
                             LISTEN weft_remote",
                        )
                        .await;
                    if let Err(e) = listened {
                        tracing::warn!(error = %e, "LISTEN failed; retrying");
                        driver.abort();
                    } else {
                        backoff = MIN_BACKOFF;
                        listening.store(true, Ordering::Relaxed);
                        let _ = wake.send(Wakeup::Resync);
                        while let Some(n) = nrx.recv().await {
                            if let Some(w) = hint(n.channel(), n.payload(), &writer) {
                                let _ = wake.send(w);
                            }
                        }
                        listening.store(false, Ordering::Relaxed);
                        tracing::warn!("notification connection lost; reconnecting");
                    }
                    drop(client);
                }
                Err(e) => tracing::debug!(error = %e, "notification connection failed"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}
