"""Issue 16, acceptance 1 and 3 — a cluster with mutual TLS: 3 placement nodes and 2 sidecars,
every internal port (placement API, raft, sidecar internal API) on mTLS with certificates made by
`weft certs`. The Python SDK's workflows run end to end, started on both sidecars (so calls are
forwarded and answers routed over the internal mTLS port); midway every sidecar's certificate
files are replaced (rotation) and no workflow fails; `weft cluster status` with the operator's
certificate lists both sidecars."""

from __future__ import annotations

import ssl
import socket
import subprocess
from pathlib import Path

import pytest

from cluster_harness import weft_bin
from conftest import direct_cluster
from workload import Background, check_completed_once, start_many, wait_done, wait_progress

pytestmark = pytest.mark.timeout(300)

N = 60


def _rotate(c) -> None:
    """Issues fresh sidecar certificates into the directory the sidecars read theirs from."""
    st = c.refresh()
    certs = Path(st["certs_dir"])
    subprocess.run([str(weft_bin()), "certs", "sidecar", "--app-id", st["app_id"], "--ca", str(certs / "ca"),
                    "--out", str(certs / "sidecar")], check=True, capture_output=True, timeout=30)


def _served_cert(addr: str, certs: Path) -> bytes:
    """The certificate a sidecar's internal port presents to a new mTLS connection (DER)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # Weft identities are SPIFFE IDs, not host names
    ctx.load_verify_locations(certs / "ca" / "ca.crt")
    ctx.load_cert_chain(certs / "admin" / "tls.crt", certs / "admin" / "tls.key")
    ctx.set_alpn_protocols(["h2"])
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def _der(pem_path: Path) -> bytes:
    pem = pem_path.read_text()
    first = pem.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    return ssl.PEM_cert_to_DER_cert(first)


def test_mtls_cluster_runs_sdk_workflows_through_a_rotation(rig, report):
    c, _workers = direct_cluster(rig, sidecars=2, tls=True)
    before = (Path(c.refresh()["certs_dir"]) / "sidecar" / "tls.crt").read_bytes()
    grpcs = [s["grpc"] for s in c.sidecars]
    https = [s["http"] for s in c.sidecars]
    bg = Background(lambda: start_many(grpcs, "mtls-", N))
    wait_progress(https, "mtls-", N, at_least=N // 4)
    _rotate(c)
    assert (Path(c.refresh()["certs_dir"]) / "sidecar" / "tls.crt").read_bytes() != before
    # New connections present the new certificate.
    certs = Path(c.refresh()["certs_dir"])
    for s in c.sidecars:
        assert _served_cert(s["internal"], certs) == _der(certs / "sidecar" / "tls.crt"), s
    run = bg.result()
    wait_done(run, https, timeout=120)
    check_completed_once(run, grpcs[0], https[1])

    st = c.cluster_status()  # through `weft cluster status` with the admin certificate
    assert len(st["hosts"]) == 2 and st["leader"] is not None, st
    assert {h["address"] for h in st["hosts"]} == {s["internal"] for s in c.sidecars}, st
    refused = [c.metrics(i).get("weft_auth_refused_total", 0.0) for i in range(2)]
    forwarded = [c.metrics(i).get("weft_forwarded_calls_total", 0.0) for i in range(2)]
    report(f"mTLS cluster (3 placement, 2 sidecars): {N} SDK workflows completed across a certificate "
           f"rotation; calls refused {refused}, client calls forwarded over the internal mTLS port {forwarded}")
    assert refused == [0.0, 0.0], refused
    assert sum(forwarded) > 0, f"no call crossed the internal port: {forwarded}"
