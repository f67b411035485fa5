//! One connected `GetWorkItems` stream: takes work items from the hub and shapes each for its
//! worker (a history delta for a warm stateful worker; oversize items refused).

use super::{Hub, Job};
use crate::telemetry::spans::activity_dispatched;
use tokio::sync::mpsc;
use weft_proto::durabletask::{
    CachedHistory, HistoryEvent, PropagatedHistory, WorkItem, work_item::Request,
};
use weft_proto::wire::WorkItemFrame;

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
        tx: mpsc::Sender<Result<WorkItemFrame, tonic::Status>>,
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
    pub(super) fn shape_for_worker(
        &self,
        job: Job,
        completion_token: String,
    ) -> Option<WorkItemFrame> {
        let t = match job {
            Job::Workflow(t) => t,
            Job::Activity { request, .. } => {
                return Some(WorkItemFrame::of(&WorkItem {
                    request: Some(Request::ActivityRequest(activity_dispatched(request))),
                    completion_token,
                }));
            }
        };
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
        let frame = workflow_frame(
            &t.instance_id,
            &t.past_events[skip..],
            &t.new_events,
            t.propagated.as_deref(),
            cached_history,
            &completion_token,
        );
        let size = frame.0.len();
        if size > self.hub.max_work_item {
            self.hub
                .refuse_oversize(self.id, &t.instance_id, &completion_token, size);
            return None;
        }
        Some(frame)
    }
}

/// A workflow turn's `WorkItem`, encoded straight from the events the engine holds (shared with
/// the actor's history): no copy of the history, one pass over it. The same bytes as prost
/// encoding `WorkItem { workflow_request, completion_token }` (fields in tag order; tested).
pub(super) fn workflow_frame(
    instance_id: &str,
    past: &[HistoryEvent],
    new: &[HistoryEvent],
    propagated: Option<&PropagatedHistory>,
    cached_history: Option<CachedHistory>,
    completion_token: &str,
) -> WorkItemFrame {
    use prost::encoding::{WireType, encode_key, encode_varint, message};
    // `WorkflowRequest`'s fields (tags as in durabletask.proto), then the request as field 1
    // of `WorkItem`: encoding the body first avoids a second pass just to learn its length.
    let mut body = Vec::with_capacity(64 + 96 * (past.len() + new.len()));
    put_str(1, instance_id, &mut body);
    for e in past {
        message::encode(3, e, &mut body);
    }
    for e in new {
        message::encode(4, e, &mut body);
    }
    if let Some(p) = propagated {
        message::encode(8, p, &mut body);
    }
    if let Some(c) = &cached_history {
        message::encode(9, c, &mut body);
    }
    let mut out = Vec::with_capacity(body.len() + 16 + completion_token.len());
    encode_key(1, WireType::LengthDelimited, &mut out);
    encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(&body);
    put_str(10, completion_token, &mut out);
    WorkItemFrame(out.into())
}

/// A proto3 string field (omitted when empty, as prost does).
fn put_str(tag: u32, value: &str, buf: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value.as_bytes());
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
