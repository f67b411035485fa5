//! A turn's commit: the checkpoint planned from the turn's outcome, written in one store
//! transaction, then the actor's cache updated and the turn's effects carried out.

use super::Actor;
use crate::error::{EngineError, Result};
use crate::hub::Job;
use crate::telemetry::workflow::{self as workflow_metrics, Ended};
use crate::telemetry::{spans, turn_spans};
use prost::Message;
use std::sync::Arc;
use weft_core::turn::{Effect, TurnOutcome};
use weft_core::{InstanceMeta, RuntimeStatus};
use weft_store::{
    ActivityTask, Checkpoint, CreateInstance, Outbound, Reminder, ReusePolicy, StoreError,
};

/// What a committed turn leaves to do besides the checkpoint itself.
struct Followups {
    /// Instances to wake (children started, events delivered).
    wake: Vec<String>,
    /// Activities to hand to workers.
    activities: Vec<Job>,
}

impl Actor {
    /// Commits a turn, then updates the cache and carries out its effects.
    pub(super) async fn commit(&mut self, mut out: TurnOutcome) -> Result<()> {
        if !self.inner.view.lease_valid() {
            // Acting as owner stopped with the lease; the next owner runs the turn again.
            return Err(EngineError::Unavailable(
                "this sidecar's ownership lease lapsed".into(),
            ));
        }
        let spans_done = if spans::on() {
            let st = self.state.as_ref().expect("commit needs loaded state");
            let now = self.inner.now();
            turn_spans::prepare_turn(&mut out, &st.history, st.meta.status, now)
        } else {
            Vec::new()
        };
        let (cp, follow) = self.plan(&out);
        let timers = !cp.new_reminders.is_empty();
        let folded = cp.completed_activities.len();
        let started = std::time::Instant::now();
        let written = self.inner.committer.checkpoint(cp).await;
        for job in &follow.activities {
            if let Job::Activity { request, .. } = job {
                let (app, ok) = (self.inner.app_id(), written.is_ok());
                workflow_metrics::activity_operation(app, &request.name, ok, started.elapsed());
            }
        }
        match written {
            Ok(()) => {
                spans::export(spans_done);
                self.failures = 0;
                // The turn consumed what it carried.
                self.carried.clear();
            }
            Err(e) => return Err(self.commit_failed(e)),
        }
        if folded > 0 {
            for h in self
                .held
                .iter_mut()
                .filter(|h| out.consumed.contains(&h.seq))
            {
                self.inner
                    .hub
                    .transit_end(&crate::hub::transit_key(&h.result));
                // Durable now: the worker that delivered it may go on.
                h.result.acknowledge(Ok(()));
            }
            self.held.retain(|h| !out.consumed.contains(&h.seq));
            metrics::counter!("weft_activities_completed_total").increment(folded as u64);
            metrics::counter!("weft_activity_results_folded_total").increment(folded as u64);
        }
        self.committed(out, follow, timers);
        Ok(())
    }

    /// The checkpoint of a turn (history, inbox consumed, results folded, tasks, reminders,
    /// outbound messages) and what to do once it landed.
    fn plan(&self, out: &TurnOutcome) -> (Checkpoint, Followups) {
        let st = self.state.as_ref().expect("commit needs loaded state");
        let generation = out.meta.generation;
        let mut cp = Checkpoint {
            instance_id: self.id.clone(),
            expected_version: st.meta.version,
            meta: out.meta.clone(),
            reset_history: out.reset_history,
            append: out.append.clone(),
            consumed_inbox: out.consumed.iter().copied().filter(|s| *s >= 0).collect(),
            completed_activities: self
                .held
                .iter()
                .filter(|h| out.consumed.contains(&h.seq))
                .map(|h| {
                    let (task, generation) = h.result.key();
                    // The claim it was dispatched under, or the newer one of this sidecar's
                    // own scan, which dispatched nothing for it (`hub/transit.rs`).
                    let claim = self
                        .inner
                        .hub
                        .transit_claim(&crate::hub::transit_key(&h.result))
                        .or(h.result.completion.claim);
                    (task, generation, claim)
                })
                .collect(),
            new_activities: vec![],
            new_reminders: vec![],
            cancel_pending: out.cancel_pending,
            outbound: vec![],
            fence: self.fence.clone(),
        };
        let mut follow = Followups {
            wake: Vec::new(),
            activities: Vec::new(),
        };
        for effect in &out.effects {
            self.plan_effect(effect, generation, &mut cp, &mut follow);
        }
        (cp, follow)
    }

