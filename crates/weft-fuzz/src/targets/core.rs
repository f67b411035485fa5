//! Target `core`: weft-core's turn engine driven through many turns of one instance by an
//! arbitrary sequence of inbox events and worker actions, committing each outcome as the
//! engine's checkpoint would, and checking history invariants after every commit.

use crate::harness::Target;
use crate::input::Input;
use std::collections::HashSet;
use weft_core::history::{event, event_with_id};
use weft_core::turn::{
    Effect, InboxItem, Prepared, TurnContext, TurnOutcome, apply_response, fail_turn, new_instance,
    prepare_turn,
};
use weft_core::{InstanceMeta, Micros, RuntimeStatus};
use weft_proto::durabletask::history_event::EventType;
use weft_proto::durabletask::workflow_action::WorkflowActionType as A;
use weft_proto::durabletask::*;

const NOW: Micros = 1_700_000_000_000_000;
const ID: &str = "wf-1";
const NAMES: &[&str] = &["a", "b", "wf-1", "child-1"];

/// The state one instance's store rows hold: row, history, inbox, pending timers.
struct Instance {
    meta: InstanceMeta,
    history: Vec<HistoryEvent>,
    inbox: Vec<InboxItem>,
    timers: Vec<(Micros, HistoryEvent, i64)>,
    seq: i64,
    now: Micros,
    ids: u64,
}

impl Instance {
    fn new() -> Self {
        let (meta, start) = new_instance(
            ID,
            "order",
            None,
            Some("1".into()),
            None,
            "exec-0".into(),
            "app",
            NOW,
        );
        let mut me = Self {
            meta,
            history: Vec::new(),
            inbox: Vec::new(),
            timers: Vec::new(),
            seq: 0,
            now: NOW,
            ids: 0,
        };
        me.push(start, Some(0));
        me
    }

    fn push(&mut self, event: HistoryEvent, generation: Option<i64>) {
        self.seq += 1;
        self.inbox.push(InboxItem {
            seq: self.seq,
            event,
            generation,
        });
    }

    /// Commits an outcome as a checkpoint does: consume, reset or append history, new row,
    /// and the effects that come back to this instance.
    fn commit(&mut self, out: TurnOutcome) -> Result<(), String> {
        let inbox: HashSet<i64> = self.inbox.iter().map(|i| i.seq).collect();
        if let Some(s) = out.consumed.iter().find(|s| !inbox.contains(s)) {
            return Err(format!(
                "consumed inbox entry {s}, which is not in the inbox"
            ));
        }
        if out.meta.instance_id != ID {
            return Err(format!(
                "the row changed its ID to '{}'",
                out.meta.instance_id
            ));
        }
        if out.meta.generation < self.meta.generation {
            return Err("the generation went backwards".into());
        }
        self.inbox.retain(|i| !out.consumed.contains(&i.seq));
        if out.reset_history {
            self.history.clear();
        }
        if out.cancel_pending {
            self.timers.clear();
        }
        self.history.extend(out.append);
        self.meta = out.meta;
        for e in out.effects {
            match e {
                Effect::Timer { due_at, event } => {
                    self.timers.push((due_at, event, self.meta.generation))
                }
                Effect::Deliver {
                    instance_id,
                    execution_id,
                    event,
                } if instance_id == ID => match execution_id {
                    Some(x) if x != self.meta.execution_id => {}
                    Some(_) => self.push(event, Some(self.meta.generation)),
                    None => self.push(event, None),
                },
                _ => {}
            }
        }
        check_history(&self.meta, &self.history)
    }

    /// One turn: prepare from the inbox and, for a dispatch, apply the worker's actions drawn
    /// from the input (or fail the turn on a refused answer, as the engine does).
    fn turn(&mut self, input: &mut Input) -> Result<(), String> {
        self.now += 1_000;
        match prepare_turn(&self.meta, &self.history, &self.inbox, self.now) {
            Prepared::Idle { consumed } => {
                let inbox: HashSet<i64> = self.inbox.iter().map(|i| i.seq).collect();
                if consumed.iter().any(|s| !inbox.contains(s)) {
                    return Err("an idle turn consumed entries not in the inbox".into());
                }
                self.inbox.retain(|i| !consumed.contains(&i.seq));
                Ok(())
            }
            Prepared::Direct(out) => self.commit(*out),
            Prepared::Dispatch(turn) => {
                if self.meta.status.is_terminal() {
                    return Err("dispatched a turn for a finished instance".into());
                }
                if !matches!(
                    turn.new_events.first().and_then(|e| e.event_type.as_ref()),
                    Some(EventType::WorkflowStarted(_))
                ) {
                    return Err("a turn does not start with WorkflowStarted".into());
                }
                let resp = response(input, &self.history);
                let mut ids = self.ids;
                let mut new_id = || {
                    ids += 1;
                    format!("exec-{ids}")
                };
                let mut ctx = TurnContext {
                    inherited: None,
                    app_id: "app",
                    now: self.now,
                    new_id: &mut new_id,
                };
                let out = match apply_response(&self.meta, &self.history, &turn, &resp, &mut ctx) {
                    Ok(out) => out,
                    Err(e) => fail_turn(&self.meta, &self.history, &turn, &e, self.now),
                };
                self.ids = ids;
                self.commit(out)
            }
        }
    }
}

