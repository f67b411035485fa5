"""Python SDK worker benchmark for weft-bench (`--python`): ten-step chains on dapr-ext-workflow.

Run by weft-bench against a `weft dev` process it started; the sidecar's address comes from
DAPR_GRPC_ENDPOINT (host:port). Two phases in one worker process:

1. throughput: WORKFLOWS chains of STEPS activities started at once (CLIENTS threads scheduling
   and awaiting), timed from the first start to the last completion -> workflows/s;
2. latency: LATENCY_RUNS chains one at a time, start to completion -> p50/p99 ms.

Prints `PHASE <name>` lines as phases begin and end (weft-bench samples the sidecar's CPU at each)
and one JSON object on the last line of stdout: the figures and this process's CPU seconds
(worker + client together) per phase.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import dapr.ext.workflow as wf

STEPS = int(os.environ.get("STEPS", "10"))
WORKFLOWS = int(os.environ.get("WORKFLOWS", "200"))
LATENCY_RUNS = int(os.environ.get("LATENCY_RUNS", "50"))
CLIENTS = int(os.environ.get("CLIENTS", "50"))
WARMUP = int(os.environ.get("WARMUP", "10"))
TIMEOUT = int(os.environ.get("WF_TIMEOUT", "300"))

logging.getLogger("durabletask-worker").setLevel(logging.WARNING)
logging.getLogger("durabletask-client").setLevel(logging.WARNING)

host, _, port = os.environ["DAPR_GRPC_ENDPOINT"].rpartition(":")
rt = wf.WorkflowRuntime(host=host, port=port, worker_ready_timeout=30, maximum_thread_pool_workers=16)


@rt.activity(name="step")
def step(ctx: wf.WorkflowActivityContext, v: int) -> int:
    return v + 1


@rt.workflow(name="chain")
def chain(ctx: wf.DaprWorkflowContext, n: int):
    v = 0
    for _ in range(n):
        v = yield ctx.call_activity(step, input=v)
    return v


def run_one(client: wf.DaprWorkflowClient, iid: str) -> float:
    t = time.perf_counter()
    client.schedule_new_workflow(workflow=chain, input=STEPS, instance_id=iid)
    st = client.wait_for_workflow_completion(iid, timeout_in_seconds=TIMEOUT)
    dt = time.perf_counter() - t
    if st is None or st.runtime_status.name != "COMPLETED" or st.serialized_output != str(STEPS):
        raise SystemExit(f"{iid}: not completed correctly: {st}")
    return dt


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = max(1, -(-int(p * 1000) * len(xs) // 1000))
    return xs[min(k, len(xs)) - 1]


def phase(name: str) -> None:
    print(f"PHASE {name}", flush=True)


def main() -> None:
    rt.start()
    tag = uuid.uuid4().hex[:8]
    clients = [wf.DaprWorkflowClient(host=host, port=port) for _ in range(CLIENTS)]
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            # warm-up (connections, caches), unmeasured
            list(pool.map(lambda i: run_one(clients[i % CLIENTS], f"py-w-{tag}-{i}"), range(WARMUP)))
            phase("throughput-start")
            cpu0, wall0 = time.process_time(), time.perf_counter()
            lat = list(pool.map(lambda i: run_one(clients[i % CLIENTS], f"py-t-{tag}-{i}"), range(WORKFLOWS)))
            wall = time.perf_counter() - wall0
            cpu1 = time.process_time()
            phase("throughput-end")
        seq = [run_one(clients[0], f"py-l-{tag}-{i}") for i in range(LATENCY_RUNS)]
        cpu2 = time.process_time()
        phase("latency-end")
    finally:
        for c in clients:
            c.close()
        rt.shutdown()
    print(json.dumps({
        "steps": STEPS,
        "workflows": WORKFLOWS,
        "clients": CLIENTS,
        "throughput_wf_per_s": WORKFLOWS / wall,
        "throughput_elapsed_s": wall,
        "throughput_p50_ms": statistics.median(lat) * 1e3,
        "throughput_cpu_s": cpu1 - cpu0,
        "latency_runs": LATENCY_RUNS,
        "latency_p50_ms": statistics.median(seq) * 1e3 if seq else 0.0,
        "latency_p99_ms": pct(seq, 0.99) * 1e3 if seq else 0.0,
        "latency_cpu_s": cpu2 - cpu1,
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
