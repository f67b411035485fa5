"""A dapr-ext-workflow 1.18.3 worker process for the cluster tests (the real SDK's WorkflowRuntime).

Workflow `chain5(seed)`: five sequential `step` activities, v = v*3 + n, returns v. The worker
appends lines `<kind> <instance> <taskId> <pid> <t_ns>` to SIDE_DIR/events-<pid>.log: `recv` when
an activity work item arrives from the sidecar (before it waits for a thread), `exec` when the
activity starts running, `delivered` once the sidecar accepted its result (CompleteActivityTask
returned OK), and `turn` (task 0) on every workflow turn, replays too, which tells the sidecar
that ran it (one worker per sidecar in direct mode). So a test can tell a permitted re-dispatch
(no result delivered yet) from a forbidden one. t_ns is CLOCK_MONOTONIC, comparable across the
processes of one machine.

Env: DAPR_GRPC_ENDPOINT (a sidecar or the load balancer), SIDE_DIR, ACT_SLEEP (seconds per step).
Prints `WORKER READY pid=N` once the runtime started.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from worker_events import PID, record

ACT_SLEEP = float(os.environ.get("ACT_SLEEP", "0"))

from dapr.ext.workflow._durabletask import worker as _dt_worker  # noqa: E402

_orig_submit = _dt_worker._AsyncWorkerManager.submit_activity


def _submit_activity(self, func, *args, **kwargs):
    # args = (activity fn, ActivityRequest, stub, completion token): the work item just arrived
    req = args[1]
    record("recv", req.workflowInstance.instanceId, req.taskId)
    return _orig_submit(self, func, *args, **kwargs)


_dt_worker._AsyncWorkerManager.submit_activity = _submit_activity

import dapr.ext.workflow as wf  # noqa: E402  (after the stub is wrapped)

rt = wf.WorkflowRuntime(worker_ready_timeout=30, maximum_thread_pool_workers=16)


@rt.activity(name="step")
def step(ctx: wf.WorkflowActivityContext, inp: dict) -> int:
    record("exec", ctx.workflow_id, ctx.task_id)
    if ACT_SLEEP:
        time.sleep(ACT_SLEEP)
    return inp["v"] * 3 + inp["n"]


@rt.workflow(name="chain5")
def chain5(ctx: wf.DaprWorkflowContext, seed: int):
    record("turn", ctx.instance_id, 0)  # every turn (replays too): which worker ran it
    v = seed
    for n in range(5):
        v = yield ctx.call_activity(step, input={"n": n, "v": v})
    return v


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
