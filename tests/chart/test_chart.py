"""The Helm chart (helm/weft): lint, render with the defaults and every values file under
helm/weft/ci/, validate every rendered object against the Kubernetes schemas offline
(kubernetes-validate, strict: unknown fields fail), and check that the values schema refuses each
bad values file under helm/weft/ci-bad/ with the message Helm prints (first line of each file:
`# expect: MESSAGE`). Also checks that every WEFT_* variable and flag the chart, compose.yaml and
the Dockerfile use is one the weft binary knows (from `weft <cmd> --help`).
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from render import CHART, ROOT, helm_bin, template

CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
BAD_VALUES = sorted((CHART / "ci-bad").glob("*.yaml"))
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas shipped.
K8S_VERSIONS = ["1.27.0", "1.37.0"]


@pytest.fixture(scope="session")
def helm() -> str:
    return helm_bin()


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, component: str | None = None) -> dict:
    found = [d for d in by_kind(docs, kind)
             if component is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"expected one {kind} {component or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def env_of(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


# --------------------------------------------------------------------------------- lint, render


def test_lint_defaults(helm):
    p = run([helm, "lint", "--strict", str(CHART)])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 chart(s) failed" in p.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_lint_ci_values(helm, values):
    p = run([helm, "lint", "--strict", str(CHART), "-f", str(values)])
    assert p.returncode == 0, p.stdout + p.stderr


def test_ci_values_cover_the_cases():
    names = {p.name for p in CI_VALUES}
    assert {"ha-placement-values.yaml", "autoscaling-values.yaml", "bundled-postgresql-values.yaml",
            "external-database-token-values.yaml", "cert-manager-values.yaml",
            "existing-tls-secrets-values.yaml", "multi-app-values.yaml"} <= names, names


# Minimal schemas for the CRDs the chart renders (the Kubernetes schemas do not include them).
SERVICE_MONITOR_REQUIRED = {"selector", "endpoints"}
CERTIFICATE_REQUIRED = {"secretName", "uris", "issuerRef"}


def validate_all(docs: list[dict]) -> list[str]:
    """Every object against the Kubernetes schemas of every supported version; errors as text."""
    errors = []
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("apiVersion") == "cert-manager.io/v1" and doc.get("kind") == "Certificate":
            spec = doc.get("spec", {})
            missing = CERTIFICATE_REQUIRED - set(spec)
            if missing:
                errors.append(f"{name}: missing spec fields {sorted(missing)}")
            continue
        if doc.get("apiVersion") == "monitoring.coreos.com/v1" and doc.get("kind") == "ServiceMonitor":
            spec = doc.get("spec", {})
            missing = SERVICE_MONITOR_REQUIRED - set(spec)
            if missing:
                errors.append(f"{name}: missing spec fields {sorted(missing)}")
            for ep in spec.get("endpoints", []):
                if not ep.get("port") or not ep.get("path"):
                    errors.append(f"{name}: endpoint without port/path: {ep}")
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                errors.append(f"{name} (k8s {version}): {e.message} at {list(e.path)}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(f"{name} (k8s {version}): no schema: {e}")
    return errors


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_rendered_objects_validate(values):
    docs = template(["-f", str(values)] if values else [])
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds, kinds
    errors = validate_all(docs)
    assert not errors, "\n".join(errors)
    print(f"{values.name if values else 'defaults'}: {len(docs)} objects valid against k8s {K8S_VERSIONS}")


def test_validation_catches_a_wrong_field():
    """The validator is strict: a misspelt field in a rendered object fails (so the test above can fail)."""
    docs = template([])
    dep = copy.deepcopy(one(docs, "Deployment", "sidecar"))
    sc = dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    sc["readOnlyRootFileSystem"] = sc.pop("readOnlyRootFilesystem")
    errors = validate_all([dep])
    assert errors and "readOnlyRootFileSystem" in "\n".join(errors), errors


# --------------------------------------------------------------------------------- what renders


def test_defaults_shape():
    docs = template([])
    sts = one(docs, "StatefulSet", "placement")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    pod = sts["spec"]["template"]["spec"]
    assert "podAntiAffinity" in pod["affinity"]
    c = pod["containers"][0]
    # The probes use the plaintext health port: the placement port asks for a client certificate.
    assert c["readinessProbe"]["grpc"]["port"] == 50006
    assert env_of(c)["WEFT_PLACEMENT_HEALTH_LISTEN"]["value"] == "0.0.0.0:50006"
    initial = env_of(c)["WEFT_PLACEMENT_INITIAL_CLUSTER"]["value"]
    assert initial.count("=") == 3 and initial.startswith("1=weft-placement-0.weft-placement.weft.svc.cluster.local:50005")

    headless = [s for s in by_kind(docs, "Service") if s["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1 and headless[0]["spec"]["publishNotReadyAddresses"] is True
    assert headless[0]["metadata"]["name"] == sts["spec"]["serviceName"]

    dep = one(docs, "Deployment", "sidecar")
    assert dep["spec"]["replicas"] == 2
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    env = env_of(c)
    drain = int(env["WEFT_DRAIN_TIMEOUT"]["value"].rstrip("s"))
    assert spec["terminationGracePeriodSeconds"] > drain
    assert c["readinessProbe"]["httpGet"]["path"] == "/v1.0/healthz"
    assert env["WEFT_CONFIG"]["value"].startswith(c["volumeMounts"][0]["mountPath"])
    assert env["WEFT_PLACEMENT"]["value"].count(",") == 2
    # bundled PostgreSQL by default: the URL comes from its Secret
    pg = one(docs, "StatefulSet", "postgresql")
    assert env["WEFT_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == pg["metadata"]["name"]
    assert env["DAPR_API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "weft-api-token"
    assert not by_kind(docs, "HorizontalPodAutoscaler") and not by_kind(docs, "ServiceMonitor")

    svc = [s for s in by_kind(docs, "Service") if s["metadata"]["labels"]["app.kubernetes.io/component"] == "sidecar"]
    assert len(svc) == 1
    assert {p["name"]: p["port"] for p in svc[0]["spec"]["ports"]} == {"grpc": 50001, "http": 3500}
    assert svc[0]["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]

    for wl in by_kind(docs, "StatefulSet") + by_kind(docs, "Deployment"):
        pod = wl["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, wl["metadata"]["name"]
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, c["name"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
            assert "resources" in c, c["name"]

    cm = one(docs, "ConfigMap")
    conf = yaml.safe_load(cm["data"]["config.yaml"])
    assert conf["apiVersion"] == "dapr.io/v1alpha1" and conf["kind"] == "Configuration"
    assert conf["spec"]["workflow"] == {}


# --------------------------------------------------------------------------------- closed by default


def secret(docs: list[dict], name: str) -> dict:
    found = [s for s in by_kind(docs, "Secret") if s["metadata"]["name"] == name]
    assert len(found) == 1, (name, [s["metadata"]["name"] for s in by_kind(docs, "Secret")])
    return found[0]


def weft_pods(docs: list[dict]) -> dict[str, dict]:
    return {"placement": one(docs, "StatefulSet", "placement")["spec"]["template"]["spec"],
            "sidecar": one(docs, "Deployment", "sidecar")["spec"]["template"]["spec"]}


TLS_FILES = {"WEFT_TLS_CERT": "/var/run/weft/tls/tls.crt", "WEFT_TLS_KEY": "/var/run/weft/tls/tls.key",
             "WEFT_TLS_CA": "/var/run/weft/tls/ca.crt"}


def test_defaults_are_closed():
    """Acceptance 6 (static half): TLS, a generated token Secret and NetworkPolicies by default
    (tests/chart/test_rendered.py runs them)."""
    import base64
    docs = template([])
    # TLS: the chart's CA (ca.crt, ca.key) in a Secret mounted only into the init containers,
    # which issue each pod's leaf for its SPIFFE ID into memory; the main containers get WEFT_TLS_*.
    ca = secret(docs, "weft-tls-ca")
    assert base64.b64decode(ca["data"]["ca.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")
    assert base64.b64decode(ca["data"]["ca.key"]).startswith(b"-----BEGIN PRIVATE KEY-----")
    for component, pod in weft_pods(docs).items():
        c = pod["containers"][0]
        env = env_of(c)
        assert {k: env[k]["value"] for k in TLS_FILES} == TLS_FILES, component
        assert env["WEFT_TLS_NAMESPACE"]["value"] == "weft" and env["WEFT_TLS_TRUST_DOMAIN"]["value"] == "cluster.local"
        assert {m["name"] for m in c["volumeMounts"]} >= {"tls"} and "tls-ca" not in {m["name"] for m in c["volumeMounts"]}
        [init] = pod["initContainers"]
        assert init["args"][:2] == ["certs", component] and "/var/run/weft/tls" in init["args"], init["args"]
        assert init["securityContext"]["readOnlyRootFilesystem"] is True
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["tls"]["emptyDir"]["medium"] == "Memory"
        assert vols["tls-ca"]["secret"]["secretName"] == "weft-tls-ca"
    assert "--app-id" in weft_pods(docs)["sidecar"]["initContainers"][0]["args"]
    # A generated token in a Secret the sidecars read (kept across upgrades by lookup, and by
    # `helm uninstall` through resource-policy keep).
    tok = secret(docs, "weft-api-token")
    assert len(base64.b64decode(tok["data"]["token"])) == 40
    assert tok["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # NetworkPolicies for placement, sidecars and the bundled PostgreSQL.
    nps = {n["metadata"]["labels"]["app.kubernetes.io/component"]: n["spec"] for n in by_kind(docs, "NetworkPolicy")}
    assert set(nps) == {"placement", "sidecar", "postgresql"}, set(nps)
    sel = lambda comp: {"matchLabels": {"app.kubernetes.io/name": "weft", "app.kubernetes.io/instance": "weft",
                                        "app.kubernetes.io/component": comp}}
    pl = nps["placement"]
    assert pl["policyTypes"] == ["Ingress", "Egress"]
    assert [p["podSelector"] for p in pl["ingress"][0]["from"]] == [sel("sidecar"), sel("placement")]
    assert pl["ingress"][0]["ports"] == [{"port": 50005, "protocol": "TCP"}]
    assert pl["egress"][0]["to"] == [{"podSelector": sel("placement")}]
    internal = [r for r in nps["sidecar"]["ingress"] if {"port": 50002, "protocol": "TCP"} in r["ports"]]
    assert len(internal) == 1 and internal[0]["from"] == [{"podSelector": sel("sidecar")}]
    assert nps["postgresql"]["ingress"] == [{"from": [{"podSelector": sel("sidecar")}],
                                             "ports": [{"port": 5432, "protocol": "TCP"}]}]


def test_tls_from_cert_manager():
    docs = template(["-f", str(CHART / "ci" / "cert-manager-values.yaml")])
    certs = {c["metadata"]["labels"]["app.kubernetes.io/component"]: c["spec"] for c in by_kind(docs, "Certificate")}
    assert {k: v["uris"] for k, v in certs.items()} == {
        "placement": ["spiffe://weft.example/ns/weft/weft-placement"],
        "sidecar": ["spiffe://weft.example/ns/weft/weft"]}
    assert all(c["issuerRef"]["name"] == "weft-ca-issuer" for c in certs.values())
    assert not [s for s in by_kind(docs, "Secret") if s["metadata"]["name"] == "weft-tls-ca"]
    for component, pod in weft_pods(docs).items():
        assert "initContainers" not in pod, component
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["tls"]["secret"]["secretName"] == certs[component]["secretName"]
        assert env_of(pod["containers"][0])["WEFT_TLS_TRUST_DOMAIN"]["value"] == "weft.example"


def test_tls_from_existing_secrets_and_opt_outs():
    docs = template(["-f", str(CHART / "ci" / "existing-tls-secrets-values.yaml")])
    pods = weft_pods(docs)
    assert {c: {v["name"]: v for v in p["volumes"]}["tls"]["secret"]["secretName"] for c, p in pods.items()} == {
        "placement": "weft-placement-certs", "sidecar": "weft-sidecar-certs"}
    assert not by_kind(docs, "NetworkPolicy") and not by_kind(docs, "Certificate")
    assert "DAPR_API_TOKEN" not in env_of(pods["sidecar"]["containers"][0])
    off = weft_pods(template(["--set", "tls.enabled=false"]))
    for component, pod in off.items():
        assert not [k for k in env_of(pod["containers"][0]) if k.startswith("WEFT_TLS_")], component
        assert "initContainers" not in pod


def test_scale_with_set():
    docs = template(["--set", "sidecar.replicas=7"])
    assert one(docs, "Deployment", "sidecar")["spec"]["replicas"] == 7


def test_ha_placement():
    docs = template(["-f", str(CHART / "ci" / "ha-placement-values.yaml")])
    sts = one(docs, "StatefulSet", "placement")
    assert sts["spec"]["replicas"] == 5
    env = env_of(sts["spec"]["template"]["spec"]["containers"][0])
    assert [p.split("=")[0] for p in env["WEFT_PLACEMENT_INITIAL_CLUSTER"]["value"].split(",")] == ["1", "2", "3", "4", "5"]
    sidecar_env = env_of(one(docs, "Deployment", "sidecar")["spec"]["template"]["spec"]["containers"][0])
    assert sidecar_env["WEFT_PLACEMENT"]["value"].count(",") == 4
    aff = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in aff
    assert one(docs, "PodDisruptionBudget", "placement")["spec"]["maxUnavailable"] == 2


def test_autoscaling():
    docs = template(["-f", str(CHART / "ci" / "autoscaling-values.yaml")])
    hpa = one(docs, "HorizontalPodAutoscaler")
    dep = one(docs, "Deployment", "sidecar")
    assert "replicas" not in dep["spec"], "the HPA owns replicas"
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    sm = one(docs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["metadata"]["labels"]["release"] == "prometheus"


def test_external_database_with_token():
    docs = template(["-f", str(CHART / "ci" / "external-database-token-values.yaml")])
    assert not [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "postgresql"]
    dep = one(docs, "Deployment", "sidecar")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = env_of(c)
    assert env["WEFT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "weft-db", "key": "url"}
    tok = env["DAPR_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    secret = [s for s in by_kind(docs, "Secret") if s["metadata"]["name"] == tok["name"]]
    assert len(secret) == 1 and tok["key"] in secret[0]["data"]
    assert env["WEFT_APP_ID"]["value"] == "orders"
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60
    assert c["image"] == "registry.example.com/weft:0.1.0" and c["imagePullPolicy"] == "Always"
    conf = yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])
    wf = conf["spec"]["workflow"]
    assert wf["activityConcurrencyLimits"] == [{"name": "charge", "maxConcurrent": 1}]
    assert wf["stateRetentionPolicy"]["failed"] == "2160h"


def test_bundled_postgresql_url_secret():
    docs = template(["-f", str(CHART / "ci" / "bundled-postgresql-values.yaml")])
    pg = one(docs, "StatefulSet", "postgresql")
    secret = [s for s in by_kind(docs, "Secret") if s["metadata"]["name"] == pg["metadata"]["name"]][0]
    import base64
    url = base64.b64decode(secret["data"]["database-url"]).decode()
    assert url == "postgres://weft:try-it-out@weft-postgresql.weft.svc.cluster.local:5432/weft", url


# --------------------------------------------------------------------------------- bad values


def expected_message(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    m = re.match(r"#\s*expect:\s*(.+)$", first)
    assert m, f"{path.name}: first line must be `# expect: MESSAGE`"
    return m.group(1).strip()


def test_bad_values_exist():
    assert len(BAD_VALUES) >= 6, BAD_VALUES


@pytest.mark.parametrize("values", BAD_VALUES, ids=lambda p: p.name)
def test_schema_refuses_bad_values(helm, values):
    want = expected_message(values)
    for cmd in ([helm, "template", "weft", str(CHART), "-f", str(values)],
                [helm, "lint", str(CHART), "-f", str(values)]):
        p = run(cmd)
        out = p.stdout + p.stderr
        assert p.returncode != 0, f"{' '.join(cmd[1:2])} accepted {values.name}:\n{out[:2000]}"
        assert "values don't meet the specifications of the schema" in out, out
        assert want in out, f"{values.name}: expected {want!r} in:\n{out}"


# --------------------------------------------------------------------------------- names the binary knows


def weft_bin() -> Path:
    return Path(os.environ.get("WEFT_BIN", ROOT / "target" / "debug" / "weft"))


def known_env(sub: str) -> set[str]:
    b = weft_bin()
    if not b.exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"weft binary not found at {b} (cargo build -p weft)")
        pytest.skip(f"weft binary not found at {b}")
    out = subprocess.run([str(b), sub, "--help"], capture_output=True, text=True, timeout=30).stdout
    return set(re.findall(r"\[env: ([A-Z0-9_]+)[=\]]", out))


def test_chart_env_names_are_known_to_weft():
    """Every WEFT_* the chart sets is a variable `weft placement`/`weft sidecar` reads (a typo
    would be silently ignored by the binary)."""
    docs = template(["-f", str(CHART / "ci" / "external-database-token-values.yaml")])
    for kind, component, sub in (("StatefulSet", "placement", "placement"), ("Deployment", "sidecar", "sidecar")):
        known = known_env(sub)
        c = one(docs, kind, component)["spec"]["template"]["spec"]["containers"][0]
        used = {n for n in env_of(c) if n.startswith(("WEFT_", "DAPR_"))}
        unknown = used - known
        assert not unknown, f"{component}: env {sorted(unknown)} unknown to `weft {sub}` (knows {sorted(known)})"


def test_compose_env_names_are_known_to_weft():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    placements = [s for s in services.values() if "placement" in s.get("command", [])[:1]]
    sidecars = [s for s in services.values() if "sidecar" in s.get("command", [])[:1]]
    assert len(placements) == 3 and len(sidecars) == 2, list(services)
    assert any("postgres" in s.get("image", "") for s in services.values())
    for group, sub in ((placements, "placement"), (sidecars, "sidecar")):
        known = known_env(sub)
        for s in group:
            used = {n for n in s.get("environment", {}) if n.startswith(("WEFT_", "DAPR_"))}
            assert used and not (used - known), f"compose {sub}: unknown env {sorted(used - known)}"


def test_dockerfile():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 2, "multi-stage build expected"
    assert re.search(r"cargo build --release --locked -p weft\b", text)
    assert "target/release/weft" in text
    assert re.search(r"^COPY --from=\S+ \S+/weft /usr/local/bin/weft$", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0", "0:0"), users
    uid = users[-1].split(":")[0]
    # the chart's pod security context runs as the image's user
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert str(values["podSecurityContext"]["runAsUser"]) == uid
    assert re.search(r"^HEALTHCHECK\b.*\n?.*/v1.0/healthz", text, re.M)
    exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.+)$", text, re.M) for p in line.split()}
    assert exposed == {50001, 3500, 50002, 50005}, exposed
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/weft"\]', text, re.M)
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().split()
    assert "target/" in ignore and ".git/" in ignore, "the build context must not carry target/"


# --------------------------------------------------------------------------------- docs


def value_leaves(d: dict, prefix: str = ""):
    """Documented units of values.yaml: nested maps are walked, except security contexts and
    resources, which are documented whole."""
    whole = {"podSecurityContext", "securityContext"}
    for k, x in d.items():
        p = f"{prefix}.{k}" if prefix else k
        if isinstance(x, dict) and x and p not in whole and k != "resources":
            yield from value_leaves(x, p)
        else:
            yield p, x


def test_docs_table_lists_every_value_with_its_default():
    import json
    doc = (ROOT / "docs" / "kubernetes.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = dict(re.findall(r"^\| `([^`]+)` \| `([^`]*)` \|", doc, re.M))
    missing, wrong = [], []
    for key, default in value_leaves(values):
        want = json.dumps(default, separators=(",", ":"), ensure_ascii=False)
        if key not in rows:
            missing.append(key)
        elif rows[key] != want:
            wrong.append(f"{key}: docs say {rows[key]}, values.yaml has {want}")
    extra = set(rows) - {k for k, _ in value_leaves(values)}
    assert not missing and not wrong and not extra, f"missing {missing}; wrong {wrong}; extra {sorted(extra)}"


def test_notes(helm):
    p = run([helm, "install", "demo", str(CHART), "--dry-run=client", "--namespace", "ns1",
             "-f", str(CHART / "ci" / "external-database-token-values.yaml")])
    assert p.returncode == 0, p.stderr
    notes = p.stdout.split("NOTES:", 1)[1]
    assert "DAPR_GRPC_ENDPOINT=http://demo-weft.ns1.svc.cluster.local:50001" in notes, notes
    assert "weft cluster status --placement 127.0.0.1:50005" in notes
    assert "Secret demo-weft-api-token" in notes


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_weft_accepts_the_rendered_configuration(values, tmp_path):
    """`weft config check` accepts the Configuration the chart writes into its ConfigMap."""
    known_env("sidecar")  # skips/fails like the other binary checks when weft is missing
    docs = template(["-f", str(values)] if values else [])
    f = tmp_path / "config.yaml"
    f.write_text(one(docs, "ConfigMap")["data"]["config.yaml"])
    p = run([str(weft_bin()), "config", "check", str(f)])
    assert p.returncode == 0, p.stdout + p.stderr


def test_weft_accepts_the_example_configuration():
    known_env("sidecar")
    p = run([str(weft_bin()), "config", "check", str(ROOT / "deploy" / "config.example.yaml")])
    assert p.returncode == 0, p.stdout + p.stderr
