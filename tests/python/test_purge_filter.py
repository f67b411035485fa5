"""Purge by filter: `PurgeInstances` with a `purgeInstanceFilter` from durabletask-dapr 0.17.4, the
HTTP extension `POST /weft/v1/purge` and `weft workflow purge --status/--created-before`. Only
finished instances that match are deleted; the answer counts them. (Also run on PostgreSQL by the
test command.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse

from dapr.ext.workflow import WorkflowStatus

from weft_harness import PY_TESTS, weft_bin

S = WorkflowStatus


def test_durabletask_dapr_purge_by_filter(weft_factory):
    w = weft_factory()
    env = w.sdk_env()
    env["PYTHONUNBUFFERED"] = "1"
    p = subprocess.run([sys.executable, str(PY_TESTS / "dt_purge_filter.py"), w.grpc_addr], env=env,
                       capture_output=True, text=True, timeout=180)
    results = [json.loads(l[7:]) for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    assert "ALL DONE" in p.stdout and results, f"rc={p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    v = results[0]["value"]
    assert v["statuses"] == ["COMPLETED"] * 3 + ["FAILED"] + ["COMPLETED"] * 2, v
    assert v["completed_before_cut"] == 3, v
    assert v["early_left"] == [False] * 3, v
    assert v["late_left"] == [True, True], v
    assert v["failed_left"] is True, v
    assert v["with_running"] == 1, "only the failed one; RUNNING in a filter matches nothing"
    assert v["failed_left_after"] is False, v
    assert v["running_status"] == "RUNNING", v
    assert v["all_finished"] == 2, v
    assert v["late_left_after"] == [False, False], v
    assert v["running_end"] == "COMPLETED", v


def cli(w, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEFT_", "DAPR_"))}
    env.update({"WEFT_ENDPOINT": w.http_url, "WEFT_TIMEOUT": "30"})
    return subprocess.run([str(weft_bin()), "workflow", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_http_and_cli_purge_by_filter(weft_factory, uid):
    import dapr.ext.workflow as wf

    w = weft_factory()
    rt = wf.WorkflowRuntime(host=w.grpc_host, port=str(w.grpc_port), worker_ready_timeout=30)

    def echo(ctx, x):
        return x

    def boom(ctx, x):
        raise ValueError("boom")

    def gate(ctx: wf.DaprWorkflowContext, x):
        v = yield ctx.wait_for_external_event("open")
        return v

    rt.register_workflow(echo, name="pf_echo")
    rt.register_workflow(boom, name="pf_boom")
    rt.register_workflow(gate, name="pf_gate")
    rt.start()
    c = wf.DaprWorkflowClient(host=w.grpc_host, port=str(w.grpc_port))
    try:
        done = [c.schedule_new_workflow("pf_echo", input=i, instance_id=f"{uid}-ok{i}") for i in range(3)]
        failed = c.schedule_new_workflow("pf_boom", input=0, instance_id=f"{uid}-fail")
        running = c.schedule_new_workflow("pf_gate", input=0, instance_id=f"{uid}-run")
        for iid in done + [failed]:
            c.wait_for_workflow_completion(iid, timeout_in_seconds=60)
        c.wait_for_workflow_start(running, timeout_in_seconds=60)

        # HTTP: a non-finished status is refused, nothing deleted.
        status, _, body = w.http("POST", "/weft/v1/purge?status=RUNNING")
        assert status == 400, body
        status, _, body = w.http("POST", "/weft/v1/purge?status=FAILED")
        assert status == 200 and json.loads(body) == {"deletedInstanceCount": 1}, body
        assert c.get_workflow_state(failed) is None

        # CLI: created before a time in the past deletes nothing; --status COMPLETED deletes the rest.
        r = cli(w, "purge", "--created-before", "2000-01-01T00:00:00Z")
        assert r.returncode == 0 and "Purged 0" in r.stdout, (r.stdout, r.stderr)
        r = cli(w, "purge", "--status", "running")
        assert r.returncode == 2, "a non-finished status is a usage error"
        r = cli(w, "purge", "--status", "completed", "--output", "json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"deletedInstanceCount": 3}
        for iid in done:
            assert c.get_workflow_state(iid) is None
        assert c.get_workflow_state(running).runtime_status == S.RUNNING
        bad = urllib.parse.quote("yesterday")
        status, _, body = w.http("POST", f"/weft/v1/purge?createdTo={bad}")
        assert status == 400 and b"RFC 3339" in body, body
        c.raise_workflow_event(running, "open", data=1)
        assert c.wait_for_workflow_completion(running, timeout_in_seconds=30).runtime_status == S.COMPLETED
    finally:
        c.close()
        rt.shutdown()
