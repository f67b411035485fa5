"""Concurrency limits and retention from a Dapr Configuration file (`weft dev --config`), observed by
real dapr-ext-workflow workers: each test starts its own `weft dev` with the file and its own
WorkflowRuntime, and the worker records when each activity / workflow turn starts and ends."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
import json
import os
import subprocess
import threading
import time
from datetime import timedelta

import pytest
from dapr.ext.workflow import WorkflowStatus

from weft_harness import wait_until, weft_bin

S = WorkflowStatus

HEAD = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: test\nspec:\n  workflow:\n"


class Tracker:
    """Concurrency seen by the worker, per label."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.max: dict[str, int] = {}
        self.done: dict[str, int] = {}
        # max of the total over all labels except the one given, seen while that one ran
        self.overlap: dict[str, int] = {}

    @contextlib.contextmanager
    def run(self, label: str):
        if os.environ.get("LIMITS_DEBUG"):
            print(f"{time.monotonic():.3f} start {label}", flush=True)
        with self.lock:
            self.now[label] = self.now.get(label, 0) + 1
            self.max[label] = max(self.max.get(label, 0), self.now[label])
            self._note_overlap()
        try:
            yield
        finally:
            with self.lock:
                self.now[label] -= 1
                self.done[label] = self.done.get(label, 0) + 1

    def _note_overlap(self):
        for label, n in self.now.items():
            if n > 0:
                others = sum(v for k, v in self.now.items() if k != label)
                self.overlap[label] = max(self.overlap.get(label, 0), others)


def start_weft(weft_factory, tmp_path, workflow_yaml: str):
    cfg = tmp_path / "weft-config.yaml"
    body = "".join(f"    {line}\n" for line in workflow_yaml.strip("\n").splitlines())
    cfg.write_text(HEAD + body)
    return weft_factory(env={"WEFT_CONFIG": str(cfg)})


@contextlib.contextmanager
def runtime_on(weft, register, workers: int = 1):
    """`workers` WorkflowRuntimes (each its own GetWorkItems stream) and a client."""
    import dapr.ext.workflow as wf

    runtimes = []
    for _ in range(workers):
        rt = wf.WorkflowRuntime(host=weft.grpc_host, port=str(weft.grpc_port), worker_ready_timeout=30,
                                maximum_thread_pool_workers=16)
        register(rt)
        rt.start()
        runtimes.append(rt)
    client = wf.DaprWorkflowClient(host=weft.grpc_host, port=str(weft.grpc_port))
    try:
        yield client
    finally:
        client.close()
        for rt in runtimes:
            rt.shutdown()


