"""The `weft dev` process contract: WEFT_* env vars as flags, one ready line, SIGINT/SIGTERM shutdown."""

from __future__ import annotations

import os
import signal
import subprocess

from weft_harness import READY_RE, free_port, require_binary, wait_until, weft_bin


def _start(args, env, tmp_path):
    return subprocess.Popen([str(weft_bin()), *args], stdout=subprocess.PIPE, stderr=open(tmp_path / "err.log", "wb"),
                            env=env, start_new_session=True)


def _ready_line(p, timeout=60):
    lines = []

    def read():
        line = p.stdout.readline().decode()
        lines.append(line)
        return READY_RE.search(line)

    m = wait_until(read, timeout, interval=0, what="ready line")
    return m, lines


def test_env_vars_configure_weft_dev_and_sigint_stops_it(tmp_path):
    require_binary()
    grpc_port, http_port = free_port(), free_port()
    env = dict(os.environ, WEFT_DATA_DIR=str(tmp_path / "envdata"), WEFT_GRPC_PORT=str(grpc_port),
               WEFT_HTTP_PORT=str(http_port), WEFT_PLACEMENT_PORT="0", WEFT_INTERNAL_PORT="0",
               WEFT_APP_ID="envapp")
    env.pop("DAPR_API_TOKEN", None)
    p = _start(["dev"], env, tmp_path)
    try:
        m, _ = _ready_line(p)
        assert m.group("grpc") == f"127.0.0.1:{grpc_port}"
        assert m.group("http") == f"127.0.0.1:{http_port}"
        assert (tmp_path / "envdata").is_dir() and any((tmp_path / "envdata").iterdir()), "data dir unused"
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1.0/healthz", timeout=10) as r:
            assert r.status == 204
        os.kill(p.pid, signal.SIGINT)
        assert p.wait(20) == 0
        assert p.stdout.read().decode().count("ready") == 0, "more than one ready line"
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(10)
    print((tmp_path / "err.log").read_text()[-2000:])


def test_flags_override_env(tmp_path):
    require_binary()
    env = dict(os.environ, WEFT_GRPC_PORT="1", WEFT_HTTP_PORT="2", WEFT_PLACEMENT_PORT="0",
               WEFT_INTERNAL_PORT="0")  # unusable; flags must win
    env.pop("DAPR_API_TOKEN", None)
    p = _start(["dev", "--data-dir", str(tmp_path / "d"), "--grpc-port", "0", "--http-port", "0"], env, tmp_path)
    try:
        m, _ = _ready_line(p)
        assert m.group("grpc") != "127.0.0.1:1" and m.group("http") != "127.0.0.1:2"
        os.kill(p.pid, signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(10)
