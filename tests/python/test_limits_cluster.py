"""Cluster-wide limit across two `weft sidecar` processes (acceptance 2 of the configuration issue):
`globalMaxConcurrentActivityInvocations: 4` on a placement node, two sidecars on one throwaway
PostgreSQL, one dapr-ext-workflow runtime per sidecar recording every activity's start and end.
The observed maximum across both workers stays ≤ 4; a sidecar holding slots is SIGKILLed; after
its leases end (`--slot-lease 3s`) the survivor runs 4 at once again and every workflow completes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from dapr.ext.workflow import WorkflowStatus

from test_limits import Tracker, metric
from weft_harness import in_ci, wait_until, weft_bin

S = WorkflowStatus
LEASE_S = 3
N_WORKFLOWS = 6
N_ACTIVITIES = 16


class Proc:
    """A process whose stdout has a ready line; killed by PID at the end."""

    def __init__(self, args, log: Path, ready: str, env=None, timeout: float = 60):
        self.log = log
        err = open(log, "wb")
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                  env=env, start_new_session=True)
        err.close()
        self.lines: list[str] = []
        got = threading.Event()
        self.match = None

        def pump():
            for raw in self.p.stdout:
                line = raw.decode("utf-8", "replace")
                self.lines.append(line)
                m = re.search(ready, line)
                if m and not got.is_set():
                    self.match = m
                    got.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not got.wait(0.05):
            if self.p.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{args[:2]} not ready: {''.join(self.lines)}\n{log.read_text()[-4000:]}")

    def kill(self, sig=signal.SIGKILL):
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)
            self.p.wait(15)


def test_global_activity_limit_across_two_sidecars_survives_sigkill(tmp_path):
    import dapr.ext.workflow as wf

    import pg

    try:
        server = pg.PgServer()
    except Exception as e:  # noqa: BLE001
        if in_ci():
            pytest.fail(f"PostgreSQL needed: {e}")
        pytest.skip(f"PostgreSQL not available: {e}. THE CLUSTER LIMIT TEST DID NOT RUN.")
    procs: list[Proc] = []
    runtimes = []
    try:
        url = server.create_database("limits_cluster")
        cfg = tmp_path / "config.yaml"
        cfg.write_text("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec:\n  workflow:\n"
                       "    globalMaxConcurrentActivityInvocations: 4\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WEFT_", "DAPR_"))}
        placement = Proc([str(weft_bin()), "placement", "--id", "1", "--listen", "127.0.0.1:0",
                          "--data-dir", str(tmp_path / "placement"), "--liveness-timeout-ms", "1500"],
                         tmp_path / "placement.log", r"listening on (\S+)", env=env)
        procs.append(placement)
        paddr = placement.match.group(1)
        sidecars = []
        for i in range(2):
            sc = Proc([str(weft_bin()), "sidecar", "--database-url", url, "--placement", paddr,
                       "--grpc-port", "0", "--http-port", "0", "--internal-port", "0",
                       "--config", str(cfg), "--slot-lease", f"{LEASE_S}s"],
                      tmp_path / f"sidecar{i}.log", r"ready grpc=(\S+) http=(\S+)", env=env)
            procs.append(sc)
            sidecars.append(sc)

        t = Tracker()
        starts: list[tuple[float, int]] = []  # (time, concurrency right after this start)
        lock = threading.Lock()

        def make():
            # Fresh functions per runtime: the SDK marks a function object as registered.
            def slow(ctx, i: int) -> int:
                with t.run("act"):
                    with lock:
                        starts.append((time.monotonic(), t.now["act"]))
                    time.sleep(0.5)
                return i

            def fan(ctx: wf.DaprWorkflowContext, n: int):
                rs = yield wf.when_all([ctx.call_activity("cl_slow", input=i) for i in range(n)])
                return sum(rs)

            return slow, fan

        for sc in sidecars:
            host, port = sc.match.group(1).rsplit(":", 1)
            rt = wf.WorkflowRuntime(host=host, port=port, worker_ready_timeout=30, maximum_thread_pool_workers=16)
            slow, fan = make()
            rt.register_activity(slow, name="cl_slow")
            rt.register_workflow(fan, name="cl_fan")
            rt.start()
            runtimes.append(rt)
        host, port = sidecars[1].match.group(1).rsplit(":", 1)
        client = wf.DaprWorkflowClient(host=host, port=port)
        ids = [client.schedule_new_workflow("cl_fan", input=N_ACTIVITIES, instance_id=f"cl-{i}")
               for i in range(N_WORKFLOWS)]

        class W:  # metric() reads weft.http
            def __init__(self, sc):
                self.base = "http://" + sc.match.group(2)

            def http(self, method, path):
                import urllib.request
                with urllib.request.urlopen(self.base + path, timeout=10) as r:
                    return r.status, dict(r.headers), r.read()

        def held(sc) -> float:
            return metric(W(sc), "weft_limit_slots_held", kind="activity", limit="cluster") or 0

        # Ownership is decided by the ring over random host IDs: the victim is a sidecar that
        # holds cluster-wide slots now (one of them must, while the fan-outs run).
        victim = wait_until(lambda: next((sc for sc in sidecars if held(sc) > 0), None), 60,
                            what="a sidecar to hold cluster-wide slots")
        survivor = sidecars[1 - sidecars.index(victim)]
        client.close()
        host, port = survivor.match.group(1).rsplit(":", 1)
        client = wf.DaprWorkflowClient(host=host, port=port)
        victim.kill()
        killed_at = time.monotonic()

        for iid in ids:
            st = client.wait_for_workflow_completion(iid, timeout_in_seconds=120)
            assert st.runtime_status == S.COMPLETED, st
        client.close()
        assert t.max["act"] <= 4, f"more than 4 activities at once across the cluster: {t.max}"
        after = [c for (ts, c) in starts if ts > killed_at + LEASE_S]
        assert after and max(after) == 4, (
            f"after the dead sidecar's leases ended the limit was not back to 4: {after}")
        print(f"\ncluster-wide: max {t.max['act']} (limit 4); after the kill + lease: max {max(after)}")
    finally:
        for rt in runtimes:
            rt.shutdown()
        for p in reversed(procs):
            p.kill()
        server.close()
