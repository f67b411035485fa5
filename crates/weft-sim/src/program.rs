//! The random workflow programs the simulation runs, the scenario around each instance (events,
//! terminate, suspend/resume, purge and re-create), and the generator that draws them from a seed.

use crate::known_bugs::Enabled;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// One step of a generation of a workflow program. Steps run one after another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Step {
    /// One activity; appends its result.
    Activity,
    /// Several activities scheduled at once; appends their results in order.
    FanOut(u8),
    /// A durable timer of this many milliseconds; appends `t`.
    Timer(u32),
    /// Waits for the next external event named [`EVENT_NAME`]; appends its payload.
    Event,
    /// A child workflow running these steps; appends `c(<child output>)`.
    Child(Vec<Step>),
    /// An activity raced against a timer of this many ms; whichever ends first wins, the loser
    /// stays outstanding. Appends `race`.
    Race(u32),
}

/// A workflow program: one list of steps per generation; every generation but the last ends
/// with continue-as-new, carrying unconsumed events over when `carry` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub gens: Vec<Vec<Step>>,
    pub carry: bool,
}

/// The workflow input: the program, where it is, and what it has produced so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    pub program: Program,
    /// Makes every activity input and event payload unique to this incarnation of the instance,
    /// so a result that reaches the wrong execution changes the output.
    pub salt: String,
    pub generation: usize,
    /// Output tokens of the previous generations.
    pub acc: Vec<String>,
}

pub const WORKFLOW_NAME: &str = "sim";
pub const ACTIVITY_NAME: &str = "act";
pub const EVENT_NAME: &str = "ev";

/// What an activity returns for an input: a pure function, so results are checkable anywhere.
pub fn activity_result(input: &str) -> String {
    format!("r[{input}]")
}

/// The input of activity `k` of step `step` in generation `generation`.
pub fn activity_input(salt: &str, generation: usize, step: usize, k: usize) -> String {
    format!("{salt}/{generation}/{step}/{k}")
}

/// The payload of the `i`-th event raised on an incarnation.
pub fn event_payload(salt: &str, i: usize) -> String {
    format!("{salt}:p{i}")
}

/// The scenario of one instance ID: one or two incarnations (purge and re-create).
#[derive(Debug, Clone)]
pub struct Scenario {
    pub instance_id: String,
    pub incarnations: Vec<Incarnation>,
}

/// One incarnation of an instance: its program and what the client does to it.
#[derive(Debug, Clone)]
pub struct Incarnation {
    pub input: Input,
    /// Delay (ms) before raising each event, in order. Events of a program without carry-over
    /// are raised only once the generation that consumes them runs (see `gate`).
    pub event_delays: Vec<u64>,
    /// Generation consuming each event (to gate raising on it).
    pub event_gens: Vec<usize>,
    /// Raise event `i` only once generation `event_gens[i]` runs.
    pub gate: bool,
    /// Terminate after this many ms (recursive or not).
    pub terminate: Option<(u64, bool)>,
    /// Suspend after `.0` ms, resume `.1` ms later.
    pub suspend: Option<(u64, u64)>,
}

impl Incarnation {
    pub fn event_count(&self) -> usize {
        self.event_delays.len()
    }

    pub fn has_children(&self) -> bool {
        self.input
            .program
            .gens
            .iter()
            .flatten()
            .any(|s| matches!(s, Step::Child(_)))
    }
}

/// Draws the scenarios of one seed.
pub fn generate(rng: &mut Rng, tag: &str, instances: usize, on: &Enabled) -> Vec<Scenario> {
    (0..instances)
        .map(|i| {
            let instance_id = format!("{tag}-{i}");
            let recreate = on.purge_recreate && rng.chance(25);
            let n = if recreate { 2 } else { 1 };
            let mut incarnations: Vec<Incarnation> = (0..n)
                .map(|k| incarnation(rng, format!("{instance_id}#{k}"), on))
                .collect();
            // A terminated parent leaves its children running; their results must not reach
            // the re-created instance (bug 7.3), and purging them must be safe (bug 7.5).
            if n > 1 && !(on.bug("7.3") && on.bug("7.5")) && incarnations[0].has_children() {
                incarnations[0].terminate = None;
            }
            Scenario {
                instance_id,
                incarnations,
            }
        })
        .collect()
}

fn incarnation(rng: &mut Rng, salt: String, on: &Enabled) -> Incarnation {
    // The shape of bug 7.1: wait for one event, continue as new, again and again, fed events
    // raised back to back.
    let event_loop = on.continue_as_new && on.events && rng.chance(15);
    let gens = if event_loop {
        rng.range(3, 5) as usize
    } else if on.continue_as_new && rng.chance(40) {
        rng.range(2, 3) as usize
    } else {
        1
    };
    let carry = gens > 1 && rng.chance(if event_loop { 75 } else { 50 });
    let program = Program {
        gens: (0..gens)
            .map(|g| {
                if event_loop {
                    vec![Step::Event]
                } else {
                    steps(rng, g + 1 == gens, on, 1)
                }
            })
            .collect(),
        carry,
    };
    let mut event_gens = Vec::new();
    for (g, steps) in program.gens.iter().enumerate() {
        event_gens.extend(steps.iter().filter(|s| **s == Step::Event).map(|_| g));
    }
    let event_delays = event_gens
        .iter()
        .map(|_| {
            if event_loop || rng.chance(40) {
                0 // back to back
            } else {
                rng.range(1, 120)
            }
        })
        .collect();
    // Raising the events of a later generation early is well-defined only when unconsumed
    // events are carried over; without carry-over they would be dropped at continue-as-new.
    let gate = !carry || !on.bug("7.1");
    let terminate = (on.terminate && rng.chance(15)).then(|| (rng.range(0, 400), rng.chance(50)));
    let suspend = (on.suspend && rng.chance(20)).then(|| (rng.range(0, 300), rng.range(10, 300)));
    Incarnation {
        input: Input {
            program,
            salt,
            generation: 0,
            acc: Vec::new(),
        },
        event_delays,
        event_gens,
        gate,
        terminate,
        suspend,
    }
}

fn steps(rng: &mut Rng, last_gen: bool, on: &Enabled, depth: u32) -> Vec<Step> {
    let n = rng.range(1, 4);
    let mut out = Vec::new();
    for _ in 0..n {
        let roll = rng.below(100);
        let step = match roll {
            0..30 => Step::Activity,
            30..45 => Step::FanOut(rng.range(2, 4) as u8),
            45..60 => Step::Timer(rng.range(10, 150) as u32),
            60..80 if depth == 1 && on.events => Step::Event,
            80..90 if depth == 1 && on.children => {
                let mut child = steps(rng, true, on, depth + 1);
                child.retain(|s| !matches!(s, Step::Event | Step::Child(_)));
                if child.is_empty() {
                    child.push(Step::Activity);
                }
                Step::Child(child)
            }
            // A race leaves its loser outstanding: across continue-as-new that needs bug 7.3
            // fixed (results of one execution must not reach the next).
            90..100 if on.race && (last_gen || on.bug("7.3")) => {
                Step::Race(rng.range(5, 120) as u32)
            }
            _ => Step::Activity,
        };
        out.push(step);
    }
    out
}
