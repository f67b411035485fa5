//! The messages a workflow actor takes: what the engine, the worker hub and the ownership
//! reconciler may ask of an instance's actor, and the activity result one may hold.

use crate::error::Result;
use tokio::sync::oneshot;
use weft_proto::durabletask::{ActivityRequest, WorkflowResponse};
use weft_store::ActivityCompletion;

/// One activity result taken from the hub: what to record, and the request to hand out again
/// should recording fail.
#[derive(Debug)]
pub(crate) struct ActivityResult {
    pub(crate) completion: ActivityCompletion,
    pub(crate) request: ActivityRequest,
}

impl ActivityResult {
    pub(crate) fn key(&self) -> (i32, i64) {
        (self.completion.task_id, self.completion.generation)
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
}

pub(crate) type FoldReply = oneshot::Sender<Option<Box<ActivityResult>>>;
