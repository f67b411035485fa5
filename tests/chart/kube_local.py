"""A tiny stand-in for a kubelet: runs the containers of rendered pods as local processes.

Exactly the rendered `command`, `args` and `env` are used, with these substitutions, and no others:
- Networking: every pod gets its own loopback address (127.A.B.x); a pod binding 0.0.0.0 binds its
  own address instead (on one host the wildcard would make pods collide). DNS names of the
  headless Service's pods (`pod.svc.ns.svc.cluster.local`) and of Services are replaced by those
  addresses in env values and args, longest name first.
- Volumes: every volumeMount's path is a directory under the test's temp dir (one per volume, shared
  by the pod's containers); ConfigMap and Secret volumes hold one file per key; emptyDir and PVCs
  are empty directories. Mount paths in env values and args are rewritten to those directories.
- Init containers run first, one after the other, each to exit 0 (else the pod does not start).
- The image: `weft` on PATH (and /usr/local/bin/weft, the image's path) is the binary under test;
  /bin/sh is the host's.
Env follows Kubernetes rules: entries in order, `$(VAR)` expands earlier entries, `$$` is a
literal `$`, `valueFrom` reads fieldRef (metadata.name, metadata.namespace, status.podIP) and
secretKeyRef/configMapKeyRef (a missing Secret or key fails, as it would keep a pod from starting).
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

IMAGE_BINARY = "/usr/local/bin/weft"  # where deploy/Dockerfile installs it


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, `$$` escapes, the rest stays."""
    out, i = [], 0
    while i < len(s):
        if s.startswith("$$", i):
            out.append("$")
            i += 2
        elif s.startswith("$(", i):
            j = s.find(")", i + 2)
            name = s[i + 2:j] if j != -1 else None
            if name is not None and name in env:
                out.append(env[name])
                i = j + 1
            else:
                out.append("$(")
                i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


@dataclass
class Cluster:
    """Objects of one rendered release plus the user's own Secrets, and the address plan."""

    docs: list[dict]
    namespace: str
    root: Path
    extra_secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    cluster_domain: str = "cluster.local"
    names: dict[str, str] = field(default_factory=dict)  # DNS name -> IP
    _next_ip: int = 10

    def __post_init__(self):
        # A random 127.A.B.0/24 keeps concurrent test runs apart.
        rnd = int.from_bytes(os.urandom(2), "big")
        self.net = f"127.{100 + rnd % 150}.{rnd >> 8}"

    def ip(self) -> str:
        self._next_ip += 1
        return f"{self.net}.{self._next_ip}"

    def find(self, kind: str, name: str) -> Optional[dict]:
        for d in self.docs:
            if d["kind"] == kind and d["metadata"]["name"] == name:
                return d
        return None

    def secret_value(self, name: str, key: str) -> str:
        if name in self.extra_secrets:
            data = self.extra_secrets[name]
            if key not in data:
                raise KeyError(f"secret {name} has no key {key}")
            return data[key]
        s = self.find("Secret", name)
        if s is None:
            raise KeyError(f"secret {name} not found (neither rendered nor created by the test)")
        if key in s.get("data", {}):
            return base64.b64decode(s["data"][key]).decode()
        if key in s.get("stringData", {}):
            return s["stringData"][key]
        raise KeyError(f"secret {name} has no key {key}")

    def configmap_value(self, name: str, key: str) -> str:
        cm = self.find("ConfigMap", name)
        if cm is None or key not in cm.get("data", {}):
            raise KeyError(f"configmap {name}/{key} not found")
        return cm["data"][key]

    def add_name(self, name: str, ip: str) -> None:
        self.names[name] = ip

    def add_service_names(self, svc: str, ip: str) -> None:
        ns, dom = self.namespace, self.cluster_domain
        for n in (f"{svc}.{ns}.svc.{dom}", f"{svc}.{ns}.svc", f"{svc}.{ns}"):
            self.add_name(n, ip)

    def resolve_names(self, s: str) -> str:
        if not self.names:
            return s
        alts = "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
        return re.sub(rf"(?<![\w.-])({alts})(?![\w-])", lambda m: self.names[m.group(1)], s)


