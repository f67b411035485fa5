"""Tracing across a 2-sidecar cluster (issue 20, acceptance 2): workflows started with a W3C
`traceparent` through one sidecar's HTTP API — about half of them owned, run and finished by the
other sidecar — each yield one connected trace under the caller's span: `create_orchestration`,
`orchestration` and the five `activity` spans of `chain5`, whichever sidecar exported them."""

from __future__ import annotations

import json
import secrets

import pytest

from cluster_harness import http_get, wait_until
from conftest import wait_settled
from test_tracing import Receiver, attrs

pytestmark = pytest.mark.timeout(300)

N = 12


@pytest.fixture
def collector():
    r = Receiver()
    yield r
    r.server.stop(grace=None)


def _post(url: str, headers: dict) -> int:
    import urllib.request

    req = urllib.request.Request(url, data=b"1", method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status


def test_a_forwarded_start_stays_in_one_trace(rig, collector, monkeypatch):
    # The sidecars inherit the launcher's environment.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    c = rig.cluster(placement=1, sidecars=2)
    rig.workers_parallel([(c.sidecar(i)["grpc"], f"w{i}") for i in range(2)], ACT_SLEEP=0)
    wait_settled(c, 2)
    entry = c.sidecar(0)["http"]
    callers = {}
    for i in range(N):
        iid = f"traced-{i}-{secrets.token_hex(4)}"
        trace, span = secrets.token_hex(16), secrets.token_hex(8)
        callers[iid] = (trace, span)
        status = _post(
            f"http://{entry}/v1.0/workflows/dapr/chain5/start?instanceID={iid}",
            {"traceparent": f"00-{trace}-{span}-01", "content-type": "application/json"},
        )
        assert status == 202

    def all_done():
        for iid in callers:
            code, body = http_get(f"http://{entry}/v1.0/workflows/dapr/{iid}")
            if code != 200 or json.loads(body).get("runtimeStatus") != "COMPLETED":
                return False
        return True

    wait_until(all_done, 120, interval=0.2, what=f"{N} chain5 workflows to complete")

    def spans_in():
        for iid in callers:
            names = [s.name for s in collector.of_instance(iid)]
            if "orchestration||chain5" not in names or names.count("activity||step") < 5:
                return False
        return True

    collector.wait_for(spans_in, timeout=60)
    for iid, (trace, span) in callers.items():
        spans = collector.of_instance(iid)
        by: dict[str, list] = {}
        for s in spans:
            by.setdefault(s.name, []).append(s)
        assert sorted((n, len(v)) for n, v in by.items()) == [
            ("activity||step", 5),
            ("create_orchestration||chain5", 1),
            ("orchestration||chain5", 1),
        ], (iid, by.keys())
        (create,) = by["create_orchestration||chain5"]
        (orch,) = by["orchestration||chain5"]
        assert {s.trace_id.hex() for s in spans} == {trace}, iid
        assert create.parent_span_id.hex() == span
        assert orch.parent_span_id == create.span_id
        assert all(a.parent_span_id == orch.span_id for a in by["activity||step"])
        assert attrs(orch)["durabletask.runtime_status"] == "COMPLETED"
    # Some starts crossed the internal API to the other sidecar (the ring spreads 12 IDs over 2).
    forwarded = c.metrics(0).get("weft_forwarded_calls_total", 0.0)
    assert forwarded > 0, "no start was forwarded to the other sidecar"
