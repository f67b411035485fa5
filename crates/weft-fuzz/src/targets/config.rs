//! Target `config`: the Configuration YAML parser (`weft-config`), and the Go durations and
//! limits it reads.

use crate::harness::Target;
use std::time::Duration;
use weft_config::{format_go_duration, parse, parse_go_duration, parse_limit};

pub struct Config;

/// A duration printed and read back is the same: exactly while it fits an f64 mantissa in
/// nanoseconds (about 104 days), within a part in 10^12 beyond (the parser sums in f64).
fn round_trips(d: Duration) -> Result<(), String> {
    let text = format_go_duration(d);
    let back = parse_go_duration(&text)
        .map_err(|e| format!("{d:?} printed as '{text}' does not parse: {e}"))?;
    let (a, b) = (d.as_nanos() as f64, back.as_nanos() as f64);
    if (a - b).abs() > (a * 1e-12).max(0.0) {
        return Err(format!("{d:?} printed as '{text}' reads back as {back:?}"));
    }
    Ok(())
}

impl Target for Config {
    fn name(&self) -> &'static str {
        "config"
    }

    fn run(&mut self, data: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(data);
        match parse(&text, "fuzz.yaml") {
            Ok(p) => {
                let r = p.workflow.state_retention_policy;
                for d in [r.any_terminal, r.completed, r.failed, r.terminated]
                    .into_iter()
                    .flatten()
                {
                    round_trips(d)?;
                }
                let w = &p.workflow;
                let limits = w.workflow_concurrency_limits.iter();
                if let Some(l) = limits
                    .chain(&w.activity_concurrency_limits)
                    .find(|l| l.max_concurrent == 0 || l.name.is_empty())
                {
                    return Err(format!("accepted an invalid limit {l:?}"));
                }
            }
            Err(e) if !e.0.starts_with("fuzz.yaml") => {
                return Err(format!("error does not name the file: {e}"));
            }
            Err(_) => {}
        }
        // Each line alone as a duration and as a limit, as flags and keys pass them.
        for line in text.lines().take(8) {
            let value = line.rsplit(':').next().unwrap_or(line);
            if let Ok(d) = parse_go_duration(value) {
                round_trips(d)?;
            }
            if let Ok(n) = parse_limit(value)
                && n == 0
            {
                return Err(format!("limit '{value}' parsed as 0"));
            }
        }
        Ok(())
    }
}
