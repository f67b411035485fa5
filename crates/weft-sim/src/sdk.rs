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

/// What earlier turns scheduled, by action ID, with a timer's due time (µs).
type Scheduled = HashMap<i32, (Expect, Option<i64>)>;

/// Runs the program over `past` + `new` and returns this turn's actions.
pub fn decide(instance_id: &str, past: &[HistoryEvent], new: &[HistoryEvent]) -> Decision {
    let mut d = Decision::default();
    let all: Vec<&HistoryEvent> = past.iter().chain(new.iter()).collect();
    let Some(input) = read_input(instance_id, &all, &mut d) else {
        return d;
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
    let scheduled = scheduled_by(instance_id, past, &mut d.violations);
    // The SDK's deterministic clock: the latest WorkflowStarted.
    let now = all
        .iter()
        .rev()
        .find(|e| matches!(e.event_type, Some(EventType::WorkflowStarted(_))))
        .and_then(|e| e.timestamp.as_ref().map(to_micros))
        .unwrap_or(0);
    let delivered = deliver(&all, &input);
    let seen = &delivered.seen;
    if !seen.failed.is_empty() {
        d.violations.push(format!(
            "{instance_id}: activities never fail here, yet history has TaskFailed for {:?}",
            seen.failed
        ));
    }

    let mut run = Run {
        instance_id,
        input: &input,
        now,
        scheduled: &scheduled,
        seen,
        next_id: 1,
        expected: HashMap::new(),
        acc: input.acc.clone(),
        cursor: 0,
        failed: None,
        actions: Vec::new(),
        violations: Vec::new(),
    };
    let mut blocked = false;
    for (s, step) in steps.iter().enumerate() {
        let done = run.step(s, step);
        if run.failed.is_some() || !done {
            blocked = true;
            break;
        }
    }
    d.violations.append(&mut run.violations);

    // Whatever history scheduled must be what the program schedules at that ID.
    for (id, (exp, _)) in &scheduled {
        match run.expected.get(id) {
            Some(e) if e == exp => {}
            other => d.violations.push(format!(
                "{instance_id}: history has {exp:?} at ID {id}, the program has {other:?} \
                 (non-determinism: history does not belong to this execution)"
            )),
        }
    }

    let id = run.alloc();
    if let Some(reason) = seen.terminated.clone() {
        d.actions = vec![complete(id, OrchestrationStatus::Terminated, reason)];
        return d;
    }
    if let Some(why) = run.failed.take() {
        let mut a = complete(id, OrchestrationStatus::Failed, None);
        if let Some(A::CompleteWorkflow(c)) = &mut a.workflow_action_type {
            c.failure_details = Some(TaskFailureDetails {
                error_type: "SimChildFailed".into(),
                error_message: why,
                ..Default::default()
            });
        }
        run.actions.push(a);
    } else if !blocked {
        let last = run.finish(id, &delivered);
        run.actions.push(last);
    }
    d.actions = run.actions;
    d
}

/// The execution ID and the program input from the history's `ExecutionStarted`; `None` (with
/// a violation) if there is none or its input does not decode.
fn read_input(instance_id: &str, all: &[&HistoryEvent], d: &mut Decision) -> Option<Input> {
    let Some(started) = all.iter().find_map(|e| match &e.event_type {
        Some(EventType::ExecutionStarted(s)) => Some(s),
        _ => None,
    }) else {
        d.violations
            .push(format!("{instance_id}: work item without ExecutionStarted"));
        return None;
    };
    d.execution_id = started
        .workflow_instance
        .as_ref()
        .and_then(|w| w.execution_id.clone());
    match serde_json::from_str(started.input.as_deref().unwrap_or("")) {
        Ok(i) => Some(i),
        Err(e) => {
            d.violations
                .push(format!("{instance_id}: undecodable workflow input: {e}"));
            None
        }
    }
}

/// The scheduling events of earlier turns by ID; an ID used twice is a violation.
fn scheduled_by(
    instance_id: &str,
    past: &[HistoryEvent],
    violations: &mut Vec<String>,
) -> Scheduled {
    let mut scheduled = Scheduled::new();
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
            violations.push(format!(
                "{instance_id}: two scheduling events with ID {} in history",
                e.event_id
            ));
        }
    }
    scheduled
}

