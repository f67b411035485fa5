"""The cluster suite's workload: start `chain5` workflows with the real SDK client, wait for them,
and check each completed once with the right output and no delivered activity ran again."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from cluster_harness import Progress, expected_output, http_get, read_events, rfc3339_to_epoch, wait_until

STEPS = 5


@dataclass
class Run:
    prefix: str
    seeds: dict[str, int]
    started_at: float = 0.0  # wall clock
    start_secs: float = 0.0
    done: dict[str, dict] = field(default_factory=dict)


def _client(grpc_addr: str):
    import dapr.ext.workflow as wf
    host, port = grpc_addr.rsplit(":", 1)
    return wf.DaprWorkflowClient(host=host, port=port)


def start_many(grpc_addrs: list[str], prefix: str, n: int, threads: int = 16, deadline_s: float = 120) -> Run:
    """Starts n workflows `{prefix}{i}` (seed i), spreading the calls over `grpc_addrs`. A start that
    fails with UNAVAILABLE (its sidecar just died) is retried with the same ID; ALREADY_EXISTS on a
    retry means the first attempt went through."""
    clients = [_client(a) for a in grpc_addrs]
    run = Run(prefix, {f"{prefix}{i}": i for i in range(n)})
    deadline = time.monotonic() + deadline_s

    def start(i: int):
        iid = f"{prefix}{i}"
        attempt = 0
        while True:
            c = clients[(i + attempt) % len(clients)]
            try:
                c.schedule_new_workflow("chain5", input=i, instance_id=iid)
                return
            except grpc.RpcError as e:
                code = e.code()
                if attempt > 0 and code == grpc.StatusCode.ALREADY_EXISTS:
                    return
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) \
                        or time.monotonic() > deadline:
                    raise
                attempt += 1
                time.sleep(0.2)  # back-off before the retry, not synchronisation

    run.started_at = time.time()
    t0 = time.monotonic()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(start, range(n)))
    run.start_secs = time.monotonic() - t0
    for c in clients:
        c.close()
    return run


def wait_done(run: Run, http_addrs, timeout: float, on_tick=None) -> Run:
    run.done = Progress(http_addrs, run.prefix, len(run.seeds)).wait_all(timeout, on_tick)
    return run


def last_completion(run: Run) -> float:
    """Wall-clock time of the run's last completion (the instances' lastUpdatedAt)."""
    return max(rfc3339_to_epoch(i["lastUpdatedAt"]) for i in run.done.values())


def throughput(run: Run) -> float:
    """Activity steps per second, from the first start to the last completion."""
    return len(run.seeds) * STEPS / max(last_completion(run) - run.started_at, 1e-9)


def check_completed_once(run: Run, grpc_addr: str, http_addr: str) -> None:
    """Every instance COMPLETED with the right output (read with the SDK client), and its history
    holds exactly one ExecutionCompleted and STEPS scheduled and completed tasks."""
    from dapr.ext.workflow import WorkflowStatus

    assert set(run.done) == set(run.seeds), f"missing: {sorted(set(run.seeds) - set(run.done))[:10]}"
    bad_status = {i: d["runtimeStatus"] for i, d in run.done.items() if d["runtimeStatus"] != "COMPLETED"}
    assert not bad_status, f"{len(bad_status)} not COMPLETED: {dict(list(bad_status.items())[:10])}"
    c = _client(grpc_addr)
    problems = []

    def check(iid: str):
        st = c.get_workflow_state(iid, fetch_payloads=True)
        if st is None or st.runtime_status != WorkflowStatus.COMPLETED:
            problems.append(f"{iid}: state {st and st.runtime_status}")
            return
        want = expected_output(run.seeds[iid], STEPS)
        if json.loads(st.serialized_output) != want:
            problems.append(f"{iid}: output {st.serialized_output} != {want}")
        status, body = http_get(f"http://{http_addr}/weft/v1/instances/{iid}/history")
        if status != 200:
            problems.append(f"{iid}: history HTTP {status}")
            return
        types = [e.get("type") for e in json.loads(body)["events"]]
        counts = {t: types.count(t) for t in ("ExecutionCompleted", "TaskScheduled", "TaskCompleted")}
        if counts != {"ExecutionCompleted": 1, "TaskScheduled": STEPS, "TaskCompleted": STEPS}:
            problems.append(f"{iid}: history counts {counts}")

    try:
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(check, sorted(run.seeds)))
    finally:
        c.close()
    assert not problems, f"{len(problems)} instances wrong:\n" + "\n".join(problems[:20])


def check_activities(run: Run, side_dir: Path) -> dict:
    """Every step of every instance ran at least once, and no activity was dispatched again after
    its result had been delivered (accepted by a sidecar): no `recv` of a (instance, task) later
    than its first `delivered`. Returns figures: executions, re-runs (all extra executions), and
    overlapping ones (a second dispatch that reached a worker while the first was still running,
    e.g. the old owner's in-flight dispatch and the new owner's re-dispatch during a hand-off)."""
    execs: dict[tuple, list[int]] = defaultdict(list)
    recvs: dict[tuple, list[int]] = defaultdict(list)
    delivered: dict[tuple, int] = {}
    for kind, iid, task, _pid, t in read_events(side_dir):
        if not iid.startswith(run.prefix):
            continue
        key = (iid, task)
        if kind == "exec":
            execs[key].append(t)
        elif kind == "recv":
            recvs[key].append(t)
        elif kind == "delivered":
            delivered[key] = min(t, delivered.get(key, t))
    per_instance = defaultdict(int)
    for (iid, _task) in execs:
        per_instance[iid] += 1
    missing = [i for i in run.seeds if per_instance.get(i, 0) != STEPS]
    assert not missing, f"{len(missing)} instances without {STEPS} distinct executed steps: {missing[:10]}"
    again = {k: (sorted(recvs[k]), delivered[k]) for k in recvs
             if k in delivered and any(t > delivered[k] for t in recvs[k])}
    assert not again, (f"{len(again)} activities were dispatched again after their result had been "
                       f"delivered (recv times, first delivery; ns): {list(again.items())[:5]}")
    reruns = sum(len(v) - 1 for v in execs.values())
    overlapping = sum(1 for k, v in recvs.items() if len(v) > 1 and k in delivered
                      and sorted(v)[1] < delivered[k])
    return {"executions": sum(len(v) for v in execs.values()), "reruns": reruns,
            "overlapping_dispatches": overlapping, "dispatched_after_delivery": len(again)}


class Background:
    """Runs `start_many(...)` in a thread so the test can inject faults while the run starts."""

    def __init__(self, fn):
        self._result: dict = {}

        def body():
            try:
                self._result["run"] = fn()
            except BaseException as e:  # noqa: BLE001 - re-raised by result()
                self._result["error"] = e

        self._t = threading.Thread(target=body, daemon=True)
        self._t.start()

    def result(self, timeout: float = 180) -> Run:
        self._t.join(timeout)
        assert not self._t.is_alive(), f"starting the workflows took over {timeout}s"
        if "error" in self._result:
            raise self._result["error"]
        return self._result["run"]


def wait_progress(http_addrs, prefix: str, total: int, at_least: int, timeout: float = 120) -> int:
    """Waits until `at_least` of the run's instances finished; returns how many had."""
    p = Progress(http_addrs, prefix, total)
    return wait_until(lambda: (n := p.poll()) >= at_least and n, timeout, interval=0.2,
                      what=f"{at_least} of {prefix}* finished")


def events_by_pid(side_dir: Path, prefix: str, kind: str) -> dict[int, list[tuple[str, int, int]]]:
    """{pid: [(instance, task, t_ns)]} of one kind of worker event for this run."""
    out: dict[int, list] = defaultdict(list)
    for k, iid, task, pid, t in read_events(side_dir):
        if k == kind and iid.startswith(prefix):
            out[pid].append((iid, task, t))
    return out
