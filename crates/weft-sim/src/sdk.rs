//! A minimal replaying "SDK": given a work item's past and new events, it re-runs the workflow
//! program as a deterministic state machine and returns the actions of this turn, numbered as
//! the real SDKs number them (1, 2, … per execution, the completion taking the next number).
//!
//! Like the Python SDK it buffers events while suspended, carries unconsumed events over at
//! continue-as-new when asked to (`save_events`), ignores completions it has no task for, and
//! completes a terminated workflow itself. Anything the history says that this program could
//! not have produced is reported as a violation.

use crate::model::{RACE_TOKEN, TIMER_TOKEN, child_input, child_token, fan_out_token};
use crate::program::{
    ACTIVITY_NAME, EVENT_NAME, Input, Step, WORKFLOW_NAME, activity_input, activity_result,
};
use std::collections::{HashMap, HashSet};
use weft_core::time::{from_micros, to_micros};
use weft_proto::durabletask::history_event::EventType;
use weft_proto::durabletask::workflow_action::WorkflowActionType as A;
use weft_proto::durabletask::{
    CompleteWorkflowAction, CreateChildWorkflowAction, CreateTimerAction, EventRaisedEvent,
    HistoryEvent, OrchestrationStatus, ScheduleTaskAction, TaskFailureDetails, WorkflowAction,
};

/// The SDK's answer to one work item.
#[derive(Debug, Default)]
pub struct Decision {
    pub actions: Vec<WorkflowAction>,
    pub custom_status: Option<String>,
    /// Execution ID from the history's `ExecutionStarted`.
    pub execution_id: Option<String>,
    /// Things the history says that cannot be right.
    pub violations: Vec<String>,
}

/// What the program expects at an action ID (to check history against on replay).
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Activity(String),
    Timer,
    Child(String),
}

#[derive(Default)]
struct Seen {
    /// task id → result (first completion wins; the invariants flag duplicates).
    completed: HashMap<i32, Option<String>>,
    failed: HashSet<i32>,
    /// timer id → fire_at (µs) of the `TimerFired`.
    fired: HashMap<i32, i64>,
    child_done: HashMap<i32, Result<Option<String>, String>>,
    /// Payloads of events named [`EVENT_NAME`], in delivery order, duplicates dropped.
    events: Vec<String>,
    terminated: Option<Option<String>>,
}

impl Seen {
    fn take(&mut self, e: &HistoryEvent, dedup: &mut HashSet<String>) {
        match &e.event_type {
            Some(EventType::TaskCompleted(c)) => {
                self.completed
                    .entry(c.task_scheduled_id)
                    .or_insert_with(|| c.result.clone());
            }
            Some(EventType::TaskFailed(c)) => {
                self.failed.insert(c.task_scheduled_id);
            }
            Some(EventType::TimerFired(t)) => {
                let at = t.fire_at.as_ref().map(to_micros).unwrap_or(0);
                self.fired.entry(t.timer_id).or_insert(at);
            }
            Some(EventType::ChildWorkflowInstanceCompleted(c)) => {
                self.child_done
                    .entry(c.task_scheduled_id)
                    .or_insert_with(|| Ok(c.result.clone()));
            }
            Some(EventType::ChildWorkflowInstanceFailed(c)) => {
                let why = c
                    .failure_details
                    .as_ref()
                    .map(|f| format!("{}: {}", f.error_type, f.error_message))
                    .unwrap_or_default();
                self.child_done
                    .entry(c.task_scheduled_id)
                    .or_insert(Err(why));
            }
            Some(EventType::EventRaised(r)) if r.name.eq_ignore_ascii_case(EVENT_NAME) => {
                // Client raises are at-least-once (a retried raise may land twice), so the
                // program, like a careful application, consumes each payload once.
                let p = r.input.clone().unwrap_or_default();
                if dedup.insert(p.clone()) {
                    self.events.push(p);
                }
            }
            _ => {}
        }
    }
}

fn action(id: i32, t: A) -> WorkflowAction {
    WorkflowAction {
        id,
        workflow_action_type: Some(t),
        router: None,
    }
}

