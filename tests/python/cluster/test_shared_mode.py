"""Acceptance 2 — Dapr-Shared mode: 3 sidecars behind HAProxy; workers and clients connect only
through it. A hand-written worker that answers every work item on another connection proves the
executor path (`weft_executor_routed_total` > 0 summed over the sidecars); then SDK workers join,
one sidecar is SIGKILLed mid-run, the workers reconnect through the balancer and every workflow
still completes once."""

from __future__ import annotations

import pytest

import time

from workload import (Background, check_activities, check_completed_once, events_by_pid, last_completion,
                      start_many, wait_done, wait_progress)

# A hang guard above the test's own deadlines (every wait in it has one).
pytestmark = pytest.mark.timeout(480)

N = 300


def routed_total(c) -> tuple[float, list]:
    """weft_executor_routed_total of every running sidecar (absent = never incremented = 0)."""
    per = [c.metrics(i).get("weft_executor_routed_total", 0.0) for i, s in enumerate(c.sidecars) if s["running"]]
    return sum(per), per


def test_shared_mode_executor_path_then_sidecar_sigkill(rig, report):
    c = rig.cluster(placement=3, sidecars=3, haproxy=True)
    lb_grpc, lb_http = c.lb_grpc, c.lb_http

    # Phase 1: only the hand-written worker, completions on other connections than the stream.
    relay = rig.worker(lb_grpc, "relay", script="relay_worker.py", COMPLETIONS=3)
    run1 = start_many([lb_grpc], "relay-", 40)
    wait_done(run1, [lb_http], timeout=120)
    check_completed_once(run1, lb_grpc, lb_http)
    check_activities(run1, rig.side_dir)
    routed, per = routed_total(c)
    report(f"shared mode: {len(run1.seeds)} workflows answered on other connections -> "
           f"weft_executor_routed_total {routed:.0f} (per sidecar {per})")
    assert routed > 0, "no completion went through the executor path"

    # Phase 2: SDK workers through the balancer as well; SIGKILL a sidecar mid-run.
    workers = rig.workers_parallel([(lb_grpc, f"w{i}") for i in range(3)], ACT_SLEEP=0.05)
    bg = Background(lambda: start_many([lb_grpc], "shared-", N))
    wait_progress([lb_http], "shared-", N, at_least=N // 4)
    t_kill, t_kill_mono = time.time(), time.monotonic_ns()
    c.kill("sidecar", 1)
    run = bg.result()
    wait_done(run, [lb_http], timeout=180)
    took = last_completion(run) - t_kill
    check_completed_once(run, lb_grpc, lb_http)
    acts = check_activities(run, rig.side_dir)
    after = {pid: sum(1 for (_i, _t, t) in ev if t > t_kill_mono)
             for pid, ev in events_by_pid(rig.side_dir, "shared-", "exec").items()}
    routed2, per2 = routed_total(c)
    report(f"shared mode: SIGKILL of 1 of 3 sidecars behind HAProxy with {N} workflows -> last completion "
           f"{took:.2f}s after the kill; executions after the kill per worker pid {after}; "
           f"routed total now {routed2:.0f} {per2}; activities {acts}")
    for w in workers + [relay]:
        assert w.proc.poll() is None, f"worker {w.name} died:\n{w.log()}"
        assert after.get(w.pid, 0) > 0, (f"worker {w.name} ran nothing after the kill: it did not reconnect "
                                         f"through the balancer ({after})\n{w.log()}")
