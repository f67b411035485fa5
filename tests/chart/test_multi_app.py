"""The chart with several apps (`apps`) and WorkflowAccessPolicy documents (`config.accessPolicies`):
one Deployment, Service, PDB, HPA and SPIFFE identity per app, each Service selecting only its
app's pods, NetworkPolicies that still admit every app's sidecars, and the default (`apps: []`)
rendering exactly the single-app objects it always did. Schema refusals of bad app IDs and
policies are the ci-bad files that test_chart.py checks; a repeated app ID (which JSON Schema
cannot see) is refused when rendering, tested here.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

import test_chart as tc
from render import CHART, template

MULTI = CHART / "ci" / "multi-app-values.yaml"
APP_LABEL = "weft.dev/app-id"
BASE_SELECTOR = {"app.kubernetes.io/name": "weft", "app.kubernetes.io/instance": "weft",
                 "app.kubernetes.io/component": "sidecar"}


def named(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in tc.by_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in tc.by_kind(docs, kind)])
    return found[0]


def pod_labels(dep: dict) -> dict:
    return dep["spec"]["template"]["metadata"]["labels"]


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def helm_template_error(*args: str) -> str:
    p = subprocess.run([tc.helm_bin(), "template", "weft", str(CHART), *args], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode != 0, f"helm template accepted {args}"
    return p.stderr


# The objects of a default install, as they were before `apps` existed: an upgrade must not rename
# them or change a selector (Deployment selectors are immutable).
DEFAULT_OBJECTS = {
    ("NetworkPolicy", "weft-placement"), ("NetworkPolicy", "weft-sidecar"), ("NetworkPolicy", "weft-postgresql"),
    ("PodDisruptionBudget", "weft-placement"), ("PodDisruptionBudget", "weft-sidecar"),
    ("ServiceAccount", "weft"), ("Secret", "weft-api-token"), ("Secret", "weft-postgresql"),
    ("Secret", "weft-tls-ca"), ("ConfigMap", "weft-config"), ("Service", "weft-placement"),
    ("Service", "weft-postgresql"), ("Service", "weft"), ("Deployment", "weft-sidecar"),
    ("StatefulSet", "weft-placement"), ("StatefulSet", "weft-postgresql"),
}


def test_default_is_the_single_app_release_unchanged():
    docs = template([])
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} == DEFAULT_OBJECTS
    assert _same_but_random(template(["--set-json", "apps=[]"]), docs)
    dep = named(docs, "Deployment", "weft-sidecar")
    assert dep["spec"]["selector"]["matchLabels"] == BASE_SELECTOR
    assert named(docs, "Service", "weft")["spec"]["selector"] == BASE_SELECTOR
    assert named(docs, "PodDisruptionBudget", "weft-sidecar")["spec"]["selector"]["matchLabels"] == BASE_SELECTOR
    assert not [d["metadata"]["name"] for d in docs if APP_LABEL in d["metadata"].get("labels", {})]
    assert APP_LABEL not in pod_labels(dep)
    env = tc.env_of(dep["spec"]["template"]["spec"]["containers"][0])
    assert env["WEFT_APP_ID"]["value"] == "weft"
    conf = list(yaml.safe_load_all(tc.one(docs, "ConfigMap")["data"]["config.yaml"]))
    assert [c["kind"] for c in conf] == ["Configuration"]


def _same_but_random(a: list[dict], b: list[dict]) -> bool:
    """Equal except the values generated at random per render (Secrets' data)."""
    strip = lambda docs: [{**d, "data": sorted(d.get("data", {}))} if d["kind"] == "Secret" else d for d in docs]
    return strip(a) == strip(b)


def test_two_apps_each_get_their_own_objects_and_identity():
    docs = template(["-f", str(MULTI)])
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "weft-sidecar") not in kinds and ("Service", "weft") not in kinds
    deps = {d["metadata"]["name"]: d for d in tc.by_kind(docs, "Deployment")}
    assert set(deps) == {"weft-orders", "weft-billing"}
    selectors = []
    for app in ("orders", "billing"):
        dep, svc = deps[f"weft-{app}"], named(docs, "Service", f"weft-{app}")
        sel = dep["spec"]["selector"]["matchLabels"]
        assert sel == {**BASE_SELECTOR, APP_LABEL: app}
        assert svc["spec"]["selector"] == sel and matches(sel, pod_labels(dep))
        assert svc["metadata"]["labels"][APP_LABEL] == app and dep["metadata"]["labels"][APP_LABEL] == app
        selectors.append(sel)
        pod = dep["spec"]["template"]["spec"]
        env = tc.env_of(pod["containers"][0])
        assert env["WEFT_APP_ID"]["value"] == app
        # The pod's leaf certificate is issued for the app's SPIFFE ID (…/ns/NS/APP).
        [init] = pod["initContainers"]
        assert init["args"][:4] == ["certs", "sidecar", "--app-id", app], init["args"]
        aff = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
        assert aff["podAffinityTerm"]["labelSelector"]["matchLabels"] == sel
        pdb = named(docs, "PodDisruptionBudget", f"weft-{app}")
        assert pdb["spec"]["selector"]["matchLabels"] == sel
    # A Service selects one app's pods only.
    for sel, other in ((selectors[0], deps["weft-billing"]), (selectors[1], deps["weft-orders"])):
        assert not matches(sel, pod_labels(other))

    # Overrides: billing's replicas, resources, autoscaling (merged over sidecar.autoscaling) and
    # extraArgs; orders keeps the sidecar.* defaults.
    orders, billing = deps["weft-orders"], deps["weft-billing"]
    assert orders["spec"]["replicas"] == 2 and "replicas" not in billing["spec"]
    [hpa] = tc.by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "weft-billing"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    bc, oc = (d["spec"]["template"]["spec"]["containers"][0] for d in (billing, orders))
    assert bc["resources"]["limits"] == {"memory": "1Gi"} and oc["resources"]["limits"] == {"memory": "512Mi"}
    assert bc["args"] == ["sidecar", "--idle-timeout", "120s"] and oc["args"] == ["sidecar"]

    # One Configuration and the access policy, in the file every app's sidecars read.
    conf = list(yaml.safe_load_all(tc.one(docs, "ConfigMap")["data"]["config.yaml"]))
    assert [c["kind"] for c in conf] == ["Configuration", "WorkflowAccessPolicy"]
    assert conf[1]["metadata"]["name"] == "billing-callers" and conf[1]["scopes"] == ["billing"]
    assert conf[1]["spec"]["rules"][0]["callers"] == [{"appID": "orders"}]
    assert conf[1]["spec"]["rules"][0]["activities"] == [{"name": "bill"}]
    for dep in deps.values():
        vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        assert vols["config"]["configMap"]["name"] == "weft-config"


