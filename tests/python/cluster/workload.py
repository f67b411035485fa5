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
    started: dict[str, int] = field(default_factory=dict)  # instance -> monotonic ns of its first start call
    done: dict[str, dict] = field(default_factory=dict)


def _client(grpc_addr: str):
    import dapr.ext.workflow as wf
    host, port = grpc_addr.rsplit(":", 1)
    return wf.DaprWorkflowClient(host=host, port=port)


def start_many(grpc_addrs: list[str], prefix: str, n: int, threads: int = 16, deadline_s: float = 120,
               over_s: float = 0.0) -> Run:
    """Starts n workflows `{prefix}{i}` (seed i), spreading the calls over `grpc_addrs`. A start that
    fails with UNAVAILABLE (its sidecar just died) is retried with the same ID; ALREADY_EXISTS on a
    retry means the first attempt went through. With `over_s`, the starts are paced evenly over that
    many seconds (the i-th no earlier than i * over_s / n after the first): a steady arrival rate.
    `run.started[i]` is the CLOCK_MONOTONIC ns at which start i was first sent."""
    clients = [_client(a) for a in grpc_addrs]
    run = Run(prefix, {f"{prefix}{i}": i for i in range(n)})
    deadline = time.monotonic() + deadline_s

    def start(i: int):
        iid = f"{prefix}{i}"
        attempt = 0
        if over_s:
            time.sleep(max(0.0, t0 + i * over_s / n - time.monotonic()))  # pacing the arrivals
        run.started[iid] = time.monotonic_ns()
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


Key = tuple  # (instance, task id)


@dataclass
class ActivityLog:
    """The workers' activity events of one run, per (instance, task id): when and where each
    dispatch arrived (`recv`), each execution started (`exec`), and when a sidecar first accepted
    its result (`delivered`). Times are CLOCK_MONOTONIC ns; pids are the workers'."""
    execs: dict = field(default_factory=lambda: defaultdict(list))  # key -> [(t, pid)]
    recvs: dict = field(default_factory=lambda: defaultdict(list))  # key -> [(t, pid)]
    delivered: dict = field(default_factory=dict)  # key -> first t

    @classmethod
    def read(cls, side_dir: Path, prefixes) -> "ActivityLog":
        prefixes = tuple([prefixes] if isinstance(prefixes, str) else prefixes)
        log = cls()
        for kind, iid, task, pid, t in read_events(side_dir):
            if not iid.startswith(prefixes):
                continue
            key = (iid, task)
            if kind == "exec":
                log.execs[key].append((t, pid))
            elif kind == "recv":
                log.recvs[key].append((t, pid))
            elif kind == "delivered":
                log.delivered[key] = min(t, log.delivered.get(key, t))
        return log

    def missing_steps(self, instances) -> list[str]:
        """Instances without STEPS distinct executed steps."""
        per_instance = defaultdict(int)
        for (iid, _task) in self.execs:
            per_instance[iid] += 1
        return [i for i in instances if per_instance.get(i, 0) != STEPS]

    def dispatched_after_delivery(self) -> dict:
        """{key: (recv times, first delivery)} of activities that reached a worker again after a
        sidecar had accepted their result."""
        return {k: (sorted(t for t, _ in v), self.delivered[k]) for k, v in self.recvs.items()
                if k in self.delivered and any(t > self.delivered[k] for t, _ in v)}

    def repeats(self) -> dict:
        """{key: extra executions} of every activity that ran more than once."""
        return {k: len(v) - 1 for k, v in self.execs.items() if len(v) > 1}

    def figures(self) -> dict:
        overlapping = sum(1 for k, v in self.recvs.items() if len(v) > 1 and k in self.delivered
                          and sorted(v)[1][0] < self.delivered[k])
        return {"executions": sum(len(v) for v in self.execs.values()),
                "reruns": sum(self.repeats().values()), "overlapping_dispatches": overlapping,
                "dispatched_after_delivery": len(self.dispatched_after_delivery())}


def check_activities(run: Run, side_dir: Path) -> dict:
    """Every step of every instance ran at least once, and no activity was dispatched again after
    its result had been delivered (accepted by a sidecar): no `recv` of a (instance, task) later
    than its first `delivered`. Returns figures: executions, re-runs (all extra executions), and
    overlapping ones (a second dispatch that reached a worker while the first was still running,
    e.g. the old owner's in-flight dispatch and the new owner's re-dispatch during a hand-off)."""
    log = ActivityLog.read(side_dir, run.prefix)
    missing = log.missing_steps(run.seeds)
    assert not missing, f"{len(missing)} instances without {STEPS} distinct executed steps: {missing[:10]}"
    again = log.dispatched_after_delivery()
    assert not again, (f"{len(again)} activities were dispatched again after their result had been "
                       f"delivered (recv times, first delivery; ns): {list(again.items())[:5]}")
    return log.figures()


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
