"""What the cluster tests' SDK worker processes record: lines `<kind> <instance> <taskId> <pid>
<t_ns>` in SIDE_DIR/events-<pid>.log, one write(2) per line so they survive a SIGKILL, t_ns from
CLOCK_MONOTONIC (comparable across the processes of one machine). `delivered` is recorded once
the sidecar accepted an activity's result (CompleteActivityTask returned OK), which tells a
permitted re-dispatch (no result delivered yet) from a forbidden one.

Import this module before `dapr.ext.workflow`, so the SDK's stub is wrapped before it is used.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs

SIDE = Path(os.environ["SIDE_DIR"])
PID = os.getpid()
SIDE.mkdir(parents=True, exist_ok=True)
_log = open(SIDE / f"events-{PID}.log", "a", buffering=1)
_lock = threading.Lock()


def record(kind: str, instance: str, task_id: int) -> None:
    with _lock:
        _log.write(f"{kind} {instance} {task_id} {PID} {time.monotonic_ns()}\n")
        _log.flush()


_orig_init = stubs.TaskHubSidecarServiceStub.__init__


def _init(self, channel):
    _orig_init(self, channel)
    complete = self.CompleteActivityTask

    def complete_activity(res, *args, **kwargs):
        out = complete(res, *args, **kwargs)
        record("delivered", res.instanceId, res.taskId)
        return out

    self.CompleteActivityTask = complete_activity


stubs.TaskHubSidecarServiceStub.__init__ = _init
