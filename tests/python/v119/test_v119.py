"""dapr 1.19.0 protocol: GetInstanceHistory, ListInstanceIDs paging, RerunWorkflowFromEvent, and the
stateful-history ("delta") capability the 1.19 worker announces (capabilities=[HEALTH_PING, STATEFUL_HISTORY])."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from dapr.ext.workflow import WorkflowHistoryEventType as T
from dapr.ext.workflow import WorkflowStatus as S

from weft_harness import WeftDev, event_types, wait_until


def done(client, iid, timeout=60):
    st = client.wait_for_workflow_completion(iid, timeout_in_seconds=timeout)
    assert st is not None, iid
    return st


def out(st):
    return json.loads(st.serialized_output) if st.serialized_output is not None else None


# ------------------------------------------------------------------------------ basics on 1.19
def test_basic_features_on_119(runtime, client, uid):
    client.schedule_new_workflow("chain", input=3, instance_id=f"{uid}-c")
    client.schedule_new_workflow("fan_out", input=5, instance_id=f"{uid}-f")
    client.schedule_new_workflow("parent", input=2, instance_id=f"{uid}-p")
    client.schedule_new_workflow("wait_event", input="go", instance_id=f"{uid}-e")
    client.schedule_new_workflow("retry_ok", input=1, instance_id=f"{uid}-r")
    client.schedule_new_workflow("counter_can", input=0, instance_id=f"{uid}-can")
    client.pause_workflow(f"{uid}-e")
    assert client.get_workflow_state(f"{uid}-e").runtime_status == S.SUSPENDED
    client.raise_workflow_event(f"{uid}-e", "go", data=7)
    with pytest.raises(TimeoutError):
        client.wait_for_workflow_completion(f"{uid}-e", timeout_in_seconds=2)
    client.resume_workflow(f"{uid}-e")
    assert out(done(client, f"{uid}-c")) == 25
    assert out(done(client, f"{uid}-f"))["sum"] == 30
    assert [r["value"] for r in out(done(client, f"{uid}-p"))] == [1, 2, 101]
    assert out(done(client, f"{uid}-e")) == {"got": 7}
    assert out(done(client, f"{uid}-r")) == {"attempts": 2}
    assert out(done(client, f"{uid}-can")) == 5


# ------------------------------------------------------------------------------ GetInstanceHistory
def test_get_instance_history(runtime, client, weft, uid):
    client.schedule_new_workflow("chain", input=1, instance_id=uid)
    done(client, uid)
    hist = client.get_workflow_history(uid)
    types = [e.event_type for e in hist]
    assert types[0] == T.WORKFLOW_STARTED, types
    assert types[1] == T.EXECUTION_STARTED, types
    assert types.count(T.TASK_SCHEDULED) == 3 and types.count(T.TASK_COMPLETED) == 3, types
    assert types[-1] == T.EXECUTION_COMPLETED, types
    assert T.UNKNOWN not in types
    sched = [e for e in hist if e.event_type == T.TASK_SCHEDULED]
    assert [e.event_id for e in sched] == [1, 2, 3]
    assert [e.name for e in sched] == ["add_one", "add_one", "square"]
    completed = [e for e in hist if e.event_type == T.TASK_COMPLETED]
    assert [e.task_scheduled_id for e in completed] == [1, 2, 3]
    assert all(e.event_id == -1 for e in completed)
    # same history as the Weft HTTP extension
    assert len(weft.history(uid)["events"]) == len(hist)


def test_get_instance_history_unknown_is_not_found(runtime, client, uid):
    with pytest.raises(grpc.RpcError) as ei:
        client.get_workflow_history(f"{uid}-nope")
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND, ei.value


# ------------------------------------------------------------------------------ ListInstanceIDs
def test_list_instance_ids_paging(runtime, client, uid):
    ids = {f"{uid}-{i:02d}" for i in range(11)}
    for i in sorted(ids):
        client.schedule_new_workflow("chain", input=0, instance_id=i)
    for i in ids:
        done(client, i)
    seen, token, pages = [], None, 0
    while True:
        page = client.list_workflow_instance_ids(page_size=4, continuation_token=token)
        assert len(page.instance_ids) <= 4
        seen += page.instance_ids
        pages += 1
        assert pages < 500
        if not page.continuation_token:
            break
        token = page.continuation_token
    assert len(seen) == len(set(seen)), "an instance appeared on two pages"
    assert ids <= set(seen)
    assert pages >= 3
    assert ids <= set(client.iter_workflow_instance_ids(page_size=5))
    # purged instances disappear from the listing
    victim = sorted(ids)[0]
    client.purge_workflow(victim)
    assert victim not in set(client.iter_workflow_instance_ids(page_size=100))


# ------------------------------------------------------------------------------ RerunWorkflowFromEvent
def test_rerun_from_event(runtime, client, wf_state, uid):
    src = f"{uid}-src"
    client.schedule_new_workflow("rerunnable", input=5, instance_id=src)
    assert out(done(client, src)) == ["step1", 6, "step3"]
    hist = client.get_workflow_history(src)
    sched = [e for e in hist if e.event_type == T.TASK_SCHEDULED]
    assert [e.name for e in sched] == ["record", "add_one", "record"]
    assert all(e.is_rerunnable for e in sched)

    new = f"{uid}-rerun"
    got = client.rerun_workflow_from_event(src, sched[1].event_id, new_instance_id=new, input=100)
    assert got == new
    st = done(client, new)
    assert st.runtime_status == S.COMPLETED, st
    assert out(st) == ["step1", 101, "step3"]
    # history before the event is replayed, not re-executed
    assert wf_state.count(f"record:step1:{new}") == 0
    assert wf_state.count(f"add_one:{new}") == 1
    assert wf_state.count(f"record:step3:{new}") == 1
    # the source is untouched
    st = client.get_workflow_state(src)
    assert st.runtime_status == S.COMPLETED and out(st) == ["step1", 6, "step3"]

    # keep the original input when none is given; random new id
    new2 = client.rerun_workflow_from_event(src, sched[1].event_id)
    assert new2 and new2 not in (src, new)
    assert out(done(client, new2)) == ["step1", 6, "step3"]

    # the new id is taken -> ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as ei:
        client.rerun_workflow_from_event(src, sched[1].event_id, new_instance_id=new)
    assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS, ei.value


def test_rerun_errors(runtime, client, uid):
    running = f"{uid}-run"
    client.schedule_new_workflow("wait_event", input="x", instance_id=running)
    with pytest.raises(grpc.RpcError) as ei:
        client.rerun_workflow_from_event(running, 1, new_instance_id=f"{uid}-n1")
    # The source must be finished first; the SDK documents INVALID_ARGUMENT for this.
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ei.value
    client.terminate_workflow(running)

    with pytest.raises(grpc.RpcError) as ei:
        client.rerun_workflow_from_event(f"{uid}-missing", 1, new_instance_id=f"{uid}-n2")
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND, ei.value

    src = f"{uid}-src"
    client.schedule_new_workflow("chain", input=1, instance_id=src)
    done(client, src)
    completed_ev = [e for e in client.get_workflow_history(src) if e.event_type == T.EXECUTION_COMPLETED][0]
    with pytest.raises(grpc.RpcError) as ei:
        client.rerun_workflow_from_event(src, completed_ev.event_id, new_instance_id=f"{uid}-n3")
    assert ei.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), ei.value
    assert client.get_workflow_state(f"{uid}-n3") is None


# ------------------------------------------------------------------------------ stateful history
class _Spy:
    """Records what the 1.19 worker saw for each workflow work item of one instance."""

    def __init__(self, monkeypatch, instance_prefix):
        from dapr.ext.workflow._durabletask import worker as dtw

        self.turns = []  # (has_cachedHistory, eventCount, len(pastEvents), cache_hit)
        orig = dtw.TaskHubGrpcWorker._resolve_history
        spy = self

        def resolve(self_, req):
            if req.instanceId.startswith(instance_prefix):
                has = req.HasField("cachedHistory")
                hit = None
                if has:
                    cached = self_._history_cache.get(req.instanceId)
                    hit = cached is not None and len(cached) == req.cachedHistory.eventCount
                spy.turns.append((has, req.cachedHistory.eventCount if has else None, len(req.pastEvents), hit))
            return orig(self_, req)

        monkeypatch.setattr(dtw.TaskHubGrpcWorker, "_resolve_history", resolve)


def test_stateful_history_deltas(runtime, client, weft, uid, monkeypatch):
    spy = _Spy(monkeypatch, uid)
    client.schedule_new_workflow("long_chain", input=20, instance_id=uid)
    st = done(client, uid)
    assert st.runtime_status == S.COMPLETED and out(st) == 20, st
    turns = spy.turns
    assert len(turns) >= 21, turns
    deltas = [t for t in turns if t[0]]
    full_nonempty = [t for t in turns if not t[0] and t[2] > 0]
    misses = [t for t in deltas if t[3] is False]
    assert len(deltas) >= len(turns) - 2, f"expected delta work items once the worker is warm: {turns}"
    assert len(full_nonempty) <= 2, turns
    assert not misses, f"delta prefix did not match the worker's cache (forced GetInstanceHistory): {turns}"
    # a delta carries only the events after the cached prefix
    for has, count, past, _ in deltas:
        assert count > 0 and past < count + 5, turns
    # and the history the worker reconstructed is the committed one
    assert len(client.get_workflow_history(uid)) == len(weft.history(uid)["events"])


def test_stateful_history_cache_miss_falls_back_to_get_instance_history(runtime, client, uid, monkeypatch):
    """Evicting the worker's cache forces the GetInstanceHistory path; the workflow must still finish."""
    from dapr.ext.workflow._durabletask import worker as dtw

    orig_get = dtw._WorkflowHistoryCache.get

    def forgetful_get(self, instance_id):
        if instance_id.startswith(uid):
            return None  # always miss for this instance
        return orig_get(self, instance_id)

    monkeypatch.setattr(dtw._WorkflowHistoryCache, "get", forgetful_get)
    spy = _Spy(monkeypatch, uid)
    client.schedule_new_workflow("long_chain", input=6, instance_id=uid)
    st = done(client, uid)
    assert st.runtime_status == S.COMPLETED and out(st) == 6, st
    assert any(t[0] for t in spy.turns), f"no delta work items were sent: {spy.turns}"


