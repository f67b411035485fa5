"""A dapr-ext-workflow worker for the multi-app tests: APP_ROLE=caller registers app A's
workflows (which call activities and child workflows of app B with `app_id=`), APP_ROLE=callee
registers app B's activities and workflows. TARGET_APP names app B for the caller.

Every execution of a callee activity appends `exec <instance> <taskId> <pid> <t_ns>` to
SIDE_DIR/events-<pid>.log (one write per line: survives SIGKILL), and `delivered ...` once the
sidecar accepted its result, so a test can tell a permitted re-run (no result delivered yet)
from a forbidden one.
Prints `WORKER READY pid=N` once the runtime started.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from datetime import timedelta

from worker_events import PID, record

ROLE = os.environ["APP_ROLE"]
TARGET = os.environ.get("TARGET_APP", "")
ACT_SLEEP = float(os.environ.get("ACT_SLEEP", "0"))

import dapr.ext.workflow as wf  # noqa: E402  (after the stub is wrapped)

rt = wf.WorkflowRuntime(worker_ready_timeout=30, maximum_thread_pool_workers=16)

if ROLE == "caller":

    @rt.workflow(name="order")
    def order(ctx: wf.DaprWorkflowContext, x: int):
        billed = yield ctx.call_activity("bill", input=x, app_id=TARGET)
        shipped = yield ctx.call_child_workflow("ship", input=billed, app_id=TARGET)
        return {"billed": billed, "shipped": shipped}

    @rt.workflow(name="bill_only")
    def bill_only(ctx: wf.DaprWorkflowContext, x: int):
        return (yield ctx.call_activity("bill", input=x, app_id=TARGET))

    @rt.workflow(name="ship_only")
    def ship_only(ctx: wf.DaprWorkflowContext, x: int):
        return (yield ctx.call_child_workflow("ship", input=x, app_id=TARGET))

    @rt.workflow(name="propagate")
    def propagate(ctx: wf.DaprWorkflowContext, x: int):
        own = yield ctx.call_activity("inspect", input=x, app_id=TARGET,
                                      propagation=wf.PropagationScope.OWN_HISTORY)
        lineage = yield ctx.call_child_workflow("relay", input=x, app_id=TARGET,
                                                propagation=wf.PropagationScope.LINEAGE)
        return {"own": own, "lineage": lineage}

    @rt.workflow(name="retrying")
    def retrying(ctx: wf.DaprWorkflowContext, key: str):
        policy = wf.RetryPolicy(first_retry_interval=timedelta(milliseconds=200),
                                max_number_of_attempts=3)
        got = yield ctx.call_activity("flaky", input=key, app_id=TARGET, retry_policy=policy)
        try:
            yield ctx.call_activity("broken", input=key, app_id=TARGET)
        except Exception as e:  # noqa: BLE001 - the failure details are what the test checks
            return {"got": got, "caught": str(e)}
        return {"got": got, "caught": None}

    @rt.workflow(name="wait_child")
    def wait_child(ctx: wf.DaprWorkflowContext, _):
        return (yield ctx.call_child_workflow("waiter", input=None, app_id=TARGET))

    @rt.workflow(name="fan")
    def fan(ctx: wf.DaprWorkflowContext, n: int):
        tasks = [ctx.call_activity("bill", input=i, app_id=TARGET) for i in range(n)]
        results = yield wf.when_all(tasks)
        return sum(results)

else:

    @rt.activity(name="bill")
    def bill(ctx: wf.WorkflowActivityContext, x: int) -> int:
        record("exec", ctx.workflow_id, ctx.task_id)
        if ACT_SLEEP:
            time.sleep(ACT_SLEEP)
        return x * 2

    @rt.activity(name="pack")
    def pack(ctx: wf.WorkflowActivityContext, x: int) -> int:
        return x + 1000

    @rt.workflow(name="ship")
    def ship(ctx: wf.DaprWorkflowContext, x: int):
        return (yield ctx.call_activity(pack, input=x))

    def seen(h) -> dict | None:
        if h is None:
            return None
        return {"scope": h.scope.name, "apps": h.get_app_ids(),
                "workflows": [w.name for w in h.get_workflows()],
                "instances": [w.instance_id for w in h.get_workflows()],
                "bills": [len(w.get_activities_by_name("bill")) for w in h.get_workflows()]}

    @rt.activity(name="inspect")
    def inspect(ctx: wf.WorkflowActivityContext, x: int):
        return seen(ctx.get_propagated_history())

    @rt.workflow(name="relay")
    def relay(ctx: wf.DaprWorkflowContext, x: int):
        mine = seen(ctx.get_propagated_history())
        inner = yield ctx.call_activity("inspect", input=x,
                                        propagation=wf.PropagationScope.LINEAGE)
        return {"relay_saw": mine, "inspect_saw": inner}

    _attempts: dict = {}

    @rt.activity(name="flaky")
    def flaky(ctx: wf.WorkflowActivityContext, key: str) -> int:
        n = _attempts[key] = _attempts.get(key, 0) + 1
        if n < 3:
            raise RuntimeError(f"flaky attempt {n}")
        return n

    @rt.activity(name="broken")
    def broken(ctx: wf.WorkflowActivityContext, key: str) -> int:
        raise ValueError(f"broken for {key}")

    @rt.workflow(name="waiter")
    def waiter(ctx: wf.DaprWorkflowContext, _):
        got = yield ctx.wait_for_external_event("go")
        return {"got": got}


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rt.start()
    print(f"WORKER READY pid={PID}", flush=True)
    stop.wait()
    rt.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
