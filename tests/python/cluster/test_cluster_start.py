"""The cluster starts: 3 placement nodes, 3 `weft sidecar`s on PostgreSQL and HAProxy; every
sidecar printed `weft sidecar ready grpc=… http=… internal=…`, every port serves, directly and
through the balancer, and `weft cluster status` lists the sidecars with acked table versions."""

from __future__ import annotations

import socket

import grpc

from cluster_harness import http_get, wait_until


def _accepts(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2):
        return True


def _grpc_ready(addr: str) -> bool:
    ch = grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        grpc.channel_ready_future(ch).result(timeout=10)
        return True
    finally:
        ch.close()


def test_cluster_starts_and_every_sidecar_serves(rig):
    c = rig.cluster(placement=3, sidecars=3, haproxy=True)
    sidecars = c.sidecars
    assert len(sidecars) == 3 and all(s["running"] for s in sidecars), sidecars
    addrs = [a for s in sidecars for a in (s["grpc"], s["http"], s["internal"])]
    assert len(set(addrs)) == 9, f"every sidecar port distinct: {addrs}"
    for s in sidecars:
        assert _accepts(s["internal"]), s
        assert _grpc_ready(s["grpc"]), s
        status, _ = http_get(f"http://{s['http']}/v1.0/healthz")
        assert status == 204, (s, status)
    # through HAProxy
    assert _grpc_ready(c.lb_grpc)
    assert http_get(f"http://{c.lb_http}/v1.0/healthz")[0] == 204

    # placement knows all three sidecars, connected, each having acked the current table.
    seen = []

    def hosts_acked():
        s = c.cluster_status()
        seen[:] = [s]
        hosts = s["hosts"]
        if len(hosts) == 3 and all(
            h["connected"] and h["acked_version"] == s["table_version"] for h in hosts
        ):
            return s
        return None

    try:
        st = wait_until(hosts_acked, 30, interval=0.2, what="3 connected sidecars that acked the current table")
    except AssertionError as e:
        raise AssertionError(f"{e}; last status: {seen}") from None
    assert st["leader"] is not None
    assert {h["address"] for h in st["hosts"]} == {s["internal"] for s in sidecars}, st


def test_actor_types_follow_connected_workers(rig):
    """A sidecar registers its app's actor types only while a worker of its app is connected."""
    c = rig.cluster(placement=1, sidecars=2)

    def types_of(internal: str):
        for h in c.cluster_status()["hosts"]:
            if h["address"] == internal:
                return set(h["actor_types"])
        return None

    s0, s1 = c.sidecar(0), c.sidecar(1)
    wait_until(lambda: types_of(s0["internal"]) is not None and types_of(s1["internal"]) is not None, 30,
               what="both sidecars in the table")
    before = types_of(s0["internal"])
    w = rig.worker(s0["grpc"], "w0")
    grown = wait_until(lambda: (t := types_of(s0["internal"])) and len(t) > len(before) and t, 30,
                       what="sidecar0 to register its app's actor types once a worker connected")
    assert types_of(s1["internal"]) == before, "sidecar1 has no worker: no workflow/activity types"
    w.stop()
    wait_until(lambda: types_of(s0["internal"]) == before, 30,
               what="sidecar0 to withdraw the types when its last worker left")
    print(f"actor types with a worker: {sorted(grown)}; without: {sorted(before)}")
