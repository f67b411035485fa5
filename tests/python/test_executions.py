"""Executions kept apart, end to end with dapr-ext-workflow 1.18.3: continue-as-new keeps the
order of events across generations, and purge refuses running children and lets the ID be used
again. Runs on SQLite and (scripts/test.sh) on PostgreSQL."""

from __future__ import annotations

import json
import threading

import grpc
import pytest
from dapr.ext.workflow import WorkflowStatus

S = WorkflowStatus


def done(client, iid, timeout=60):
    st = client.wait_for_workflow_completion(iid, timeout_in_seconds=timeout)
    assert st is not None, f"{iid}: wait_for_workflow_completion returned None"
    return st


def out(st):
    return json.loads(st.serialized_output) if st.serialized_output is not None else None


def test_continue_as_new_keeps_event_order_across_generations(runtime, client, uid):
    # Five events raised back to back at a workflow that takes one per generation and carries
    # the rest over: carried events must come first, then those that arrived meanwhile. Several
    # instances at once, so events keep arriving while continue-as-new turns are in flight.
    ids = [f"{uid}-{i}" for i in range(4)]
    for iid in ids:
        client.schedule_new_workflow("can_ordered", input={"acc": [], "n": 5}, instance_id=iid)
    for iid in ids:
        client.wait_for_workflow_start(iid, timeout_in_seconds=20)

    def raise_all(iid):
        for v in range(1, 6):
            client.raise_workflow_event(iid, "item", data=v)

    threads = [threading.Thread(target=raise_all, args=(iid,)) for iid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for iid in ids:
        st = done(client, iid)
        assert st.runtime_status == S.COMPLETED, st
        assert out(st) == [1, 2, 3, 4, 5], f"{iid} saw the events in another order"


def test_purge_then_recreate_runs_again(runtime, client, uid):
    client.schedule_new_workflow("chain", input=1, instance_id=uid)
    assert out(done(client, uid)) == 9
    client.purge_workflow(uid)
    assert client.get_workflow_state(uid) is None
    client.schedule_new_workflow("chain", input=2, instance_id=uid)
    st = done(client, uid)
    assert st.runtime_status == S.COMPLETED and out(st) == 16


def test_recursive_purge_refuses_a_running_child(runtime, client, uid):
    iid = client.schedule_new_workflow("parent_waiting", input=None, instance_id=uid)
    kid = f"{iid}-kid"
    from weft_harness import wait_until
    wait_until(lambda: (st := client.get_workflow_state(kid)) and st.runtime_status == S.RUNNING,
               20, what="the child to run")
    client.terminate_workflow(iid, recursive=False)
    assert done(client, iid).runtime_status == S.TERMINATED
    with pytest.raises(grpc.RpcError) as e:
        client.purge_workflow(iid, recursive=True)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value
    assert kid in e.value.details()
    assert client.get_workflow_state(iid) is not None, "nothing is purged"
    assert client.get_workflow_state(kid).runtime_status == S.RUNNING
    client.terminate_workflow(kid)
    assert done(client, kid).runtime_status == S.TERMINATED
    client.purge_workflow(iid, recursive=True)
    assert client.get_workflow_state(iid) is None
    assert client.get_workflow_state(kid) is None
