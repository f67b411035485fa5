"""Issue 15 point 9 — placement loses its data: its one node is SIGKILLed, its data directory
deleted, and it is started again, so a brand-new placement cluster serves tables whose version
starts again near 1. The running sidecars must follow the new cluster's tables (they carry a
cluster identity): after one sidecar is then SIGKILLed, the other must take over all 4096 buckets
and run new workflows to completion."""

from __future__ import annotations

import time

import pytest

from cluster_harness import wait_until
from conftest import wait_settled
from workload import check_completed_once, start_many, wait_done

pytestmark = pytest.mark.timeout(240)  # a hang guard above the test's own deadlines


def owned(c, i) -> float:
    return c.metrics(i).get("weft_owned_buckets", -1)


def test_sidecars_follow_a_placement_that_lost_its_data(rig, report):
    c = rig.cluster(placement=1, sidecars=2)
    rig.workers_parallel([(c.sidecar(i)["grpc"], f"w{i}") for i in range(2)], ACT_SLEEP=0.01)
    wait_settled(c, 2)
    # Some membership churn first (a sidecar without workers joins and leaves), so the old table's
    # version is well above what the new cluster's first tables will have.
    extra = c.add_sidecar()
    assert c.terminate("sidecar", extra, timeout=30) == 0
    before = wait_settled(c, 2)

    c.kill("placement", 0)
    c.wipe("placement", 0)
    c.restart("placement", 0)
    after = wait_settled(c, 2, timeout=30)  # both sidecars registered with the new cluster

    t_kill = time.monotonic()
    c.kill("sidecar", 1)
    removed = wait_until(lambda: (s := c.cluster_status()) and len(s["hosts"]) == 1 and s, 30,
                         what="the new placement to remove the killed sidecar")
    # Sidecar 0 acknowledges every table it receives; what counts is that it applies them.
    try:
        wait_until(lambda: owned(c, 0) == 4096, 20, interval=0.2,
                   what="sidecar0 to own every bucket after sidecar1 died")
        took_over = time.monotonic() - t_kill
    finally:
        report(f"placement data loss: table version {before['table_version']} before the wipe, "
               f"{after['table_version']} once both sidecars re-registered, {removed['table_version']} after "
               f"sidecar1 was removed; cluster id {before.get('cluster_id')!r} -> {removed.get('cluster_id')!r}; "
               f"sidecar0 owns {owned(c, 0):.0f} buckets")
    run = start_many([c.sidecar(0)["grpc"]], "dataloss-", 20)
    wait_done(run, [c.sidecar(0)["http"]], timeout=60)
    check_completed_once(run, c.sidecar(0)["grpc"], c.sidecar(0)["http"])
    report(f"placement data loss: sidecar0 owned all 4096 buckets {took_over:.2f}s after sidecar1's SIGKILL; "
           f"20 new workflows completed")