/// The worker's answer: 0–5 actions drawn from the input, IDs mostly small.
fn response(i: &mut Input, history: &[HistoryEvent]) -> WorkflowResponse {
    let n = i.below(6);
    let mut actions = Vec::with_capacity(n);
    let base = history
        .iter()
        .map(|e| e.event_id)
        .max()
        .unwrap_or(-1)
        .saturating_add(1);
    for _ in 0..n {
        let id = if i.bool() {
            base.saturating_add(i.below(4) as i32)
        } else {
            i.id()
        };
        let ty = match i.below(10) {
            0 | 1 => Some(A::ScheduleTask(ScheduleTaskAction {
                name: i.string(NAMES),
                input: i.bool().then(|| i.string(&["1"])),
                ..Default::default()
            })),
            2 => Some(A::CreateTimer(CreateTimerAction {
                fire_at: Some(prost_types::Timestamp {
                    seconds: match i.below(3) {
                        0 => NOW / 1_000_000 + i64::from(i.u8()),
                        1 => weft_core::time::SENTINEL_SECONDS,
                        _ => i.i64(),
                    },
                    nanos: i.u32() as i32,
                }),
                ..Default::default()
            })),
            3 => Some(A::CreateChildWorkflow(CreateChildWorkflowAction {
                instance_id: i.string(&["", "child-1", ID]),
                name: i.string(NAMES),
                ..Default::default()
            })),
            4 => Some(A::SendEvent(SendEventAction {
                instance: Some(WorkflowInstance {
                    instance_id: i.string(&[ID, "other"]),
                    execution_id: None,
                }),
                name: i.string(NAMES),
                data: None,
            })),
            5 => Some(A::TerminateWorkflow(TerminateWorkflowAction {
                instance_id: i.string(&[ID, "child-1"]),
                reason: None,
                recurse: i.bool(),
            })),
            6 => Some(A::CreateDetachedWorkflow(CreateDetachedWorkflowAction {
                instance_id: i.string(&["detached-1", ID]),
                name: i.string(NAMES),
                ..Default::default()
            })),
            7 | 8 => Some(A::CompleteWorkflow(CompleteWorkflowAction {
                workflow_status: i.below(8) as i32,
                result: i.bool().then(|| "\"done\"".to_string()),
                carryover_events: (0..i.below(3))
                    .map(|_| {
                        event(
                            NOW,
                            EventType::EventRaised(EventRaisedEvent {
                                name: i.string(NAMES),
                                input: None,
                            }),
                        )
                    })
                    .collect(),
                new_version: None,
                ..Default::default()
            })),
            _ if i.bool() => Some(A::WorkflowVersionNotAvailable(
                WorkflowVersionNotAvailableAction {},
            )),
            _ => None,
        };
        actions.push(WorkflowAction {
            id,
            workflow_action_type: ty,
            router: None,
        });
    }
    WorkflowResponse {
        instance_id: ID.into(),
        actions,
        custom_status: i.bool().then(|| i.string(&["s"])),
        version: i.bool().then(|| WorkflowVersion {
            name: Some(i.string(NAMES)),
            patches: (0..i.below(3)).map(|_| i.string(&["p1", "p2"])).collect(),
        }),
        ..Default::default()
    }
}

/// An event arriving in the inbox: results (mostly for IDs history scheduled), raised events,
/// suspend, resume, terminate, a second start, and kinds that never belong in an inbox.
fn arrival(i: &mut Input, inst: &Instance) -> (HistoryEvent, Option<i64>) {
    let id = i.id();
    let g = match i.below(4) {
        0 => Some(inst.meta.generation.wrapping_sub(1)),
        1 => None,
        _ => Some(inst.meta.generation),
    };
    let ty = match i.below(12) {
        0 => EventType::TaskCompleted(TaskCompletedEvent {
            task_scheduled_id: id,
            result: Some("1".into()),
            ..Default::default()
        }),
        1 => EventType::TaskFailed(TaskFailedEvent {
            task_scheduled_id: id,
            ..Default::default()
        }),
        2 => EventType::TimerFired(TimerFiredEvent {
            fire_at: None,
            timer_id: id,
        }),
        3 => EventType::ChildWorkflowInstanceCompleted(ChildWorkflowInstanceCompletedEvent {
            task_scheduled_id: id,
            ..Default::default()
        }),
        4 => EventType::ChildWorkflowInstanceFailed(ChildWorkflowInstanceFailedEvent {
            task_scheduled_id: id,
            ..Default::default()
        }),
        5 | 6 => EventType::EventRaised(EventRaisedEvent {
            name: i.string(NAMES),
            input: None,
        }),
        7 => EventType::ExecutionSuspended(ExecutionSuspendedEvent::default()),
        8 => EventType::ExecutionResumed(ExecutionResumedEvent::default()),
        9 => EventType::ExecutionTerminated(ExecutionTerminatedEvent {
            input: None,
            recurse: i.bool(),
        }),
        10 => {
            let (_, start) =
                new_instance(ID, "order", None, None, None, "exec-x".into(), "app", NOW);
            return (start, g);
        }
        _ => EventType::TaskScheduled(TaskScheduledEvent::default()),
    };
    (event_with_id(-1, inst.now, ty), g)
}

