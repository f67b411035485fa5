"""durabletask-dapr 0.17.4 driver for purge by filter (run as a subprocess, like dt_scenarios.py).

Usage: python dt_purge_filter.py HOST:PORT
0.17.4's client has `purge_orchestration(instance_id)` only; a filter purge goes through the same
client's generated stub with the SDK's own `PurgeInstancesRequest(purgeInstanceFilter=...)`, as a
user of that package would write it. Prints one `RESULT {json}` line and `ALL DONE`.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import datetime, timezone

import durabletask.internal.orchestrator_service_pb2 as pb
from durabletask import client as dtc
from durabletask import task
from durabletask import worker as dtw

ADDR = sys.argv[1]


def echo(ctx: task.OrchestrationContext, x):
    return x


def boom(ctx: task.OrchestrationContext, x):
    raise ValueError("boom")


def gate(ctx: task.OrchestrationContext, x):
    v = yield ctx.wait_for_external_event("open")
    return v


def purge(c: dtc.TaskHubGrpcClient, statuses, created_from=None, created_to=None) -> int:
    f = pb.PurgeInstanceFilter(runtimeStatus=statuses)
    if created_from is not None:
        f.createdTimeFrom.FromDatetime(created_from)
    if created_to is not None:
        f.createdTimeTo.FromDatetime(created_to)
    resp = c._stub.PurgeInstances(pb.PurgeInstancesRequest(purgeInstanceFilter=f, recursive=True),
                                  timeout=60)
    return resp.deletedInstanceCount


def main():
    w = dtw.TaskHubGrpcWorker(host_address=ADDR)
    for fn in (echo, boom, gate):
        w.add_orchestrator(fn)
    w.start()
    c = dtc.TaskHubGrpcClient(host_address=ADDR)
    tag = uuid.uuid4().hex[:6]
    try:
        def finished(fn, n):
            iid = c.schedule_new_orchestration(fn, input=n, instance_id=f"dt-{fn.__name__}-{tag}-{n}")
            st = c.wait_for_orchestration_completion(iid, timeout=60)
            return iid, st.runtime_status.name

        early = [finished(echo, i) for i in range(3)]
        early_failed = finished(boom, 0)
        running = c.schedule_new_orchestration(gate, instance_id=f"dt-gate-{tag}")
        c.wait_for_orchestration_start(running, timeout=60)
        cut = datetime.now(timezone.utc)
        deadline = time.monotonic() + 5
        while datetime.now(timezone.utc) <= cut and time.monotonic() < deadline:
            pass  # the clock must pass the cut: a few microseconds
        late = [finished(echo, 10 + i) for i in range(2)]

        out = {"statuses": [s for _, s in early + [early_failed] + late]}
        out["completed_before_cut"] = purge(c, [pb.ORCHESTRATION_STATUS_COMPLETED], created_to=cut)
        exists = lambda iid: c.get_orchestration_state(iid, fetch_payloads=False) is not None  # noqa: E731
        out["early_left"] = [exists(i) for i, _ in early]
        out["late_left"] = [exists(i) for i, _ in late]
        out["failed_left"] = exists(early_failed[0])
        out["with_running"] = purge(c, [pb.ORCHESTRATION_STATUS_RUNNING, pb.ORCHESTRATION_STATUS_FAILED],
                                    created_from=datetime(2000, 1, 1, tzinfo=timezone.utc))
        out["failed_left_after"] = exists(early_failed[0])
        st = c.get_orchestration_state(running, fetch_payloads=False)
        out["running_status"] = st.runtime_status.name if st else None
        out["all_finished"] = purge(c, [])
        out["late_left_after"] = [exists(i) for i, _ in late]
        c.raise_orchestration_event(running, "open", data=1)
        out["running_end"] = c.wait_for_orchestration_completion(running, timeout=60).runtime_status.name
        print("RESULT " + json.dumps({"scenario": "purge_filter", "value": out}), flush=True)
    finally:
        w.stop()
    print("ALL DONE", flush=True)


if __name__ == "__main__":
    main()
