"""Runs what the chart renders for two apps: `apps: [appa, appb]` with a WorkflowAccessPolicy that
lets appa call appb's `bill` activity and schedule its `ship*` workflows. The placement pod and
one sidecar pod per app become local processes (kube_local.py), each app's Service is an HAProxy
whose backends are the pods its rendered selector matches, and the multi-app SDK worker
(tests/python/cluster/multiapp_worker.py) of each app connects only through its app's Service.
Each app's sidecar presents its own SPIFFE ID; a workflow `order` of appa calls appb's activity
and child workflow and completes; a raise from appa that the policy does not allow is refused,
while the same call within appb is not.

Runs in the SDK venv (.venv) like test_rendered.py, whose rendering and helpers it reuses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

import test_rendered as tr
from kube_local import Cluster, Pod, haproxy_for, wait_for

APPS = ("appa", "appb")
WORKER = tr.ROOT / "tests" / "python" / "cluster" / "multiapp_worker.py"
POLICY = [{"name": "appb-callers", "scopes": ["appb"], "spec": {"rules": [{
    "callers": [{"appID": "appa"}],
    "workflows": [{"name": "ship*", "operations": ["schedule"]}],
    "activities": [{"name": "bill"}]}]}}]


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    tr.require(tr.weft_bin(), "the weft binary (cargo build -p weft)")
    tr.require(WORKER, "the multi-app worker")
    ports = {"placement.port": tr.free_port(), "sidecar.ports.grpc": tr.free_port(),
             "sidecar.ports.http": tr.free_port(), "sidecar.ports.internal": tr.free_port()}
    # One placement voter and one sidecar per app keep the run short; the three-voter and
    # two-sidecar paths are test_rendered.py's.
    docs = tr.render(["--set", "placement.replicas=1",
                      "--set-json", "apps=" + json.dumps([{"appId": a, "replicas": 1} for a in APPS]),
                      "--set-json", "config.accessPolicies=" + json.dumps(POLICY),
                      *(a for k, v in ports.items() for a in ("--set", f"{k}={v}"))])
    db_url = tr.pg.server().create_database("chart_apps_" + uuid.uuid4().hex[:12])
    c = Cluster(docs, tr.NAMESPACE, tmp_path_factory.mktemp("kube-apps"),
                extra_secrets={tr.DB_SECRET: {"url": db_url}})
    c.ports = ports
    sts = tr.workload(docs, "StatefulSet", "placement")
    name = f"{sts['metadata']['name']}-0"
    ip = c.ip()
    for n in (f"{name}.{sts['spec']['serviceName']}.{tr.NAMESPACE}.svc.{c.cluster_domain}",
              f"{name}.{sts['spec']['serviceName']}.{tr.NAMESPACE}.svc"):
        c.add_name(n, ip)
    c.placement = [Pod(c, sts, name, ip, tr.weft_bin())]
    deps = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    assert set(deps) == {f"weft-{a}" for a in APPS}, set(deps)
    c.sidecars = {a: Pod(c, deps[f"weft-{a}"], f"weft-{a}-{uuid.uuid4().hex[:5]}", c.ip(), tr.weft_bin())
                  for a in APPS}
    c.services = {a: next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == f"weft-{a}") for a in APPS}
    c.service_ip = {a: c.ip() for a in APPS}
    c.haproxies, c.workers = [], []
    yield c
    for w in c.workers:
        w.terminate()
        try:
            w.wait(20)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait(10)
    for p in c.sidecars.values():
        p.stop(timeout=p.spec["terminationGracePeriodSeconds"])
    for p in c.placement:
        p.stop()
    for h in c.haproxies:
        h.terminate()
        try:
            h.wait(10)
        except subprocess.TimeoutExpired:
            h.kill()


def _http(url: str, token: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                 headers={"dapr-api-token": token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _start_worker(c: Cluster, app: str, role: str, token: str) -> subprocess.Popen:
    side = c.root / f"worker-{app}"
    side.mkdir()
    grpc_port = next(p["port"] for p in c.services[app]["spec"]["ports"] if p["name"] == "grpc")
    env = {**os.environ, "DAPR_GRPC_ENDPOINT": f"http://{c.service_ip[app]}:{grpc_port}",
           "DAPR_API_TOKEN": token, "DAPR_API_TIMEOUT_SECONDS": "60", "SIDE_DIR": str(side),
           "APP_ROLE": role, "TARGET_APP": "appb"}
    env.pop("DAPR_GRPC_PORT", None)
    env.pop("DAPR_HTTP_PORT", None)
    log = open(side / "worker.log", "ab")
    w = subprocess.Popen([sys.executable, str(WORKER)], env=env, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    log.close()
    c.workers.append(w)
    wait_for(lambda: "WORKER READY" in (side / "worker.log").read_text(errors="replace") or w.poll() is not None,
             60, f"the {app} worker started")
    assert w.poll() is None, (side / "worker.log").read_text(errors="replace")[-3000:]
    return w


def _wait_status(base: str, token: str, iid: str, want: set[str], timeout: float) -> dict:
    got: dict = {}

    def done() -> bool:
        code, body = _http(f"{base}/v1.0/workflows/dapr/{iid}", token)
        if code == 200:
            got.update(json.loads(body))
        return got.get("runtimeStatus") in want
    wait_for(done, timeout, f"{iid} reaches {want}")
    return got


def test_two_rendered_apps_run_a_cross_app_workflow(apps):
    c = apps
    t0 = time.monotonic()
    for p in c.placement:
        p.start()
    wait_for(lambda: all(p.probe("readinessProbe") for p in c.placement), 60, "placement ready", c.placement)
    pods = list(c.sidecars.values())
    for p in pods:
        p.start()
    wait_for(lambda: all(p.probe("startupProbe") and p.probe("readinessProbe") for p in pods), 90,
             "both apps' sidecars ready", pods + c.placement)

    # Each app's sidecar presents its own identity (the init container's `--app-id`).
    ca_secret = next(d for d in c.docs if d["kind"] == "Secret"
                     and d["metadata"]["labels"].get("app.kubernetes.io/component") == "tls")
    ca_pem = c.secret_value(ca_secret["metadata"]["name"], "ca.crt")
    for app, p in c.sidecars.items():
        ids = tr._served_spiffe_ids(p, c.ports["sidecar.ports.internal"], ca_pem, c.placement[0])
        assert ids == [f"spiffe://cluster.local/ns/{tr.NAMESPACE}/{app}"], (app, ids)

    # Each Service (HAProxy) reaches the pods its rendered selector matches: its own app's only.
    for app, svc in c.services.items():
        backends = [p for p in pods if matches(svc["spec"]["selector"], p.workload["spec"]["template"]["metadata"]["labels"])]
        assert backends == [c.sidecars[app]], (app, [b.name for b in backends])
        (c.root / f"svc-{app}").mkdir()
        h, _ = haproxy_for(svc, backends, c.service_ip[app], c.root / f"svc-{app}")
        c.haproxies.append(h)
    http_port = c.ports["sidecar.ports.http"]
    for app in APPS:
        wait_for(lambda: tr._accepts(c.service_ip[app], http_port), 15, f"the {app} Service accepting", [])

    env0 = c.sidecars["appa"].container["env"]
    token_ref = next(e for e in env0 if e["name"] == "DAPR_API_TOKEN")["valueFrom"]["secretKeyRef"]
    token = c.secret_value(token_ref["name"], token_ref["key"])
    _start_worker(c, "appa", "caller", token)
    _start_worker(c, "appb", "callee", token)

    base = {a: f"http://{c.service_ip[a]}:{http_port}" for a in APPS}
    iid = f"order-{uuid.uuid4().hex[:8]}"
    code, body = _http(f"{base['appa']}/v1.0/workflows/dapr/order/start?instanceID={iid}", token, b"21")
    assert code == 202, (code, body)
    st = _wait_status(base["appa"], token, iid, {"COMPLETED", "FAILED", "TERMINATED"}, 90)
    assert st["runtimeStatus"] == "COMPLETED", st
    assert json.loads(st["properties"]["dapr.workflow.output"]) == {"billed": 42, "shipped": 1042}, st

    # The rendered policy is loaded: raising an event on appb's instance from appa is not among
    # what it allows (only schedule), while appb itself may.
    wid = f"waiter-{uuid.uuid4().hex[:8]}"
    assert _http(f"{base['appb']}/v1.0/workflows/dapr/waiter/start?instanceID={wid}", token, b"null")[0] == 202
    _wait_status(base["appb"], token, wid, {"RUNNING"}, 60)
    code, body = _http(f"{base['appa']}/v1.0/workflows/dapr/{wid}/raiseEvent/go?appID=appb", token, b'"a"')
    assert code == 403 and b"access denied by workflow access policy" in body, (code, body)
    assert _http(f"{base['appb']}/v1.0/workflows/dapr/{wid}/raiseEvent/go", token, b'"b"')[0] == 202
    st = _wait_status(base["appb"], token, wid, {"COMPLETED", "FAILED"}, 60)
    assert json.loads(st["properties"]["dapr.workflow.output"]) == {"got": "b"}, st
    print(f"two apps: cross-app workflow and policy checked in {time.monotonic() - t0:.1f}s")