def metric(weft, name: str, **labels) -> float | None:
    status, _, body = weft.http("GET", "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def cli_list(weft) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEFT_", "DAPR_"))}
    env.update({"WEFT_ENDPOINT": weft.http_url, "WEFT_TIMEOUT": "20"})
    r = subprocess.run([str(weft_bin()), "workflow", "list"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_max_concurrent_activities_per_sidecar(weft_factory, tmp_path, uid):
    weft = start_weft(weft_factory, tmp_path, "maxConcurrentActivityInvocations: 3")
    t = Tracker()

    def register(rt):
        import dapr.ext.workflow as wf

        def slow(ctx, i: int) -> int:
            with t.run("slow"):
                time.sleep(0.1)
            return i

        def fan(ctx: wf.DaprWorkflowContext, n: int):
            results = yield wf.when_all([ctx.call_activity(slow, input=i) for i in range(n)])
            return sum(results)

        rt.register_activity(slow, name="limits_slow")
        rt.register_workflow(fan, name="limits_fan")

    with runtime_on(weft, register) as client:
        iid = client.schedule_new_workflow("limits_fan", input=50, instance_id=uid)
        # While it runs, the waiting work is visible: metrics and `weft workflow list`.
        wait_until(lambda: (metric(weft, "weft_work_waiting", kind="activity") or 0) > 0, 30,
                   what="activities waiting for a slot in /metrics")
        assert metric(weft, "weft_limit_in_flight", kind="activity", limit="sidecar") <= 3
        wait_until(lambda: "waiting for slot" in cli_list(weft), 30, what="list to mark the instance")
        st = client.wait_for_workflow_completion(iid, timeout_in_seconds=90)
        assert st.runtime_status == S.COMPLETED, st
        assert json.loads(st.serialized_output) == sum(range(50))
    assert t.done["slow"] == 50
    assert t.max["slow"] <= 3, t.max
    assert t.max["slow"] >= 2, f"the worker never ran activities in parallel: {t.max}"
    print(f"\nactivities: max concurrency seen by the worker {t.max['slow']} (limit 3)")


def test_max_concurrent_workflows_per_sidecar(weft_factory, tmp_path, uid):
    weft = start_weft(weft_factory, tmp_path, "maxConcurrentWorkflowInvocations: 2")
    t = Tracker()

    def register(rt):
        def slow_turn(ctx, x: int):
            with t.run("turn"):
                time.sleep(0.2)
            return x

        rt.register_workflow(slow_turn, name="limits_slow_turn")

    # A gRPC start returns after the first turn ran, so the 20 starts are sent from 20 threads.
    with runtime_on(weft, register, workers=3) as client, ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(lambda i: client.schedule_new_workflow(
            "limits_slow_turn", input=i, instance_id=f"{uid}-{i}"), range(20)))
        for i, iid in enumerate(ids):
            st = client.wait_for_workflow_completion(iid, timeout_in_seconds=90)
            assert st.runtime_status == S.COMPLETED, st
            assert json.loads(st.serialized_output) == i
    assert t.done["turn"] >= 20
    assert t.max["turn"] <= 2, t.max
    assert t.max["turn"] == 2, f"the workers never ran two turns at once: {t.max}"
    print(f"\nworkflow turns: max concurrency seen by the worker {t.max['turn']} (limit 2)")


def test_per_name_limit_serialises_only_that_activity(weft_factory, tmp_path, uid):
    weft = start_weft(weft_factory, tmp_path, """
activityConcurrencyLimits:
  - name: charge
    maxConcurrent: 1
""")
    t = Tracker()

    def register(rt):
        import dapr.ext.workflow as wf

        def charge(ctx, i: int) -> int:
            with t.run("charge"):
                time.sleep(0.15)
            return i

        def email(ctx, i: int) -> int:
            with t.run("email"):
                time.sleep(0.15)
            return i

        def order(ctx: wf.DaprWorkflowContext, n: int):
            tasks = [ctx.call_activity(charge, input=i) for i in range(n)]
            tasks += [ctx.call_activity(email, input=i) for i in range(2 * n)]
            results = yield wf.when_all(tasks)
            return len(results)

        rt.register_activity(charge, name="charge")
        rt.register_activity(email, name="email")
        rt.register_workflow(order, name="limits_order")

    with runtime_on(weft, register) as client:
        iid = client.schedule_new_workflow("limits_order", input=6, instance_id=uid)
        st = client.wait_for_workflow_completion(iid, timeout_in_seconds=90)
        assert st.runtime_status == S.COMPLETED, st
        assert json.loads(st.serialized_output) == 18
    assert t.done == {"charge": 6, "email": 12}, t.done
    assert t.max["charge"] == 1, t.max
    assert t.max["email"] >= 2, f"other activities must run in parallel: {t.max}"
    assert t.overlap["charge"] >= 1, "other activities must run while a charge runs"


def test_retention_purges_completed_keeps_failed_and_running(weft_factory, tmp_path, uid):
    weft = start_weft(weft_factory, tmp_path, """
stateRetentionPolicy:
  completed: 2s
""")
    def register(rt):
        import dapr.ext.workflow as wf

        def child(ctx, x: int):
            return x + 1

        def parent(ctx: wf.DaprWorkflowContext, x: int):
            y = yield ctx.call_child_workflow(child, input=x, instance_id=f"{ctx.instance_id}-child")
            return y

        def leaves_child_running(ctx: wf.DaprWorkflowContext, x: int):
            # Starts a child that waits for an event, and completes when a short timer wins.
            kid = ctx.call_child_workflow(waits, input=x, instance_id=f"{ctx.instance_id}-child")
            yield wf.when_any([kid, ctx.create_timer(timedelta(milliseconds=300))])
            return x

        def boom(ctx, x: int):
            raise ValueError("boom")

        def waits(ctx: wf.DaprWorkflowContext, x: int):
            v = yield ctx.wait_for_external_event("go")
            return v

        rt.register_workflow(child, name="ret_child")
        rt.register_workflow(parent, name="ret_parent")
        rt.register_workflow(boom, name="ret_boom")
        rt.register_workflow(waits, name="ret_waits")
        rt.register_workflow(leaves_child_running, name="ret_leaves_child")

    with runtime_on(weft, register) as client:
        running = client.schedule_new_workflow("ret_waits", input=0, instance_id=f"{uid}-run")
        orphan_parent = client.schedule_new_workflow("ret_leaves_child", input=0, instance_id=f"{uid}-orph")
        orphan = f"{orphan_parent}-child"
        wait_until(lambda: client.get_workflow_state(orphan) is not None
                   and client.get_workflow_state(orphan).runtime_status == S.RUNNING, 30,
                   what="the child left running to run")
        failed = client.schedule_new_workflow("ret_boom", input=0, instance_id=f"{uid}-fail")
        done = client.schedule_new_workflow("ret_parent", input=1, instance_id=f"{uid}-done")
        st = client.wait_for_workflow_completion(done, timeout_in_seconds=60)
        assert st.runtime_status == S.COMPLETED, st
        completed_at = time.monotonic()
        assert client.get_workflow_state(f"{done}-child") is not None
        assert client.wait_for_workflow_completion(failed, timeout_in_seconds=60).runtime_status == S.FAILED
        wait_until(lambda: client.get_workflow_state(running) is not None
                   and client.get_workflow_state(running).runtime_status == S.RUNNING, 30,
                   what="the waiting workflow to run")
        wait_until(lambda: client.get_workflow_state(done) is None
                   and client.get_workflow_state(f"{done}-child") is None, 20,
                   what="the completed parent and child to be purged")
        wait_until(lambda: client.get_workflow_state(orphan_parent) is None, 20,
                   what="the parent that left a child running to be purged")
        gone_after = time.monotonic() - completed_at
        assert gone_after >= 1.5, f"purged after {gone_after:.1f}s, before its 2s retention"
        print(f"\nretention 2s: completed instance gone {gone_after:.1f}s after completion")
        # A full retention period later, failed and running instances are still there.
        time_limit = time.monotonic() + 3
        wait_until(lambda: time.monotonic() > time_limit, 5, what="one more retention period")
        assert client.get_workflow_state(failed).runtime_status == S.FAILED
        assert client.get_workflow_state(running).runtime_status == S.RUNNING
        assert client.get_workflow_state(orphan).runtime_status == S.RUNNING, \
            "a running child is not purged with its completed parent"
        client.raise_workflow_event(orphan, "go", data=1)
        client.raise_workflow_event(running, "go", data=7)
        st = client.wait_for_workflow_completion(running, timeout_in_seconds=30)
        assert st.runtime_status == S.COMPLETED and json.loads(st.serialized_output) == 7
