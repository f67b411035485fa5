"""Multi-app workflows (issue 18): two apps on one cluster and one PostgreSQL, each with its own
`weft sidecar`s and real SDK workers. App A's workflows call activities and child workflows of
app B with `app_id=`; B's workers run them, A's history keeps them with their routers; the work
waits while B has no worker; client calls with an app ID reach B's instances from A's sidecar;
a WorkflowAccessPolicy of B decides whether A may call; a SIGKILL of a B sidecar loses nothing.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import dapr.ext.workflow as wf
import pytest

from cluster_harness import cluster_bin, http_get, wait_until

A, B = "appa", "appb"


def client(sidecar: dict) -> wf.DaprWorkflowClient:
    host, port = sidecar["grpc"].rsplit(":", 1)
    return wf.DaprWorkflowClient(host=host, port=port)


def history(sidecar: dict, instance: str) -> list[dict]:
    status, body = http_get(f"http://{sidecar['http']}/weft/v1/instances/{instance}/history")
    assert status == 200, (status, body[:300])
    data = json.loads(body)
    return data["events"] if isinstance(data, dict) else data


def events(side_dir: Path, want: str) -> list[tuple[str, int, int, int]]:
    """(instance, task id, worker pid, t_ns) of every `want` line of the callee workers."""
    out = []
    for p in sorted(side_dir.glob("events-*.log")):
        for line in p.read_text().splitlines():
            kind, inst, task, pid, t = line.split()
            if kind == want:
                out.append((inst, int(task), int(pid), int(t)))
    return out


def execs(side_dir: Path) -> list[tuple[str, int, int]]:
    """(instance, task id, worker pid) of every callee activity run."""
    return [(i, t, p) for i, t, p, _ in events(side_dir, "exec")]


def worker(rig, sidecar: dict, role: str, name: str, **env):
    return rig.worker(sidecar["grpc"], name, script="multiapp_worker.py", APP_ROLE=role,
                      TARGET_APP=B, **env)


def two_apps(rig, b_sidecars: int = 1, **start):
    apps = [A] + [B] * b_sidecars
    c = rig.cluster(placement=3, sidecars=len(apps), sidecar_apps=apps, **start)
    return c, c.sidecar(0), [c.sidecar(i) for i in range(1, len(apps))]


def completed(cl: wf.DaprWorkflowClient, iid: str, timeout: int = 90):
    st = cl.wait_for_workflow_completion(iid, timeout_in_seconds=timeout)
    assert st is not None, iid
    return st


def test_a_workflow_calls_an_activity_and_a_child_workflow_of_another_app(rig):
    c, sa, (sb,) = two_apps(rig)
    worker(rig, sa, "caller", "a")
    worker(rig, sb, "callee", "b")
    cl = client(sa)
    iid = cl.schedule_new_workflow(workflow="order", input=21, instance_id="order-1")
    st = completed(cl, iid)
    assert st.runtime_status.name == "COMPLETED", (st.runtime_status, st.serialized_output)
    assert json.loads(st.serialized_output) == {"billed": 42, "shipped": 1042}

    # B's worker ran the activity; A's history records both calls with their routers.
    assert [e[0] for e in execs(rig.side_dir)] == [iid]
    events = history(sa, iid)
    sched = [e for e in events if e["type"] == "TaskScheduled"]
    assert len(sched) == 1 and sched[0]["name"] == "bill", events
    assert sched[0]["router"] == {"sourceAppID": A, "targetAppID": B}, sched[0]
    child = [e for e in events if e["type"] == "ChildWorkflowInstanceCreated"]
    assert len(child) == 1 and child[0]["router"] == {"sourceAppID": A, "targetAppID": B}, child
    # The child is an instance of app B, run on B's ring, whose parent is A's instance.
    child_id = child[0]["instanceId"]
    status, body = http_get(f"http://{sa['http']}/v1.0/workflows/dapr/{child_id}?appID={B}")
    assert status == 200, body
    child_state = json.loads(body)
    assert child_state["runtimeStatus"] == "COMPLETED", child_state
    started = history(sb, child_id)[0:3]
    assert any(e.get("router", {}).get("targetAppID") == B for e in started), started
    # Named for another app, an instance is not found; the CLI names the app with --app-id.
    assert http_get(f"http://{sa['http']}/v1.0/workflows/dapr/{child_id}?appID={A}")[0] == 404
    weft = str(cluster_bin().with_name("weft"))
    for app, code in ((B, 0), (A, 1)):
        out = subprocess.run([weft, "workflow", "get", child_id, "--app-id", app,
                              "--endpoint", f"http://{sa['http']}"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == code, (app, out.stdout, out.stderr)
        if code == 0:
            assert "COMPLETED" in out.stdout and "ship" in out.stdout, out.stdout


def test_failures_and_retries_cross_apps_as_within_one(rig):
    """A cross-app activity's failure reaches the caller's code; a retry policy retries it in
    the target app (each attempt a new cross-app task)."""
    c, sa, (sb,) = two_apps(rig)
    worker(rig, sa, "caller", "a")
    worker(rig, sb, "callee", "b")
    cl = client(sa)
    iid = cl.schedule_new_workflow(workflow="retrying", input="k1", instance_id="retry-1")
    st = completed(cl, iid)
    assert st.runtime_status.name == "COMPLETED", st.failure_details
    out = json.loads(st.serialized_output)
    assert out["got"] == 3, out
    assert "broken for k1" in out["caught"], out
    events = history(sa, iid)
    failed = [e for e in events if e["type"] == "TaskFailed"]
    assert len(failed) == 3, events  # two flaky attempts and the broken one
    assert failed[-1]["failure"]["errorType"] == "ValueError", failed[-1]
    sched = [e for e in events if e["type"] == "TaskScheduled"]
    assert [e["name"] for e in sched] == ["flaky"] * 3 + ["broken"], sched
    assert all(e["router"]["targetAppID"] == B for e in sched), sched


def test_history_propagates_across_apps(rig):
    """`propagation=` as the 1.18 SDK sends it: OWN_HISTORY hands B's activity A's events;
    LINEAGE hands B's child A's chunk, and the child's own LINEAGE activity both chunks."""
    c, sa, (sb,) = two_apps(rig)
    worker(rig, sa, "caller", "a")
    worker(rig, sb, "callee", "b")
    cl = client(sa)
    iid = cl.schedule_new_workflow(workflow="propagate", input=3, instance_id="prop-1")
    st = completed(cl, iid)
    assert st.runtime_status.name == "COMPLETED", st.failure_details
    out = json.loads(st.serialized_output)
    assert out["own"] == {"scope": "OWN_HISTORY", "apps": [A], "workflows": ["propagate"],
                          "instances": [iid], "bills": [0]}, out
    relay_id = f"{iid}:0002"
    assert out["lineage"]["relay_saw"] == {"scope": "LINEAGE", "apps": [A], "workflows": ["propagate"],
                                           "instances": [iid], "bills": [0]}, out
    assert out["lineage"]["inspect_saw"] == {"scope": "LINEAGE", "apps": [A, B],
                                             "workflows": ["propagate", "relay"],
                                             "instances": [iid, relay_id], "bills": [0, 0]}, out


