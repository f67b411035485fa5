"""Issue 15 fault (b): cut one of three sidecars from placement only, for 10 s, then heal —
PostgreSQL, the other sidecars and its SDK worker stay reachable (each sidecar reaches placement
through its own TCP proxies in the test kit: `cut_placement` resets its connections and refuses
new ones). 200 five-step workflows arrive before, during (through every sidecar, the cut one
included) and after (`faults.py`). Every workflow completes once with the right output; only
activities in flight on the cut sidecar may run again, each once more; none reaches a worker after
its result was recorded."""

from __future__ import annotations

import pytest

from faults import Issue15, run_fault_scenario

pytestmark = pytest.mark.timeout(240)  # a hang guard above the scenario's own deadlines


def test_sidecar_cut_from_placement_then_healed(rig, report):
    run_fault_scenario(
        rig, report, "partition",
        inject=lambda c, i: c.cut_placement(i, "refuse"),
        heal=lambda c, i: c.heal_placement(i),
        placement_proxies=True,
        keeps_lease=True,
    )
