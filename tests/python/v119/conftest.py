"""Fixtures for the dapr 1.19.0 suite (run from .venv119, which has only the core `dapr` wheel)."""

from __future__ import annotations

import os
import re
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from weft_harness import WeftDev, require_binary  # noqa: E402

# Bound every SDK unary call that has no deadline of its own (StartInstance, Terminate, Suspend
# ... block until a state is reached): an engine that never answers fails the test, not the run.
os.environ.setdefault("DAPR_API_TIMEOUT_SECONDS", "90")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session", autouse=True)
def _is_119():
    import dapr.ext.workflow as wf
    if not hasattr(wf.DaprWorkflowClient, "get_workflow_history"):
        pytest.fail("this suite needs the dapr 1.19 workflow SDK (dapr==1.19.0 without dapr-ext-workflow); "
                    "run it from .venv119 (scripts/test.sh)")


@pytest.fixture(scope="session")
def weft(tmp_path_factory):
    require_binary()
    base = tmp_path_factory.mktemp("weft-119")
    w = WeftDev(base / "data", base / "logs").start()
    yield w
    w.stop()


@pytest.fixture(autouse=True)
def _dump_on_failure(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and "weft" in request.fixturenames:
        w = request.getfixturevalue("weft")
        print(f"\n===== weft dev stderr =====\n{w.all_stderr()}\n===== end =====")


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
    register_all(rt, wf_state)
    rt.start()
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
    name = re.sub(r"[^A-Za-z0-9-]", "-", request.node.name)
    return f"{name[:30]}-{uuid.uuid4().hex[:8]}"