def test_no_deltas_without_capability(tmp_path, monkeypatch):
    import dapr.ext.workflow as wf
    from wf_defs import SharedState, register_all
    from weft_harness import require_binary

    require_binary()
    w = WeftDev(tmp_path / "data", tmp_path / "logs").start()
    rt = wf.WorkflowRuntime(host=w.grpc_host, port=str(w.grpc_port), worker_ready_timeout=30,
                            disable_stateful_history=True)
    register_all(rt, SharedState())
    spy = _Spy(monkeypatch, "nodelta")
    rt.start()
    c = wf.DaprWorkflowClient(host=w.grpc_host, port=str(w.grpc_port))
    try:
        c.schedule_new_workflow("long_chain", input=8, instance_id="nodelta-1")
        st = c.wait_for_workflow_completion("nodelta-1", timeout_in_seconds=60)
        assert st.runtime_status == S.COMPLETED and json.loads(st.serialized_output) == 8
        assert spy.turns and not any(t[0] for t in spy.turns), spy.turns
        pasts = [t[2] for t in spy.turns]
        assert pasts[0] == 0 and pasts == sorted(pasts) and pasts[-1] > 0, pasts
    finally:
        c.close()
        rt.shutdown()
        w.stop()


def test_deltas_survive_worker_reconnect(tmp_path, monkeypatch):
    """A new stream starts cold: the sidecar must send full history again (or the worker fetches it)."""
    import dapr.ext.workflow as wf
    from wf_defs import SharedState, register_all
    from weft_harness import require_binary

    require_binary()
    w = WeftDev(tmp_path / "data", tmp_path / "logs").start()
    spy = _Spy(monkeypatch, "recon")
    rt = wf.WorkflowRuntime(host=w.grpc_host, port=str(w.grpc_port), worker_ready_timeout=30)
    register_all(rt, SharedState())
    rt.start()
    c = wf.DaprWorkflowClient(host=w.grpc_host, port=str(w.grpc_port))
    try:
        c.schedule_new_workflow("wait_event", input="e1", instance_id="recon-1")
        wait_until(lambda: c.get_workflow_state("recon-1").runtime_status == S.RUNNING, 20)
        rt.shutdown()
        rt2 = wf.WorkflowRuntime(host=w.grpc_host, port=str(w.grpc_port), worker_ready_timeout=30)
        register_all(rt2, SharedState())
        rt2.start()
        try:
            c.raise_workflow_event("recon-1", "e1", data="after")
            st = c.wait_for_workflow_completion("recon-1", timeout_in_seconds=60)
            assert st.runtime_status == S.COMPLETED and json.loads(st.serialized_output) == {"got": "after"}
        finally:
            rt2.shutdown()
    finally:
        c.close()
        w.stop()
