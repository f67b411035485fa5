//! Invariants every history must satisfy, whatever faults happened. Kept apart from the
//! generator and driver so the rules read as a list; each returns what it found wrong.

use crate::program::activity_result;
use std::collections::{HashMap, HashSet};
use weft_core::time::to_micros;
use weft_proto::durabletask::HistoryEvent;
use weft_proto::durabletask::history_event::EventType;

/// Checks one execution's history (committed, or as a work item carried it).
///
/// - exactly one `ExecutionStarted`, at the start, of `execution` when given;
/// - at most one `ExecutionCompleted` (exactly one when `finished`), and nothing after it;
/// - scheduling event IDs (activities, timers, children) are unique;
/// - every `TaskCompleted`/`TaskFailed`, `TimerFired` and child result answers a scheduling
///   event earlier in the same history, at most once;
/// - an activity result is the result of *that* activity's input and a `TimerFired` carries
///   the due time its `TimerCreated` asked for: no result of one execution in another;
/// - raised events appear in the order they were raised, each once unless its raise was
///   retried after a lost reply (`retried` holds those payloads), all of this incarnation.
pub fn check_history(
    who: &str,
    finished: bool,
    execution: Option<&str>,
    salt: Option<&str>,
    events: &[HistoryEvent],
    retried: &HashSet<String>,
) -> Vec<String> {
    let mut v = Vec::new();
    let mut bad = |m: String| v.push(format!("{who}: {m}"));
    check_framing(&mut bad, finished, execution, events);
    let mut ledger = Ledger::default();
    for e in events {
        ledger.take(&mut bad, e, salt, retried);
    }
    v
}

/// One `ExecutionStarted` at the start (of `execution` when given); at most one
/// `ExecutionCompleted` (one when `finished`), last.
fn check_framing(
    bad: &mut impl FnMut(String),
    finished: bool,
    execution: Option<&str>,
    events: &[HistoryEvent],
) {
    let started: Vec<usize> = positions(events, |t| matches!(t, EventType::ExecutionStarted(_)));
    match started.as_slice() {
        [i] if *i <= 1 => {}
        [i] => bad(format!(
            "ExecutionStarted at position {i}, not at the start"
        )),
        other => bad(format!("{} ExecutionStarted events (want 1)", other.len())),
    }
    if let (Some(exec), Some(&i)) = (execution, started.first())
        && let Some(EventType::ExecutionStarted(s)) = &events[i].event_type
    {
        let got = s
            .workflow_instance
            .as_ref()
            .and_then(|w| w.execution_id.as_deref());
        if got != Some(exec) {
            bad(format!(
                "ExecutionStarted has execution {got:?}, the instance is at {exec}"
            ));
        }
    }
    let completed = positions(events, |t| matches!(t, EventType::ExecutionCompleted(_)));
    match (finished, completed.len()) {
        (_, 0 | 1) if !finished || completed.len() == 1 => {}
        (true, 0) => bad("a finished execution without ExecutionCompleted".into()),
        (_, n) => bad(format!("{n} ExecutionCompleted events")),
    }
    if let Some(&i) = completed.first()
        && i + 1 != events.len()
    {
        bad(format!(
            "{} events after ExecutionCompleted",
            events.len() - i - 1
        ));
    }
}

/// What a history has scheduled and answered so far, read event by event.
#[derive(Default)]
struct Ledger {
    /// Activity ID → its input.
    tasks: HashMap<i32, String>,
    /// Timer ID → its due time (µs).
    timers: HashMap<i32, i64>,
    children: HashSet<i32>,
    /// Every scheduling event ID.
    ids: HashSet<i32>,
    task_done: HashSet<i32>,
    timer_done: HashSet<i32>,
    child_done: HashSet<i32>,
    /// The highest raise index delivered so far.
    last_event: Option<usize>,
    payloads: HashSet<String>,
}

