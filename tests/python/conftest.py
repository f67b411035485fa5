"""Fixtures for the Python compatibility suite: a real `weft dev` process driven by the real SDKs.

Main venv (.venv): dapr-ext-workflow 1.18.3 (in-process WorkflowRuntime / DaprWorkflowClient) and
durabletask-dapr 0.17.4 (driven from subprocesses: both packages register protobuf symbols with
the same names, so they cannot be imported into one process).
The dapr 1.19 suite lives in ./v119 and runs from .venv119 (see scripts/test.sh).
"""

from __future__ import annotations

import logging
import re
import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from weft_harness import WeftDev, require_binary, weft_bin  # noqa: E402

collect_ignore = ["v119", "cluster"]  # run separately: the 1.19 venv; the cluster suite (own step)

# Bound every SDK unary call that has no deadline of its own (StartInstance, Terminate, Suspend
# ... block until a state is reached): an engine that never answers fails the test, not the run.
os.environ.setdefault("DAPR_API_TIMEOUT_SECONDS", "90")

logging.getLogger("durabletask-worker").setLevel(logging.WARNING)


def _require_binary():
    require_binary()


def _dump_on_failure(request, weft: WeftDev, label: str = "weft dev"):
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\n===== {label} stderr (data dir {weft.data_dir}) =====\n{weft.all_stderr()}\n===== end =====")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class _Factory:
    def __init__(self, base: Path):
        self.base = base
        self.instances: list[WeftDev] = []

    def __call__(self, env: dict | None = None, app_id: str | None = None, start: bool = True) -> WeftDev:
        n = len(self.instances)
        w = WeftDev(self.base / f"data{n}", self.base / f"logs{n}", env=env, app_id=app_id)
        self.instances.append(w)
        if start:
            w.start()
        return w


@pytest.fixture
def weft_factory(request, tmp_path):
    """Start extra, test-private `weft dev` processes. All are stopped (by PID) at teardown."""
    _require_binary()
    f = _Factory(tmp_path)
    yield f
    for w in f.instances:
        _dump_on_failure(request, w, f"weft dev ({w.data_dir.name})")
        w.stop()


@pytest.fixture(scope="session")
def weft(tmp_path_factory):
    """One shared `weft dev` for the feature tests."""
    _require_binary()
    base = tmp_path_factory.mktemp("weft-shared")
    w = WeftDev(base / "data", base / "logs").start()
    yield w
    code = w.stop()
    # a clean SIGTERM shutdown is part of the contract
    assert code is not None


@pytest.fixture(autouse=True)
def _dump_shared_weft_on_failure(request):
    yield
    if "weft" in request.fixturenames:
        w = request.getfixturevalue("weft")
        _dump_on_failure(request, w, "shared weft dev")


@pytest.fixture(scope="session")
def wf_state():
    from wf_defs import SharedState
    return SharedState()


@pytest.fixture(scope="session")
def runtime(weft, wf_state):
    import dapr.ext.workflow as wf
    from wf_defs import register_all

    rt = wf.WorkflowRuntime(host=weft.grpc_host, port=str(weft.grpc_port), worker_ready_timeout=30,
                            maximum_thread_pool_workers=16)
    reg = register_all(rt, wf_state)
    rt.start()
    rt.registry = reg
    yield rt
    rt.shutdown()


@pytest.fixture(scope="session")
def client(weft):
    import dapr.ext.workflow as wf
    c = wf.DaprWorkflowClient(host=weft.grpc_host, port=str(weft.grpc_port))
    yield c
    c.close()


@pytest.fixture
def uid(request):
    """A unique, valid instance-id prefix for this test."""
    name = re.sub(r"[^A-Za-z0-9-]", "-", request.node.name)
    return f"{name[:30]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def py():
    return sys.executable


def pytest_report_header(config):
    return [f"weft binary: {weft_bin()} (exists={weft_bin().exists()})", f"CI={os.environ.get('CI', '')}"]
