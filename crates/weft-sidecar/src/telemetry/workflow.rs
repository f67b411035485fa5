//! Dapr's workflow metrics (`dapr_runtime_workflow_*`: daprd's names, labels, statuses and
//! millisecond buckets, so Dapr's dashboards work unchanged) and Weft's own latency histograms
//! (`weft_*_seconds`) of the stages a step goes through.

use std::sync::OnceLock;
use std::time::Duration;

/// daprd's default latency buckets (milliseconds), used by every `dapr_runtime_workflow_*`
/// histogram.
pub const DAPR_LATENCY_BUCKETS_MS: [f64; 34] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 40.0, 50.0, 65.0, 80.0,
    100.0, 130.0, 160.0, 200.0, 250.0, 300.0, 400.0, 500.0, 650.0, 800.0, 1_000.0, 2_000.0,
    5_000.0, 10_000.0, 20_000.0, 50_000.0, 100_000.0,
];

/// Buckets (seconds) of Weft's own stage histograms: 100 µs to a minute.
pub const STAGE_BUCKETS_SECONDS: [f64; 18] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The `namespace` label: `NAMESPACE` from the environment (the Helm chart sets it from the
/// pod's namespace), empty outside Kubernetes, as daprd.
fn namespace() -> &'static str {
    static NS: OnceLock<String> = OnceLock::new();
    NS.get_or_init(|| std::env::var("NAMESPACE").unwrap_or_default())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

fn status(ok: bool) -> &'static str {
    if ok { "success" } else { "failed" }
}

/// A client operation as daprd counts it (terminate, suspend and resume are events too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Get,
    AddEvent,
    Purge,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create_workflow",
            Op::Get => "get_workflow",
            Op::AddEvent => "add_event",
            Op::Purge => "purge_workflow",
        }
    }
}

/// A client operation answered (`dapr_runtime_workflow_operation_count|latency`).
pub fn operation(app: &str, op: Op, ok: bool, elapsed: Duration) {
    let labels = [
        ("app_id", app.to_string()),
        ("namespace", namespace().to_string()),
        ("operation", op.as_str().to_string()),
        ("status", status(ok).to_string()),
    ];
    metrics::counter!("dapr_runtime_workflow_operation_count", &labels).increment(1);
    metrics::histogram!("dapr_runtime_workflow_operation_latency", &labels).record(ms(elapsed));
}

/// Times a client operation and records it by its outcome.
pub async fn timed<T, E>(
    app: &str,
    op: Op,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let start = std::time::Instant::now();
    let r = call.await;
    operation(app, op, r.is_ok(), start.elapsed());
    r
}

/// How an execution ended, in daprd's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Success,
    Failed,
    Terminated,
    /// Stalled: waits for a worker able to run it (daprd: an error the engine retries).
    Recoverable,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Success => "success",
            Ended::Failed => "failed",
            Ended::Terminated => "terminated",
            Ended::Recoverable => "recoverable",
        }
    }
}

/// A workflow execution reached a final (or stalled) status after `elapsed` from its creation
/// (`dapr_runtime_workflow_execution_count|latency`).
pub fn execution(app: &str, workflow: &str, ended: Ended, elapsed: Duration) {
    let labels = [
        ("app_id", app.to_string()),
        ("namespace", namespace().to_string()),
        ("workflow_name", workflow.to_string()),
        ("status", ended.as_str().to_string()),
    ];
    metrics::counter!("dapr_runtime_workflow_execution_count", &labels).increment(1);
    if ended != Ended::Recoverable {
        metrics::histogram!("dapr_runtime_workflow_execution_latency", &labels).record(ms(elapsed));
    }
}

/// An execution's first turn was dispatched `elapsed` after it was due
/// (`dapr_runtime_workflow_scheduling_latency`).
pub fn scheduling(app: &str, workflow: &str, elapsed: Duration) {
    let labels = [
        ("app_id", app.to_string()),
        ("namespace", namespace().to_string()),
        ("workflow_name", workflow.to_string()),
    ];
    metrics::histogram!("dapr_runtime_workflow_scheduling_latency", &labels).record(ms(elapsed));
}

/// An activity was scheduled (its task row committed, or the commit failed)
/// (`dapr_runtime_workflow_activity_operation_count|latency`).
pub fn activity_operation(app: &str, activity: &str, ok: bool, elapsed: Duration) {
    let labels = activity_labels(app, activity, ok);
    metrics::counter!("dapr_runtime_workflow_activity_operation_count", &labels).increment(1);
    metrics::histogram!("dapr_runtime_workflow_activity_operation_latency", &labels)
        .record(ms(elapsed));
}

/// An activity attempt ended: the worker's result arrived `elapsed` after dispatch
/// (`dapr_runtime_workflow_activity_execution_count|latency`).
pub fn activity_execution(app: &str, activity: &str, ok: bool, elapsed: Duration) {
    let labels = activity_labels(app, activity, ok);
    metrics::counter!("dapr_runtime_workflow_activity_execution_count", &labels).increment(1);
    metrics::histogram!("dapr_runtime_workflow_activity_execution_latency", &labels)
        .record(ms(elapsed));
}

fn activity_labels(app: &str, activity: &str, ok: bool) -> [(&'static str, String); 4] {
    [
        ("app_id", app.to_string()),
        ("namespace", namespace().to_string()),
        ("activity_name", activity.to_string()),
        ("status", status(ok).to_string()),
    ]
}

/// The stages Weft times on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `prepare_turn`: building a turn from history and inbox.
    TurnPrepare,
    /// A work item from dispatch to the worker's answer (`kind`: workflow or activity).
    WorkerRoundTrip,
    /// One group-committed write transaction (`kind`: checkpoint, result, create).
    Commit,
    /// A write from being handed to the group committer to its batch starting.
    GroupCommitWait,
    /// A recovery scan's claim of pending tasks.
    ClaimScan,
    /// A client call forwarded to its owner, until the owner answered.
    Forward,
}

impl Stage {
    pub fn metric(self) -> &'static str {
        match self {
            Stage::TurnPrepare => "weft_turn_prepare_seconds",
            Stage::WorkerRoundTrip => "weft_worker_round_trip_seconds",
            Stage::Commit => "weft_commit_seconds",
            Stage::GroupCommitWait => "weft_group_commit_wait_seconds",
            Stage::ClaimScan => "weft_claim_scan_seconds",
            Stage::Forward => "weft_forward_seconds",
        }
    }
}

/// Records one stage's duration, with a `kind` label where the stage has kinds.
pub fn stage(stage: Stage, kind: Option<&'static str>, elapsed: Duration) {
    match kind {
        Some(k) => metrics::histogram!(stage.metric(), "kind" => k).record(elapsed.as_secs_f64()),
        None => metrics::histogram!(stage.metric()).record(elapsed.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_increase() {
        assert!(DAPR_LATENCY_BUCKETS_MS.windows(2).all(|w| w[0] < w[1]));
        assert!(STAGE_BUCKETS_SECONDS.windows(2).all(|w| w[0] < w[1]));
    }
}
