"""Issue 15 fault (a): SIGSTOP one of three sidecars past placement's liveness timeout, then
SIGCONT, while 200 five-step workflows arrive before, during and after (`faults.py`). Every
workflow completes once with the right output; only activities in flight on the paused sidecar
may run again, each once more; none reaches a worker after its result was recorded."""

from __future__ import annotations

import pytest

from faults import run_fault_scenario

pytestmark = pytest.mark.timeout(240)  # a hang guard above the scenario's own deadlines


def test_sigstop_sidecar_past_liveness_timeout_then_sigcont(rig, report):
    run_fault_scenario(
        rig, report, "pause",
        inject=lambda c, i: c.pause("sidecar", i),
        heal=lambda c, i: c.resume("sidecar", i),
        # a client call to the paused sidecar would wait for it: the clients use the others
        via=(0, 1),
        pauses=True,
    )
