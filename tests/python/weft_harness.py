"""Process harness for `weft dev`: start it as a real process, parse its ready line, stop it.

Shared by tests/python, tests/python/v119 and examples/task-processing. It imports no SDK so that
it can be used from either virtualenv (1.18.3 or 1.19) and from subprocess helpers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[2]
PY_TESTS = Path(__file__).resolve().parent

READY_RE = re.compile(r"weft dev ready grpc=(?P<grpc>\S+) http=(?P<http>\S+)")
READY_TIMEOUT = float(os.environ.get("WEFT_READY_TIMEOUT", "60"))

# Documented payload limit (4 MiB) — see the `weft dev` contract.
PAYLOAD_LIMIT = 4 * 1024 * 1024


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def weft_bin() -> Path:
    return Path(os.environ.get("WEFT_BIN") or (REPO / "target" / "debug" / "weft"))


def require_binary() -> None:
    """Skip loudly outside CI, fail under CI=true, when the weft binary is missing."""
    import pytest

    b = weft_bin()
    if not b.exists():
        msg = (f"weft binary not found at {b} (build with `cargo build -p weft` or set WEFT_BIN). "
               f"THE WEFT COMPATIBILITY TESTS DID NOT RUN.")
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], object], timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll `pred` until it returns a truthy value; return that value. Raise AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last_exc = e
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            raise AssertionError(msg)
        time.sleep(interval)


class WeftDev:
    """One `weft dev` process on a data dir. Ports are picked by weft (port 0) unless pinned."""

    def __init__(self, data_dir: Path, log_dir: Path, env: Optional[dict] = None, app_id: Optional[str] = None):
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.extra_env = dict(env or {})
        self.app_id = app_id
        self.proc: Optional[subprocess.Popen] = None
        self.grpc_addr: Optional[str] = None
        self.http_addr: Optional[str] = None
        self.generation = 0
        self._stdout_lines: list[str] = []
        self._ready = threading.Event()
        self.stderr_path: Optional[Path] = None

    # -- addresses -------------------------------------------------------------------------
    @property
    def grpc_host(self) -> str:
        return self.grpc_addr.rsplit(":", 1)[0]

    @property
    def grpc_port(self) -> int:
        return int(self.grpc_addr.rsplit(":", 1)[1])

    @property
    def http_port(self) -> int:
        return int(self.http_addr.rsplit(":", 1)[1])

    @property
    def http_url(self) -> str:
        return f"http://{self.http_addr}"

    def sdk_env(self) -> dict:
        """Environment for an SDK process pointed at this sidecar."""
        env = dict(os.environ)
        env["DAPR_GRPC_ENDPOINT"] = self.grpc_addr
        env["DAPR_HTTP_ENDPOINT"] = self.http_url
        env["DAPR_GRPC_PORT"] = str(self.grpc_port)
        env["DAPR_HTTP_PORT"] = str(self.http_port)
        env["DAPR_RUNTIME_HOST"] = self.grpc_host
        env.pop("DAPR_API_TOKEN", None)
        return env

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, grpc_port: int = 0, http_port: int = 0, timeout: float = READY_TIMEOUT) -> "WeftDev":
        binary = weft_bin()
        if not binary.exists():
            raise FileNotFoundError(
                f"weft binary not found at {binary}; build it with `cargo build -p weft` or set WEFT_BIN"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.generation += 1
        self.stderr_path = self.log_dir / f"weft-{self.generation}.stderr.log"
        stdout_path = self.log_dir / f"weft-{self.generation}.stdout.log"
        args = [
            str(binary), "dev",
            "--data-dir", str(self.data_dir),
            "--grpc-port", str(grpc_port),
            "--http-port", str(http_port),
            "--placement-port", "0",
            "--internal-port", "0",
        ]
        if self.app_id:
            args += ["--app-id", self.app_id]
        import pg  # local module; imports nothing unless the PostgreSQL backend is selected
        if pg.enabled():
            args += ["--database-url", pg.database_for(self.data_dir)]
        env = dict(os.environ)
        for k in ("WEFT_DATA_DIR", "WEFT_GRPC_PORT", "WEFT_HTTP_PORT", "WEFT_PLACEMENT_PORT", "WEFT_INTERNAL_PORT", "WEFT_APP_ID",
                  "DAPR_API_TOKEN"):
            env.pop(k, None)
        env.setdefault("RUST_LOG", "info")
        env.update(self.extra_env)
        self._ready = threading.Event()
        self._stdout_lines = []
        stderr_f = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=stderr_f, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )
        stderr_f.close()
        proc = self.proc

        def pump():
            with open(stdout_path, "w") as out:
                for raw in proc.stdout:  # drain forever so weft never blocks on a full pipe
                    line = raw.decode("utf-8", "replace")
                    out.write(line)
                    out.flush()
                    self._stdout_lines.append(line)
                    m = READY_RE.search(line)
                    if m and not self._ready.is_set():
                        self.grpc_addr = m.group("grpc")
                        self.http_addr = m.group("http")
                        self._ready.set()

        threading.Thread(target=pump, name=f"weft-stdout-{self.generation}", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"weft dev exited with {proc.returncode} before printing its ready line\n"
                    f"stdout: {''.join(self._stdout_lines)[-2000:]}\nstderr: {self.stderr_tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"weft dev did not print `weft dev ready grpc=… http=…` within {timeout}s\n"
                    f"stdout: {''.join(self._stdout_lines)[-2000:]}\nstderr: {self.stderr_tail()}"
                )
        ready_lines = [l for l in self._stdout_lines if "ready" in l]
        assert len(ready_lines) == 1, f"expected exactly one ready line, got {ready_lines!r}"
        return self

    def restart_same_ports(self, timeout: float = READY_TIMEOUT) -> "WeftDev":
        """Start again on the same data dir and the same ports (so connected SDK processes reconnect)."""
        grpc_port, http_port = self.grpc_port, self.http_port
        deadline = time.monotonic() + 20
        while True:
            try:
                return self.start(grpc_port=grpc_port, http_port=http_port, timeout=timeout)
            except RuntimeError:
                # the port may still be held for a moment after a kill; retry until the deadline
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> Optional[int]:
        """SIGTERM by PID, then SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL by PID (crash simulation)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stderr_tail(self, n: int = 8000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-n:] if self.stderr_path else ""
        except OSError:
            return ""

    def all_stderr(self, n: int = 12000) -> str:
        parts = []
        for p in sorted(self.log_dir.glob("weft-*.stderr.log")):
            parts.append(f"----- {p.name} -----\n" + p.read_text(errors="replace")[-n:])
        return "\n".join(parts)

    # -- tiny HTTP helpers (stdlib only) -----------------------------------------------------
    def http(self, method: str, path: str, body: Optional[bytes] = None, headers: Optional[dict] = None,
             timeout: float = 15):
        """Returns (status, headers, body bytes). Never raises for HTTP error statuses."""
        req = urllib.request.Request(self.http_url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def history(self, instance_id: str, headers: Optional[dict] = None) -> dict:
        status, _, body = self.http("GET", f"/weft/v1/instances/{instance_id}/history", headers=headers)
        assert status == 200, f"history of {instance_id}: HTTP {status} {body[:500]!r}"
        return json.loads(body)

    def get_json(self, instance_id: str) -> tuple[int, dict]:
        status, _, body = self.http("GET", f"/v1.0/workflows/dapr/{instance_id}")
        try:
            return status, (json.loads(body) if body else {})
        except json.JSONDecodeError:
            return status, {"_raw": body.decode("utf-8", "replace")}


def event_types(history: dict) -> list[str]:
    return [e.get("type") for e in history.get("events", [])]


class ProcWithReadyLine:
    """A helper subprocess (SDK worker, app) that prints a ready marker on stdout."""

    def __init__(self, args: list, env: dict, log_path: Path, ready_marker: str, timeout: float = 60,
                 cwd: Optional[Path] = None):
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._ready = threading.Event()
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        proc = self.proc

        def pump():
            with open(self.log_path, "w") as out:
                for raw in proc.stdout:
                    line = raw.decode("utf-8", "replace")
                    out.write(line)
                    out.flush()
                    if ready_marker in line:
                        self._ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{args} not ready ({ready_marker!r}) within {timeout}s; log:\n{self.log()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self, n: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