impl Ledger {
    fn take(
        &mut self,
        bad: &mut impl FnMut(String),
        e: &HistoryEvent,
        salt: Option<&str>,
        retried: &HashSet<String>,
    ) {
        let id = e.event_id;
        match &e.event_type {
            Some(EventType::TaskScheduled(t)) => {
                self.schedule(bad, id);
                self.tasks.insert(id, t.input.clone().unwrap_or_default());
            }
            Some(EventType::TimerCreated(t)) => {
                self.schedule(bad, id);
                self.timers
                    .insert(id, t.fire_at.as_ref().map(to_micros).unwrap_or(0));
            }
            Some(EventType::ChildWorkflowInstanceCreated(_)) => {
                self.schedule(bad, id);
                self.children.insert(id);
            }
            Some(EventType::TaskCompleted(c)) => {
                let t = c.task_scheduled_id;
                match self.tasks.get(&t) {
                    None => bad(format!("TaskCompleted for task {t} that was not scheduled")),
                    Some(input) => {
                        let got = c.result.clone().unwrap_or_default();
                        if got != activity_result(input) {
                            bad(format!(
                                "task {t} (input {input}) completed with {got}: \
                                 a result of another execution"
                            ));
                        }
                    }
                }
                if !self.task_done.insert(t) {
                    bad(format!("task {t} completed twice"));
                }
            }
            Some(EventType::TaskFailed(c)) => {
                let t = c.task_scheduled_id;
                if !self.tasks.contains_key(&t) {
                    bad(format!("TaskFailed for task {t} that was not scheduled"));
                }
                if !self.task_done.insert(t) {
                    bad(format!("task {t} completed twice"));
                }
            }
            Some(EventType::TimerFired(f)) => {
                let t = f.timer_id;
                let at = f.fire_at.as_ref().map(to_micros).unwrap_or(0);
                match self.timers.get(&t) {
                    None => bad(format!("TimerFired for timer {t} that was not created")),
                    Some(want) if *want != at => bad(format!(
                        "TimerFired for timer {t} due {at}, created for {want}: \
                         a timer of another execution"
                    )),
                    Some(_) => {}
                }
                if !self.timer_done.insert(t) {
                    bad(format!("timer {t} fired twice"));
                }
            }
            Some(EventType::ChildWorkflowInstanceCompleted(c)) => child_result(
                bad,
                &self.children,
                &mut self.child_done,
                c.task_scheduled_id,
            ),
            Some(EventType::ChildWorkflowInstanceFailed(c)) => child_result(
                bad,
                &self.children,
                &mut self.child_done,
                c.task_scheduled_id,
            ),
            Some(EventType::EventRaised(r)) => {
                self.raised(bad, r.input.clone().unwrap_or_default(), salt, retried)
            }
            _ => {}
        }
    }

    /// A scheduling event: its ID must be new.
    fn schedule(&mut self, bad: &mut impl FnMut(String), id: i32) {
        if !self.ids.insert(id) {
            bad(format!("scheduling event ID {id} used twice"));
        }
    }

    /// A raised event: of this incarnation, once unless retried, in raise order.
    fn raised(
        &mut self,
        bad: &mut impl FnMut(String),
        p: String,
        salt: Option<&str>,
        retried: &HashSet<String>,
    ) {
        let Some((s, i)) = parse_payload(&p) else {
            bad(format!("event with a foreign payload {p:?}"));
            return;
        };
        if salt.is_some_and(|want| want != s) {
            bad(format!("event {p} of another incarnation"));
        }
        if !self.payloads.insert(p.clone()) && !retried.contains(&p) {
            bad(format!("event {p} delivered twice (raised once)"));
        }
        if let Some(last) = self.last_event
            && i < last
        {
            bad(format!("event {p} after event #{last}: out of raise order"));
        }
        self.last_event = Some(self.last_event.map_or(i, |l| l.max(i)));
    }
}

fn child_result(
    bad: &mut impl FnMut(String),
    created: &HashSet<i32>,
    done: &mut HashSet<i32>,
    id: i32,
) {
    if !created.contains(&id) {
        bad(format!("child result for {id}, which was not created"));
    }
    if !done.insert(id) {
        bad(format!("child {id} finished twice"));
    }
}

fn positions(events: &[HistoryEvent], f: impl Fn(&EventType) -> bool) -> Vec<usize> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.event_type.as_ref().is_some_and(&f))
        .map(|(i, _)| i)
        .collect()
}

/// `(salt, index)` of a payload made by [`crate::program::event_payload`].
pub fn parse_payload(p: &str) -> Option<(&str, usize)> {
    let (salt, n) = p.rsplit_once(":p")?;
    Some((salt, n.parse().ok()?))
}

/// The salt of an instance's input (each execution's `ExecutionStarted` carries it).
pub fn salt_of(events: &[HistoryEvent]) -> Option<String> {
    events.iter().find_map(|e| match &e.event_type {
        Some(EventType::ExecutionStarted(s)) => {
            serde_json::from_str::<crate::program::Input>(s.input.as_deref()?)
                .ok()
                .map(|i| i.salt)
        }
        _ => None,
    })
}

