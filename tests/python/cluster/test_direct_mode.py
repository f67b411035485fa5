"""Acceptance 1 — direct mode: 3 placement nodes, 3 sidecars on PostgreSQL, one SDK worker process
attached to each sidecar; 300 workflows of 5 activities; one sidecar SIGKILLed mid-run. Every
workflow completes once with the right output; the time from the kill to the last completion is
printed."""

from __future__ import annotations

import pytest

import time

from conftest import direct_cluster
from workload import (Background, check_activities, check_completed_once, last_completion, start_many,
                      wait_done, wait_progress)

# A hang guard above the test's own deadlines (every wait in it has one).
pytestmark = pytest.mark.timeout(480)

N = 300


def test_direct_mode_sidecar_sigkill_mid_run(rig, report):
    c, _workers = direct_cluster(rig)
    victim = 2
    client = c.sidecar(0)["grpc"]
    survivors = [c.sidecar(0)["http"], c.sidecar(1)["http"]]
    bg = Background(lambda: start_many([client], "direct-", N))
    wait_progress(survivors, "direct-", N, at_least=N // 4)
    t_kill = time.time()
    c.kill("sidecar", victim)
    run = bg.result()
    wait_done(run, survivors, timeout=180)
    took = last_completion(run) - t_kill
    check_completed_once(run, client, survivors[0])
    acts = check_activities(run, rig.side_dir)
    report(f"direct mode: SIGKILL of 1 of 3 sidecars with {N} workflows running -> last completion "
           f"{took:.2f}s after the kill; activity executions {acts}")
    assert not c.sidecar(victim)["running"]