def test_cross_app_client_calls_reach_the_other_apps_instance(rig):
    c, sa, (sb,) = two_apps(rig)
    worker(rig, sa, "caller", "a")
    worker(rig, sb, "callee", "b")
    cb = client(sb)
    for iid in ("wait-raise", "wait-term"):
        cb.schedule_new_workflow(workflow="waiter", input=None, instance_id=iid)
        cb.wait_for_workflow_start(iid, timeout_in_seconds=60)

    # Raised through app A's sidecar (HTTP, appID of B): B's instance completes with the data.
    status, body = http_get_post(f"http://{sa['http']}/v1.0/workflows/dapr/wait-raise/raiseEvent/go?appID={B}",
                                 b'"from-a"')
    assert status == 202, body
    st = completed(cb, "wait-raise")
    assert st.runtime_status.name == "COMPLETED" and json.loads(st.serialized_output) == {"got": "from-a"}

    # Terminated through app A's sidecar over gRPC, as a 1.19 SDK sends it: TerminateRequest
    # with `router` (field 4) naming app B (the 1.18 SDK's protos lack the field: added raw).
    terminate_with_router(sa, "wait-term", target=B)
    st = completed(cb, "wait-term")
    assert st.runtime_status.name == "TERMINATED", st.runtime_status
    # Named with the wrong app, a call is refused as not found.
    status, _ = http_get_post(f"http://{sa['http']}/v1.0/workflows/dapr/wait-term/terminate?appID={A}", b"")
    assert status == 404

    # Recursive terminate and purge cross the apps: A's parent and its child in B.
    ca = client(sa)
    ca.schedule_new_workflow(workflow="wait_child", input=None, instance_id="tree")
    child = "tree:0001"

    def child_running():
        status, body = http_get(f"http://{sa['http']}/v1.0/workflows/dapr/{child}?appID={B}")
        return status == 200 and json.loads(body)["runtimeStatus"] == "RUNNING"

    wait_until(child_running, 60, what="the cross-app child running in app B")
    ca.terminate_workflow("tree", recursive=True)
    assert completed(ca, "tree").runtime_status.name == "TERMINATED"
    assert completed(cb, child).runtime_status.name == "TERMINATED"
    ca.purge_workflow("tree", recursive=True)
    assert http_get(f"http://{sa['http']}/v1.0/workflows/dapr/{child}?appID={B}")[0] == 404
    assert http_get(f"http://{sb['http']}/v1.0/workflows/dapr/tree")[0] == 404


