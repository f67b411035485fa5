"""Dapr's workflow metrics on `/metrics` (issue 20, acceptance 3), end to end with
dapr-ext-workflow: after one `metrics_probe` run (three activities, a timer, an external event)
the `dapr_runtime_workflow_*` counters equal what ran, and the latency histograms — daprd's
millisecond buckets and Weft's own `weft_*_seconds` stages — have observations. The probe's
workflow and activity names are used by no other test, so its series count this run alone."""

from __future__ import annotations

import json

from dapr.ext.workflow import WorkflowStatus


def scrape(weft) -> list[str]:
    status, _, body = weft.http("GET", "/metrics")
    assert status == 200
    return body.decode().splitlines()


def value(lines: list[str], name: str, **labels) -> float | None:
    """The sample of `name` whose labels include `labels` (None if there is none)."""
    for line in lines:
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_dapr_workflow_metrics_count_what_ran(runtime, client, weft, uid):
    client.schedule_new_workflow("metrics_probe", input=1, instance_id=uid)
    client.wait_for_workflow_start(uid, timeout_in_seconds=30)
    assert client.get_workflow_state(uid) is not None
    client.raise_workflow_event(uid, "go", data=10)
    st = client.wait_for_workflow_completion(uid, timeout_in_seconds=60)
    assert st is not None and st.runtime_status == WorkflowStatus.COMPLETED, st
    assert json.loads(st.serialized_output) == 14

    m = scrape(weft)
    wf = {"workflow_name": "metrics_probe"}
    act = {"activity_name": "metric_step", "status": "success"}
    assert value(m, "dapr_runtime_workflow_execution_count", status="success", **wf) == 1
    assert value(m, "dapr_runtime_workflow_execution_count", status="failed", **wf) is None
    assert value(m, "dapr_runtime_workflow_execution_latency_count", status="success", **wf) == 1
    assert value(m, "dapr_runtime_workflow_scheduling_latency_count", **wf) == 1
    assert value(m, "dapr_runtime_workflow_activity_operation_count", **act) == 3
    assert value(m, "dapr_runtime_workflow_activity_execution_count", **act) == 3
    assert value(m, "dapr_runtime_workflow_activity_execution_latency_count", **act) == 3
    # daprd's buckets: the histogram has its 1 ms … 100 s bounds.
    assert value(m, "dapr_runtime_workflow_activity_execution_latency_bucket", le="100000", **act) == 3
    assert value(m, "dapr_runtime_workflow_activity_execution_latency_bucket", le="1", **act) is not None
    # Client operations, counted once at the edge (other tests add to these, so at least one).
    for op in ("create_workflow", "get_workflow", "add_event"):
        n = value(m, "dapr_runtime_workflow_operation_count", operation=op, status="success")
        assert n is not None and n >= 1, op
        n = value(m, "dapr_runtime_workflow_operation_latency_count", operation=op, status="success")
        assert n is not None and n >= 1, op
    for ns in ("app_id", "namespace"):
        assert any(
            line.startswith("dapr_runtime_workflow_execution_count{") and f'{ns}="' in line
            for line in m
        ), ns
    # Weft's own stages have observations.
    for name, labels in [
        ("weft_turn_prepare_seconds_count", {}),
        ("weft_worker_round_trip_seconds_count", {"kind": "workflow"}),
        ("weft_worker_round_trip_seconds_count", {"kind": "activity"}),
        ("weft_commit_seconds_count", {"kind": "checkpoint"}),
        ("weft_group_commit_wait_seconds_count", {"kind": "checkpoint"}),
        ("weft_claim_scan_seconds_count", {}),
    ]:
        n = value(m, name, **labels)
        assert n is not None and n > 0, (name, labels)


def test_the_dashboard_queries_only_metrics_that_exist(runtime, client, weft, uid):
    """deploy/observability's Grafana dashboard: every series it queries is documented in
    docs/operations.md, and the Dapr ones are on /metrics once a workflow ran."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    dash = json.loads((repo / "deploy/observability/grafana-weft-workflows.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"\b((?:dapr_runtime_workflow|weft)_[a-z_]+)\b", e)}
    assert names, "the dashboard queries nothing"
    ops_doc = (repo / "docs/operations.md").read_text()
    for n in sorted(names):
        base = re.sub(r"_bucket$", "", n)
        assert f"`{base}" in ops_doc or f"`{n}" in ops_doc, f"{n} is not documented in docs/operations.md"

    client.schedule_new_workflow("metrics_probe", input=1, instance_id=uid)
    client.wait_for_workflow_start(uid, timeout_in_seconds=30)
    client.raise_workflow_event(uid, "go", data=1)
    client.wait_for_workflow_completion(uid, timeout_in_seconds=60)
    scraped = {line.split("{")[0].split(" ")[0] for line in scrape(weft) if not line.startswith("#")}
    for n in sorted(x for x in names if x.startswith("dapr_")):
        assert n in scraped, f"the dashboard queries {n}, which /metrics does not have"
