"""A hand-written durabletask worker (raw gRPC, no SDK runtime) that answers every work item on a
different connection than the one it arrived on: the Dapr-Shared case the executor actor serves.

It opens one `GetWorkItems` stream and COMPLETIONS separate channels to the same address (the load
balancer), each with its own subchannel pool, so each is its own TCP connection and HAProxy's
round robin puts them on different sidecars. Work item k is answered on channel k mod COMPLETIONS.
A stream that breaks (its sidecar died) is reopened on a new connection; a completion that fails
with UNAVAILABLE is retried on the next channel.

It runs the same `chain5` workflow and `step` activity as cluster_worker.py, computed from the
history alone (count TaskScheduled / TaskCompleted), and records `recv` / `exec` / `delivered`
lines the same way. Env: DAPR_GRPC_ENDPOINT, SIDE_DIR, COMPLETIONS (default 3). Prints `WORKER READY pid=N`.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs
from dapr.ext.workflow._durabletask.internal import protos as pb
from google.protobuf import wrappers_pb2

ADDR = os.environ["DAPR_GRPC_ENDPOINT"]
SIDE = Path(os.environ["SIDE_DIR"])
COMPLETIONS = int(os.environ.get("COMPLETIONS", "3"))
STEPS = 5
PID = os.getpid()
_log = open(SIDE / f"events-{PID}.log", "a", buffering=1)
_log_lock = threading.Lock()
stop = threading.Event()


def record(kind: str, instance: str, task_id: int) -> None:
    with _log_lock:
        _log.write(f"{kind} {instance} {task_id} {PID} {time.monotonic_ns()}\n")
        _log.flush()


def channel() -> grpc.Channel:
    # A private subchannel pool: never share a TCP connection with another channel of ours.
    return grpc.insecure_channel(ADDR, options=[("grpc.use_local_subchannel_pool", 1)])


completion_channels = []
for _ in range(COMPLETIONS):
    ch = channel()
    grpc.channel_ready_future(ch).result(timeout=30)
    completion_channels.append((ch, stubs.TaskHubSidecarServiceStub(ch)))
_next = itertools.count()
sent = {"orchestrator": 0, "activity": 0, "retried": 0}


def complete(method: str, msg) -> bool:
    """Sends a completion on the next channel in turn; UNAVAILABLE moves on to the next one."""
    start = next(_next)
    for k in range(COMPLETIONS):
        _ch, stub = completion_channels[(start + k) % COMPLETIONS]
        try:
            getattr(stub, method)(msg, timeout=30)
            return True
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                print(f"{method} refused: {e.code()} {e.details()}", flush=True)
                return False
            sent["retried"] += 1
    print(f"{method}: every completion channel unavailable", flush=True)
    return False


def orchestrate(req, token: str) -> None:
    events = list(req.pastEvents) + list(req.newEvents)
    seed = None
    scheduled = 0
    results: dict[int, int] = {}
    for e in events:
        kind = e.WhichOneof("eventType")
        if kind == "executionStarted":
            seed = json.loads(e.executionStarted.input.value)
        elif kind == "taskScheduled":
            scheduled += 1
        elif kind == "taskCompleted":
            results[e.taskCompleted.taskScheduledId] = json.loads(e.taskCompleted.result.value)
    actions = []
    if len(results) == scheduled:  # nothing outstanding: next step or done
        v = results[scheduled] if scheduled else seed
        if scheduled < STEPS:
            # the n-th scheduled activity (1-based) has action ID n
            actions.append(pb.WorkflowAction(id=scheduled + 1, scheduleTask=pb.ScheduleTaskAction(
                name="step", input=wrappers_pb2.StringValue(value=json.dumps({"n": scheduled, "v": v})))))
        else:
            actions.append(pb.WorkflowAction(id=STEPS + 1, completeWorkflow=pb.CompleteWorkflowAction(
                workflowStatus=pb.ORCHESTRATION_STATUS_COMPLETED, result=wrappers_pb2.StringValue(value=json.dumps(v)))))
    res = pb.WorkflowResponse(instanceId=req.instanceId, actions=actions, completionToken=token)
    if complete("CompleteOrchestratorTask", res):
        sent["orchestrator"] += 1


def activity(req, token: str) -> None:
    iid = req.workflowInstance.instanceId
    record("exec", iid, req.taskId)
    inp = json.loads(req.input.value)
    res = pb.ActivityResponse(instanceId=iid, taskId=req.taskId, completionToken=token,
                              result=wrappers_pb2.StringValue(value=json.dumps(inp["v"] * 3 + inp["n"])))
    if complete("CompleteActivityTask", res):
        record("delivered", iid, req.taskId)
        sent["activity"] += 1


def serve(pool: ThreadPoolExecutor, ready: threading.Event) -> None:
    while not stop.is_set():
        ch = channel()
        try:
            grpc.channel_ready_future(ch).result(timeout=10)
            stream = stubs.TaskHubSidecarServiceStub(ch).GetWorkItems(pb.GetWorkItemsRequest())
            ready.set()
            for item in stream:
                kind = item.WhichOneof("request")
                if kind == "workflowRequest":
                    pool.submit(orchestrate, item.workflowRequest, item.completionToken)
                elif kind == "activityRequest":
                    req = item.activityRequest
                    record("recv", req.workflowInstance.instanceId, req.taskId)
                    pool.submit(activity, item.activityRequest, item.completionToken)
        except (grpc.RpcError, grpc.FutureTimeoutError) as e:
            if not stop.is_set():
                print(f"stream ended ({getattr(e, 'code', lambda: e)()}); reconnecting", flush=True)
                stop.wait(0.3)  # back-off before the next connection attempt
        finally:
            ch.close()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pool = ThreadPoolExecutor(16)
    ready = threading.Event()
    threading.Thread(target=serve, args=(pool, ready), daemon=True).start()
    if not ready.wait(30):
        print("stream not established within 30s", flush=True)
        sys.exit(1)
    print(f"WORKER READY pid={PID}", flush=True)
    stop.wait()
    print(f"RELAY SENT {json.dumps(sent)}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