class Pod:
    """One pod of a workload: its address, directories and running container (the first one)."""

    def __init__(self, cluster: Cluster, workload: dict, name: str, ip: str, weft_bin: Path,
                 hostname: Optional[str] = None):
        self.cluster, self.workload, self.name, self.ip = cluster, workload, name, ip
        self.spec = workload["spec"]["template"]["spec"]
        self.container = self.spec["containers"][0]
        self.dir = cluster.root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hostname = hostname or name
        self.weft_bin = weft_bin
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.dir / "container.log"
        self.init_containers = self.spec.get("initContainers", [])
        self.mounts = self._mount_volumes(self.container)

    # ---- volumes
    def _mount_volumes(self, container: dict) -> dict[str, Path]:
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in self.workload["spec"].get("volumeClaimTemplates", [])}
        mounts: dict[str, Path] = {}
        for m in container.get("volumeMounts", []):
            host = self.dir / "volumes" / m["name"]
            host.mkdir(parents=True, exist_ok=True)
            v = volumes.get(m["name"])
            if v is None:
                assert m["name"] in claims, f"{self.name}: volumeMount {m['name']} has no volume or claim"
            elif "configMap" in v:
                cm = self.cluster.find("ConfigMap", v["configMap"]["name"])
                assert cm is not None, f"configMap {v['configMap']['name']} not rendered"
                for key, text in cm.get("data", {}).items():
                    (host / key).write_text(text)
            elif "secret" in v:
                s = self.cluster.find("Secret", v["secret"]["secretName"])
                assert s is not None, f"{self.name}: secret {v['secret']['secretName']} not rendered"
                for key in s.get("data", {}):
                    (host / key).write_text(self.cluster.secret_value(v["secret"]["secretName"], key))
            else:
                assert "emptyDir" in v, f"{self.name}: unsupported volume {v}"
            mounts[m["mountPath"]] = host
        return mounts

    def remap_paths(self, s: str, mounts: Optional[dict[str, Path]] = None) -> str:
        """One pass over all mount paths (longest first), so a host directory that itself lies
        under a mounted path (e.g. /tmp) is never rewritten again."""
        mounts = self.mounts if mounts is None else mounts
        if not mounts:
            return s
        alts = "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True))
        return re.sub(rf"(?<![\w/])({alts})(?=/|$|[\s\"'])", lambda m: str(mounts[m.group(1)]), s)

    # ---- env, command
    def _field(self, path: str) -> str:
        return {"metadata.name": self.name, "metadata.namespace": self.cluster.namespace,
                "status.podIP": self.ip, "spec.nodeName": "local"}[path]

    def env(self, container: Optional[dict] = None) -> dict[str, str]:
        container = self.container if container is None else container
        mounts = self._mount_volumes(container)
        env: dict[str, str] = {}
        for e in container.get("env", []):
            if "value" in e:
                v = expand(str(e["value"]), env)
            elif "valueFrom" in e:
                vf = e["valueFrom"]
                if "fieldRef" in vf:
                    v = self._field(vf["fieldRef"]["fieldPath"])
                elif "secretKeyRef" in vf:
                    v = self.cluster.secret_value(vf["secretKeyRef"]["name"], vf["secretKeyRef"]["key"])
                elif "configMapKeyRef" in vf:
                    v = self.cluster.configmap_value(vf["configMapKeyRef"]["name"], vf["configMapKeyRef"]["key"])
                else:
                    raise AssertionError(f"unsupported valueFrom {vf}")
            else:
                v = ""
            env[e["name"]] = v
        return {k: self.localize(v, mounts) for k, v in env.items()}

    def localize(self, s: str, mounts: Optional[dict[str, Path]] = None) -> str:
        s = self.cluster.resolve_names(s)
        s = re.sub(r"(?<![\d.])0\.0\.0\.0(?![\d.])", self.ip, s)
        return self.remap_paths(s, mounts)

    def argv(self, env: dict[str, str], container: Optional[dict] = None) -> list[str]:
        container = self.container if container is None else container
        mounts = self._mount_volumes(container)
        command = container.get("command")
        assert command, f"{self.name}: the chart must set command (the test does not guess ENTRYPOINT)"
        argv = [expand(str(a), env) for a in [*command, *container.get("args", [])]]
        argv = [self.localize(a, mounts) for a in argv]
        if argv[0] == IMAGE_BINARY:
            argv[0] = str(self.weft_bin)
        return argv

    def start(self) -> "Pod":
        env = self.env()
        bindir = self.dir / "bin"
        bindir.mkdir(exist_ok=True)
        link = bindir / "weft"
        if not link.exists():
            link.symlink_to(self.weft_bin)
        base = {"PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin", "HOSTNAME": self.hostname,
                "HOME": str(self.dir)}
        for init in self.init_containers:
            init_env = self.env(init)
            p = subprocess.run(self.argv(init_env, init), env={**base, **init_env}, cwd=self.dir,
                               capture_output=True, text=True, timeout=60)
            with open(self.log_path, "a") as log:
                log.write(f"[init {init['name']}] {p.stdout}{p.stderr}")
            assert p.returncode == 0, f"{self.name}: init container {init['name']} exited {p.returncode}:\n{p.stderr}"
        full_env = {**base, **env}
        self.launched = (self.argv(env), full_env)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.launched[0], env=full_env, cwd=self.dir, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, n: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 20) -> Optional[int]:
        """SIGTERM (as the kubelet does), SIGKILL after `timeout`; the exit code or None if killed."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    # ---- probes
    def port_number(self, port) -> int:
        if isinstance(port, int):
            return port
        for p in self.container.get("ports", []):
            if p.get("name") == port:
                return p["containerPort"]
        raise AssertionError(f"{self.name}: no container port named {port}")

    def probe(self, which: str) -> bool:
        """Runs the rendered probe once (httpGet, tcpSocket, grpc)."""
        p = self.container[which]
        if "httpGet" in p:
            h = p["httpGet"]
            url = f"http://{self.ip}:{self.port_number(h['port'])}{h.get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=p.get("timeoutSeconds", 1)) as r:
                    return 200 <= r.status < 400
            except (urllib.error.URLError, OSError):
                return False
        if "tcpSocket" in p:
            try:
                socket.create_connection((self.ip, self.port_number(p["tcpSocket"]["port"])), 1).close()
                return True
            except OSError:
                return False
        if "grpc" in p:
            return grpc_health_serving(self.ip, p["grpc"]["port"], p["grpc"].get("service", ""),
                                       p.get("timeoutSeconds", 1))
        raise AssertionError(f"{self.name}: unsupported probe {p}")


def grpc_health_serving(host: str, port: int, service: str, timeout: float) -> bool:
    """grpc.health.v1.Health/Check, encoded by hand (the message is one string / one enum)."""
    import grpc

    req = service.encode()
    body = (b"\x0a" + bytes([len(req)]) + req) if req else b""
    with grpc.insecure_channel(f"{host}:{port}") as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
        try:
            resp = check(body, timeout=timeout)
        except grpc.RpcError:
            return False
    return resp == b"\x08\x01"  # status = SERVING


def wait_for(pred, timeout: float, what: str, pods: list[Pod] = (), interval: float = 0.2):
    """Polls `pred` until true; on timeout fails with the logs of `pods`."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        dead = [p for p in pods if p.proc is not None and p.proc.poll() is not None]
        if time.monotonic() >= deadline or dead:
            logs = "\n".join(f"--- {p.name} (exit {p.proc.returncode if p.proc else None}; "
                             f"argv {p.launched[0] if hasattr(p, 'launched') else None}):\n{p.log()}"
                             for p in pods)
            reason = f"{[p.name for p in dead]} exited" if dead else f"timed out after {timeout}s"
            raise AssertionError(f"{what}: {reason}\n{logs}")
        time.sleep(interval)


def haproxy_for(service: dict, backends: list[Pod], ip: str, cfg_dir: Path) -> tuple[subprocess.Popen, Path]:
    """HAProxy (mode tcp, round robin) standing in for a ClusterIP Service: one frontend per
    Service port on `ip`, the backends are the pods' targetPorts."""
    lines = ["global", "  maxconn 2000", "defaults", "  mode tcp", "  timeout connect 2s",
             "  timeout client 10m", "  timeout server 10m", ""]
    for p in service["spec"]["ports"]:
        name = p["name"]
        lines += [f"frontend fe_{name}", f"  bind {ip}:{p['port']}", f"  default_backend be_{name}", "",
                  f"backend be_{name}", "  balance roundrobin"]
        for i, pod in enumerate(backends):
            lines.append(f"  server s{i} {pod.ip}:{pod.port_number(p['targetPort'])}")
        lines.append("")
    cfg = cfg_dir / "haproxy.cfg"
    cfg.write_text("\n".join(lines))
    exe = "haproxy" if subprocess.run(["sh", "-c", "command -v haproxy"], capture_output=True).returncode == 0 \
        else "/usr/sbin/haproxy"
    log = open(cfg_dir / "haproxy.log", "ab")
    proc = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    return proc, cfg
