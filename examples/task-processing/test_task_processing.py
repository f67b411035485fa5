"""The task-processing example, run as documented: `weft dev` + the FastAPI app under uvicorn +
curl against the Dapr HTTP workflow API."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from weft_harness import ProcWithReadyLine, WeftDev, free_port, in_ci, require_binary, wait_until

HERE = Path(__file__).resolve().parent


@pytest.fixture
def sidecar(request, tmp_path):
    require_binary()
    w = WeftDev(tmp_path / "data", tmp_path / "logs").start()
    yield w
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\n===== weft dev stderr =====\n{w.all_stderr()}")
    w.stop()


@pytest.fixture
def app(request, sidecar, tmp_path):
    port = free_port()
    env = sidecar.sdk_env()
    env["PYTHONUNBUFFERED"] = "1"
    p = ProcWithReadyLine(
        [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)],
        env, tmp_path / "app.log", "Application startup complete", timeout=60, cwd=HERE,
    )
    yield f"http://127.0.0.1:{port}"
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\n===== app log =====\n{p.log()}")
    p.stop()


def curl_json(url: str) -> tuple[int, dict]:
    curl = shutil.which("curl")
    if curl is None:
        msg = "curl is not installed; the documented example uses curl"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    r = subprocess.run([curl, "-s", "-w", "\n%{http_code}", url], capture_output=True, text=True, timeout=15)
    assert r.returncode == 0, r.stderr
    body, _, code = r.stdout.rpartition("\n")
    return int(code), (json.loads(body) if body.strip() else {})


def test_task_processing_example(app, sidecar):
    with httpx.Client(timeout=30) as h:
        r = h.post(f"{app}/tasks", json={"task_id": "42", "title": "Review PR #456", "assignee": "alice"})
        assert r.status_code == 202, r.text
        iid = r.json()["instance_id"]
        assert iid == "task-42"

        r = h.post(f"{app}/tasks", json={"task_id": "43", "title": ""})
        assert r.status_code == 202, r.text
        rejected = r.json()["instance_id"]

    url = f"http://127.0.0.1:{sidecar.http_port}/v1.0/workflows/dapr/{iid}"

    def completed():
        code, body = curl_json(url)
        return body if code == 200 and body.get("runtimeStatus") == "COMPLETED" else None

    body = wait_until(completed, 60, interval=0.3, what=f"curl {url} -> COMPLETED")
    assert body["instanceID"] == iid
    assert body["workflowName"] == "task_processing_workflow"
    props = body["properties"]
    assert json.loads(props["dapr.workflow.input"]) == {"task_id": "42", "title": "Review PR #456", "assignee": "alice"}
    assert json.loads(props["dapr.workflow.output"]) == {
        "task_id": "42", "status": "assigned", "assignee": "alice", "notified": True}
    assert props["dapr.workflow.custom_status"] == "done"

    url2 = f"http://127.0.0.1:{sidecar.http_port}/v1.0/workflows/dapr/{rejected}"
    body2 = wait_until(lambda: (lambda c, b: b if c == 200 and b.get("runtimeStatus") == "COMPLETED" else None)(
        *curl_json(url2)), 60, interval=0.3, what="rejected task completes")
    out2 = json.loads(body2["properties"]["dapr.workflow.output"])
    assert out2["status"] == "rejected" and out2["reason"] == "title is required"

    # the app's own read path (DaprWorkflowClient.get_workflow_state) agrees
    with httpx.Client(timeout=30) as h:
        r = h.get(f"{app}/tasks/{iid}")
        assert r.status_code == 200 and r.json()["status"] == "COMPLETED", r.text

    # and the instance can be started over the HTTP API as the README shows
    code, _ = curl_json(f"http://127.0.0.1:{sidecar.http_port}/v1.0/workflows/dapr/task-44")
    assert code == 404
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                        f"http://127.0.0.1:{sidecar.http_port}/v1.0/workflows/dapr/task_processing_workflow/start"
                        "?instanceID=task-44", "-d", '{"task_id": "44", "title": "Write docs"}'],
                       capture_output=True, text=True, timeout=15)
    assert r.stdout == "202", r
    url3 = f"http://127.0.0.1:{sidecar.http_port}/v1.0/workflows/dapr/task-44"
    body3 = wait_until(lambda: (lambda c, b: b if c == 200 and b.get("runtimeStatus") == "COMPLETED" else None)(
        *curl_json(url3)), 60, interval=0.3, what="HTTP-started task completes")
    assert json.loads(body3["properties"]["dapr.workflow.output"])["status"] == "assigned"
