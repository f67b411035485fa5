"""Fixtures of the cluster suite: `rig` starts clusters (through `weft-cluster`) and SDK worker
processes, and ends them all (by PID) at teardown, printing every process's log tail on failure.

Run on its own, with this directory as the conftest boundary (the single-node suite's fixtures
do not apply here):
  .venv/bin/python -m pytest -c tests/python/pytest.ini --rootdir tests/python \
      --confcutdir tests/python/cluster tests/python/cluster
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from cluster_harness import Cluster, require_prerequisites, start_worker, wait_until  # noqa: E402

# Bound every SDK unary call that has no deadline of its own.
os.environ.setdefault("DAPR_API_TIMEOUT_SECONDS", "60")
logging.getLogger("durabletask-worker").setLevel(logging.WARNING)
logging.getLogger("durabletask-client").setLevel(logging.WARNING)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class Rig:
    def __init__(self, base: Path):
        self.base = base
        self.clusters: list[Cluster] = []
        self.workers: list = []

    def cluster(self, **start) -> Cluster:
        c = Cluster(self.base / f"cluster{len(self.clusters)}", **start)
        self.clusters.append(c)
        return c

    def worker(self, grpc_addr: str, name: str, script: str = "cluster_worker.py", **env):
        w = start_worker(grpc_addr, self.base / "side", self.base / "workers" / f"{name}.log", script=script,
                         **env)
        w.name = name
        self.workers.append(w)
        return w

    @property
    def side_dir(self) -> Path:
        return self.base / "side"

    def workers_parallel(self, specs: list[tuple[str, str]], **env) -> list:
        """Starts one worker per (grpc address, name) at once (each waits for its own ready line)."""
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(len(specs)) as ex:
            futs = [ex.submit(start_worker, addr, self.base / "side", self.base / "workers" / f"{name}.log",
                              **env) for addr, name in specs]
        out, errors = [], []
        for (_, name), f in zip(specs, futs):
            try:
                w = f.result()
            except Exception as e:  # noqa: BLE001 - raised below, after the others are tracked
                errors.append(e)
                continue
            w.name = name
            self.workers.append(w)  # tracked for teardown even if a sibling failed
            out.append(w)
        if errors:
            raise errors[0]
        return out

    def worker_logs(self, n: int = 3000) -> str:
        return "\n".join(f"----- worker {w.name} (pid {w.pid}) -----\n{w.log(n)}" for w in self.workers)


@pytest.fixture
def rig(request, tmp_path):
    require_prerequisites()
    r = Rig(tmp_path)
    yield r
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        print(f"\n===== cluster suite logs ({tmp_path}) =====")
        for c in r.clusters:
            print(c.logs(5000))
        print(r.worker_logs())
        print("===== end =====")
    for w in r.workers:
        w.kill()  # SIGKILL by PID: a worker's graceful stop only costs seconds here
    for c in r.clusters:
        c.close()


@pytest.fixture
def report(capsys):
    """Prints a measured figure straight to the terminal (past pytest's capture)."""
    def emit(line: str) -> None:
        with capsys.disabled():
            print(f"\nMEASURED {line}", flush=True)
    return emit


def direct_cluster(rig, sidecars: int = 3, act_sleep: float = 0.05, **start):
    """A cluster in direct mode: one SDK worker process attached to each sidecar."""
    c = rig.cluster(placement=3, sidecars=sidecars, **start)
    workers = rig.workers_parallel([(c.sidecar(i)["grpc"], f"w{i}") for i in range(sidecars)], ACT_SLEEP=act_sleep)
    wait_settled(c, sidecars)
    return c, workers


def wait_settled(c, hosts: int, timeout: float = 30) -> dict:
    """Waits until placement lists `hosts` sidecars that all registered the same (non-empty) actor
    types, i.e. each has a worker, and every one acked the current table version."""
    last = {}

    def settled():
        s = c.cluster_status()
        last["status"] = s
        hs = s["hosts"]
        types = {tuple(sorted(h["actor_types"])) for h in hs}
        ok = (len(hs) == hosts and len(types) == 1 and all(types)
              and all(h["acked_version"] == s["table_version"] for h in hs))
        return s if ok else None
    try:
        return wait_until(settled, timeout, interval=0.2, what=f"{hosts} sidecars with workers in an acked table")
    except AssertionError as e:
        # What placement last said is the post-mortem: which host is missing, or which ack lags.
        raise AssertionError(f"{e}; last status: {last.get('status')}") from None