/// The events as the program sees them, and what a suspension still holds back.
struct Delivered<'a> {
    seen: Seen,
    /// Payloads seen, including those consumed by earlier generations.
    dedup: HashSet<String>,
    /// Events buffered by a suspension that was not resumed.
    buffer: Vec<&'a HistoryEvent>,
}

/// Delivers events in order, buffering them while suspended.
fn deliver<'a>(all: &[&'a HistoryEvent], input: &Input) -> Delivered<'a> {
    let mut seen = Seen::default();
    // Payloads consumed by earlier generations count as seen: a retried raise may land again.
    let mut dedup: HashSet<String> = input.acc.iter().cloned().collect();
    let mut suspended = false;
    let mut buffer: Vec<&HistoryEvent> = Vec::new();
    for &e in all {
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
    Delivered {
        seen,
        dedup,
        buffer,
    }
}

/// One run of the program's steps over what was delivered: the actions it takes, what it
/// expects at each ID, and its accumulated outputs.
struct Run<'a> {
    instance_id: &'a str,
    input: &'a Input,
    now: i64,
    scheduled: &'a Scheduled,
    seen: &'a Seen,
    next_id: i32,
    expected: HashMap<i32, Expect>,
    acc: Vec<String>,
    /// The next delivered event a `Step::Event` consumes.
    cursor: usize,
    failed: Option<String>,
    actions: Vec<WorkflowAction>,
    violations: Vec<String>,
}

