//! The workflow actor: one task per active instance that runs its turns one at a time — read the
//! inbox, dispatch a work item, apply the worker's answer, commit one checkpoint, then act.

use crate::error::{EngineError, Result};
use crate::hub::{Job, WorkflowTurn};
use crate::mailbox::{ActivityResult, ActorMsg};
use crate::telemetry::trace_context::trace_id_of;
mod commit;

use crate::parts::Parts;
use crate::recovery;
use crate::telemetry::workflow::{self as workflow_metrics, Stage, stage};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use weft_core::turn::{
    self, InboxItem, PendingTurn, Prepared, TurnContext, TurnError, TurnOutcome,
};
use weft_core::{InstanceMeta, RuntimeStatus};
use weft_proto::durabletask::{HistoryEvent, PropagatedHistory, StalledReason, WorkflowResponse};
use weft_store::{Fence, InboxEntry};

/// The most waiting messages an actor takes in before preparing its next turn.
const MAX_BATCHED_MESSAGES: usize = 256;

/// The most activity results one turn folds. Folding saves a commit per step where one result
/// is awaited (a chain of steps); where many arrive together (a fan-out's join) every folded
/// result keeps its worker's `CompleteActivityTask` waiting for the turn that carries it, and
/// the worker's activity slots with it, while the durable path answers after a group commit:
/// folding them all made a 10,000 fan-out 1.5× slower (docs/benchmarks.md).
const MAX_HELD: usize = 1;

/// An activity result held in memory until a turn's checkpoint commits it; `seq` is negative
/// and stands in for an inbox sequence number in that turn's `consumed` list.
struct Held {
    seq: i64,
    result: ActivityResult,
}

struct Cached {
    meta: InstanceMeta,
    /// Shared with the work item of the turn in flight (see [`WorkflowTurn`]).
    history: Arc<Vec<HistoryEvent>>,
}

/// The run loop's own state between messages.
#[derive(Default)]
struct Looping {
    /// Something changed since the last turn was prepared.
    dirty: bool,
    /// The next step also dispatches a stalled instance (a new worker connected).
    retry_stalled: bool,
    /// Set by a hand-off while a worker holds the turn: when to give up on it.
    leaving: Option<tokio::time::Instant>,
    /// Messages taken in since the last step while more were waiting.
    batched: usize,
}

/// What the run loop does next.
enum Flow {
    Go,
    /// Back to the top of the loop.
    Again,
    /// Hand the instance back and stop (`Actor::leave`).
    Leave,
    /// Stop at once (retired, or the mailbox closed).
    Stop,
}

pub(crate) struct Actor {
    id: String,
    inner: Arc<Parts>,
    rx: mpsc::UnboundedReceiver<ActorMsg>,
    state: Option<Cached>,
    pending: Option<PendingTurn>,
    /// The last commit delivered events to this instance's own inbox (continue-as-new).
    fed_itself: bool,
    /// Steps or commits that failed in a row, and when the next attempt may run: a turn whose
    /// commit keeps failing backs off instead of being re-dispatched at once.
    failures: u32,
    retry_at: Option<tokio::time::Instant>,
    /// The last commit failed its fencing check (another sidecar committed first).
    fenced_out: bool,
    /// The instance belongs to another app: this actor stops at once.
    foreign: bool,
    /// No such instance (never created, or purged): this actor stops at once rather than
    /// idling, so wake-ups for made-up IDs leave nothing in memory.
    gone: bool,
    /// The lease this actor was activated under: every commit carries it, so once another
    /// sidecar took the bucket over nothing of this actor's lands (`None`: no leases).
    fence: Option<Fence>,
    /// A wake-up arrived while handing off (the instance may be ours again by the time the
    /// actor stops: then a fresh actor picks it up).
    missed_wake: bool,
    /// Activity results accepted in memory, not yet committed by a turn.
    held: Vec<Held>,
    next_held_seq: i64,
    /// The store's inbox may hold events this actor has not read: set by every wake (each
    /// inbox write is followed by one) and whenever a read event was left unconsumed; cleared
    /// by a read. While clear, a turn started by a held result alone needs no inbox read.
    inbox_stale: bool,
    /// The stored inbox events the pending turn carries (read, not yet consumed): while
    /// `inbox_stale` is clear they are all the store holds, so a turn withdrawn to take in a
    /// folded result is prepared again from them without a read (a fan-out's join would
    /// otherwise read the inbox once per result).
    carried: Vec<InboxEntry>,
    /// The history this instance was handed by its parent (`lineage`), once looked up.
    inherited: Option<Option<Arc<PropagatedHistory>>>,
}

