//! One applier per workflow action: each turns an action of the worker's answer into the
//! history events it records and the effects the caller carries out after the commit.

use super::rules::{action_router, remote_app, timer_origin};
use super::{Effect, TurnContext, TurnOutcome};
use crate::history::{event, event_with_id, failure};
use crate::propagation::Caller;
use crate::time::{is_never, to_micros};
use crate::{InstanceMeta, Micros};
use weft_proto::durabletask::{
    ActivityRequest, ChildWorkflowInstanceCreatedEvent, ChildWorkflowInstanceFailedEvent,
    CreateChildWorkflowAction, CreateDetachedWorkflowAction, CreateTimerAction,
    DetachedWorkflowInstanceCreatedEvent, EventRaisedEvent, EventSentEvent,
    ExecutionTerminatedEvent, ParentInstanceInfo, PropagatedHistory, ScheduleTaskAction,
    SendEventAction, TaskRouter, TaskScheduledEvent, TerminateWorkflowAction, TimerCreatedEvent,
    TimerFiredEvent, WorkflowAction, WorkflowInstance, history_event::EventType,
};

/// What every applier of one turn shares: the instance, the clock and the caller's context.
pub(super) struct Applier<'a, 'c> {
    pub meta: &'a InstanceMeta,
    /// The instance's history before this turn (with the turn's events in `out.append`).
    pub history: &'a [weft_proto::durabletask::HistoryEvent],
    pub now: Micros,
    pub ctx: &'a mut TurnContext<'c>,
    /// This app, as the source of every task the turn schedules.
    pub router: TaskRouter,
}

impl Applier<'_, '_> {
    fn instance(&self) -> WorkflowInstance {
        WorkflowInstance {
            instance_id: self.meta.instance_id.clone(),
            execution_id: Some(self.meta.execution_id.clone()),
        }
    }

    /// What an activity or child scheduled with `scope` is handed of this instance's history:
    /// everything up to and including the event that schedules it (`out.append`'s last).
    fn propagated(&self, scope: Option<i32>, out: &TurnOutcome) -> Option<PropagatedHistory> {
        let caller = Caller {
            app_id: self.ctx.app_id,
            instance_id: &self.meta.instance_id,
            workflow_name: &self.meta.name,
        };
        crate::propagation::build(
            scope,
            self.ctx.inherited,
            caller,
            self.history.iter().chain(out.append.iter()),
        )
    }

    pub(super) fn schedule_task(
        &self,
        out: &mut TurnOutcome,
        action: &WorkflowAction,
        t: &ScheduleTaskAction,
    ) {
        let id = action.id;
        let mut ev = event_with_id(
            id,
            self.now,
            EventType::TaskScheduled(TaskScheduledEvent {
                name: t.name.clone(),
                version: t.version.clone(),
                input: t.input.clone(),
                parent_trace_context: None,
                task_execution_id: t.task_execution_id.clone(),
                rerun_parent_instance_info: None,
                history_propagation_scope: t.history_propagation_scope,
            }),
        );
        let router = action_router(action, &self.router);
        let app = remote_app(Some(&router), self.ctx.app_id);
        ev.router = Some(router);
        out.append.push(ev);
        let propagated_history = self.propagated(t.history_propagation_scope, out);
        out.effects.push(Effect::ScheduleActivity {
            app,
            task_id: id,
            request: ActivityRequest {
                name: t.name.clone(),
                version: t.version.clone(),
                input: t.input.clone(),
                workflow_instance: Some(self.instance()),
                task_id: id,
                parent_trace_context: None,
                task_execution_id: t.task_execution_id.clone(),
                propagated_history,
            },
        });
    }

    pub(super) fn create_timer(&self, out: &mut TurnOutcome, id: i32, t: &CreateTimerAction) {
        let fire_at = t.fire_at.unwrap_or_default();
        out.append.push(event_with_id(
            id,
            self.now,
            EventType::TimerCreated(TimerCreatedEvent {
                fire_at: Some(fire_at),
                name: t.name.clone(),
                rerun_parent_instance_info: None,
                origin: t.origin.clone().map(timer_origin),
            }),
        ));
        // A timer that never fires (an SDK's "wait forever") is recorded but never scheduled.
        if !is_never(&fire_at) {
            out.effects.push(Effect::Timer {
                due_at: to_micros(&fire_at),
                event: event(
                    self.now,
                    EventType::TimerFired(TimerFiredEvent {
                        fire_at: Some(fire_at),
                        timer_id: id,
                    }),
                ),
            });
        }
    }