def test_network_policies_admit_every_apps_sidecars():
    """Cross-app calls forward over the internal port between sidecars of different apps, and
    every app's sidecars reach placement and PostgreSQL."""
    docs = template(["-f", str(MULTI)])
    nps = {n["metadata"]["labels"]["app.kubernetes.io/component"]: n["spec"] for n in tc.by_kind(docs, "NetworkPolicy")}
    internal = [r for r in nps["sidecar"]["ingress"] if {"port": 50002, "protocol": "TCP"} in r["ports"]]
    assert len(internal) == 1
    placement_from = nps["placement"]["ingress"][0]["from"]
    pg_from = nps["postgresql"]["ingress"][0]["from"]
    for dep in tc.by_kind(docs, "Deployment"):
        labels = pod_labels(dep)
        assert matches(nps["sidecar"]["podSelector"]["matchLabels"], labels), dep["metadata"]["name"]
        for rules in (internal[0]["from"], placement_from, pg_from):
            assert any(matches(p["podSelector"]["matchLabels"], labels) for p in rules), (dep["metadata"]["name"], rules)


def test_cert_manager_issues_one_identity_per_app():
    docs = template(["-f", str(MULTI), "-f", str(CHART / "ci" / "cert-manager-values.yaml")])
    certs = {c["spec"]["commonName"]: c["spec"] for c in tc.by_kind(docs, "Certificate")}
    assert {k: v["uris"] for k, v in certs.items()} == {
        "weft-placement": ["spiffe://weft.example/ns/weft/weft-placement"],
        "orders": ["spiffe://weft.example/ns/weft/orders"],
        "billing": ["spiffe://weft.example/ns/weft/billing"]}
    for app in ("orders", "billing"):
        pod = named(docs, "Deployment", f"weft-{app}")["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["tls"]["secret"]["secretName"] == certs[app]["secretName"] == f"weft-{app}-tls"
        assert "initContainers" not in pod
    assert tc.validate_all(docs) == []


def test_existing_tls_secrets_name_one_per_app():
    existing = CHART / "ci" / "existing-tls-secrets-values.yaml"
    err = helm_template_error("-f", str(MULTI), "-f", str(existing))
    assert "apps[0].existingTlsSecret is required with tls.existingSecrets" in err, err
    docs = template(["-f", str(existing), "--set-json",
                     'apps=[{"appId":"orders","existingTlsSecret":"orders-certs"},'
                     '{"appId":"billing","existingTlsSecret":"billing-certs"}]'])
    for app in ("orders", "billing"):
        pod = named(docs, "Deployment", f"weft-{app}")["spec"]["template"]["spec"]
        assert {v["name"]: v for v in pod["volumes"]}["tls"]["secret"]["secretName"] == f"{app}-certs"


def test_app_secrets_alone_still_need_the_placement_secret():
    """An app's existingTlsSecret selects existing Secrets for the release: placement's is then
    required too (not silently a generated CA for placement)."""
    err = helm_template_error("--set-json", 'apps=[{"appId":"orders","existingTlsSecret":"orders-certs"}]')
    assert "tls.existingSecrets.placement is required" in err, err


def test_service_monitor_scrapes_every_apps_service():
    docs = template(["-f", str(MULTI), "--set", "serviceMonitor.enabled=true"])
    sel = tc.one(docs, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert all(matches(sel, named(docs, "Service", f"weft-{a}")["metadata"]["labels"]) for a in ("orders", "billing"))


def test_a_repeated_app_id_is_refused():
    err = helm_template_error("--set-json", 'apps=[{"appId":"orders"},{"appId":"billing"},{"appId":"orders"}]')
    assert 'apps[2].appId: "orders" is listed twice' in err, err


def test_an_app_id_too_long_for_object_names_is_refused():
    app = "a" * 60  # a valid label (<= 63), but weft-<app> is not
    err = helm_template_error("--set-json", f'apps=[{{"appId":"{app}"}}]')
    assert f'apps[0].appId: "{app}" makes the name' in err and "longer than 63" in err, err


@pytest.mark.parametrize("policies,want", [
    ('[{"spec":{"rules":[{"callers":[{"appID":"a"}],"workflows":[{"name":"x*","operations":["schedule"]}]}]}}]',
     {"metadata": {"name": "weft-access-0"}, "spec": {"rules": [
         {"callers": [{"appID": "a"}], "workflows": [{"name": "x*", "operations": ["schedule"]}]}]}}),
    ('[{"name":"p","scopes":["b","c"],"spec":{"rules":[]}}]',
     {"metadata": {"name": "p"}, "scopes": ["b", "c"], "spec": {"rules": []}}),
], ids=["no-name-no-scopes", "named-scoped"])
def test_access_policy_documents(policies, want):
    docs = template(["--set-json", f"config.accessPolicies={policies}"])
    conf = list(yaml.safe_load_all(tc.one(docs, "ConfigMap")["data"]["config.yaml"]))
    assert conf[1] == {"apiVersion": "dapr.io/v1alpha1", "kind": "WorkflowAccessPolicy", **want}


def test_notes_list_each_apps_service(helm):
    p = tc.run([helm, "install", "demo", str(CHART), "--dry-run=client", "--namespace", "ns1", "-f", str(MULTI)])
    assert p.returncode == 0, p.stderr
    notes = p.stdout.split("NOTES:", 1)[1]
    for app in ("orders", "billing"):
        assert f"DAPR_GRPC_ENDPOINT=http://demo-weft-{app}.ns1.svc.cluster.local:50001" in notes, notes
        assert f"rollout status deployment/demo-weft-{app}" in notes, notes


@pytest.fixture(scope="session")
def helm() -> str:
    return tc.helm_bin()
