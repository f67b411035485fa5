//! The messages a workflow actor takes: what the engine, the worker hub and the ownership
//! reconciler may ask of an instance's actor, and the activity result one may hold.

use crate::error::Result;
use tokio::sync::oneshot;
use weft_proto::durabletask::{ActivityRequest, WorkflowResponse};
use weft_store::ActivityCompletion;

/// One activity result taken from the hub: what to record, the request to hand out again
/// should recording fail, and who waits to hear that it is durable.
#[derive(Debug)]
pub(crate) struct ActivityResult {
    pub(crate) completion: ActivityCompletion,
    pub(crate) request: ActivityRequest,
    /// The worker's `CompleteActivityTask`, answered once the result is durable (committed by
    /// the turn that consumed it, or recorded through the durable path) or known lost. Dropping
    /// it unanswered tells the worker the result was not recorded.
    pub(crate) ack: Option<Ack>,
}

/// Answers a worker's `CompleteActivityTask` (see [`ActivityResult::ack`]).
pub(crate) type Ack = oneshot::Sender<Result<()>>;

impl ActivityResult {
    pub(crate) fn key(&self) -> (i32, i64) {
        (self.completion.task_id, self.completion.generation)
    }

    /// Tells the worker waiting for this result how recording it ended (once; later calls do
    /// nothing).
    pub(crate) fn acknowledge(&mut self, outcome: Result<()>) {
        if let Some(ack) = self.ack.take() {
            let _ = ack.send(outcome);
        }
    }

    /// A copy to record through the durable path while this one stays in a turn a worker holds;
    /// the copy takes over the worker's answer.
    pub(crate) fn durable_copy(&mut self) -> ActivityResult {
        ActivityResult {
            completion: self.completion.clone(),
            request: self.request.clone(),
            ack: self.ack.take(),
        }
    }
}

pub(crate) enum ActorMsg {
    /// The inbox may have new events.
    Wake,
    /// Also dispatch if the instance is stalled (a new worker connected).
    Retry,
    /// The instance was replaced behind the actor's back (ID reuse): drop cached state.
    Reload,
    /// The instance was purged: its pending turn is gone from the hub (and the answer to it
    /// would be refused), so forget it too, or a re-created instance would never run.
    Purged,
    /// A worker answered the pending turn. Boxed: a mailbox allocates room for 32 messages at
    /// once, so the largest variant sets what every idle actor's mailbox costs (5 KB unboxed).
    Complete(Box<WorkflowResponse>, oneshot::Sender<Result<()>>),
    /// An activity result for the next turn; answered with `None` once held, or with the
    /// result itself if it must be recorded through the durable path instead.
    Fold(Box<ActivityResult>, FoldReply),
    /// The worker that delivered this held result (task ID, generation) has waited long enough
    /// for the turn that consumes it: record it through the durable path now (a worker whose
    /// activities and turns share one pool would otherwise wait for a turn it cannot run).
    Spill((i32, i64)),
    /// The pending turn, as a stream would send it, is larger than workers accept.
    Oversize { size: usize, limit: usize },
    /// The instance moved to another sidecar: finish the turn in flight (within the hand-off
    /// deadline) and stop.
    Handoff,
    /// This sidecar's ownership lease lapsed: stop at once, abandoning a turn in flight (the
    /// next owner runs it again; nothing may be committed here any more).
    Lapsed,
    /// Tests only: the actor panics, as a bug in a turn would make it.
    #[cfg(test)]
    Panic,
    /// Tests only: how many results the actor holds in memory.
    #[cfg(test)]
    Held(oneshot::Sender<usize>),
}

pub(crate) type FoldReply = oneshot::Sender<Option<Box<ActivityResult>>>;
