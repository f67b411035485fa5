//! What the cluster page reads from this sidecar's own metrics: a ring of step-counter samples
//! (taken every few seconds, turned into steps per second) and the concurrency-limit gauges.

use serde::Serialize;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Seconds between samples, and how many are kept (ten minutes).
const EVERY: Duration = Duration::from_secs(5);
const KEEP: usize = 121;

/// The counters that make a step: a committed workflow turn, a completed activity.
const TURNS: &str = "weft_workflow_turns_total";
const ACTIVITIES: &str = "weft_activities_completed_total";

#[derive(Clone, Copy)]
struct Sample {
    unix_ms: u64,
    turns: f64,
    activities: f64,
}

/// The sample ring. The counters are the process's (one metrics recorder per process), so there
/// is one ring and one sampler per process, however many routers are built (the fuzzer builds
/// one per request).
pub(crate) struct Rate {
    ring: Mutex<VecDeque<Sample>>,
}

static RING: OnceLock<Arc<Rate>> = OnceLock::new();
/// Whether a sampler task is alive (cleared when its runtime drops it, so a later runtime of the
/// same process starts a new one).
static SAMPLING: AtomicBool = AtomicBool::new(false);

struct Sampling;

impl Drop for Sampling {
    fn drop(&mut self) {
        SAMPLING.store(false, Ordering::SeqCst);
    }
}

impl Rate {
    /// The process's ring, with its sampler running on the current tokio runtime (with none,
    /// the ring stays empty and the page says it is collecting samples).
    pub(crate) fn start() -> Arc<Rate> {
        let rate = RING
            .get_or_init(|| {
                Arc::new(Rate {
                    ring: Mutex::new(VecDeque::with_capacity(KEEP)),
                })
            })
            .clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current()
            && !SAMPLING.swap(true, Ordering::SeqCst)
        {
            rt.spawn(sample(rate.clone()));
        }
        rate
    }

    fn push(&self, s: Sample) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == KEEP {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// Steps per second between consecutive samples, oldest first.
    pub(crate) fn samples(&self) -> Value {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let points: Vec<Value> = ring
            .iter()
            .zip(ring.iter().skip(1))
            .map(|(a, b)| {
                let secs = (b.unix_ms.saturating_sub(a.unix_ms) as f64 / 1000.0).max(0.001);
                // A counter only drops when the process restarted its recorder: count from zero.
                let per = |x: f64, y: f64| if y >= x { (y - x) / secs } else { y / secs };
                json!({
                    "t": b.unix_ms,
                    "turns": per(a.turns, b.turns),
                    "activities": per(a.activities, b.activities),
                })
            })
            .collect();
        json!({"intervalSeconds": EVERY.as_secs(), "points": points})
    }
}

/// Samples the step counters every [`EVERY`] for as long as the runtime runs the task (it ends
/// with the runtime: a process's sidecar runs until it exits).
async fn sample(rate: Arc<Rate>) {
    let _alive = Sampling;
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let Some(h) = crate::telemetry::metrics_handle() else {
            return;
        };
        let text = h.render();
        rate.push(Sample {
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            turns: counter_sum(&text, TURNS),
            activities: counter_sum(&text, ACTIVITIES),
        });
    }
}

/// A series' labels, in order.
type Labels = Vec<(String, String)>;

/// One line of Prometheus text: name, labels, value.
fn parse_line(line: &str) -> Option<(&str, Labels, f64)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = head.split_once('{') else {
        return Some((head, Vec::new(), value));
    };
    let body = rest.strip_suffix('}')?;
    Some((name, parse_labels(body), value))
}

/// `k="v",k2="v2"` with the exposition format's escapes (`\\`, `\"`, `\n`).
fn parse_labels(body: &str) -> Labels {
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            return out;
        }
        let mut val = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => val.push('\n'),
                    Some(o) => val.push(o),
                    None => break,
                },
                o => val.push(o),
            }
        }
        out.push((key.trim_start_matches(',').trim().to_string(), val));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// The sum of every series of counter `name`.
fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(parse_line)
        .filter(|(n, _, _)| *n == name)
        .map(|(_, _, v)| v)
        .sum()
}

/// One concurrency limit as the cluster page shows it.
#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Limit {
    kind: String,
    /// `sidecar`, `cluster`, `name`, or `all` (every job of the kind, limited or not).
    scope: String,
    name: String,
    in_flight: f64,
    waiting: f64,
    /// Cluster-wide limits: the slots this sidecar leased.
    slots_held: Option<f64>,
}

/// The limit gauges in a metrics rendering (`weft_limit_*`, and `weft_work_*` as scope `all`).
pub(crate) fn limits_from(text: &str) -> Vec<Limit> {
    let mut out: Vec<Limit> = Vec::new();
    for (name, labels, v) in text.lines().filter_map(parse_line) {
        let get = |k: &str| {
            labels
                .iter()
                .find(|(lk, _)| lk == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let (scope, field) = match name {
            "weft_work_in_flight" => ("all".to_string(), 0),
            "weft_work_waiting" => ("all".to_string(), 1),
            "weft_limit_in_flight" => (get("limit"), 0),
            "weft_limit_waiting" => (get("limit"), 1),
            "weft_limit_slots_held" => (get("limit"), 2),
            _ => continue,
        };
        let (kind, lname) = (get("kind"), get("name"));
        let i = match out
            .iter()
            .position(|l| l.kind == kind && l.scope == scope && l.name == lname)
        {
            Some(i) => i,
            None => {
                out.push(Limit {
                    kind,
                    scope,
                    name: lname,
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        match field {
            0 => out[i].in_flight = v,
            1 => out[i].waiting = v,
            _ => out[i].slots_held = Some(v),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE weft_workflow_turns_total counter\n\
        weft_workflow_turns_total 12\n\
        weft_activities_completed_total{app=\"a\"} 3\n\
        weft_activities_completed_total{app=\"b\"} 4\n\
        weft_work_in_flight{kind=\"activity\"} 2\n\
        weft_limit_in_flight{kind=\"activity\",limit=\"name\",name=\"pay, \\\"fast\\\"\"} 1\n\
        weft_limit_waiting{kind=\"activity\",limit=\"name\",name=\"pay, \\\"fast\\\"\"} 5\n\
        weft_limit_slots_held{kind=\"activity\",limit=\"name\",name=\"pay, \\\"fast\\\"\"} 2\n";

    #[test]
    fn counters_are_summed_over_their_series() {
        assert_eq!(counter_sum(TEXT, TURNS), 12.0);
        assert_eq!(counter_sum(TEXT, ACTIVITIES), 7.0);
        assert_eq!(counter_sum(TEXT, "absent_total"), 0.0);
    }

    #[test]
    fn limit_gauges_are_grouped_per_limit_with_escaped_names() {
        let l = limits_from(TEXT);
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!((l[0].scope.as_str(), l[0].in_flight), ("all", 2.0));
        assert_eq!(l[1].name, "pay, \"fast\"");
        assert_eq!(
            (l[1].in_flight, l[1].waiting, l[1].slots_held),
            (1.0, 5.0, Some(2.0))
        );
    }

    #[test]
    fn rates_are_per_second_between_samples() {
        let r = Rate {
            ring: Mutex::new(VecDeque::new()),
        };
        for (ms, t) in [(0, 0.0), (5000, 50.0), (10_000, 60.0)] {
            r.push(Sample {
                unix_ms: ms,
                turns: t,
                activities: 0.0,
            });
        }
        let v = r.samples();
        assert_eq!(v["points"][0]["turns"], 10.0);
        assert_eq!(v["points"][1]["turns"], 2.0);
    }
}
