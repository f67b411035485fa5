"""Runs what the chart renders: the placement StatefulSet and the sidecar Deployment become local
processes with exactly their rendered command, args and env (see kube_local.py for the address,
DNS and volume substitutions), on a throwaway PostgreSQL, with HAProxy standing in for the sidecar
Service. The chart's defaults are closed: the pods' init containers issue their certificates from
the rendered CA Secret, and every Weft port between them is mutual TLS. The pods must pass their own
rendered readiness probes, present certificates with their SPIFFE IDs chained to that CA, then a
dapr-ext-workflow worker and client, connected only through the Service, run workflows to
completion with the token from the rendered, generated Secret. A wrong flag, env name, Secret key,
path, port or probe in a template fails it.

Runs in the SDK venv (.venv); the manifests are rendered by render.py in the chart venv
(WEFT_CHART_PYTHON, default .venv-chart/bin/python), which has PyYAML.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import ssl

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "python"))

import pg  # noqa: E402  (tests/python/pg.py: throwaway PostgreSQL)
from kube_local import Cluster, Pod, grpc_health_serving, haproxy_for, wait_for  # noqa: E402

NAMESPACE = "weft"
RELEASE = "weft"
DB_SECRET = "weft-test-db"  # database.existingSecret in rendered-values.yaml: the test is the user


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(path: Path, what: str) -> None:
    if not path.exists():
        msg = f"{what} not found at {path}"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)


def weft_bin() -> Path:
    return Path(os.environ.get("WEFT_BIN") or ROOT / "target" / "debug" / "weft")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render(extra: list[str]) -> list[dict]:
    py = Path(os.environ.get("WEFT_CHART_PYTHON") or ROOT / ".venv-chart" / "bin" / "python")
    require(py, "the chart venv's python (WEFT_CHART_PYTHON; scripts/test.sh builds .venv-chart)")
    p = subprocess.run([str(py), str(HERE / "render.py"), "--namespace", NAMESPACE,
                        "-f", str(HERE / "rendered-values.yaml"), *extra],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def workload(docs: list[dict], kind: str, component: str) -> dict:
    found = [d for d in docs if d["kind"] == kind
             and d["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(found) == 1, (kind, component, [d["metadata"]["name"] for d in found])
    return found[0]


@pytest.fixture(scope="module", params=[[], ["-f", str(ROOT / "helm" / "weft" / "ci" / "ha-placement-values.yaml")]],
                ids=["placement-x3", "placement-x5"])
def cluster(request, tmp_path_factory):
    require(weft_bin(), "the weft binary (cargo build -p weft)")
    ports = {"placement.port": free_port(), "sidecar.ports.grpc": free_port(),
             "sidecar.ports.http": free_port(), "sidecar.ports.internal": free_port()}
    docs = render([*request.param, *(a for k, v in ports.items() for a in ("--set", f"{k}={v}"))])
    db_url = pg.server().create_database("chart_" + uuid.uuid4().hex[:12])
    c = Cluster(docs, NAMESPACE, tmp_path_factory.mktemp("kube"),
                extra_secrets={DB_SECRET: {"url": db_url}})
    c.ports = ports

    # placement: StatefulSet pods NAME-0..N-1, addressed through the headless Service
    sts = workload(docs, "StatefulSet", "placement")
    headless = sts["spec"]["serviceName"]
    c.placement = []
    for i in range(sts["spec"]["replicas"]):
        name = f"{sts['metadata']['name']}-{i}"
        ip = c.ip()
        c.add_name(f"{name}.{headless}.{NAMESPACE}.svc.{c.cluster_domain}", ip)
        c.add_name(f"{name}.{headless}.{NAMESPACE}.svc", ip)
        c.add_name(f"{name}.{headless}", ip)
        c.placement.append(Pod(c, sts, name, ip, weft_bin()))

    # the sidecar Service's address (HAProxy binds it)
    dep = workload(docs, "Deployment", "sidecar")
    svc = workload(docs, "Service", "sidecar")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    c.service, c.service_ip = svc, c.ip()
    c.add_service_names(svc["metadata"]["name"], c.service_ip)
    c.sidecars = [Pod(c, dep, f"{dep['metadata']['name']}-{uuid.uuid4().hex[:5]}", c.ip(), weft_bin())
                  for _ in range(dep["spec"]["replicas"])]
    c.haproxy = None
    yield c
    # Teardown: sidecars first (SIGTERM: leave placement, drain), then placement, then HAProxy.
    codes = {p.name: p.stop(timeout=dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
             for p in c.sidecars}
    for p in c.placement:
        p.stop()
    if c.haproxy is not None:
        c.haproxy.terminate()
        try:
            c.haproxy.wait(10)
        except subprocess.TimeoutExpired:
            c.haproxy.kill()
    print(f"sidecar exit codes after SIGTERM: {codes}")


def test_rendered_cluster_runs_a_workflow(cluster):
    c = cluster
    t0 = time.monotonic()
    for p in c.placement:
        p.start()
    # Readiness of the placement pods is the rendered grpc probe: SERVING once a leader is known.
    wait_for(lambda: all(p.probe("readinessProbe") for p in c.placement), 60,
             "placement pods ready (grpc health: a leader is known)", c.placement)
    assert all(p.probe("livenessProbe") for p in c.placement)
    t_placement = time.monotonic() - t0

    for p in c.sidecars:
        p.start()
    wait_for(lambda: all(p.probe("startupProbe") and p.probe("readinessProbe") for p in c.sidecars), 90,
             "sidecar pods ready (/v1.0/healthz)", c.sidecars + c.placement)
    assert all(p.probe("livenessProbe") for p in c.sidecars)
    t_sidecars = time.monotonic() - t0
    print(f"ready: {len(c.placement)} placement pods after {t_placement:.1f}s, "
          f"{len(c.sidecars)} sidecars after {t_sidecars:.1f}s")

    # TLS is on: every pod presents a certificate of the rendered CA with its own SPIFFE ID, the
    # placement port does not answer a plaintext probe, and no process warns it is plaintext.
    ca_secret = next(d for d in c.docs if d["kind"] == "Secret"
                     and d["metadata"]["labels"].get("app.kubernetes.io/component") == "tls")
    ca_pem = c.secret_value(ca_secret["metadata"]["name"], "ca.crt")
    pl = c.placement[0]
    td_ns = f"spiffe://cluster.local/ns/{NAMESPACE}"
    for pod, port, want in [*((p, c.ports["placement.port"], f"{td_ns}/weft-placement") for p in c.placement),
                            *((p, c.ports["sidecar.ports.internal"], f"{td_ns}/chart-test") for p in c.sidecars)]:
        assert _served_spiffe_ids(pod, port, ca_pem, pl) == [want], pod.name
    assert not grpc_health_serving(pl.ip, c.ports["placement.port"], "", 2)
    for p in c.placement + c.sidecars:
        assert "runs without --tls" not in p.log(10**6), p.name

    # What NOTES.txt tells the user to run (in a placement pod, whose WEFT_TLS_* it uses): every
    # sidecar is in placement's table.
    tls_env = {k: v for k, v in pl.env().items() if k.startswith("WEFT_TLS_")}
    assert set(tls_env) >= {"WEFT_TLS_CERT", "WEFT_TLS_KEY", "WEFT_TLS_CA"}, tls_env
    def hosts():
        st = subprocess.run([str(weft_bin()), "cluster", "status", "--placement",
                             f"{pl.ip}:{c.ports['placement.port']}", "--output", "json"],
                            capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", **tls_env})
        return json.loads(st.stdout) if st.returncode == 0 else None
    wait_for(lambda: (h := hosts()) and h["leader"] and len(h["hosts"]) == len(c.sidecars), 30,
             "both sidecars in placement's table (weft cluster status)", c.sidecars)
    assert {h["address"].rsplit(":", 1)[0] for h in hosts()["hosts"]} == {p.ip for p in c.sidecars}

    # The Service: only ready pods are endpoints (all are by now).
    c.haproxy, _ = haproxy_for(c.service, c.sidecars, c.service_ip, c.root)
    grpc_port = next(p["port"] for p in c.service["spec"]["ports"] if p["name"] == "grpc")
    http_port = next(p["port"] for p in c.service["spec"]["ports"] if p["name"] == "http")
    wait_for(lambda: _accepts(c.service_ip, grpc_port) and _accepts(c.service_ip, http_port), 15,
             "HAProxy (the Service) accepting", [])

    token = c.secret_value(c.sidecars[0].container["env"][
        [e["name"] for e in c.sidecars[0].container["env"]].index("DAPR_API_TOKEN")]["valueFrom"]
        ["secretKeyRef"]["name"], "token")
    # Generated into the rendered Secret (no apiToken.value given).
    assert len(token) >= 32 and token.isalnum(), token

    # Token wiring: through the Service, the HTTP API refuses a call without it.
    base = f"http://{c.service_ip}:{http_port}"
    assert _http(f"{base}/v1.0/workflows/dapr/nope", {})[0] == 401
    assert _http(f"{base}/v1.0/healthz", {})[0] == 204

    out = _run_sdk(c, grpc_port, token, n=6)
    assert out["completed"] == out["n"], out
    for iid in out["ids"]:
        code, body = _http(f"{base}/v1.0/workflows/dapr/{iid}", {"dapr-api-token": token})
        assert code == 200 and body["runtimeStatus"] == "COMPLETED", (code, body)

    # The image's HEALTHCHECK (deploy/Dockerfile) passes against a ready sidecar and fails where
    # nothing serves HTTP (its 127.0.0.1 is the pod's address, as 0.0.0.0 is).
    hc = _dockerfile_healthcheck()
    sc = c.sidecars[0]
    ok = subprocess.run([a.replace("127.0.0.1", sc.ip) for a in hc], env={**sc.env(), "PATH": "/usr/bin:/bin"},
                        capture_output=True, text=True, timeout=10)
    assert ok.returncode == 0, (hc, ok.stderr)
    pl = c.placement[0]
    bad = subprocess.run([a.replace("127.0.0.1", pl.ip) for a in hc], env={"PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode != 0

    # Observe: /metrics through the Service.
    code, text = _http(f"{base}/metrics", {}, raw=True)
    assert code == 200 and "weft_" in text

    # A rolling restart's SIGTERM: each sidecar leaves, drains and exits 0 within the rendered
    # terminationGracePeriodSeconds (the kubelet would SIGKILL after that).
    grace = c.sidecars[0].spec["terminationGracePeriodSeconds"]
    for p in c.sidecars:
        t = time.monotonic()
        code = p.stop(timeout=grace)
        assert code == 0, f"{p.name}: exit {code} after SIGTERM\n{p.log()}"
        print(f"{p.name}: SIGTERM -> exit 0 in {time.monotonic() - t:.1f}s (grace {grace}s)")


def _served_spiffe_ids(pod: Pod, port: int, ca_pem: str, client: Pod) -> list[str]:
    """The URI SANs of the certificate `pod` serves on `port`, verified against the rendered CA,
    dialled with `client`'s certificate (the ports ask for one)."""
    files = {k: v for k, v in client.env().items() if k.startswith("WEFT_TLS_")}
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # Weft checks SPIFFE IDs, not host names
    ctx.load_verify_locations(cadata=ca_pem)
    ctx.load_cert_chain(files["WEFT_TLS_CERT"], files["WEFT_TLS_KEY"])
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((pod.ip, port), 5) as raw, ctx.wrap_socket(raw) as tls:
        return [v for k, v in tls.getpeercert().get("subjectAltName", ()) if k == "URI"]


