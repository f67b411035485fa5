"""Crash tests: a worker killed mid-activity (re-dispatch), and `weft dev` killed with SIGKILL while
>= 50 workflows are mid-flight (issue #2 acceptance 3)."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from weft_harness import PY_TESTS, ProcWithReadyLine, event_types, wait_until

WORKER = str(PY_TESTS / "worker_app.py")


@pytest.fixture
def workers(request):
    started: list[ProcWithReadyLine] = []

    def start(weft, side: Path, mode="normal", act_sleep=0.2, name="worker"):
        side.mkdir(parents=True, exist_ok=True)
        env = weft.sdk_env()
        env.update(SIDE_DIR=str(side), WORKER_MODE=mode, ACT_SLEEP=str(act_sleep), PYTHONUNBUFFERED="1")
        w = ProcWithReadyLine([sys.executable, WORKER], env, side / f"{name}-{len(started)}.log", "WORKER READY")
        started.append(w)
        return w

    yield start
    for w in started:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(f"\n===== worker {w.log_path.name} =====\n{w.log()}")
        w.stop()


def _client(weft):
    import dapr.ext.workflow as wf
    return wf.DaprWorkflowClient(host=weft.grpc_host, port=str(weft.grpc_port))


def test_worker_killed_mid_activity_is_redispatched(weft_factory, workers, tmp_path):
    from dapr.ext.workflow import WorkflowStatus as S

    weft = weft_factory()
    side = tmp_path / "side"
    w1 = workers(weft, side, mode="hang", name="hang")
    c = _client(weft)
    try:
        iid = c.schedule_new_workflow("slow_wf", input="job", instance_id="redispatch-1")
        marker = side / "started" / f"{iid}.{w1.pid}"
        wait_until(marker.exists, 30, what="activity started on worker 1")
        w1.kill()  # SIGKILL the worker while it holds the activity
        w2 = workers(weft, side, mode="normal", name="fresh")
        st = c.wait_for_workflow_completion(iid, timeout_in_seconds=60)
        assert st is not None and st.runtime_status == S.COMPLETED, st
        assert json.loads(st.serialized_output) == f"job-done-by-{w2.pid}"
        types = event_types(weft.history(iid))
        assert types.count("TaskCompleted") == 1 and types.count("ExecutionCompleted") == 1, types
    finally:
        c.close()


def test_worker_killed_mid_workflow_turn_is_redispatched(weft_factory, workers, tmp_path):
    """The orchestrator work item (not just activities) is re-dispatched to the next worker."""
    from dapr.ext.workflow import WorkflowStatus as S

    weft = weft_factory()
    side = tmp_path / "side"
    w1 = workers(weft, side, mode="hang", name="hang")
    c = _client(weft)
    try:
        start_at = datetime.now(timezone.utc)  # scheduled start: do not block on the first turn
        iid = c.schedule_new_workflow("hang_in_turn_wf", input="t", instance_id="redispatch-turn",
                                      start_at=start_at)
        wait_until((side / "turn" / f"{iid}.{w1.pid}").exists, 30, what="workflow turn started on worker 1")
        w1.kill()
        w2 = workers(weft, side, mode="normal", name="fresh")
        st = c.wait_for_workflow_completion(iid, timeout_in_seconds=60)
        assert st is not None and st.runtime_status == S.COMPLETED, st
        assert json.loads(st.serialized_output) == f"t-done-by-{w2.pid}"
        types = event_types(weft.history(iid))
        assert types.count("ExecutionStarted") == 1 and types.count("TaskScheduled") == 1, types
    finally:
        c.close()


def test_sigterm_restart_resumes_unfinished_workflows(weft_factory, workers, tmp_path):
    """Graceful stop (SIGTERM) with workflows in flight; a restart on the same data dir finishes them."""
    from dapr.ext.workflow import WorkflowStatus as S

    weft = weft_factory()
    side = tmp_path / "side"
    workers(weft, side, act_sleep=0.2, name="w")
    c = _client(weft)
    ids = [f"term-{i:02d}" for i in range(15)]
    try:
        start_at = datetime.now(timezone.utc) + timedelta(seconds=1)
        for i, iid in enumerate(ids):
            c.schedule_new_workflow("durable_chain", input=i, instance_id=iid, start_at=start_at)
        wait_until(lambda: (side / "steps.log").exists() and len((side / "steps.log").read_text().splitlines()) >= 5,
                   60, what="progress before SIGTERM")
        t0 = time.monotonic()
        code = weft.stop(timeout=20)
        assert time.monotonic() - t0 < 15, "SIGTERM shutdown took too long"
        assert code == 0, f"weft dev exited with {code} on SIGTERM"
    finally:
        c.close()
    weft.restart_same_ports()
    c = _client(weft)
    try:
        for i, iid in enumerate(ids):
            st = wait_until(lambda: c.wait_for_workflow_completion(iid, timeout_in_seconds=60), 90,
                            what=f"{iid} completes after restart")
            assert st.runtime_status == S.COMPLETED, (iid, st.runtime_status)
            v = i
            for _ in range(3):
                v = v * 2 + 1
            assert json.loads(st.serialized_output) == f"{iid}={v}"
            assert event_types(weft.history(iid)).count("ExecutionCompleted") == 1
    finally:
        c.close()


def test_sigkill_with_50_workflows_in_flight(weft_factory, workers, tmp_path):
    from dapr.ext.workflow import WorkflowStatus as S

    N = 60
    weft = weft_factory()
    side = tmp_path / "side"
    workers(weft, side, act_sleep=0.3, name="w")
    c = _client(weft)
    ids = [f"crash-{i:03d}" for i in range(N)]
    expected = {}
    for i, iid in enumerate(ids):
        v = i
        for _ in range(3):
            v = v * 2 + 1
        expected[iid] = f"{iid}={v}"
    try:
        # a common scheduled start: schedule calls return at once and all 60 begin together, so
        # none can finish before the crash however slowly the starts are issued
        start_at = datetime.now(timezone.utc) + timedelta(seconds=2)
        for i, iid in enumerate(ids):
            c.schedule_new_workflow("durable_chain", input=i, instance_id=iid, start_at=start_at)

        def progressed():
            log = side / "steps.log"
            return log.exists() and len(log.read_text().splitlines()) >= 40

        wait_until(progressed, 60, what="some activity progress before the crash")
        statuses = {iid: c.get_workflow_state(iid, fetch_payloads=False).runtime_status for iid in ids}
        in_flight = [i for i, s in statuses.items() if s in (S.RUNNING, S.PENDING)]
        weft.kill()  # SIGKILL
        print(f"SIGKILL with {len(in_flight)}/{N} workflows in flight "
              f"({len((side / 'steps.log').read_text().splitlines())} steps done)")
        assert len(in_flight) >= 50, f"only {len(in_flight)} workflows were mid-flight at the kill: {statuses}"
    finally:
        c.close()

    weft.restart_same_ports()  # same data dir; the worker process reconnects by itself

    # second crash, later in the workflows' life (after the timers, while steps 2/3 run)
    def steps_done():
        return len((side / "steps.log").read_text().splitlines())

    wait_until(lambda: steps_done() >= 110, 90, what="steps 2/3 under way after the first restart")
    finals = (side / "final.log").read_text().splitlines() if (side / "final.log").exists() else []
    weft.kill()
    print(f"second SIGKILL after {steps_done()} steps, {len(set(finals))} finalized")
    weft.restart_same_ports()

    c = _client(weft)
    try:
        deadline = time.monotonic() + 120
        for iid in ids:
            left = max(1, int(deadline - time.monotonic()))
            st = c.wait_for_workflow_completion(iid, timeout_in_seconds=left)
            assert st is not None, iid
            assert st.runtime_status == S.COMPLETED, (iid, st.runtime_status, st.failure_details)
            assert json.loads(st.serialized_output) == expected[iid], iid
        for iid in ids:
            types = event_types(weft.history(iid))
            assert types.count("ExecutionCompleted") == 1, (iid, types)
            assert types.count("ExecutionStarted") == 1, (iid, types)
            assert types.count("TimerFired") == 1, (iid, types)
            # the final step's keyed side effect exists with the right value
            assert (side / "final" / iid).read_text() == expected[iid].split("=", 1)[1]
        # no workflow completed twice: a restart must not re-run a completed instance
        final_runs = (side / "final.log").read_text().splitlines()
        assert set(final_runs) == set(ids)
    finally:
        c.close()


def test_sigkill_keeps_waiting_workflows_and_timers(weft_factory, workers, tmp_path):
    """Committed state survives SIGKILL: a workflow waiting for an event and a pending timer."""
    from dapr.ext.workflow import WorkflowStatus as S
    import dapr.ext.workflow as wf

    weft = weft_factory()
    rt = wf.WorkflowRuntime(host=weft.grpc_host, port=str(weft.grpc_port), worker_ready_timeout=30)
    from wf_defs import SharedState, register_all
    register_all(rt, SharedState())
    rt.start()
    c = _client(weft)
    try:
        c.schedule_new_workflow("wait_event", input="after-crash", instance_id="sk-wait")
        c.schedule_new_workflow("timer", input=4, instance_id="sk-timer")
        c.schedule_new_workflow("chain", input=5, instance_id="sk-done")
        assert c.wait_for_workflow_completion("sk-done", timeout_in_seconds=30).runtime_status == S.COMPLETED
        weft.kill()
        c.close()
        weft.restart_same_ports()
        c = _client(weft)
        # gRPC keeps the subchannel of the killed sidecar in reconnect backoff for a moment and the
        # SDK's GetInstance does not retry UNAVAILABLE: poll until the restarted sidecar answers
        st = wait_until(lambda: c.get_workflow_state("sk-done"), 30, what="GetInstance after restart")
        assert st.runtime_status == S.COMPLETED and json.loads(st.serialized_output) == 49
        assert c.get_workflow_state("sk-wait").runtime_status == S.RUNNING
        c.raise_workflow_event("sk-wait", "after-crash", data="hello")
        st = c.wait_for_workflow_completion("sk-wait", timeout_in_seconds=60)
        assert st.runtime_status == S.COMPLETED and json.loads(st.serialized_output) == {"got": "hello"}
        st = c.wait_for_workflow_completion("sk-timer", timeout_in_seconds=60)
        assert st.runtime_status == S.COMPLETED and json.loads(st.serialized_output)["elapsed"] >= 4
        assert event_types(weft.history("sk-done")).count("ExecutionCompleted") == 1
    finally:
        c.close()
        rt.shutdown()


def test_two_workers_one_killed_mid_run(weft_factory, workers, tmp_path):
    """Two competing worker streams; one is SIGKILLed mid-run: its un-acknowledged work items go to
    the survivor and every workflow completes exactly once."""
    from dapr.ext.workflow import WorkflowStatus as S

    weft = weft_factory()
    side = tmp_path / "side"
    w1 = workers(weft, side, act_sleep=0.3, name="a")
    workers(weft, side, act_sleep=0.3, name="b")
    c = _client(weft)
    ids = [f"two-{i:02d}" for i in range(24)]
    try:
        start_at = datetime.now(timezone.utc) + timedelta(seconds=1)
        for i, iid in enumerate(ids):
            c.schedule_new_workflow("durable_chain", input=i, instance_id=iid, start_at=start_at)
        wait_until(lambda: (side / "steps.log").exists() and len((side / "steps.log").read_text().splitlines()) >= 30,
                   60, what="steps under way on both workers")
        w1.kill()
        for i, iid in enumerate(ids):
            st = c.wait_for_workflow_completion(iid, timeout_in_seconds=90)
            assert st is not None and st.runtime_status == S.COMPLETED, (iid, st)
            v = i
            for _ in range(3):
                v = v * 2 + 1
            assert json.loads(st.serialized_output) == f"{iid}={v}"
            assert event_types(weft.history(iid)).count("ExecutionCompleted") == 1
    finally:
        c.close()
