"""Acceptance 5 — steady state with 3 sidecars: clients start workflows on every sidecar (calls for
keys owned elsewhere are forwarded); no checkpoint is refused by fencing
(`weft_checkpoint_conflicts_total` stays 0 on every sidecar) and ownership is exclusive: the
sidecars' owned buckets (`weft_owned_buckets`, what their background scans are filtered by)
partition the 4096 buckets, every instance's workflow turns ran on exactly one sidecar (the worker
attached to it logs each turn), and every sidecar owned a share. Also measures throughput with 3 sidecars."""

from __future__ import annotations

import pytest

from collections import defaultdict

from conftest import direct_cluster
from workload import check_activities, check_completed_once, events_by_pid, start_many, throughput, wait_done

# A hang guard above the test's own deadlines (every wait in it has one).
pytestmark = pytest.mark.timeout(480)

N = 300


def test_steady_state_no_conflicts_and_exclusive_ownership(rig, report):
    c, workers = direct_cluster(rig)
    for i in range(3):
        m = c.metrics(i)
        assert "weft_checkpoint_conflicts_total" in m, f"sidecar{i} /metrics lacks weft_checkpoint_conflicts_total"
    run = start_many([s["grpc"] for s in c.sidecars], "steady-", N)
    wait_done(run, [s["http"] for s in c.sidecars], timeout=180)
    check_completed_once(run, c.sidecar(0)["grpc"], c.sidecar(1)["http"])
    acts = check_activities(run, rig.side_dir)
    conflicts = [c.metrics(i)["weft_checkpoint_conflicts_total"] for i in range(3)]
    # Background scans (recovery, timers, notify hints) are filtered by the owned buckets: the
    # three sidecars' bucket sets must partition the 4096 buckets.
    owned = [c.metrics(i).get("weft_owned_buckets") for i in range(3)]

    sidecar_of_pid = {w.pid: i for i, w in enumerate(workers)}
    ran_on: dict[str, set[int]] = defaultdict(set)
    for pid, turns in events_by_pid(rig.side_dir, "steady-", "turn").items():
        for iid, _task, _t in turns:
            ran_on[iid].add(sidecar_of_pid[pid])
    shared = {i: sorted(s) for i, s in ran_on.items() if len(s) != 1}
    share = [sum(1 for s in ran_on.values() if s == {i}) for i in range(3)]
    report(f"steady state, 3 sidecars + 3 SDK workers, {N} workflows x 5 started on all sidecars: "
           f"throughput {throughput(run):.1f} activity steps/s; instances owned per sidecar {share}; "
           f"owned buckets {owned}; checkpoint conflicts {conflicts}; activities {acts}")
    assert conflicts == [0, 0, 0], f"fenced-checkpoint conflicts in steady state: {conflicts}"
    assert None not in owned and sum(owned) == 4096 and all(n > 0 for n in owned), \
        f"owned buckets per sidecar do not partition the 4096 buckets: {owned}"
    assert set(ran_on) == set(run.seeds)
    assert not shared, f"{len(shared)} instances ran turns on more than one sidecar: {list(shared.items())[:10]}"
    assert all(n > 0 for n in share), f"a sidecar owned no instance: {share}"