impl Run<'_> {
    fn alloc(&mut self) -> i32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Runs step `s`; true if it is done (the program goes on).
    fn step(&mut self, s: usize, step: &Step) -> bool {
        match step {
            Step::Activity => self.activities(s, 1),
            Step::FanOut(k) => self.activities(s, *k as usize),
            Step::Timer(ms) => {
                let id = self.alloc();
                let fired = self.timer(id, *ms);
                if fired {
                    self.acc.push(TIMER_TOKEN.into());
                }
                fired
            }
            Step::Event => {
                if let Some(p) = self.seen.events.get(self.cursor) {
                    self.acc.push(p.clone());
                    self.cursor += 1;
                    true
                } else {
                    false
                }
            }
            Step::Child(child_steps) => self.child(s, child_steps),
            Step::Race(ms) => self.race(s, *ms),
        }
    }

    /// Schedules activity `j` of step `s` (unless history did) and returns its result if done.
    fn activity(&mut self, s: usize, j: usize) -> Option<String> {
        let id = self.alloc();
        let inp = activity_input(&self.input.salt, self.input.generation, s, j);
        self.expected.insert(id, Expect::Activity(inp.clone()));
        if !self.scheduled.contains_key(&id) {
            self.actions.push(action(
                id,
                A::ScheduleTask(ScheduleTaskAction {
                    name: ACTIVITY_NAME.into(),
                    input: Some(inp.clone()),
                    task_execution_id: format!("{}/{id}", self.instance_id),
                    ..Default::default()
                }),
            ));
        }
        let r = self.seen.completed.get(&id)?.clone().unwrap_or_default();
        if r != activity_result(&inp) {
            self.violations.push(format!(
                "{}: task {id} (input {inp}) completed with {r}: \
                 a result of another execution",
                self.instance_id
            ));
        }
        Some(r)
    }

    /// `k` activities (one, or a fan-out) whose results join into one output.
    fn activities(&mut self, s: usize, k: usize) -> bool {
        let mut results = Vec::new();
        for j in 0..k {
            if let Some(r) = self.activity(s, j) {
                results.push(r);
            }
        }
        if results.len() == k {
            self.acc.push(if k == 1 {
                results.remove(0)
            } else {
                fan_out_token(&results)
            });
            true
        } else {
            false
        }
    }

    /// Creates timer `id` (unless history did); true if it fired.
    fn timer(&mut self, id: i32, ms: u32) -> bool {
        timer(
            id,
            ms,
            self.now,
            self.scheduled,
            &mut self.expected,
            &mut self.actions,
        );
        match check_fired(self.instance_id, id, self.seen, self.scheduled) {
            Ok(fired) => fired,
            Err(v) => {
                self.violations.push(v);
                true
            }
        }
    }

    fn child(&mut self, s: usize, child_steps: &[Step]) -> bool {
        let id = self.alloc();
        let child_id = weft_core::ids::default_child_id(self.instance_id, id);
        self.expected.insert(id, Expect::Child(child_id.clone()));
        if !self.scheduled.contains_key(&id) {
            let ci = child_input(self.input, s, child_steps);
            self.actions.push(action(
                id,
                A::CreateChildWorkflow(CreateChildWorkflowAction {
                    instance_id: child_id,
                    name: WORKFLOW_NAME.into(),
                    input: Some(serde_json::to_string(&ci).expect("serialisable")),
                    ..Default::default()
                }),
            ));
        }
        match self.seen.child_done.get(&id) {
            Some(Ok(out)) => {
                self.acc.push(child_token(out.as_deref().unwrap_or("")));
                true
            }
            Some(Err(why)) => {
                self.failed = Some(format!("child {id} failed: {why}"));
                false
            }
            None => false,
        }
    }

    /// An activity against a timer: done when either is.
    fn race(&mut self, s: usize, ms: u32) -> bool {
        let a = self.alloc();
        let t = self.alloc();
        let inp = activity_input(&self.input.salt, self.input.generation, s, 0);
        self.expected.insert(a, Expect::Activity(inp.clone()));
        if !self.scheduled.contains_key(&a) {
            self.actions.push(action(
                a,
                A::ScheduleTask(ScheduleTaskAction {
                    name: ACTIVITY_NAME.into(),
                    input: Some(inp.clone()),
                    task_execution_id: format!("{}/{a}", self.instance_id),
                    ..Default::default()
                }),
            ));
        }
        let fired = self.timer(t, ms);
        if let Some(r) = self.seen.completed.get(&a) {
            let r = r.clone().unwrap_or_default();
            if r != activity_result(&inp) {
                self.violations.push(format!(
                    "{}: task {a} (input {inp}) completed with {r}: \
                     a result of another execution",
                    self.instance_id
                ));
            }
        }
        let won = fired || self.seen.completed.contains_key(&a);
        if won {
            self.acc.push(RACE_TOKEN.into());
        }
        won
    }

    /// The closing action of a program that ran to its end: continue as new into the next
    /// generation, or complete with the outputs.
    fn finish(&self, id: i32, delivered: &Delivered<'_>) -> WorkflowAction {
        let input = self.input;
        if input.generation + 1 >= input.program.gens.len() {
            return complete(id, OrchestrationStatus::Completed, Some(self.acc.join(",")));
        }
        let next = Input {
            generation: input.generation + 1,
            acc: self.acc.clone(),
            ..input.clone()
        };
        // Events still buffered by a suspension in this turn are carried over too.
        let mut pending: Vec<String> = self.seen.events[self.cursor..].to_vec();
        for b in &delivered.buffer {
            if let Some(EventType::EventRaised(r)) = &b.event_type
                && r.name.eq_ignore_ascii_case(EVENT_NAME)
            {
                let p = r.input.clone().unwrap_or_default();
                if !delivered.dedup.contains(&p) && !pending.contains(&p) {
                    pending.push(p);
                }
            }
        }
        let carryover_events = if input.program.carry {
            pending
                .iter()
                .map(|p| HistoryEvent {
                    event_id: -1,
                    timestamp: Some(from_micros(self.now)),
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
        action(
            id,
            A::CompleteWorkflow(CompleteWorkflowAction {
                workflow_status: OrchestrationStatus::ContinuedAsNew as i32,
                result: Some(serde_json::to_string(&next).expect("serialisable")),
                carryover_events,
                ..Default::default()
            }),
        )
    }
}

fn timer(
    id: i32,
    ms: u32,
    now: i64,
    scheduled: &Scheduled,
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
/// asked for belongs to another execution (the violation; the timer did fire).
fn check_fired(
    instance_id: &str,
    id: i32,
    seen: &Seen,
    scheduled: &Scheduled,
) -> Result<bool, String> {
    let Some(at) = seen.fired.get(&id) else {
        return Ok(false);
    };
    match scheduled.get(&id) {
        Some((Expect::Timer, Some(want))) if want == at => Ok(true),
        other => Err(format!(
            "{instance_id}: TimerFired for timer {id} due at {at} does not match its \
             TimerCreated ({other:?}): a timer of another execution"
        )),
    }
}