def test_the_work_waits_while_the_target_app_has_no_worker(rig):
    c, sa, (sb,) = two_apps(rig)
    worker(rig, sa, "caller", "a")
    cl = client(sa)
    iid = cl.schedule_new_workflow(workflow="order", input=5, instance_id="order-wait")
    # The parent ran its first turn (the cross-app task is recorded) and waits RUNNING.
    wait_until(lambda: any(e["type"] == "TaskScheduled" for e in history(sa, iid)), 60,
               what="the parent's first turn")
    state = cl.get_workflow_state(iid)
    assert state.runtime_status.name == "RUNNING", state.runtime_status
    assert execs(rig.side_dir) == []
    # What waits for which app: `weft workflow get` and any sidecar's /metrics say so.
    out = subprocess.run([str(cluster_bin().with_name("weft")), "workflow", "get", iid,
                          "--endpoint", f"http://{sa['http']}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"app {B}: activity 'bill' (task 1)" in out.stdout, out.stdout
    for s in (sa, sb):
        body = http_get(f"http://{s['http']}/metrics")[1].decode()
        assert f'weft_cross_app_tasks_waiting{{target_app="{B}"}} 1' in body, body[-2000:]
    # B's worker connects: the waiting task runs, then the child, and the parent completes.
    worker(rig, sb, "callee", "b")
    st = completed(cl, iid)
    assert st.runtime_status.name == "COMPLETED", st.serialized_output
    assert json.loads(st.serialized_output) == {"billed": 10, "shipped": 1010}


POLICY = """apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: weft
spec: {{}}
---
apiVersion: dapr.io/v1alpha1
kind: WorkflowAccessPolicy
metadata:
  name: appb-callers
scopes: [appb]
spec:
  rules:
    - callers:
        - appID: {caller}
      workflows:
        - name: "sh*"
          operations: [schedule]
      activities:
        - name: "b?ll"
"""


def test_an_access_policy_denies_then_allows_the_caller(rig, tmp_path):
    cfg = tmp_path / "weft.yaml"
    cfg.write_text(POLICY.format(caller="someone-else"))
    c, sa, (sb,) = two_apps(rig, sidecar_args=["--config", str(cfg)])
    worker(rig, sa, "caller", "a")
    wb = worker(rig, sb, "callee", "b")
    cl = client(sa)
    denied = {}
    for wf_name in ("bill_only", "ship_only"):
        iid = cl.schedule_new_workflow(workflow=wf_name, input=1, instance_id=f"denied-{wf_name}")
        st = completed(cl, iid)
        assert st.runtime_status.name == "FAILED", (wf_name, st.runtime_status)
        denied[wf_name] = st.failure_details
    for wf_name, f in denied.items():
        assert "access denied by workflow access policy" in f.message, (wf_name, f.message)
        assert f"app '{A}' may not schedule" in f.message, f.message
    assert execs(rig.side_dir) == [], "a denied activity never reaches B's worker"

    # Allowing app A (B's sidecar restarted on its ports with the new file; its worker
    # reconnects) lets the same workflows complete.
    cfg.write_text(POLICY.format(caller=A))
    c.terminate("sidecar", 1)
    c.restart("sidecar", 1)
    assert wb.proc.poll() is None
    for wf_name, want in (("bill_only", 2), ("ship_only", 1001)):
        iid = cl.schedule_new_workflow(workflow=wf_name, input=1, instance_id=f"allowed-{wf_name}")
        st = completed(cl, iid)
        assert st.runtime_status.name == "COMPLETED", (wf_name, st.failure_details)
        assert json.loads(st.serialized_output) == want


@pytest.mark.parametrize("run", range(2))
def test_sigkill_of_a_callee_sidecar_loses_nothing(rig, run):
    c, sa, sbs = two_apps(rig, b_sidecars=2)
    worker(rig, sa, "caller", "a")
    wbs = [worker(rig, sb, "callee", f"b{i}", ACT_SLEEP="0.2") for i, sb in enumerate(sbs)]
    cl = client(sa)
    n_wf, fan = 6, 8
    ids = [cl.schedule_new_workflow(workflow="fan", input=fan, instance_id=f"fan-{run}-{i}")
           for i in range(n_wf)]
    # Kill B's first sidecar once some cross-app activities ran on both.
    wait_until(lambda: len({pid for _, _, pid in execs(rig.side_dir)}) == 2, 60,
               what="cross-app activities running on both B sidecars")
    c.kill("sidecar", 1)
    killed_worker = wbs[0].pid
    want = sum(2 * i for i in range(fan))
    for iid in ids:
        st = completed(cl, iid, timeout=120)
        assert st.runtime_status.name == "COMPLETED", (iid, st.failure_details)
        assert json.loads(st.serialized_output) == want
    runs = Counter((inst, task) for inst, task, _ in execs(rig.side_dir))
    assert set(inst for inst, _ in runs) == set(ids)
    assert len(runs) == n_wf * fan, "every activity ran"
    # A repeat is allowed only for work in flight on the killed sidecar's worker.
    first = {}
    for inst, task, pid in execs(rig.side_dir):
        first.setdefault((inst, task), pid)
    repeated = [k for k, n in runs.items() if n > 1]
    # Never run again once its result was delivered (recorded in the caller's inbox).
    delivered = {}
    for inst, task, _, t in events(rig.side_dir, "delivered"):
        delivered.setdefault((inst, task), t)
    for inst, task, _, t in events(rig.side_dir, "exec"):
        d = delivered.get((inst, task))
        assert d is None or t < d, f"{inst}/{task} ran again after its result was delivered"
    print(f"\n{n_wf * fan} cross-app activities, {len(repeated)} run twice (all in flight on the killed sidecar)")
    assert all(first[k] == killed_worker for k in repeated), (repeated, first)
    assert max(runs.values()) <= 2, runs.most_common(3)


# ------------------------------------------------------------------------------------------ helpers
def http_get_post(url: str, body: bytes, timeout: float = 60) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _field(num: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([num << 3 | 2, len(payload)]) + payload


def terminate_with_router(sidecar: dict, instance: str, target: str) -> None:
    import grpc
    from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2 as pb
    req = pb.TerminateRequest(instanceId=instance, recursive=True).SerializeToString()
    router = _field(1, A.encode()) + _field(2, target.encode())
    with grpc.insecure_channel(sidecar["grpc"]) as ch:
        call = ch.unary_unary("/TaskHubSidecarService/TerminateInstance",
                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
        call(req + _field(4, router), timeout=60)