impl Actor {
    pub(crate) fn new(
        id: String,
        inner: Arc<Parts>,
        rx: mpsc::UnboundedReceiver<ActorMsg>,
        fence: Option<Fence>,
    ) -> Self {
        Self {
            id,
            inner,
            rx,
            fence,
            state: None,
            pending: None,
            fed_itself: false,
            failures: 0,
            retry_at: None,
            fenced_out: false,
            foreign: false,
            gone: false,
            missed_wake: false,
            held: Vec::new(),
            next_held_seq: -1,
            inbox_stale: true,
            carried: Vec::new(),
            inherited: None,
        }
    }

    /// Stops serving the instance: leaves the registry and answers what is still queued for it
    /// (a wake that raced the hand-off goes to a new actor if the instance is ours again).
    fn leave(mut self) {
        self.inner.actors.remove(&self.id);
        self.rx.close();
        let mut rewake = self.missed_wake;
        while let Ok(m) = self.rx.try_recv() {
            match m {
                ActorMsg::Complete(_, reply) => {
                    let _ = reply.send(Err(EngineError::Unavailable(format!(
                        "workflow instance '{}' moved to another sidecar",
                        self.id
                    ))));
                }
                ActorMsg::Wake | ActorMsg::Retry | ActorMsg::Reload | ActorMsg::Purged => {
                    rewake = true
                }
                ActorMsg::Fold(r, reply) => {
                    if let Err(Some(r)) = reply.send(Some(r)) {
                        self.held.push(Held { seq: 0, result: *r });
                    }
                }
                ActorMsg::Oversize { .. }
                | ActorMsg::Handoff
                | ActorMsg::Lapsed
                | ActorMsg::Spill(_) => {}
                #[cfg(test)]
                ActorMsg::Panic | ActorMsg::Held(_) => {}
            }
        }
        // Results accepted here go through the durable path; the new owner (or a fresh actor)
        // finds them in the inbox.
        let held = std::mem::take(&mut self.held);
        recovery::spill(&self.inner, held.into_iter().map(|h| h.result).collect());
        if rewake && !self.foreign && self.inner.view.owns(&self.id) {
            self.inner.actors.wake(&self.id);
        }
    }

