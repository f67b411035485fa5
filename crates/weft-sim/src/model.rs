//! The reference model: what an instance's output must be, as a pure function of its input and
//! the events raised on it (in the order they were raised).

use crate::program::{Input, Program, Step, activity_input, activity_result, event_payload};

/// The input of the child started by step `step` of generation `generation`.
pub fn child_input(parent: &Input, step: usize, steps: &[Step]) -> Input {
    Input {
        program: Program {
            gens: vec![steps.to_vec()],
            carry: false,
        },
        salt: format!("{}/{}/{step}c", parent.salt, parent.generation),
        generation: 0,
        acc: Vec::new(),
    }
}

/// The output token of each step kind, shared by the model and the simulated SDK.
pub fn fan_out_token(results: &[String]) -> String {
    results.join("+")
}

pub fn child_token(output: &str) -> String {
    format!("c({output})")
}

pub const TIMER_TOKEN: &str = "t";
pub const RACE_TOKEN: &str = "race";

/// The output a run of `input` to completion produces when the `i`-th event step (counting
/// across generations) receives the `i`-th event raised.
pub fn expected_output(input: &Input) -> String {
    let mut acc = input.acc.clone();
    let mut events = 0usize;
    for g in input.generation..input.program.gens.len() {
        let here = Input {
            generation: g,
            ..input.clone()
        };
        for (s, step) in input.program.gens[g].iter().enumerate() {
            acc.push(match step {
                Step::Activity => activity_result(&activity_input(&input.salt, g, s, 0)),
                Step::FanOut(k) => fan_out_token(
                    &(0..*k as usize)
                        .map(|k| activity_result(&activity_input(&input.salt, g, s, k)))
                        .collect::<Vec<_>>(),
                ),
                Step::Timer(_) => TIMER_TOKEN.to_string(),
                Step::Event => {
                    events += 1;
                    event_payload(&input.salt, events - 1)
                }
                Step::Child(steps) => child_token(&expected_output(&child_input(&here, s, steps))),
                Step::Race(_) => RACE_TOKEN.to_string(),
            });
        }
    }
    acc.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_of_a_two_generation_program() {
        let input = Input {
            program: Program {
                gens: vec![
                    vec![Step::Activity, Step::Event],
                    vec![
                        Step::Child(vec![Step::Timer(5)]),
                        Step::FanOut(2),
                        Step::Event,
                    ],
                ],
                carry: true,
            },
            salt: "x#0".into(),
            generation: 0,
            acc: vec![],
        };
        assert_eq!(
            expected_output(&input),
            "r[x#0/0/0/0],x#0:p0,c(t),r[x#0/1/1/0]+r[x#0/1/1/1],x#0:p1"
        );
    }
}