/// Polls of the timer loop (`claim_due_reminders` + `next_reminder_due`) per second a run may
/// average: it sleeps until the next due reminder, so even a run full of short timers stays far
/// below this; a loop that spins on a leased reminder makes hundreds per second.
pub const MAX_TIMER_POLLS_PER_SEC: f64 = 100.0;

/// The timer loop must not spin (bug 7.6's symptom): `None` when `polls` over `elapsed` is fine.
pub fn check_timer_loop(polls: u64, elapsed: std::time::Duration) -> Option<String> {
    let rate = polls as f64 / elapsed.as_secs_f64().max(1.0);
    (polls > 1000 && rate > MAX_TIMER_POLLS_PER_SEC).then(|| {
        format!(
            "the timer loop polled the store {polls} times in {:.1}s ({rate:.0}/s): it spins",
            elapsed.as_secs_f64()
        )
    })
}

/// A one-line picture of a history for failure reports: `kind[id]` per event, with task,
/// timer and child references and event payloads.
pub fn describe(events: &[HistoryEvent]) -> String {
    events
        .iter()
        .map(|e| {
            let k = weft_core::history::kind(e);
            let detail = match &e.event_type {
                Some(EventType::TaskCompleted(c)) => format!("→{}", c.task_scheduled_id),
                Some(EventType::TaskFailed(c)) => format!("→{}", c.task_scheduled_id),
                Some(EventType::TimerFired(t)) => format!("→{}", t.timer_id),
                Some(EventType::ChildWorkflowInstanceCompleted(c)) => {
                    format!("→{}", c.task_scheduled_id)
                }
                Some(EventType::ChildWorkflowInstanceFailed(c)) => {
                    format!("→{}", c.task_scheduled_id)
                }
                Some(EventType::EventRaised(r)) => {
                    format!("({})", r.input.as_deref().unwrap_or(""))
                }
                Some(EventType::ExecutionCompleted(c)) => format!("(status {})", c.workflow_status),
                _ => String::new(),
            };
            if e.event_id >= 0 {
                format!("{k}#{}{detail}", e.event_id)
            } else {
                format!("{k}{detail}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::durabletask::{
        EventRaisedEvent, ExecutionStartedEvent, TaskCompletedEvent, TaskScheduledEvent,
    };

    fn ev(id: i32, t: EventType) -> HistoryEvent {
        HistoryEvent {
            event_id: id,
            timestamp: None,
            router: None,
            event_type: Some(t),
        }
    }

    #[test]
    fn catches_leaks_duplicates_and_reordering() {
        let raised = |p: &str| {
            ev(
                -1,
                EventType::EventRaised(EventRaisedEvent {
                    name: "ev".into(),
                    input: Some(p.into()),
                }),
            )
        };
        let good = vec![
            ev(
                -1,
                EventType::ExecutionStarted(ExecutionStartedEvent::default()),
            ),
            ev(
                1,
                EventType::TaskScheduled(TaskScheduledEvent {
                    input: Some("a".into()),
                    ..Default::default()
                }),
            ),
            ev(
                -1,
                EventType::TaskCompleted(TaskCompletedEvent {
                    task_scheduled_id: 1,
                    result: Some(activity_result("a")),
                    ..Default::default()
                }),
            ),
            raised("x:p0"),
            raised("x:p1"),
        ];
        let none = HashSet::new();
        assert!(check_history("i", false, None, Some("x"), &good, &none).is_empty());
        let mut leak = good.clone();
        leak[2] = ev(
            -1,
            EventType::TaskCompleted(TaskCompletedEvent {
                task_scheduled_id: 1,
                result: Some(activity_result("b")),
                ..Default::default()
            }),
        );
        assert_eq!(
            check_history("i", false, None, Some("x"), &leak, &none).len(),
            1
        );
        let mut twice = good.clone();
        twice.push(good[2].clone());
        assert_eq!(
            check_history("i", false, None, Some("x"), &twice, &none).len(),
            1
        );
        let mut order = good.clone();
        order.swap(3, 4);
        assert_eq!(
            check_history("i", false, None, Some("x"), &order, &none).len(),
            1
        );
        let mut dup = good.clone();
        dup.push(raised("x:p1"));
        assert_eq!(
            check_history("i", false, None, Some("x"), &dup, &none).len(),
            1
        );
        let retried: HashSet<String> = ["x:p1".to_string()].into();
        assert!(check_history("i", false, None, Some("x"), &dup, &retried).is_empty());
    }
}
