//! Process-wide Prometheus metrics: one global recorder, rendered at `GET /metrics`; Dapr's
//! workflow metrics and Weft's stage histograms are in `workflow`, Dapr's OTLP spans in `spans`.

pub mod spans;
pub mod trace_context;
pub(crate) mod turn_spans;
pub mod workflow;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder once per process (later calls return the same handle). `None` if
/// another recorder was installed first.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Prefix("dapr_runtime_workflow_".into()),
                    &workflow::DAPR_LATENCY_BUCKETS_MS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_seconds".into()),
                        &workflow::STAGE_BUCKETS_SECONDS,
                    )
                })
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            let upkeep = handle.clone();
            // Histograms need periodic upkeep to drain their buckets.
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    upkeep.run_upkeep();
                }
            });
            Some(handle)
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "weft_workflows_started_total",
        "Workflow instances created by clients."
    );
    metrics::describe_counter!("weft_workflow_turns_total", "Workflow turns committed.");
    metrics::describe_counter!(
        "weft_activities_completed_total",
        "Activity results recorded."
    );
    metrics::describe_counter!(
        "weft_work_items_dispatched_total",
        "Work items sent to workers."
    );
    metrics::describe_gauge!("weft_connected_workers", "Connected GetWorkItems streams.");
    metrics::describe_counter!(
        "weft_forwarded_calls_total",
        "Client calls forwarded to the owner of their instance, by result (answered, not_owner, unreachable)."
    );
    metrics::describe_counter!(
        "weft_executor_routed_total",
        "Worker answers (completions, abandons) routed to the sidecar that dispatched the work item."
    );
    metrics::describe_counter!(
        "weft_checkpoint_conflicts_total",
        "Checkpoints refused by fencing (another sidecar committed the instance first); 0 in a steady cluster."
    );
    metrics::describe_gauge!(
        "weft_owned_buckets",
        "Instance buckets (of 4096) this sidecar serves now."
    );
    metrics::describe_gauge!(
        "weft_ownership_version",
        "Placement table version whose hand-off this sidecar has completed."
    );
    metrics::describe_gauge!(
        "weft_actors_in_memory",
        "Workflow actors in memory (an actor idle for the idle timeout is dropped)."
    );
    metrics::describe_gauge!(
        "weft_instance_records_in_memory",
        "Per-instance records besides actors: queued or dispatched work, stateful workers' cache records, concurrency-limit records; 0 when every workflow is idle."
    );
    // Rendered from the start, so a scrape shows 0 rather than nothing.
    metrics::counter!("weft_checkpoint_conflicts_total").increment(0);
    metrics::counter!("weft_executor_routed_total").increment(0);
}