    fn plan_effect(
        &self,
        effect: &Effect,
        generation: i64,
        cp: &mut Checkpoint,
        f: &mut Followups,
    ) {
        match effect {
            Effect::ScheduleActivity {
                task_id,
                request,
                app,
            } => {
                cp.new_activities.push(ActivityTask {
                    app_id: app.clone().unwrap_or_default(),
                    claim: 0,
                    instance_id: self.id.clone(),
                    generation,
                    task_id: *task_id,
                    request: request.encode_to_vec(),
                });
                if app.is_some() {
                    // Another app's workers run it: that app's owner of this bucket claims it
                    // (told by the store's hint, `remote.rs`); nothing is queued here.
                    return;
                }
                f.activities.push(Job::Activity {
                    generation,
                    claim: 0,
                    request: request.clone(),
                });
            }
            Effect::Timer { due_at, event } => cp.new_reminders.push(Reminder {
                id: 0,
                instance_id: self.id.clone(),
                generation,
                due_at: *due_at,
                event: event.clone(),
            }),
            Effect::StartInstance {
                meta,
                start_event,
                on_conflict,
            } => {
                // Another app's instance is woken by its own owner (the store's inbox hint).
                if meta.app_id == self.inner.app_id() {
                    f.wake.push(meta.instance_id.clone());
                }
                if let Some((to, _)) = on_conflict {
                    f.wake.push(to.clone());
                }
                cp.outbound.push(Outbound::Create {
                    create: CreateInstance {
                        meta: meta.clone(),
                        start_event: start_event.clone(),
                        policy: ReusePolicy::Error,
                    },
                    on_conflict: on_conflict.clone(),
                });
            }
            Effect::Deliver {
                instance_id,
                execution_id,
                event,
            } => {
                f.wake.push(instance_id.clone());
                cp.outbound.push(Outbound::Deliver {
                    instance_id: instance_id.clone(),
                    execution_id: execution_id.clone(),
                    event: event.clone(),
                });
            }
        }
    }

    /// Nothing was written (or, on a conflict, someone else owns the instance now): reload and
    /// back off before the next attempt. Only if the commit may have landed are its effects
    /// recovered by a scan; a scan never disturbs work in flight (re-pushing a dispatched
    /// activity is a no-op).
    fn commit_failed(&mut self, e: StoreError) -> EngineError {
        if matches!(e, StoreError::OutcomeUnknown(_)) {
            self.inner.resync_needed.notify_one();
        }
        if matches!(e, StoreError::Conflict { .. }) {
            metrics::counter!("weft_checkpoint_conflicts_total").increment(1);
            self.fenced_out = true;
        }
        if matches!(e, StoreError::Fenced { .. }) {
            metrics::counter!("weft_fenced_writes_total", "op" => "checkpoint").increment(1);
            self.fenced_out = true;
        }
        if let StoreError::Reclaimed { task_id, .. } = &e {
            self.drop_reclaimed(*task_id);
        }
        let e = EngineError::from(e);
        self.failed(&e);
        e
    }

    /// The turn landed: the cache follows it, then its effects are carried out.
    fn committed(&mut self, out: TurnOutcome, follow: Followups, timers: bool) {
        let generation = out.meta.generation;
        let st = self.state.as_mut().expect("still loaded");
        if out.reset_history {
            st.history = Arc::new(out.append);
        } else {
            // Unshared by now (the answered turn's record is gone), so this copies nothing.
            Arc::make_mut(&mut st.history).extend(out.append);
        }
        let status_before = st.meta.status;
        st.meta = InstanceMeta {
            version: st.meta.version + 1,
            ..out.meta
        };
        if st.meta.status.is_terminal() {
            // Queued activities of a finished instance would only be run and thrown away.
            self.inner.hub.forget_instance(&self.id);
        } else if out.reset_history {
            // Continue-as-new: the same for the finished generation's queued activities.
            self.inner.hub.new_execution(&self.id, generation);
        }
        // A turn committed while handing off dispatches nothing here: the next owner's scan
        // of the bucket finds the new tasks once the lease is released, whereas a dispatch
        // here would hold the hand-off open until that activity ends (or the deadline passes
        // and the next owner runs it a second time).
        if self.inner.view.owns(&self.id) {
            for job in follow.activities {
                self.inner.hub.push(job);
            }
        }
        if timers {
            self.inner.timers_changed.notify_one();
        }
        // Waiters only wait on status, so only a status change is announced (and a turn that
        // changes nothing else never clones the row's payloads).
        if st.meta.status != status_before {
            self.inner.actors.committed(&st.meta);
            if let Some(ended) = ended(st.meta.status) {
                let age = u64::try_from(self.inner.now().saturating_sub(st.meta.created_at));
                workflow_metrics::execution(
                    self.inner.app_id(),
                    &st.meta.name,
                    ended,
                    std::time::Duration::from_micros(age.unwrap_or(0)),
                );
            }
        }
        for id in follow.wake {
            if id == self.id {
                self.fed_itself = true; // the run loop re-reads our own inbox
                self.inbox_stale = true;
                continue;
            }
            self.inner.actors.wake(&id);
        }
    }
}

/// How daprd counts an execution that reached `status` (`None`: still going).
fn ended(status: RuntimeStatus) -> Option<Ended> {
    match status {
        RuntimeStatus::Completed => Some(Ended::Success),
        RuntimeStatus::Failed => Some(Ended::Failed),
        RuntimeStatus::Terminated | RuntimeStatus::Canceled => Some(Ended::Terminated),
        RuntimeStatus::Stalled => Some(Ended::Recoverable),
        _ => None,
    }
}