    /// A held result's task was claimed for another dispatch since (its fold was refused): the
    /// result goes, and the turn is prepared again without it. Should the claim be this
    /// sidecar's own scan's, the result is kept under that claim instead.
    fn drop_reclaimed(&mut self, task_id: i32) {
        let (gone, kept): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.result.completion.task_id == task_id);
        self.held = kept;
        for h in gone {
            metrics::counter!("weft_activity_results_refused_total").increment(1);
            if let Some(r) = self.inner.hub.transit_refused(h.result) {
                self.held.push(Held {
                    seq: h.seq,
                    result: r,
                });
            }
        }
    }

    /// The worker that delivered a held result waited `fold_wait` for the turn carrying it
    /// (`Directory::fold_overdue`): a copy is recorded through the durable path and answers it.
    /// The turn keeps the result, whether a worker holds it now or it is yet to be prepared:
    /// whichever of the turn's checkpoint and the copy lands second finds the task row gone,
    /// and the inbox copy of a result already in history is dropped as a duplicate.
    fn spill_overdue(&mut self, key: (i32, i64)) {
        if let Some(h) = self
            .held
            .iter_mut()
            .find(|h| h.result.key() == key && h.result.ack.is_some())
        {
            let copy = h.result.durable_copy();
            recovery::spill(&self.inner, vec![copy]);
        }
    }

    /// Notes a failed step or commit: drop the cached state and wait 100 ms … 5 s before the
    /// next attempt.
    fn failed(&mut self, e: &EngineError) {
        self.failures = self.failures.saturating_add(1);
        let wait =
            Duration::from_millis(100u64 << self.failures.min(6)).min(Duration::from_secs(5));
        tracing::warn!(instance = %self.id, error = %e, retry_in = ?wait, "workflow step failed");
        self.state = None;
        self.inbox_stale = true;
        self.retry_at = Some(tokio::time::Instant::now() + wait);
    }

    /// Takes an activity result into memory for the next turn, or hands it back for the durable
    /// path when folding is unsafe or would not help: no state loaded, the instance is not
    /// running (suspended, stalled, finished), another generation, handing off or no longer
    /// owned, a worker holds a turn now (the result would wait for it), or the next turn holds
    /// a result already (see `MAX_HELD`).
    fn accept(&mut self, r: Box<ActivityResult>, leaving: bool) -> Option<Box<ActivityResult>> {
        let running = self.state.as_ref().is_some_and(|st| {
            st.meta.status == RuntimeStatus::Running
                && st.meta.generation == r.completion.generation
        });
        if !running || leaving || self.foreign || !self.inner.view.owns(&self.id) {
            return Some(r);
        }
        if self.held.len() >= MAX_HELD {
            return Some(r);
        }
        if self.pending.is_some() {
            if !self.inner.hub.withdraw_workflow(&self.id) {
                return Some(r);
            }
            // Not taken by a worker yet: prepared again with this result (and the inbox
            // events it carried, still unconsumed).
            self.pending = None;
        }
        if self.held.iter().any(|h| h.result.key() == r.key()) {
            // The same result twice (a re-run): the copy takes the durable path, where the
            // task's claim decides, and history keeps one.
            return Some(r);
        }
        let seq = self.next_held_seq;
        self.next_held_seq -= 1;
        if recovery::test_delay().is_some() {
            tracing::info!(instance = %self.id, task_id = r.completion.task_id, "activity result held for the next turn");
        }
        self.held.push(Held { seq, result: *r });
        None
    }

    pub(crate) async fn run(mut self) {
        let mut s = Looping {
            dirty: true,
            ..Default::default()
        };
        loop {
            let flow = match self.prepare(&mut s).await {
                Flow::Go => match self.receive(&s).await {
                    Ok(Some(msg)) => self.handle(msg, &mut s).await,
                    Ok(None) => Flow::Stop,
                    Err(flow) => flow,
                },
                flow => flow,
            };
            match flow {
                Flow::Go | Flow::Again => {}
                Flow::Leave => return self.leave(),
                Flow::Stop => return,
            }
        }
    }

    /// Prepares the next turn when there is work and nothing is in flight.
    async fn prepare(&mut self, s: &mut Looping) -> Flow {
        if (s.leaving.is_some() || self.foreign) && self.pending.is_none() {
            return Flow::Leave;
        }
        // Messages already waiting (results of a fan-out arriving together) are taken in
        // before the next turn is prepared, so one preparation serves them all instead of
        // one each; bounded, so a steady stream of messages cannot hold the turn back.
        let more_waiting = !self.rx.is_empty() && s.batched < MAX_BATCHED_MESSAGES;
        if s.dirty && self.pending.is_none() && !more_waiting {
            s.batched = 0;
            if let Some(at) = self.retry_at.take() {
                tokio::time::sleep_until(at).await;
            }
            if !self.held.is_empty()
                && let Some(delay) = recovery::test_delay()
            {
                tokio::time::sleep(delay).await;
            }
            s.dirty = false;
            // The turn's futures are boxed so that the actor's own task, alive for as long
            // as the instance is in memory, holds only the loop's state while it waits.
            if let Err(e) = Box::pin(self.step(std::mem::take(&mut s.retry_stalled))).await {
                // Usually the store is unreachable: back off and reload.
                if self.retry_at.is_none() {
                    self.failed(&e);
                }
                s.dirty = true;
                return Flow::Again;
            }
            if self.foreign || self.gone {
                return Flow::Leave;
            }
        }
        if s.dirty && self.pending.is_none() {
            s.batched += 1;
        }
        Flow::Go
    }

    /// The next message: idle actors retire after `idle_timeout`, and one handing off gives
    /// up on its turn in flight at the hand-off deadline. `Ok(None)`: the mailbox closed.
    async fn receive(&mut self, s: &Looping) -> std::result::Result<Option<ActorMsg>, Flow> {
        if self.pending.is_none() {
            match tokio::time::timeout(self.inner.settings.idle_timeout, self.rx.recv()).await {
                Ok(m) => Ok(m),
                Err(_) => {
                    if self.held.is_empty() && self.inner.actors.try_retire(&self.id, &self.rx) {
                        return Err(Flow::Stop);
                    }
                    Err(Flow::Again)
                }
            }
        } else if let Some(deadline) = s.leaving {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(m) => Ok(m),
                Err(_) => {
                    // The new owner runs the turn again from the unchanged inbox.
                    tracing::debug!(instance = %self.id, "hand-off deadline passed; abandoning the turn in flight");
                    self.inner.hub.forget_workflow(&self.id);
                    Err(Flow::Leave)
                }
            }
        } else {
            Ok(self.rx.recv().await)
        }
    }

    /// One message: how it changes the turn in flight and the state the next turn starts from.
    async fn handle(&mut self, msg: ActorMsg, s: &mut Looping) -> Flow {
        match msg {
            #[cfg(test)]
            ActorMsg::Panic => panic!("actor of '{}' panics (test)", self.id),
            #[cfg(test)]
            ActorMsg::Held(tx) => {
                let _ = tx.send(self.held.len());
            }
            ActorMsg::Lapsed => {
                if self.pending.take().is_some() && !self.inner.hub.withdraw_workflow(&self.id) {
                    self.inner.hub.forget_workflow(&self.id);
                }
                return Flow::Leave;
            }
            ActorMsg::Handoff => {
                // Only a turn a worker holds now is worth waiting for.
                if self.pending.is_none()
                    || self.inner.hub.withdraw_workflow(&self.id)
                    || !self.inner.hub.workflow_in_flight(&self.id)
                {
                    self.pending = None;
                    return Flow::Leave;
                }
                s.leaving = Some(tokio::time::Instant::now() + self.inner.settings.handoff_timeout);
            }
            ActorMsg::Fold(r, reply) => {
                if let Some(r) = self.accept(r, s.leaving.is_some()) {
                    let _ = reply.send(Some(r));
                } else {
                    let _ = reply.send(None);
                    s.dirty = true;
                }
            }
            ActorMsg::Complete(resp, reply) => {
                let result = self.completed(*resp, s).await;
                let _ = reply.send(result);
            }
            ActorMsg::Spill(key) => self.spill_overdue(key),
            _ if s.leaving.is_some() => {
                // Handing off: nothing new starts here (a new actor will, if the instance
                // is ours again when this one stops).
                self.missed_wake = true;
            }
            ActorMsg::Wake => {
                self.inbox_stale = true;
                // A turn no worker has taken yet is re-prepared with the new events (this
                // batches them, and lets a terminate end an instance no worker ever ran).
                if self.pending.is_some() && self.inner.hub.withdraw_workflow(&self.id) {
                    self.pending = None;
                }
                s.dirty = true;
            }
            ActorMsg::Reload => {
                self.inbox_stale = true;
                if self.pending.is_none() || self.inner.hub.withdraw_workflow(&self.id) {
                    self.pending = None;
                    self.state = None;
                    // Nothing queued for the replaced instance may run.
                    self.inner.hub.new_execution(&self.id, i64::MAX);
                }
                s.dirty = true;
            }
            ActorMsg::Oversize { size, limit } => {
                self.inbox_stale = true;
                if self.pending.take().is_some()
                    && let Err(e) = Box::pin(self.stall_oversize(size, limit)).await
                {
                    self.failed(&e);
                }
                s.dirty = true;
            }
            ActorMsg::Purged => {
                self.pending = None;
                self.state = None;
                // Their task rows went with the instance: nothing will run again.
                for mut h in self.held.drain(..) {
                    self.inner
                        .hub
                        .transit_end(&crate::hub::transit_key(&h.result));
                    h.result.acknowledge(Ok(()));
                }
                s.dirty = true;
            }
            ActorMsg::Retry => {
                self.inbox_stale = true;
                s.dirty = true;
                s.retry_stalled = true;
            }
        }
        Flow::Go
    }

    /// A worker's answer to the pending turn, applied and committed.
    async fn completed(&mut self, resp: WorkflowResponse, s: &mut Looping) -> Result<()> {
        self.fed_itself = false;
        self.fenced_out = false;
        let mut result = Box::pin(self.complete(resp)).await;
        if self.fenced_out && !self.inner.view.owns(&self.id) {
            // A late commit after the instance moved: the new owner runs the turn
            // again, so the worker has done nothing wrong.
            tracing::debug!(instance = %self.id, "late commit after hand-off fenced out");
            result = Ok(());
        }
        // The turn consumed everything the inbox held when it was prepared, and any
        // event that arrived since sent a Wake (already noted in `dirty`); so the
        // inbox is read again only if this turn wrote to it or did not commit.
        if result.is_err() || self.state.is_none() || self.fed_itself {
            self.inbox_stale = true;
            s.dirty = true;
        }
        result
    }

    /// Looks at the inbox and starts a turn if there is work.
    async fn step(&mut self, retry_stalled: bool) -> Result<()> {
        self.step_inner(retry_stalled).await?;
        if self.pending.is_none() && !self.held.is_empty() {
            // Held results no turn is carrying (the instance stalled or is waiting for its
            // start): record them durably rather than keep them only here.
            self.inbox_stale = true;
            let held = std::mem::take(&mut self.held);
            recovery::spill(&self.inner, held.into_iter().map(|h| h.result).collect());
        }
        Ok(())
    }

    async fn step_inner(&mut self, retry_stalled: bool) -> Result<()> {
        // Whatever the previous preparation carried is either consumed by now or in `inbox`.
        let carried = std::mem::take(&mut self.carried);
        let inbox = match &self.state {
            // Only held results arrived since everything read was consumed or carried.
            Some(_) if !self.inbox_stale => carried,
            Some(_) => self.inner.inboxes.read(&self.id).await?,
            None => match self.inner.store.load(&self.id).await? {
                None => {
                    self.gone = true;
                    return Ok(());
                }
                // Another app's instance (sharing the database and a bucket): its own app's
                // sidecars run it; this one's workers must never see it.
                Some(l) if !l.meta.app_id.is_empty() && l.meta.app_id != self.inner.app_id() => {
                    self.foreign = true;
                    return Ok(());
                }
                Some(l) => {
                    // A new instance's ExecutionStarted is still in its inbox.
                    if let Some(t) =
                        trace_id_of(l.history.iter().chain(l.inbox.iter().map(|e| &e.event)))
                    {
                        tracing::Span::current().record("trace_id", t.as_str());
                    }
                    self.state = Some(Cached {
                        meta: l.meta,
                        history: Arc::new(l.history),
                    });
                    l.inbox
                }
            },
        };
        self.inbox_stale = false;
        let st = self.state.as_ref().expect("loaded above");
        let mut items: Vec<InboxItem> = inbox
            .iter()
            .map(|e| InboxItem {
                seq: e.seq,
                event: e.event.clone(),
                generation: e.generation,
            })
            .collect();
        let stored = items.len();
        items.extend(self.held.iter().map(|h| InboxItem {
            seq: h.seq,
            event: h.result.completion.event.clone(),
            generation: Some(h.result.completion.generation),
        }));
        let now = self.inner.now();
        let preparing = std::time::Instant::now();
        let prepared = turn::prepare_turn(&st.meta, &st.history, &items, now);
        stage(Stage::TurnPrepare, None, preparing.elapsed());
        let unconsumed = match &prepared {
            Prepared::Idle { consumed } => consumed.iter().filter(|s| **s >= 0).count() < stored,
            Prepared::Dispatch(_) => st.meta.status == RuntimeStatus::Stalled && !retry_stalled,
            Prepared::Direct(_) => false,
        };
        if unconsumed {
            self.inbox_stale = true; // read, left in the inbox: the next step reads it again
        }
        match prepared {
            Prepared::Idle { consumed } if consumed.is_empty() => Ok(()),
            Prepared::Idle { consumed } => {
                let out = TurnOutcome {
                    meta: st.meta.clone(),
                    reset_history: false,
                    append: vec![],
                    consumed,
                    cancel_pending: false,
                    effects: vec![],
                };
                self.commit(out).await
            }
            Prepared::Direct(out) => self.commit(*out).await,
            // A stalled instance waits for another worker (a terminate still ends it above).
            Prepared::Dispatch(_) if st.meta.status == RuntimeStatus::Stalled && !retry_stalled => {
                Ok(())
            }
            Prepared::Dispatch(t) => self.dispatch(t, inbox, now).await,
        }
    }

    /// Hands the prepared turn to a worker (or, if the access policy denies a cross-app start,
    /// answers it in the worker's place).
    async fn dispatch(
        &mut self,
        t: PendingTurn,
        inbox: Vec<InboxEntry>,
        now: weft_core::Micros,
    ) -> Result<()> {
        let propagated = self.inherited(&t.new_events).await?;
        let Some(st) = self.state.as_ref() else {
            return Ok(());
        };
        let req = WorkflowTurn {
            instance_id: self.id.clone(),
            past_events: st.history.clone(),
            new_events: t.new_events.clone(),
            propagated,
        };
        // The stream checks what it actually sends (a warm stateful worker gets only the
        // delta); the new events alone are a lower bound every worker would get.
        let least = turn::work_item(&self.id, &[], &t).encoded_len() + 16;
        if least > self.inner.settings.max_work_item {
            return self
                .stall_oversize(least, self.inner.settings.max_work_item)
                .await;
        }
        if let Some(why) = crate::remote::denied_start(&self.inner, &t.new_events) {
            tracing::warn!(instance = %self.id, "{why}");
            self.pending = Some(t);
            self.carried = inbox;
            return self
                .complete(crate::remote::denied_answer(&self.id, why))
                .await;
        }
        self.pending = Some(t);
        self.carried = inbox;
        tracing::debug!(instance = %self.id, "dispatching a turn");
        if st.meta.started_at.is_none() {
            // The execution's first turn: how long after it was due.
            let due = st.meta.scheduled_start_at.unwrap_or(st.meta.created_at);
            let late = u64::try_from(now.saturating_sub(due)).unwrap_or(0);
            workflow_metrics::scheduling(
                self.inner.app_id(),
                &st.meta.name,
                Duration::from_micros(late),
            );
        }
        self.inner.hub.push(Job::Workflow(req));
        Ok(())
    }

    /// What this instance inherited from its parent (looked up once per actor).
    async fn inherited(&mut self, new: &[HistoryEvent]) -> Result<Option<Arc<PropagatedHistory>>> {
        if let Some(known) = &self.inherited {
            return Ok(known.clone());
        }
        let started = self
            .state
            .as_ref()
            .and_then(|st| weft_core::history::execution_started(&st.history).cloned())
            .or_else(|| weft_core::history::execution_started(new).cloned());
        let found = match started {
            Some(s) if s.parent_instance.is_some() => {
                crate::lineage::inherited(self.inner.store.as_ref(), &self.id, &s)
                    .await?
                    .map(Arc::new)
            }
            _ => None,
        };
        self.inherited = Some(found.clone());
        Ok(found)
    }

    /// Stalls the instance: its next work item cannot be delivered to a worker.
    async fn stall_oversize(&mut self, size: usize, limit: usize) -> Result<()> {
        tracing::warn!(instance = %self.id, size, "work item too large for the worker; stalling");
        self.inbox_stale = true; // the inbox is kept for an able worker
        let Some(st) = self.state.as_ref() else {
            return Ok(()); // reloaded meanwhile; the next step re-checks
        };
        let why =
            format!("the next work item is {size} bytes; workers accept at most {limit} bytes");
        let out = turn::stalled(
            &st.meta,
            &st.history,
            StalledReason::PayloadSizeExceeded,
            why,
            self.inner.now(),
        );
        self.commit(out).await
    }

    async fn complete(&mut self, resp: WorkflowResponse) -> Result<()> {
        let (Some(turn), Some(st)) = (self.pending.take(), self.state.as_ref()) else {
            return Err(EngineError::NotFound(format!(
                "unknown instance ID: {}",
                self.id
            )));
        };
        let applied = {
            let mut new_id = || uuid::Uuid::new_v4().to_string();
            let mut ctx = TurnContext {
                inherited: self.inherited.as_ref().and_then(|i| i.as_deref()),
                app_id: self.inner.app_id(),
                now: self.inner.now(),
                new_id: &mut new_id,
            };
            turn::apply_response(&st.meta, &st.history, &turn, &resp, &mut ctx)
        };
        let (out, reply) = match applied {
            Ok(out) => (out, Ok(())),
            Err(TurnError::AlreadyCompleted(id)) => {
                return Err(EngineError::FailedPrecondition(format!(
                    "workflow instance '{id}' has already completed"
                )));
            }
            Err(e) => {
                tracing::warn!(instance = %self.id, error = %e, "invalid workflow response; failing the instance");
                (
                    turn::fail_turn(&st.meta, &st.history, &turn, &e, self.inner.now()),
                    Err(EngineError::InvalidArgument(e.to_string())),
                )
            }
        };
        // On failure the turn is lost; it is dispatched again from the unchanged inbox.
        self.commit(out).await?;
        metrics::counter!("weft_workflow_turns_total").increment(1);
        reply
    }
}
