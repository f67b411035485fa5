"""Workflow features end to end with dapr-ext-workflow 1.18.3 (WorkflowRuntime + DaprWorkflowClient)."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from dapr.ext.workflow import WorkflowStatus

from weft_harness import event_types, wait_until

S = WorkflowStatus


def done(client, iid, timeout=30):
    st = client.wait_for_workflow_completion(iid, timeout_in_seconds=timeout)
    assert st is not None, f"{iid}: wait_for_workflow_completion returned None"
    return st


def status_of(client, iid):
    st = client.get_workflow_state(iid)
    return st.runtime_status if st else None


def wait_status(client, iid, status, timeout=20):
    return wait_until(lambda: client.get_workflow_state(iid) if status_of(client, iid) == status else None,
                      timeout, what=f"{iid} to reach {status}")


def out(st):
    return json.loads(st.serialized_output) if st.serialized_output is not None else None


# ------------------------------------------------------------------------------------------------
def test_activity_chain(runtime, client, uid, weft):
    iid = client.schedule_new_workflow("chain", input=3, instance_id=uid)
    assert iid == uid
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED, st
    assert out(st) == 25  # (3+1+1)^2
    assert st.name == "chain"
    assert json.loads(st.serialized_input) == 3
    assert st.created_at is not None and st.last_updated_at is not None
    assert st.last_updated_at >= st.created_at
    assert st.failure_details is None
    h = weft.history(iid)
    types = event_types(h)
    assert types.count("TaskScheduled") == 3, types
    assert types.count("TaskCompleted") == 3, types
    assert types.count("ExecutionCompleted") == 1, types
    assert types[0] in ("WorkflowStarted", "OrchestratorStarted"), types
    # event ids of events created from actions equal the SDK's action ids (1, 2, 3)
    sched_ids = [e["eventId"] for e in h["events"] if e["type"] == "TaskScheduled"]
    assert sched_ids == [1, 2, 3], sched_ids
    done_ev = [e for e in h["events"] if e["type"] == "ExecutionCompleted"]
    assert done_ev[0]["eventId"] == 4, done_ev


def test_long_chain_full_history_for_118_worker(runtime, client, uid, monkeypatch):
    """A 1.18.3 worker announces no capabilities: every turn must carry the full pastEvents."""
    from dapr.ext.workflow._durabletask import worker as dtw

    seen = []
    orig = dtw.TaskHubGrpcWorker._execute_orchestrator

    def spy(self, req, *a, **kw):
        if req.instanceId == uid:
            seen.append((len(req.pastEvents), len(req.newEvents)))
        return orig(self, req, *a, **kw)

    monkeypatch.setattr(dtw.TaskHubGrpcWorker, "_execute_orchestrator", spy)
    client.schedule_new_workflow("long_chain", input=12, instance_id=uid)
    st = done(client, uid, 60)
    assert st.runtime_status == S.COMPLETED and out(st) == 12
    assert len(seen) >= 13, seen
    assert seen[0][0] == 0, f"first turn must have empty pastEvents: {seen}"
    for (p0, n0), (p1, _) in zip(seen, seen[1:]):
        # the next turn's past = previous past + previous new + the event(s) from its action(s)
        assert p1 >= p0 + n0 + 1, f"pastEvents not the full committed history: {seen}"


def test_fan_out_fan_in(runtime, client, uid):
    iid = client.schedule_new_workflow("fan_out", input=12, instance_id=uid)
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED, st
    assert out(st) == {"sum": sum(i * i for i in range(12)), "results": [i * i for i in range(12)]}


def test_child_workflows(runtime, client, uid, weft):
    iid = client.schedule_new_workflow("parent", input=3, instance_id=uid)
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED, st
    res = out(st)
    assert [r["value"] for r in res] == [1, 2, 3, 101]
    child_ids = [r["child"] for r in res]
    assert child_ids[-1] == f"{uid}-named"
    assert len(set(child_ids)) == 4
    for cid in child_ids:
        assert cid.startswith(uid)
        cst = client.get_workflow_state(cid)
        assert cst is not None, f"child {cid} not found"
        assert cst.runtime_status == S.COMPLETED
        assert cst.name == "child"
    types = event_types(weft.history(iid))
    assert types.count("ChildWorkflowInstanceCreated") + types.count("SubOrchestrationInstanceCreated") == 4, types


def test_child_failure_details_propagate(runtime, client, uid):
    iid = client.schedule_new_workflow("parent_of_failing", input="child exploded 7", instance_id=uid)
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED, st
    r = out(st)
    assert r["caught"] is True
    assert "child exploded 7" in r["message"]


def test_durable_timer(runtime, client, uid, weft):
    t0 = time.monotonic()
    iid = client.schedule_new_workflow("timer", input=2, instance_id=uid)
    st = done(client, iid)
    wall = time.monotonic() - t0
    assert st.runtime_status == S.COMPLETED, st
    assert out(st)["elapsed"] >= 2.0, out(st)
    assert wall >= 1.9, f"timer fired too early ({wall:.2f}s)"
    assert wall < 15, f"timer fired far too late ({wall:.2f}s)"
    types = event_types(weft.history(iid))
    assert "TimerCreated" in types and "TimerFired" in types, types


def test_external_event_indefinite_wait_uses_sentinel_timer(runtime, client, uid, weft):
    iid = client.schedule_new_workflow("wait_event", input="approval", instance_id=uid)
    client.wait_for_workflow_start(iid, timeout_in_seconds=10)
    # It must keep waiting (the sentinel timer must never fire).
    with pytest.raises(TimeoutError):
        client.wait_for_workflow_completion(iid, timeout_in_seconds=2)
    h = weft.history(iid)
    timers = [e for e in h["events"] if e["type"] == "TimerCreated"]
    assert timers, f"expected the indefinite-wait sentinel TimerCreated: {event_types(h)}"
    assert "9999" in json.dumps(timers), f"sentinel fireAt 9999-12-31 expected: {timers}"
    client.raise_workflow_event(iid, "APPROVAL", data={"ok": True})  # names are case-insensitive
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED, st
    assert out(st) == {"got": {"ok": True}}
    assert "TimerFired" not in event_types(weft.history(iid))


def test_external_event_raised_before_wait_is_buffered(runtime, client, uid):
    iid = client.schedule_new_workflow("multi_event", input=["first", "second"], instance_id=uid)
    client.raise_workflow_event(iid, "second", data=2)
    client.raise_workflow_event(iid, "first", data=1)
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED, st
    assert out(st) == [1, 2]


@pytest.mark.parametrize("send", [True, False])
def test_external_event_with_timeout(runtime, client, uid, send):
    iid = client.schedule_new_workflow("wait_event_timeout", input={"name": "ev", "seconds": 3}, instance_id=uid)
    if send:
        client.raise_workflow_event(iid, "ev", data="payload")
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED, st
    if send:
        assert out(st) == {"timed_out": False, "got": "payload"}
    else:
        assert out(st)["timed_out"] is True


@pytest.mark.parametrize("send", [True, False])
def test_external_event_when_any_timer(runtime, client, uid, send):
    iid = client.schedule_new_workflow("wait_event_when_any", input={"name": "ev", "seconds": 2}, instance_id=uid)
    if send:
        client.raise_workflow_event(iid, "ev", data=[1, 2])
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED, st
    assert out(st) == ({"timed_out": False, "got": [1, 2]} if send else {"timed_out": True})


def test_suspend_resume(runtime, client, uid):
    iid = client.schedule_new_workflow("wait_event", input="go", instance_id=uid)
    client.wait_for_workflow_start(iid, timeout_in_seconds=10)
    assert status_of(client, iid) == S.RUNNING

    waiter_result = {}

    def waiter():
        try:
            waiter_result["state"] = client.wait_for_workflow_completion(iid, timeout_in_seconds=40)
            waiter_result["at"] = time.monotonic()
        except Exception as e:  # noqa: BLE001
            waiter_result["error"] = e

    client.pause_workflow(iid)
    # pause blocks until SUSPENDED (Dapr semantics)
    assert status_of(client, iid) == S.SUSPENDED
    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    client.raise_workflow_event(iid, "go", data="while-suspended")
    # wait-for-completion must NOT return while suspended, even though the event arrived
    with pytest.raises(TimeoutError):
        client.wait_for_workflow_completion(iid, timeout_in_seconds=3)
    assert "state" not in waiter_result and "error" not in waiter_result, waiter_result
    assert status_of(client, iid) == S.SUSPENDED
    resumed_at = time.monotonic()
    client.resume_workflow(iid)
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED, st
    assert out(st) == {"got": "while-suspended"}
    t.join(30)
    assert "error" not in waiter_result, waiter_result
    assert waiter_result["state"].runtime_status == S.COMPLETED
    assert waiter_result["at"] >= resumed_at


def test_resume_of_running_instance_is_harmless(runtime, client, uid):
    """Resuming a RUNNING instance must not deliver ExecutionResumed (it makes 1.18.3 fail the workflow)."""
    iid = client.schedule_new_workflow("wait_event", input="go", instance_id=uid)
    client.wait_for_workflow_start(iid, timeout_in_seconds=10)
    try:
        client.resume_workflow(iid)
    except grpc.RpcError:
        pass  # rejecting it is acceptable too
    # a wrongly delivered ExecutionResumed is processed no later than the event's turn and fails it
    client.raise_workflow_event(iid, "go", data=1)
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED, (st.runtime_status, st.failure_details)


def test_terminate(runtime, client, uid):
    iid = client.schedule_new_workflow("wait_event", input="never", instance_id=uid)
    client.wait_for_workflow_start(iid, timeout_in_seconds=10)
    client.terminate_workflow(iid, output={"reason": "operator"})
    # terminate blocks until terminal (Dapr semantics)
    st = client.get_workflow_state(iid)
    assert st.runtime_status == S.TERMINATED, st
    assert out(st) == {"reason": "operator"}
    st = done(client, iid, 5)
    assert st.runtime_status == S.TERMINATED


def test_terminate_recursive_and_not(runtime, client, uid):
    rec = client.schedule_new_workflow("parent_waiting", instance_id=f"{uid}-r")
    wait_until(lambda: status_of(client, f"{rec}-kid") == S.RUNNING, 20, what="child of recursive parent")
    client.terminate_workflow(rec, recursive=True)
    assert status_of(client, rec) == S.TERMINATED
    wait_until(lambda: status_of(client, f"{rec}-kid") == S.TERMINATED, 20, what="child terminated recursively")

    flat = client.schedule_new_workflow("parent_waiting", instance_id=f"{uid}-f")
    wait_until(lambda: status_of(client, f"{flat}-kid") == S.RUNNING, 20, what="child of flat parent")
    client.terminate_workflow(flat, recursive=False)
    assert status_of(client, flat) == S.TERMINATED
    assert status_of(client, f"{flat}-kid") == S.RUNNING
    client.raise_workflow_event(f"{flat}-kid", "never", data="late")
    st = done(client, f"{flat}-kid")
    assert st.runtime_status == S.COMPLETED and out(st) == "late"


def test_continue_as_new(runtime, client, uid, weft, wf_state):
    iid = client.schedule_new_workflow("counter_can", input=0, instance_id=uid)
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED, st
    assert out(st) == 5
    for n in range(5):
        assert wf_state.count(f"record:gen{n}:{iid}") >= 1
    h = weft.history(iid)
    types = event_types(h)
    # only the last generation is kept
    assert types.count("ExecutionStarted") == 1, types
    assert types.count("TaskScheduled") == 0, types
    assert types.count("ExecutionCompleted") == 1, types
    assert json.loads(st.serialized_input) == 5


def test_continue_as_new_with_carried_events(runtime, client, uid):
    iid = client.schedule_new_workflow("can_save_events", input=[], instance_id=uid)
    client.wait_for_workflow_start(iid, timeout_in_seconds=10)
    # deliver three events in one turn: suspend, raise them, resume
    client.pause_workflow(iid)
    for v in ("a", "b", "c"):
        client.raise_workflow_event(iid, "item", data=v)
    client.resume_workflow(iid)
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED, st
    assert out(st) == ["a", "b", "c"]


def test_custom_status(runtime, client, uid, weft):
    iid = client.schedule_new_workflow("custom_status", instance_id=uid)
    wait_until(lambda: (client.get_workflow_state(iid).serialized_custom_status or "") == '"step1"'
               or client.get_workflow_state(iid).serialized_custom_status == "step1", 15, what="custom status step1")
    code, body = weft.get_json(iid)
    assert code == 200 and "step1" in body["properties"]["dapr.workflow.custom_status"], body
    client.raise_workflow_event(iid, "go", data="x")
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED
    assert "step2:x" in st.serialized_custom_status


def test_retry_policy_succeeds_after_failures(runtime, client, uid, wf_state, weft):
    iid = client.schedule_new_workflow("retry_ok", input=2, instance_id=uid)
    st = done(client, iid, 60)
    assert st.runtime_status == S.COMPLETED, st
    assert out(st) == {"attempts": 3}
    assert wf_state.count(f"flaky:{iid}") == 3
    types = event_types(weft.history(iid))
    assert types.count("TaskFailed") == 2 and types.count("TaskCompleted") == 1, types
    assert types.count("TimerCreated") >= 2, types  # SDK backoff timers


def test_retry_policy_exhausted_fails_with_details(runtime, client, uid, wf_state):
    iid = client.schedule_new_workflow("retry_exhausted", input="nope 13", instance_id=uid)
    st = done(client, iid, 60)
    assert st.runtime_status == S.FAILED, st
    assert wf_state.count(f"always_fails:{iid}") == 2
    fd = st.failure_details
    assert fd is not None
    assert "nope 13" in fd.message


def test_failure_in_workflow_code(runtime, client, uid, weft):
    iid = client.schedule_new_workflow("raise_in_wf", input="bad things 99", instance_id=uid)
    st = done(client, iid)
    assert st.runtime_status == S.FAILED, st
    fd = st.failure_details
    assert fd is not None
    assert fd.error_type == "RuntimeError"
    assert fd.message == "bad things 99"
    code, body = weft.get_json(iid)
    assert code == 200 and body["runtimeStatus"] == "FAILED", body
    props = body["properties"]
    assert props["dapr.workflow.failure.error_type"] == "RuntimeError"
    assert props["dapr.workflow.failure.error_message"] == "bad things 99"


def test_activity_failure_details(runtime, client, uid):
    caught = client.schedule_new_workflow("activity_fails_caught", input="activity boom 5", instance_id=f"{uid}-c")
    st = done(client, caught)
    assert st.runtime_status == S.COMPLETED, st
    r = out(st)
    assert r["type"] == "ValueError" and r["message"] == "activity boom 5" and r["has_stack"] is True, r

    unc = client.schedule_new_workflow("activity_fails_uncaught", input="activity boom 6", instance_id=f"{uid}-u")
    st = done(client, unc)
    assert st.runtime_status == S.FAILED, st
    assert st.failure_details is not None and "activity boom 6" in st.failure_details.message


def test_purge(runtime, client, uid):
    iid = client.schedule_new_workflow("chain", input=1, instance_id=uid)
    assert done(client, iid).runtime_status == S.COMPLETED
    client.purge_workflow(iid)
    assert client.get_workflow_state(iid) is None


def test_purge_recursive(runtime, client, uid):
    iid = client.schedule_new_workflow("parent", input=2, instance_id=uid)
    st = done(client, iid)
    kids = [r["child"] for r in out(st)]
    for k in kids:
        assert client.get_workflow_state(k) is not None
    client.purge_workflow(iid, recursive=True)
    assert client.get_workflow_state(iid) is None
    for k in kids:
        assert client.get_workflow_state(k) is None, f"child {k} survived a recursive purge"


def test_purge_non_recursive_keeps_children(runtime, client, uid):
    iid = client.schedule_new_workflow("parent", input=1, instance_id=uid)
    kids = [r["child"] for r in out(done(client, iid))]
    client.purge_workflow(iid, recursive=False)
    assert client.get_workflow_state(iid) is None
    for k in kids:
        assert client.get_workflow_state(k) is not None


def test_purge_running_instance_is_rejected(runtime, client, uid):
    iid = client.schedule_new_workflow("wait_event", input="x", instance_id=uid)
    client.wait_for_workflow_start(iid, timeout_in_seconds=10)
    with pytest.raises(grpc.RpcError):
        client.purge_workflow(iid)
    assert status_of(client, iid) == S.RUNNING
    client.terminate_workflow(iid)


def test_reuse_id_after_completion_and_already_exists_when_active(runtime, client, uid):
    client.schedule_new_workflow("chain", input=1, instance_id=uid)
    assert out(done(client, uid)) == 9
    # reuse of a terminal instance's id: a fresh run with the new input
    client.schedule_new_workflow("chain", input=2, instance_id=uid)
    st = done(client, uid)
    assert st.runtime_status == S.COMPLETED and out(st) == 16
    assert json.loads(st.serialized_input) == 2

    active = f"{uid}-active"
    client.schedule_new_workflow("wait_event", input="e", instance_id=active)
    with pytest.raises(grpc.RpcError) as ei:
        client.schedule_new_workflow("chain", input=3, instance_id=active)
    assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS, ei.value
    st = client.get_workflow_state(active)
    assert st.runtime_status == S.RUNNING and st.name == "wait_event"
    client.raise_workflow_event(active, "e", data="fine")
    assert out(done(client, active)) == {"got": "fine"}


def test_scheduled_start(runtime, client, uid):
    start_at = datetime.now(timezone.utc) + timedelta(seconds=3)
    t0 = time.monotonic()
    iid = client.schedule_new_workflow("echo_wf", input="later", instance_id=uid, start_at=start_at)
    assert time.monotonic() - t0 < 2.0, "StartInstance with a scheduled start must not wait for it"
    st = client.get_workflow_state(iid)
    assert st is not None and st.runtime_status == S.PENDING, st
    st = done(client, iid, 30)
    assert st.runtime_status == S.COMPLETED, st
    started = datetime.fromisoformat(out(st)["now"])
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    assert started >= start_at - timedelta(milliseconds=200), (started, start_at)
    assert time.monotonic() - t0 >= 2.5


def test_start_blocks_until_not_pending(runtime, client, uid):
    iid = client.schedule_new_workflow("wait_event", input="z", instance_id=uid)
    # StartInstance (no scheduled start) returns only once the instance left PENDING
    assert status_of(client, iid) == S.RUNNING
    st = client.wait_for_workflow_start(iid, timeout_in_seconds=5)
    assert st.runtime_status == S.RUNNING
    client.terminate_workflow(iid)


def test_no_input_no_output(runtime, client, uid):
    iid = client.schedule_new_workflow("noop", instance_id=uid)
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED
    assert st.serialized_output is None
    assert st.serialized_input is None


def test_generated_instance_id(runtime, client):
    iid = client.schedule_new_workflow("chain", input=0)
    assert iid
    assert out(done(client, iid)) == 4


def test_many_concurrent_workflows(runtime, client, uid):
    ids = [client.schedule_new_workflow("chain", input=i, instance_id=f"{uid}-{i}") for i in range(25)]
    for i, iid in enumerate(ids):
        st = done(client, iid, 60)
        assert st.runtime_status == S.COMPLETED and out(st) == (i + 2) ** 2


def test_unknown_instance(runtime, client, uid):
    assert client.get_workflow_state(f"{uid}-missing") is None
    for call in (lambda: client.raise_workflow_event(f"{uid}-missing", "x", data=1),
                 lambda: client.terminate_workflow(f"{uid}-missing"),
                 lambda: client.pause_workflow(f"{uid}-missing"),
                 lambda: client.resume_workflow(f"{uid}-missing"),
                 lambda: client.purge_workflow(f"{uid}-missing")):
        with pytest.raises(grpc.RpcError) as ei:
            call()
        assert ei.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNKNOWN,
                                   grpc.StatusCode.FAILED_PRECONDITION), ei.value
    assert client.get_workflow_state(f"{uid}-missing") is None


def test_wait_timeout_is_deadline_exceeded(runtime, client, uid, weft):
    """A long poll that outlives the caller's deadline must end as DEADLINE_EXCEEDED (the SDK turns
    only that into TimeoutError), never as CANCELLED from a server-side grpc-timeout race."""
    from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs
    from dapr.ext.workflow._durabletask.internal import protos as pb

    iid = client.schedule_new_workflow("wait_event", input="never", instance_id=uid)
    codes = []
    with grpc.insecure_channel(weft.grpc_addr) as ch:
        stub = stubs.TaskHubSidecarServiceStub(ch)
        for t in [0.05, 0.1, 0.2, 0.3, 0.5] * 6:  # the race shows up in ~1 of 10 calls
            try:
                stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId=iid), timeout=t)
                codes.append("returned")
            except grpc.RpcError as e:
                codes.append(f"{e.code().name}: {e.details()}")
    bad = [c for c in codes if not c.startswith("DEADLINE_EXCEEDED")]
    assert not bad, f"{len(bad)}/{len(codes)} long polls did not end with DEADLINE_EXCEEDED: {bad}"
    for _ in range(3):  # and through the SDK
        with pytest.raises(TimeoutError):
            client.wait_for_workflow_completion(iid, timeout_in_seconds=1)
    client.terminate_workflow(iid)


def test_suspended_workflow_with_activity_completing(runtime, client, uid, wf_state):
    """An activity that completes while its workflow is suspended must not let the workflow finish."""
    import threading as _t
    key = uid
    gate = wf_state.gates.setdefault(key, _t.Event())
    iid = client.schedule_new_workflow("gated_then_event", input=key, instance_id=uid)
    client.pause_workflow(iid)
    assert status_of(client, iid) == S.SUSPENDED
    gate.set()  # the activity returns now, while the workflow is suspended
    with pytest.raises(TimeoutError):
        client.wait_for_workflow_completion(iid, timeout_in_seconds=3)
    assert status_of(client, iid) == S.SUSPENDED
    client.resume_workflow(iid)
    st = done(client, iid)
    assert st.runtime_status == S.COMPLETED and out(st) == f"gated:{key}"


def test_terminate_suspended_instance(runtime, client, uid):
    iid = client.schedule_new_workflow("wait_event", input="x", instance_id=uid)
    client.pause_workflow(iid)
    assert status_of(client, iid) == S.SUSPENDED
    client.terminate_workflow(iid, output="bye")
    st = done(client, iid, 15)
    assert st.runtime_status == S.TERMINATED and out(st) == "bye"


def test_child_workflow_retry_policy(runtime, client, uid, wf_state):
    """Child retries re-create the child under the same instance id after it FAILED."""
    iid = client.schedule_new_workflow("child_retry", input=2, instance_id=uid)
    st = done(client, iid, 60)
    assert st.runtime_status == S.COMPLETED, (st.runtime_status, st.failure_details)
    assert out(st) == {"attempts": 3}
    assert wf_state.count(f"flaky:{uid}-child") == 3


def test_unregistered_activity_fails_workflow(runtime, client, uid):
    iid = client.schedule_new_workflow("calls_unregistered", instance_id=uid)
    st = done(client, iid)
    assert st.runtime_status == S.FAILED, st
    assert "no_such_activity" in st.failure_details.message


def test_large_fan_out(runtime, client, uid):
    t0 = time.monotonic()
    iid = client.schedule_new_workflow("fan_out", input=150, instance_id=uid)
    st = done(client, iid, 90)
    assert st.runtime_status == S.COMPLETED
    assert out(st)["sum"] == sum(i * i for i in range(150))
    assert time.monotonic() - t0 < 60


def test_event_without_data_and_same_name_ordering(runtime, client, uid):
    a = client.schedule_new_workflow("wait_event", input="nodata", instance_id=f"{uid}-a")
    client.raise_workflow_event(a, "nodata")  # no data -> the SDK omits the input
    st = done(client, a)
    assert st.runtime_status == S.COMPLETED and out(st) == {"got": None}

    b = client.schedule_new_workflow("multi_event", input=["x", "x", "x"], instance_id=f"{uid}-b")
    for v in (1, 2, 3):
        client.raise_workflow_event(b, "x", data=v)
    st = done(client, b)
    assert st.runtime_status == S.COMPLETED and out(st) == [1, 2, 3]


def test_terminate_completed_instance_changes_nothing(runtime, client, uid):
    iid = client.schedule_new_workflow("chain", input=1, instance_id=uid)
    assert out(done(client, iid)) == 9
    try:
        client.terminate_workflow(iid, output="late")
    except grpc.RpcError:
        pass  # an error is acceptable; a change of state is not
    st = client.get_workflow_state(iid)
    assert st.runtime_status == S.COMPLETED and out(st) == 9


def test_reuse_id_of_terminated_and_failed_instances(runtime, client, uid):
    t = f"{uid}-t"
    client.schedule_new_workflow("wait_event", input="x", instance_id=t)
    client.terminate_workflow(t)
    assert status_of(client, t) == S.TERMINATED
    client.schedule_new_workflow("chain", input=0, instance_id=t)
    st = done(client, t)
    assert st.runtime_status == S.COMPLETED and st.name == "chain" and out(st) == 4

    f = f"{uid}-f"
    client.schedule_new_workflow("raise_in_wf", input="x", instance_id=f)
    assert done(client, f).runtime_status == S.FAILED
    client.schedule_new_workflow("chain", input=1, instance_id=f)
    st = done(client, f)
    assert st.runtime_status == S.COMPLETED and out(st) == 9 and st.failure_details is None


def test_get_without_payloads(runtime, client, uid):
    iid = client.schedule_new_workflow("chain", input=2, instance_id=uid)
    done(client, iid)
    st = client.get_workflow_state(iid, fetch_payloads=False)
    assert st.runtime_status == S.COMPLETED and st.name == "chain"
    assert st.serialized_input is None and st.serialized_output is None


def test_aio_client(runtime, weft, uid):
    """dapr.ext.workflow.aio.DaprWorkflowClient (grpc.aio) drives the same RPCs."""
    import asyncio

    from dapr.ext.workflow.aio import DaprWorkflowClient as AioClient

    async def scenario():
        c = AioClient(host=weft.grpc_host, port=str(weft.grpc_port))
        try:
            a = await c.schedule_new_workflow("chain", input=2, instance_id=f"{uid}-a")
            st = await c.wait_for_workflow_completion(a, timeout_in_seconds=30)
            assert st.runtime_status == S.COMPLETED and out(st) == 16
            e = await c.schedule_new_workflow("wait_event", input="go", instance_id=f"{uid}-e")
            await c.pause_workflow(e)
            assert (await c.get_workflow_state(e)).runtime_status == S.SUSPENDED
            await c.raise_workflow_event(e, "go", data="aio")
            await c.resume_workflow(e)
            st = await c.wait_for_workflow_completion(e, timeout_in_seconds=30)
            assert st.runtime_status == S.COMPLETED and out(st) == {"got": "aio"}
            await c.purge_workflow(e)
            assert await c.get_workflow_state(e) is None
            t = await c.schedule_new_workflow("wait_event", input="never", instance_id=f"{uid}-t")
            await c.terminate_workflow(t, output="done")
            st = await c.wait_for_workflow_completion(t, timeout_in_seconds=30)
            assert st.runtime_status == S.TERMINATED
        finally:
            if hasattr(c, "close"):  # 1.18.3's aio client has no close()
                await c.close()

    asyncio.run(asyncio.wait_for(scenario(), 90))


def test_event_to_completed_instance_is_dropped(runtime, client, uid, weft):
    iid = client.schedule_new_workflow("wait_event", input="e", instance_id=uid)
    client.raise_workflow_event(iid, "e", data=1)
    assert out(done(client, iid)) == {"got": 1}
    n = len(weft.history(iid)["events"])
    client.raise_workflow_event(iid, "e", data=2)  # dropped silently (daprd semantics)
    st = client.get_workflow_state(iid)
    assert st.runtime_status == S.COMPLETED and out(st) == {"got": 1}
    assert len(weft.history(iid)["events"]) == n
