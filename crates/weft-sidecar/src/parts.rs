//! The engine's components, built once and shared by its actors and background loops: the
//! store and its committer, the clock, the worker hub, the ownership view and the actor
//! directory, plus the settings they run under. Owns no behaviour of its own.

use crate::cluster::owned::OwnershipView;
use crate::commit::Committer;
use crate::directory::Directory;
use crate::hub::Hub;
use crate::reads::InboxReader;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use weft_core::clock::Clock;
use weft_store::Store;

pub(crate) struct Parts {
    pub(crate) store: Arc<dyn Store>,
    /// Group commits of checkpoints, creates and results.
    pub(crate) committer: Committer,
    /// Batched inbox re-reads of loaded actors.
    pub(crate) inboxes: InboxReader,
    pub(crate) clock: Arc<dyn Clock>,
    /// Workers' streams, their queues and the concurrency limiter.
    pub(crate) hub: Arc<Hub>,
    /// What this sidecar serves now and whether it may act (`cluster::owned`).
    pub(crate) view: Arc<OwnershipView>,
    /// The workflow actors in memory.
    pub(crate) actors: Directory,
    pub(crate) settings: Settings,
    /// Due times may have changed: the timer loop looks again.
    pub(crate) timers_changed: Notify,
    /// Asks the resync loop for a recovery scan (after a commit with an unknown outcome).
    pub(crate) resync_needed: Arc<Notify>,
    /// Another app addressed new tasks to this one: the remote-task loop claims them.
    pub(crate) remote_tasks: Notify,
}

/// The engine's fixed settings (from `EngineConfig`).
pub(crate) struct Settings {
    pub(crate) app_id: String,
    /// An actor with nothing to do for this long leaves memory.
    pub(crate) idle_timeout: Duration,
    pub(crate) handoff_timeout: Duration,
    /// How long a worker's activity completion waits for the turn folding its result.
    pub(crate) fold_wait: Duration,
    /// `EngineConfig::unguarded_fold_answer` (mutation checks only).
    pub(crate) unguarded_fold_answer: bool,
    pub(crate) max_work_item: usize,
    pub(crate) max_payload: usize,
    pub(crate) slot_lease: Duration,
    pub(crate) retention: weft_config::RetentionPolicy,
    /// `WorkflowAccessPolicy`: enforced here, on the callee's side (`remote`).
    pub(crate) access: Arc<weft_config::AccessPolicies>,
}

impl Parts {
    pub(crate) fn app_id(&self) -> &str {
        &self.settings.app_id
    }

    pub(crate) fn now(&self) -> weft_core::Micros {
        self.clock.now()
    }
}
