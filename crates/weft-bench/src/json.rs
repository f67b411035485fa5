//! The results as JSON (`--json FILE`): one object with the setup, a row per workload, and the
//! idle-memory and Python reports when they ran.

use serde_json::{Value, json};

use crate::workload::{Report, Row};

fn row(r: &Row) -> Value {
    let steps = (r.workflows as f64 * f64::from(r.steps)).max(1.0);
    json!({
        "workload": r.workload,
        "backend": r.backend,
        "sidecar": r.sidecar,
        "workflows": r.workflows,
        "steps": r.steps,
        "completed": r.completed,
        "elapsed_s": r.elapsed.as_secs_f64(),
        "steps_per_s": r.steps_per_sec,
        "p50_ms": r.p50.as_secs_f64() * 1e3,
        "p99_ms": r.p99.as_secs_f64() * 1e3,
        "commits": r.commits,
        "commits_per_step": r.commits_per_step,
        "pg_xact_commit": r.pg.map(|p| p.xact_commit),
        "pg_xact_commit_per_step": r.pg.map(|p| p.xact_commit as f64 / steps),
        "pg_xact_rollback": r.pg.map(|p| p.xact_rollback),
        "pg_xacts_per_step": r.pg.map(|p| (p.xact_commit + p.xact_rollback) as f64 / steps),
        "pg_write_xacts": r.pg.map(|p| p.write_xacts),
        "pg_write_xacts_per_step": r.pg.map(|p| p.write_xacts as f64 / steps),
        "load1": r.load1,
        "store_calls": r.store_calls.iter().map(|s| json!({
            "op": s.op, "calls": s.calls, "items": s.items,
            "mean_ms": if s.calls == 0 { 0.0 } else { s.total.as_secs_f64() * 1e3 / s.calls as f64 },
        })).collect::<Vec<_>>(),
    })
}

/// The whole report; `setup` describes the store and settings.
pub fn report(setup: &str, r: &Report) -> Value {
    json!({
        "setup": setup,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "rss_at_start_kib": r.rss_at_start_kib,
        "cluster": r.cluster.as_ref().map(|c| json!({
            "sidecars": c.sidecars,
            "placement_nodes": c.placement_nodes,
            "via_haproxy": c.via_haproxy,
            "sidecars_with_workers": c.sidecars_with_workers,
            "start_s": c.start_secs,
            "settle_s": c.settle_secs,
            "worker_permits": c.permits,
            "background_pg_xacts_per_s": c.background_xacts_per_sec,
            "pg_window_extra_s": c.pg_window_extra_secs,
        })),
        "rows": r.rows.iter().map(row).collect::<Vec<_>>(),
        "rss": r.rss.as_ref().map(|x| json!({
            "workflows": x.workflows,
            "rss_before_kib": x.rss_before_kib,
            "create_s": x.create_secs,
            "create_per_s": x.create_per_sec,
            "load_after_create": x.load_after_create,
            "all_waiting_s": x.all_waiting_secs,
            "rss_waiting_kib": x.rss_waiting_kib,
            "rss_peak_kib": x.rss_peak_kib,
            "idle_wait_s": x.idle_wait_secs,
            "actors_left": x.actors_left,
            "rss_retired_kib": x.rss_retired_kib,
            "settle_s": x.settle_secs,
            "rss_after_idle_kib": x.rss_after_idle_kib,
            "records_left": x.records_left,
            "load_after_idle": x.load_after_idle,
        })),
        "python": r.python.as_ref().map(|p| json!({
            "wf_per_s": p.wf_per_sec,
            "latency_p50_ms": p.latency_p50_ms,
            "latency_p99_ms": p.latency_p99_ms,
            "sidecar_cpu_s": p.sidecar_cpu_secs,
            "python_cpu_s": p.python_cpu_secs,
            "sidecar_cpu_ms_per_step": p.sidecar_cpu_ms_per_step,
            "pg_xact_per_workflow": p.pg_xact_per_workflow,
            "pg_write_xacts_per_workflow": p.pg_write_xacts_per_workflow,
            "load1": p.load1,
            "script": p.script,
        })),
    })
}
