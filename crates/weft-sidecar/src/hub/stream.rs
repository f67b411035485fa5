//! One connected `GetWorkItems` stream: takes work items from the hub and shapes each for its
//! worker (a history delta for a warm stateful worker; oversize items refused).

use super::{Hub, Job};
use crate::telemetry::spans::activity_dispatched;
use tokio::sync::mpsc;
use weft_proto::durabletask::{CachedHistory, WorkItem, WorkflowRequest, work_item::Request};

/// One connected `GetWorkItems` stream.
pub struct StreamHandle<'a> {
    pub(super) hub: &'a Hub,
    pub(super) id: u64,
    pub(super) stateful_history: bool,
}

impl StreamHandle<'_> {
    /// Feeds work items into `tx` until the client goes away or `shutdown` fires.
    pub async fn run(
        self,
        tx: mpsc::Sender<Result<WorkItem, tonic::Status>>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let (job, token) = tokio::select! {
                taken = self.hub.take(self.id) => taken,
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => {
                    let _ = tx.send(Err(tonic::Status::cancelled("shutting down"))).await;
                    return;
                }
            };
            let Some(item) = self.shape_for_worker(job, token) else {
                continue;
            };
            if tx.send(Ok(item)).await.is_err() {
                return;
            }
            metrics::counter!("weft_work_items_dispatched_total").increment(1);
        }
    }

    /// The work item as this stream sends it (a delta for a warm stateful worker), or `None`
    /// if it is larger than a worker accepts (then the engine is told and stalls the instance).
    pub(super) fn shape_for_worker(&self, job: Job, completion_token: String) -> Option<WorkItem> {
        let mut instance = None;
        let request = match job {
            Job::Workflow(t) => {
                let past = t.past_events.len();
                let mut skip = 0;
                let mut cached_history = None;
                if self.stateful_history {
                    let cached = self.hub.lock().warm.swap(self.id, &t.instance_id, past);
                    if let Some(n) = cached
                        && n > 0
                        && n <= past
                    {
                        skip = n;
                        cached_history = Some(CachedHistory {
                            event_count: n as i32,
                        });
                    }
                }
                instance = Some(t.instance_id.clone());
                // The one copy of the history a dispatch makes (the wire message owns its events).
                Request::WorkflowRequest(WorkflowRequest {
                    instance_id: t.instance_id,
                    past_events: t.past_events[skip..].to_vec(),
                    new_events: t.new_events,
                    cached_history,
                    propagated_history: t.propagated.map(std::sync::Arc::unwrap_or_clone),
                    ..Default::default()
                })
            }
            Job::Activity { request, .. } => Request::ActivityRequest(activity_dispatched(request)),
        };
        let item = WorkItem {
            request: Some(request),
            completion_token,
        };
        if let Some(id) = instance {
            use prost::Message;
            let size = item.encoded_len();
            if size > self.hub.max_work_item {
                self.hub
                    .refuse_oversize(self.id, &id, &item.completion_token, size);
                return None;
            }
        }
        Some(item)
    }
}

impl Drop for StreamHandle<'_> {
    fn drop(&mut self) {
        tracing::info!(
            stream = self.id,
            "worker stream ended; its unanswered work items go back to the queue"
        );
        self.hub.release_stream(self.id);
    }
}
