"""Drives a real Weft cluster (placement nodes, sidecars, PostgreSQL, HAProxy) from Python tests.

The processes are started by `weft-cluster` (crates/weft-testkit/src/bin/weft-cluster.rs), which
speaks JSON lines on stdin/stdout; this module sends it commands with a deadline each, starts SDK
worker processes, reads /metrics and checks workflow runs. It imports no SDK.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # weft_harness

from weft_harness import REPO, ProcWithReadyLine, in_ci, wait_until, weft_bin  # noqa: E402

READY_TIMEOUT = float(os.environ.get("WEFT_READY_TIMEOUT", "90"))


def cluster_bin() -> Path:
    return Path(os.environ.get("WEFT_CLUSTER_BIN") or (weft_bin().parent / "weft-cluster"))


def require_prerequisites() -> None:
    """Skip loudly outside CI, fail under CI=true, when a binary or HAProxy is missing."""
    import shutil

    import pytest

    missing = [str(p) for p in (weft_bin(), cluster_bin()) if not p.exists()]
    if not (shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists()):
        missing.append("haproxy (apt-get install haproxy; scripts/test.sh installs it)")
    if missing:
        msg = f"missing {missing} (cargo build -p weft -p weft-testkit). THE CLUSTER TESTS DID NOT RUN."
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)


class CommandFailed(AssertionError):
    pass


class Cluster:
    """One `weft-cluster` launcher process and the cluster it runs. Every command has a deadline;
    closing stdin (or `close()`) makes the launcher SIGKILL everything it started, by PID."""

    def __init__(self, base_dir: Path, **start):
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base_dir / "weft-cluster.stderr.log"
        err = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(cluster_bin())], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            start_new_session=True, env={**os.environ, "WEFT_BIN": str(weft_bin())},
        )
        err.close()
        self._replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        start.setdefault("weft_bin", str(weft_bin()))
        start.setdefault("dir", str(self.base_dir))
        start.setdefault("ready_timeout_ms", int(READY_TIMEOUT * 1000))
        try:
            self.status = self.cmd("start", timeout=READY_TIMEOUT * 3, **start)
        except BaseException:
            self.close()
            raise

    def _pump(self):
        for raw in self.proc.stdout:
            self._replies.put(raw.decode("utf-8", "replace"))
        self._replies.put(None)

    def cmd(self, cmd: str, timeout: float = 120, **fields) -> dict:
        """Sends one command; returns its `result` or raises CommandFailed with the launcher's error."""
        if self.proc.poll() is not None:
            raise CommandFailed(f"weft-cluster exited ({self.proc.returncode}); log:\n{self.launcher_log()}")
        self.proc.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        self.proc.stdin.flush()
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise CommandFailed(f"weft-cluster: no reply to {cmd} within {timeout}s") from None
        if line is None:
            raise CommandFailed(f"weft-cluster exited during {cmd}; log:\n{self.launcher_log()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise CommandFailed(f"weft-cluster {cmd} {fields}: {reply.get('error')}")
        return reply["result"]

    # -- addresses --------------------------------------------------------------------------
    def refresh(self) -> dict:
        self.status = self.cmd("status")
        return self.status

    def sidecar(self, i: int) -> dict:
        return self.status["sidecars"][i]

    @property
    def sidecars(self) -> list[dict]:
        return self.status["sidecars"]

    @property
    def lb_grpc(self) -> str:
        return self.status["haproxy"]["grpc"]

    @property
    def lb_http(self) -> str:
        return self.status["haproxy"]["http"]

    # -- faults -----------------------------------------------------------------------------
    def _fault(self, cmd: str, target: str, index: int = 0, **kw) -> dict:
        r = self.cmd(cmd, target=target, index=index, **kw)
        self.status = r["status"]
        return r["value"]

    def kill(self, target: str, index: int = 0):
        return self._fault("kill", target, index)

    def pause(self, target: str, index: int = 0):
        return self._fault("pause", target, index)

    def resume(self, target: str, index: int = 0):
        return self._fault("resume", target, index)

    def terminate(self, target: str, index: int = 0, timeout: float = 60) -> Optional[int]:
        return self._fault("terminate", target, index, timeout_ms=int(timeout * 1000),
                           )["code"]

    def restart(self, target: str, index: int = 0, fresh_ports: bool = False):
        return self._fault("restart", target, index, fresh_ports=fresh_ports, timeout=READY_TIMEOUT * 2)

    def wipe(self, target: str, index: int = 0):
        """Deletes a stopped placement node's data directory (it lost its disk)."""
        return self._fault("wipe", target, index)

    def cut_placement(self, index: int, mode: str = "refuse") -> None:
        """Cuts sidecar `index` from every placement node through its proxies (the cluster must be
        started with placement_proxies=True): `refuse` resets its placement connections and refuses
        new ones, `blackhole` stalls them. PostgreSQL, its peers and its workers stay reachable."""
        self.status = self.cmd("cut_placement", index=index, mode=mode)["status"]

    def heal_placement(self, index: int) -> None:
        self.status = self.cmd("heal_placement", index=index)["status"]

    def add_sidecar(self) -> int:
        r = self.cmd("add_sidecar", timeout=READY_TIMEOUT * 2)
        self.status = r["status"]
        return r["index"]

    def leader(self, timeout: float = 30) -> int:
        return self.cmd("leader", timeout_ms=int(timeout * 1000), timeout=timeout + 10)

    def cluster_status(self) -> dict:
        return self.cmd("cluster_status")

    def logs(self, nbytes: int = 6000) -> str:
        try:
            return self.cmd("logs", bytes=nbytes, timeout=10)
        except Exception as e:  # noqa: BLE001 - diagnostics only
            return f"(no logs: {e})\n{self.launcher_log()}"

    def launcher_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.cmd("shutdown", timeout=30)
            except Exception:  # noqa: BLE001 - fall through to the kill below
                pass
            try:
                self.proc.stdin.close()
                self.proc.wait(30)
            except Exception:  # noqa: BLE001
                self.proc.kill()
                self.proc.wait(10)

    # -- HTTP and metrics --------------------------------------------------------------------
    def metrics(self, i: int) -> dict[str, float]:
        """Sidecar i's Prometheus counters, summed over labels: {name: value}."""
        return parse_metrics(http_get(f"http://{self.sidecar(i)['http']}/metrics")[1].decode())


def http_get(url: str, timeout: float = 15) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


# ------------------------------------------------------------------------------------------ workers
def worker_env(grpc_addr: str, side_dir: Path, **extra) -> dict:
    env = dict(os.environ)
    host, port = grpc_addr.rsplit(":", 1)
    env.update({"DAPR_GRPC_ENDPOINT": grpc_addr, "DAPR_RUNTIME_HOST": host, "DAPR_GRPC_PORT": port,
                "SIDE_DIR": str(side_dir), "PYTHONUNBUFFERED": "1",
                "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning"})
    env.pop("DAPR_API_TOKEN", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_worker(grpc_addr: str, side_dir: Path, log_path: Path, script: str = "cluster_worker.py",
                 **extra) -> ProcWithReadyLine:
    """A separate Python process running the real SDK's WorkflowRuntime against `grpc_addr`."""
    Path(side_dir).mkdir(parents=True, exist_ok=True)
    return ProcWithReadyLine([sys.executable, str(HERE / script)], worker_env(grpc_addr, side_dir, **extra),
                             log_path, "WORKER READY", timeout=60)


def expected_output(seed: int, steps: int = 5) -> int:
    v = seed
    for n in range(steps):
        v = v * 3 + n
    return v


def read_events(side_dir: Path) -> list[tuple]:
    """Every `exec` / `delivered` line the workers wrote: (kind, instance, task_id, pid, t_ns)."""
    out = []
    for p in sorted(Path(side_dir).glob("events-*.log")):
        for line in p.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5:
                out.append((parts[0], parts[1], int(parts[2]), int(parts[3]), int(parts[4])))
    return out


class Progress:
    """Polls one sidecar's `/weft/v1/instances` listing: how many of our instances are terminal."""

    TERMINAL = ("COMPLETED", "FAILED", "TERMINATED")

    def __init__(self, http_addrs, prefix: str, total: int):
        self.http_addrs = list(http_addrs)
        self.prefix = prefix
        self.total = total
        self.done: dict[str, dict] = {}

    def poll(self) -> int:
        last_err = None
        for addr in self.http_addrs:  # any live sidecar answers
            try:
                self._poll_one(addr)
                return len(self.done)
            except Exception as e:  # noqa: BLE001 - try the next sidecar
                last_err = e
        raise AssertionError(f"no sidecar answered the listing: {last_err!r}")

    def _poll_one(self, addr: str) -> None:
        after = None
        for _page in range(100):
            q = f"status={','.join(self.TERMINAL)}&limit=1000" + (f"&after={after}" if after else "")
            status, body = http_get(f"http://{addr}/weft/v1/instances?{q}", timeout=10)
            assert status == 200, (status, body[:300])
            page = json.loads(body)
            for inst in page.get("instances", []):
                if inst["instanceID"].startswith(self.prefix):
                    self.done[inst["instanceID"]] = inst
            after = page.get("next")
            if not after:
                return

    def wait_all(self, timeout: float, on_tick=None) -> dict[str, dict]:
        def check():
            n = self.poll()
            if on_tick:
                on_tick(n)
            return n >= self.total
        try:
            wait_until(check, timeout, interval=0.5, what=f"{self.total} workflows {self.prefix}* to finish")
        except AssertionError as e:
            raise AssertionError(f"{e}: {len(self.done)} finished; not finished: "
                                 f"{self.missing()[:10]}") from None
        return self.done

    def missing(self) -> list[str]:
        """IDs `{prefix}{i}` (i < total) not seen terminal yet."""
        return [f"{self.prefix}{i}" for i in range(self.total) if f"{self.prefix}{i}" not in self.done]


def rfc3339_to_epoch(ts: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


__all__ = ["Cluster", "CommandFailed", "Progress", "REPO", "expected_output", "http_get", "parse_metrics",
           "read_events", "require_prerequisites", "rfc3339_to_epoch", "start_worker", "wait_until",
           "worker_env"]
