"""Acceptance 4 — SIGKILL of the placement leader mid-run: no workflow fails, the run completes;
a new leader takes over and still lists every sidecar."""

from __future__ import annotations

import pytest

import time

from cluster_harness import wait_until
from conftest import direct_cluster
from workload import (Background, check_activities, check_completed_once, last_completion, start_many,
                      wait_done, wait_progress)

# A hang guard above the test's own deadlines (every wait in it has one).
pytestmark = pytest.mark.timeout(480)

N = 300


def test_placement_leader_sigkill_mid_run(rig, report):
    c, _ = direct_cluster(rig)
    client, http = c.sidecar(0)["grpc"], c.sidecar(0)["http"]
    leader = c.leader()
    bg = Background(lambda: start_many([client], "leader-", N))
    wait_progress([http], "leader-", N, at_least=N // 4)
    t_kill = time.time()
    c.kill("placement", leader)
    t0 = time.monotonic()
    new = c.leader(timeout=30)
    elected = time.monotonic() - t0
    assert new != leader
    run = bg.result()
    wait_done(run, [http], timeout=180)
    check_completed_once(run, client, http)
    check_activities(run, rig.side_dir)
    st = wait_until(lambda: (s := c.cluster_status()) and len(s["hosts"]) == 3 and s, 30,
                    what="the new leader to list all 3 sidecars")
    report(f"placement leader SIGKILL with {N} workflows running: new leader found {elected:.2f}s after the "
           f"kill (polling); last completion {last_completion(run) - t_kill:.2f}s after the kill; "
           f"table version {st['table_version']}")
