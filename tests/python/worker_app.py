"""A dapr-ext-workflow worker process (WorkflowRuntime) for tests that must kill workers.

Env: DAPR_GRPC_ENDPOINT (sidecar), SIDE_DIR (side-effect files), WORKER_MODE (`normal` | `hang`),
ACT_SLEEP (seconds each durable_chain step sleeps). Prints `WORKER READY pid=N` when connected.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import dapr.ext.workflow as wf

SIDE = Path(os.environ["SIDE_DIR"])
MODE = os.environ.get("WORKER_MODE", "normal")
ACT_SLEEP = float(os.environ.get("ACT_SLEEP", "0.2"))
PID = os.getpid()

rt = wf.WorkflowRuntime(worker_ready_timeout=30, maximum_thread_pool_workers=16)


def append(name: str, line: str) -> None:
    with open(SIDE / name, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@rt.activity(name="step")
def step(ctx: wf.WorkflowActivityContext, inp: dict) -> int:
    time.sleep(ACT_SLEEP)
    append("steps.log", f"{ctx.workflow_id} {inp['n']}")
    return inp["v"] * 2 + 1


@rt.activity(name="finalize")
def finalize(ctx: wf.WorkflowActivityContext, v: int) -> str:
    # keyed by instance id: idempotent even though activities are at-least-once
    d = SIDE / "final"
    d.mkdir(exist_ok=True)
    (d / ctx.workflow_id).write_text(str(v))
    append("final.log", ctx.workflow_id)
    return f"{ctx.workflow_id}={v}"


@rt.workflow(name="durable_chain")
def durable_chain(ctx: wf.DaprWorkflowContext, seed: int):
    v = yield ctx.call_activity(step, input={"n": 1, "v": seed})
    yield ctx.create_timer(timedelta(seconds=2))
    v = yield ctx.call_activity(step, input={"n": 2, "v": v})
    v = yield ctx.call_activity(step, input={"n": 3, "v": v})
    r = yield ctx.call_activity(finalize, input=v)
    return r


@rt.workflow(name="fold_wf")
def fold_wf(ctx: wf.DaprWorkflowContext, seed: int):
    # two `step` activities in a row: each result wakes the next turn (the folded path)
    v = yield ctx.call_activity(step, input={"n": 1, "v": seed})
    v = yield ctx.call_activity(step, input={"n": 2, "v": v})
    return v


@rt.activity(name="slow_step")
def slow_step(ctx: wf.WorkflowActivityContext, x: str) -> str:
    d = SIDE / "started"
    d.mkdir(exist_ok=True)
    (d / f"{ctx.workflow_id}.{PID}").write_text(x)
    if MODE == "hang":
        time.sleep(120)  # killed by the test long before this returns
    return f"{x}-done-by-{PID}"


@rt.workflow(name="slow_wf")
def slow_wf(ctx: wf.DaprWorkflowContext, x: str):
    r = yield ctx.call_activity(slow_step, input=x)
    return r


@rt.workflow(name="hang_in_turn_wf")
def hang_in_turn_wf(ctx: wf.DaprWorkflowContext, x: str):
    # blocks inside the workflow turn itself (the orchestrator work item stays unacknowledged)
    if MODE == "hang":
        d = SIDE / "turn"
        d.mkdir(exist_ok=True)
        (d / f"{ctx.instance_id}.{PID}").write_text(x)
        time.sleep(120)
    r = yield ctx.call_activity(slow_step, input=x)
    return r


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