def _dockerfile_healthcheck() -> list[str]:
    text = (ROOT / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.startswith("HEALTHCHECK"))
    return json.loads(line.split(" CMD ", 1)[1])


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 1).close()
        return True
    except OSError:
        return False


def _http(url: str, headers: dict, raw: bool = False):
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            data = r.read().decode()
            return r.status, (data if raw else (json.loads(data) if data else None))
    except urllib.error.HTTPError as e:
        return e.code, None


def _run_sdk(c: Cluster, grpc_port: int, token: str, n: int) -> dict:
    """A dapr-ext-workflow worker and client, both through the Service, in a subprocess (the SDK
    reads DAPR_* at import). Each workflow chains three activities."""
    code = r'''
import json, os, sys, time
import dapr.ext.workflow as wf
n = int(sys.argv[1])
rt = wf.WorkflowRuntime(worker_ready_timeout=30)
def step(ctx, x):
    return x + 1
def chain(ctx, x):
    for _ in range(3):
        x = yield ctx.call_activity(step, input=x)
    return x
rt.register_activity(step, name="step")
rt.register_workflow(chain, name="chain")
rt.start()
client = wf.DaprWorkflowClient()
ids = [client.schedule_new_workflow(workflow=chain, input=i, instance_id=f"chart-{os.getpid()}-{i}") for i in range(n)]
done = 0
for i, iid in enumerate(ids):
    st = client.wait_for_workflow_completion(iid, timeout_in_seconds=90)
    assert st is not None and st.runtime_status.name == "COMPLETED", (iid, st and st.runtime_status)
    assert json.loads(st.serialized_output) == i + 3, st.serialized_output
    done += 1
rt.shutdown()
print(json.dumps({"n": n, "completed": done, "ids": ids}))
'''
    env = {**os.environ, "DAPR_GRPC_ENDPOINT": f"http://{c.service_ip}:{grpc_port}",
           "DAPR_API_TOKEN": token, "DAPR_API_TIMEOUT_SECONDS": "60"}
    env.pop("DAPR_GRPC_PORT", None)
    env.pop("DAPR_HTTP_PORT", None)
    p = subprocess.run([sys.executable, "-c", code, str(n)], env=env, capture_output=True, text=True,
                       timeout=180)
    if p.returncode != 0:
        logs = "\n".join(f"--- {pod.name}:\n{pod.log()}" for pod in c.sidecars + c.placement)
        raise AssertionError(f"SDK run failed ({p.returncode}):\n{p.stderr[-4000:]}\n{logs}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _misspell_env(name: str, wrong: str):
    def mutate(container: dict) -> None:
        hits = [e for e in container["env"] if e["name"] == name]
        assert hits, f"rendered container has no env {name}"
        hits[0]["name"] = wrong
    return mutate


def _misspell_arg(flag: str, wrong: str):
    def mutate(container: dict) -> None:
        args = container["args"]
        assert any(flag in a for a in args), f"rendered args have no {flag}: {args}"
        container["args"] = [a.replace(flag, wrong) for a in args]
    return mutate


@pytest.mark.parametrize("component,mutate", [
    ("sidecar", _misspell_env("WEFT_DATABASE_URL", "WEFT_DATABASE_URI")),
    ("sidecar", _misspell_env("WEFT_PLACEMENT", "WEFT_PLACEMENTS")),
    ("placement", _misspell_arg("--id ", "--node-id ")),
], ids=["sidecar-WEFT_DATABASE_URI", "sidecar-WEFT_PLACEMENTS", "placement---node-id"])
def test_a_wrong_name_fails(cluster, component, mutate):
    """The control: the same pod with one env name or flag misspelt exits instead of becoming
    ready, so a template bug of that kind fails the test above."""
    c = cluster
    template = c.sidecars[0].workload if component == "sidecar" else c.placement[0].workload
    wl = json.loads(json.dumps(template))
    mutate(wl["spec"]["template"]["spec"]["containers"][0])
    name = f"{template['metadata']['name']}-9" if component == "placement" else f"misspelt-{uuid.uuid4().hex[:5]}"
    bad = Pod(c, wl, name, c.ip(), weft_bin()).start()
    try:
        deadline = time.monotonic() + 20
        while bad.alive() and time.monotonic() < deadline and not bad.probe("readinessProbe"):
            time.sleep(0.2)
        assert not bad.alive() and bad.proc.returncode != 0, \
            f"the misspelt {component} kept running or became ready:\n{bad.log()}"
        print(f"{component} exited {bad.proc.returncode}: {bad.log(300).strip().splitlines()[-1:]}")
    finally:
        bad.stop(5)