fn complete(id: i32, status: OrchestrationStatus, result: Option<String>) -> WorkflowAction {
    action(
        id,
        A::CompleteWorkflow(CompleteWorkflowAction {
            workflow_status: status as i32,
            result,
            ..Default::default()
        }),
    )
}

/// Runs the program over `past` + `new` and returns this turn's actions.
pub fn decide(instance_id: &str, past: &[HistoryEvent], new: &[HistoryEvent]) -> Decision {
    let mut d = Decision::default();
    let all: Vec<&HistoryEvent> = past.iter().chain(new.iter()).collect();
    let Some(started) = all.iter().find_map(|e| match &e.event_type {
        Some(EventType::ExecutionStarted(s)) => Some(s),
        _ => None,
    }) else {
        d.violations
            .push(format!("{instance_id}: work item without ExecutionStarted"));
        return d;
    };
    d.execution_id = started
        .workflow_instance
        .as_ref()
        .and_then(|w| w.execution_id.clone());
    let input: Input = match serde_json::from_str(started.input.as_deref().unwrap_or("")) {
        Ok(i) => i,
        Err(e) => {
            d.violations
                .push(format!("{instance_id}: undecodable workflow input: {e}"));
            return d;
        }
    };
    let Some(steps) = input.program.gens.get(input.generation) else {
        d.violations.push(format!(
            "{instance_id}: input names generation {} it lacks",
            input.generation
        ));
        return d;
    };
    d.custom_status = Some(format!("g{}", input.generation));

    // What earlier turns scheduled (checked against the program below).
    let mut scheduled: HashMap<i32, (Expect, Option<i64>)> = HashMap::new();
    for e in past {
        let (exp, at) = match &e.event_type {
            Some(EventType::TaskScheduled(t)) => {
                (Expect::Activity(t.input.clone().unwrap_or_default()), None)
            }
            Some(EventType::TimerCreated(t)) => (
                Expect::Timer,
                Some(t.fire_at.as_ref().map(to_micros).unwrap_or(0)),
            ),
            Some(EventType::ChildWorkflowInstanceCreated(c)) => {
                (Expect::Child(c.instance_id.clone()), None)
            }
            _ => continue,
        };
        if scheduled.insert(e.event_id, (exp, at)).is_some() {
            d.violations.push(format!(
                "{instance_id}: two scheduling events with ID {} in history",
                e.event_id
            ));
        }
    }
    // The SDK's deterministic clock: the latest WorkflowStarted.
    let now = all
        .iter()
        .rev()
        .find(|e| matches!(e.event_type, Some(EventType::WorkflowStarted(_))))
        .and_then(|e| e.timestamp.as_ref().map(to_micros))
        .unwrap_or(0);

    // Deliver events in order, buffering them while suspended.
    let mut seen = Seen::default();
    // Payloads consumed by earlier generations count as seen: a retried raise may land again.
    let mut dedup: HashSet<String> = input.acc.iter().cloned().collect();
    let mut suspended = false;
    let mut buffer: Vec<&HistoryEvent> = Vec::new();
    for e in &all {
        match &e.event_type {
            Some(EventType::ExecutionSuspended(_)) => suspended = true,
            Some(EventType::ExecutionResumed(_)) => {
                suspended = false;
                for b in buffer.drain(..) {
                    seen.take(b, &mut dedup);
                }
            }
            Some(EventType::ExecutionTerminated(t)) => {
                seen.terminated.get_or_insert(t.input.clone());
            }
            _ if suspended => buffer.push(e),
            _ => seen.take(e, &mut dedup),
        }
    }
    if !seen.failed.is_empty() {
        d.violations.push(format!(
            "{instance_id}: activities never fail here, yet history has TaskFailed for {:?}",
            seen.failed
        ));
    }

    // Run the program.
    let mut next_id = 1i32;
    let mut alloc = || {
        let id = next_id;
        next_id += 1;
        id
    };
    let mut expected: HashMap<i32, Expect> = HashMap::new();
    let mut acc = input.acc.clone();
    let mut cursor = 0usize;
    let mut blocked = false;
    let mut failed: Option<String> = None;
    let mut actions = Vec::new();
    for (s, step) in steps.iter().enumerate() {
        let done = match step {
            Step::Activity | Step::FanOut(_) => {
                let k = match step {
                    Step::FanOut(k) => *k as usize,
                    _ => 1,
                };
                let mut results = Vec::new();
                for j in 0..k {
                    let id = alloc();
                    let inp = activity_input(&input.salt, input.generation, s, j);
                    expected.insert(id, Expect::Activity(inp.clone()));
                    if !scheduled.contains_key(&id) {
                        actions.push(action(
                            id,
                            A::ScheduleTask(ScheduleTaskAction {
                                name: ACTIVITY_NAME.into(),
                                input: Some(inp.clone()),
                                task_execution_id: format!("{instance_id}/{id}"),
                                ..Default::default()
                            }),
                        ));
                    }
                    if let Some(r) = seen.completed.get(&id) {
                        let r = r.clone().unwrap_or_default();
                        if r != activity_result(&inp) {
                            d.violations.push(format!(
                                "{instance_id}: task {id} (input {inp}) completed with {r}: \
                                 a result of another execution"
                            ));
                        }
                        results.push(r);
                    }
                }
                if results.len() == k {
                    acc.push(if k == 1 {
                        results.remove(0)
                    } else {
                        fan_out_token(&results)
                    });
                    true
                } else {
                    false
                }
            }
            Step::Timer(ms) => {
                let id = alloc();
                timer(id, *ms, now, &scheduled, &mut expected, &mut actions);
                let fired = check_fired(instance_id, id, &seen, &scheduled, &mut d);
                if fired {
                    acc.push(TIMER_TOKEN.into());
                }
                fired
            }
            Step::Event => {
                if let Some(p) = seen.events.get(cursor) {
                    acc.push(p.clone());
                    cursor += 1;
                    true
                } else {
                    false
                }
            }
            Step::Child(child_steps) => {
                let id = alloc();
                let child_id = weft_core::ids::default_child_id(instance_id, id);
                expected.insert(id, Expect::Child(child_id.clone()));
                if !scheduled.contains_key(&id) {
                    let ci = child_input(&input, s, child_steps);
                    actions.push(action(
                        id,
                        A::CreateChildWorkflow(CreateChildWorkflowAction {
                            instance_id: child_id,
                            name: WORKFLOW_NAME.into(),
                            input: Some(serde_json::to_string(&ci).expect("serialisable")),
                            ..Default::default()
                        }),
                    ));
                }
                match seen.child_done.get(&id) {
                    Some(Ok(out)) => {
                        acc.push(child_token(out.as_deref().unwrap_or("")));
                        true
                    }
                    Some(Err(why)) => {
                        failed = Some(format!("child {id} failed: {why}"));
                        false
                    }
                    None => false,
                }
            }
            Step::Race(ms) => {
                let a = alloc();
                let t = alloc();
                let inp = activity_input(&input.salt, input.generation, s, 0);
                expected.insert(a, Expect::Activity(inp.clone()));
                if !scheduled.contains_key(&a) {
                    actions.push(action(
                        a,
                        A::ScheduleTask(ScheduleTaskAction {
                            name: ACTIVITY_NAME.into(),
                            input: Some(inp.clone()),
                            task_execution_id: format!("{instance_id}/{a}"),
                            ..Default::default()
                        }),
                    ));
                }
                timer(t, *ms, now, &scheduled, &mut expected, &mut actions);
                let fired = check_fired(instance_id, t, &seen, &scheduled, &mut d);
                if let Some(r) = seen.completed.get(&a) {
                    let r = r.clone().unwrap_or_default();
                    if r != activity_result(&inp) {
                        d.violations.push(format!(
                            "{instance_id}: task {a} (input {inp}) completed with {r}: \
                             a result of another execution"
                        ));
                    }
                }
                let won = fired || seen.completed.contains_key(&a);
                if won {
                    acc.push(RACE_TOKEN.into());
                }
                won
            }
        };
        if failed.is_some() || !done {
            blocked = true;
            break;
        }
    }

    // Whatever history scheduled must be what the program schedules at that ID.
    for (id, (exp, _)) in &scheduled {
        match expected.get(id) {
            Some(e) if e == exp => {}
            other => d.violations.push(format!(
                "{instance_id}: history has {exp:?} at ID {id}, the program has {other:?} \
                 (non-determinism: history does not belong to this execution)"
            )),
        }
    }

    let id = alloc();
    if let Some(reason) = seen.terminated {
        d.actions = vec![complete(id, OrchestrationStatus::Terminated, reason)];
        return d;
    }
    if let Some(why) = failed {
        let mut a = complete(id, OrchestrationStatus::Failed, None);
        if let Some(A::CompleteWorkflow(c)) = &mut a.workflow_action_type {
            c.failure_details = Some(TaskFailureDetails {
                error_type: "SimChildFailed".into(),
                error_message: why,
                ..Default::default()
            });
        }
        actions.push(a);
    } else if !blocked {
        if input.generation + 1 < input.program.gens.len() {
            let next = Input {
                generation: input.generation + 1,
                acc,
                ..input.clone()
            };
            // Events still buffered by a suspension in this turn are carried over too.
            let mut pending: Vec<String> = seen.events[cursor..].to_vec();
            for b in &buffer {
                if let Some(EventType::EventRaised(r)) = &b.event_type
                    && r.name.eq_ignore_ascii_case(EVENT_NAME)
                {
                    let p = r.input.clone().unwrap_or_default();
                    if !dedup.contains(&p) && !pending.contains(&p) {
                        pending.push(p);
                    }
                }
            }
            let carryover_events = if input.program.carry {
                pending
                    .iter()
                    .map(|p| HistoryEvent {
                        event_id: -1,
                        timestamp: Some(from_micros(now)),
                        router: None,
                        event_type: Some(EventType::EventRaised(EventRaisedEvent {
                            name: EVENT_NAME.into(),
                            input: Some(p.clone()),
                        })),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            actions.push(action(
                id,
                A::CompleteWorkflow(CompleteWorkflowAction {
                    workflow_status: OrchestrationStatus::ContinuedAsNew as i32,
                    result: Some(serde_json::to_string(&next).expect("serialisable")),
                    carryover_events,
                    ..Default::default()
                }),
            ));
        } else {
            actions.push(complete(
                id,
                OrchestrationStatus::Completed,
                Some(acc.join(",")),
            ));
        }
    }
    d.actions = actions;
    d
}

fn timer(
    id: i32,
    ms: u32,
    now: i64,
    scheduled: &HashMap<i32, (Expect, Option<i64>)>,
    expected: &mut HashMap<i32, Expect>,
    actions: &mut Vec<WorkflowAction>,
) {
    expected.insert(id, Expect::Timer);
    if !scheduled.contains_key(&id) {
        actions.push(action(
            id,
            A::CreateTimer(CreateTimerAction {
                fire_at: Some(from_micros(now + i64::from(ms) * 1000)),
                name: None,
                origin: None,
            }),
        ));
    }
}

/// Whether timer `id` fired; a `TimerFired` whose due time is not the one its `TimerCreated`
/// asked for belongs to another execution.
fn check_fired(
    instance_id: &str,
    id: i32,
    seen: &Seen,
    scheduled: &HashMap<i32, (Expect, Option<i64>)>,
    d: &mut Decision,
) -> bool {
    let Some(at) = seen.fired.get(&id) else {
        return false;
    };
    match scheduled.get(&id) {
        Some((Expect::Timer, Some(want))) if want == at => {}
        other => d.violations.push(format!(
            "{instance_id}: TimerFired for timer {id} due at {at} does not match its \
             TimerCreated ({other:?}): a timer of another execution"
        )),
    }
    true
}
