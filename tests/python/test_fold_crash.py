"""Issue 11, acceptance 2: an activity result folded into the turn it wakes is held only in memory
until that turn's checkpoint. SIGKILL `weft dev` in between (the test hook WEFT_TEST_FOLD_DELAY_MS
holds the turn back): after a restart the activity runs again, the workflow's output is right and
its history holds exactly one TaskCompleted per task."""

from __future__ import annotations

import json
import sys

from weft_harness import PY_TESTS, ProcWithReadyLine, event_types, wait_until

WORKER = str(PY_TESTS / "worker_app.py")
HELD = "activity result held for the next turn"


def test_sigkill_between_folded_result_and_checkpoint(weft_factory, tmp_path, request):
    import dapr.ext.workflow as wf
    from dapr.ext.workflow import WorkflowStatus as S

    # Long enough that the kill always lands inside the window; the restart runs without it.
    weft = weft_factory(env={"WEFT_TEST_FOLD_DELAY_MS": "60000"})
    side = tmp_path / "side"
    side.mkdir()
    env = weft.sdk_env()
    env.update(SIDE_DIR=str(side), WORKER_MODE="normal", ACT_SLEEP="0", PYTHONUNBUFFERED="1")
    worker = ProcWithReadyLine([sys.executable, WORKER], env, side / "worker.log", "WORKER READY")
    c = wf.DaprWorkflowClient(host=weft.grpc_host, port=str(weft.grpc_port))
    steps = side / "steps.log"

    def runs(iid: str, n: int) -> int:
        if not steps.exists():
            return 0
        return steps.read_text().splitlines().count(f"{iid} {n}")

    try:
        iid = c.schedule_new_workflow("fold_wf", input=5, instance_id="fold-crash")
        # The first step's result reached the sidecar and its actor holds it for the next turn.
        wait_until(lambda: HELD in weft.stderr_tail(200_000), 60, what="the first result held in memory")
        assert runs(iid, 1) == 1
        weft.kill()  # SIGKILL: the held result is lost, its task row is not
    finally:
        c.close()

    weft.extra_env.pop("WEFT_TEST_FOLD_DELAY_MS")
    weft.restart_same_ports()  # the worker reconnects by itself
    c = wf.DaprWorkflowClient(host=weft.grpc_host, port=str(weft.grpc_port))
    try:
        st = c.wait_for_workflow_completion(iid, timeout_in_seconds=90)
        assert st is not None and st.runtime_status == S.COMPLETED, st
        assert json.loads(st.serialized_output) == (5 * 2 + 1) * 2 + 1
        assert runs(iid, 1) == 2, "the activity whose result was lost ran again"
        assert runs(iid, 2) == 1
        history = weft.history(iid)
        types = event_types(history)
        assert types.count("TaskScheduled") == 2, types
        assert types.count("TaskCompleted") == 2, types
        done = [e["taskScheduledId"] for e in history["events"] if e["type"] == "TaskCompleted"]
        assert sorted(done) == sorted(set(done)), f"one TaskCompleted per task: {done}"
    finally:
        c.close()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(f"\n===== worker =====\n{worker.log()}")
        worker.stop()