/// The invariants of one execution's history (`docs/testing.md`, as the simulation checks them
/// on real histories): at most one start and one completion, nothing after the completion,
/// unique scheduling IDs, each result at most once, and a finished row iff a completion (or
/// no history at all: terminated before it ever ran).
fn check_history(meta: &InstanceMeta, history: &[HistoryEvent]) -> Result<(), String> {
    let mut starts = 0;
    let mut completed_at = None;
    let mut scheduled = HashSet::new();
    let (mut tasks, mut timers, mut children) = (HashSet::new(), HashSet::new(), HashSet::new());
    for (n, e) in history.iter().enumerate() {
        let once = |set: &mut HashSet<i32>, id: i32, what: &str| {
            if set.insert(id) {
                Ok(())
            } else {
                Err(format!("{what} {id} twice in history"))
            }
        };
        match &e.event_type {
            Some(EventType::ExecutionStarted(_)) => starts += 1,
            Some(EventType::ExecutionCompleted(_)) if completed_at.replace(n).is_some() => {
                return Err("two ExecutionCompleted events".into());
            }
            Some(
                EventType::TaskScheduled(_)
                | EventType::TimerCreated(_)
                | EventType::ChildWorkflowInstanceCreated(_)
                | EventType::DetachedWorkflowInstanceCreated(_)
                | EventType::EventSent(_),
            ) => once(&mut scheduled, e.event_id, "scheduling event ID")?,
            Some(EventType::TaskCompleted(c)) => {
                once(&mut tasks, c.task_scheduled_id, "result of task")?
            }
            Some(EventType::TaskFailed(c)) => {
                once(&mut tasks, c.task_scheduled_id, "result of task")?
            }
            Some(EventType::TimerFired(t)) => once(&mut timers, t.timer_id, "fire of timer")?,
            Some(EventType::ChildWorkflowInstanceCompleted(c)) => {
                once(&mut children, c.task_scheduled_id, "result of child")?
            }
            Some(EventType::ChildWorkflowInstanceFailed(c)) => {
                once(&mut children, c.task_scheduled_id, "result of child")?
            }
            _ => {}
        }
    }
    if starts > 1 {
        return Err(format!("{starts} ExecutionStarted events in one execution"));
    }
    if let Some(n) = completed_at
        && n + 1 != history.len()
    {
        return Err(format!(
            "{} events after ExecutionCompleted",
            history.len() - n - 1
        ));
    }
    // An instance terminated before any worker ran it ends with an empty history, by design.
    let never_ran = history.is_empty();
    if completed_at.is_some() != meta.status.is_terminal() && !never_ran {
        return Err(format!(
            "status {:?} but ExecutionCompleted {}",
            meta.status,
            if completed_at.is_some() {
                "present"
            } else {
                "absent"
            }
        ));
    }
    Ok(())
}

pub struct Core;

impl Target for Core {
    fn name(&self) -> &'static str {
        "core"
    }

    fn run(&mut self, data: &[u8]) -> Result<(), String> {
        let mut input = Input::new(data);
        let mut inst = Instance::new();
        let mut steps = 0;
        while !input.is_empty() && steps < 200 {
            steps += 1;
            match input.below(4) {
                0 => {
                    let (ev, g) = arrival(&mut input, &inst);
                    inst.push(ev, g);
                }
                1 if !inst.timers.is_empty() => {
                    // The timer loop moves a due timer's fire into the inbox.
                    let k = input.below(inst.timers.len());
                    let (_, ev, g) = inst.timers.remove(k);
                    inst.push(ev, Some(g));
                }
                _ => inst.turn(&mut input)?,
            }
            if inst.meta.status == RuntimeStatus::Pending && inst.history.len() > 1 {
                return Err("PENDING with a history".into());
            }
        }
        Ok(())
    }
}