    pub(super) fn create_child(
        &mut self,
        out: &mut TurnOutcome,
        action: &WorkflowAction,
        c: &CreateChildWorkflowAction,
    ) {
        let (meta, now, id) = (self.meta, self.now, action.id);
        let child_id = if c.instance_id.is_empty() {
            crate::ids::default_child_id(&meta.instance_id, id)
        } else {
            c.instance_id.clone()
        };
        // A child of another app is that app's instance, owned on its ring and run by its
        // workers; both events carry the router, as daprd records them.
        let router = action_router(action, &self.router);
        let child_app = remote_app(Some(&router), self.ctx.app_id);
        let mut created = event_with_id(
            id,
            now,
            EventType::ChildWorkflowInstanceCreated(ChildWorkflowInstanceCreatedEvent {
                instance_id: child_id.clone(),
                name: c.name.clone(),
                version: c.version.clone(),
                input: c.input.clone(),
                parent_trace_context: None,
                rerun_parent_instance_info: None,
                history_propagation_scope: c.history_propagation_scope,
                retry_parent_instance_info: c.retry_parent_instance_info.clone(),
            }),
        );
        if child_app.is_some() {
            created.router = Some(router.clone());
        }
        out.append.push(created);
        let parent = ParentInstanceInfo {
            task_scheduled_id: id,
            name: Some(meta.name.clone()),
            version: None,
            workflow_instance: Some(self.instance()),
            app_id: Some(self.ctx.app_id.to_string()),
            app_namespace: None,
        };
        let exec = (self.ctx.new_id)();
        let (child, mut start) = super::new_instance(
            &child_id,
            &c.name,
            c.version.clone(),
            c.input.clone(),
            Some(parent),
            exec,
            child_app.as_deref().unwrap_or(self.ctx.app_id),
            now,
        );
        if child_app.is_some() {
            // The SDKs take the child's app from `targetAppID` (else `sourceAppID`).
            start.router = Some(router);
        }
        // If the child's ID is taken by an active instance, the parent learns it as a failure.
        let conflict = event(
            now,
            EventType::ChildWorkflowInstanceFailed(ChildWorkflowInstanceFailedEvent {
                task_scheduled_id: id,
                failure_details: Some(failure(
                    "WorkflowAlreadyExists",
                    format!("an active workflow with ID '{child_id}' already exists"),
                )),
                attestation: None,
                signer_certificate: None,
            }),
        );
        out.effects.push(Effect::StartInstance {
            meta: child,
            start_event: start,
            on_conflict: Some((meta.instance_id.clone(), conflict)),
        });
    }

    pub(super) fn create_detached(
        &mut self,
        out: &mut TurnOutcome,
        id: i32,
        d: &CreateDetachedWorkflowAction,
    ) {
        let now = self.now;
        out.append.push(event_with_id(
            id,
            now,
            EventType::DetachedWorkflowInstanceCreated(DetachedWorkflowInstanceCreatedEvent {
                instance_id: d.instance_id.clone(),
            }),
        ));
        let exec = d
            .execution_id
            .clone()
            .unwrap_or_else(|| (self.ctx.new_id)());
        let (mut m, start) = super::new_instance(
            &d.instance_id,
            &d.name,
            d.version.clone(),
            d.input.clone(),
            None,
            exec,
            self.ctx.app_id,
            now,
        );
        m.scheduled_start_at = d
            .scheduled_start_timestamp
            .as_ref()
            .map(to_micros)
            .filter(|t| *t > now);
        out.effects.push(Effect::StartInstance {
            meta: m,
            start_event: start,
            on_conflict: None,
        });
    }

    pub(super) fn send_event(&self, out: &mut TurnOutcome, id: i32, s: &SendEventAction) {
        let target = s
            .instance
            .as_ref()
            .map(|i| i.instance_id.clone())
            .unwrap_or_default();
        out.append.push(event_with_id(
            id,
            self.now,
            EventType::EventSent(EventSentEvent {
                instance_id: target.clone(),
                name: s.name.clone(),
                input: s.data.clone(),
            }),
        ));
        out.effects.push(Effect::Deliver {
            instance_id: target,
            execution_id: None,
            event: event(
                self.now,
                EventType::EventRaised(EventRaisedEvent {
                    name: s.name.clone(),
                    input: s.data.clone(),
                }),
            ),
        });
    }

    pub(super) fn terminate_other(&self, out: &mut TurnOutcome, t: &TerminateWorkflowAction) {
        out.effects.push(Effect::Deliver {
            instance_id: t.instance_id.clone(),
            execution_id: None,
            event: event(
                self.now,
                EventType::ExecutionTerminated(ExecutionTerminatedEvent {
                    input: t.reason.clone(),
                    recurse: t.recurse,
                }),
            ),
        });
    }
}
