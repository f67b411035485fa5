"""Bad input over gRPC with the real SDK client: invalid IDs, oversized payloads (documented limit 4 MiB)."""

from __future__ import annotations

import json

import grpc
import pytest
from dapr.ext.workflow import WorkflowStatus as S

from weft_harness import PAYLOAD_LIMIT

OVER = PAYLOAD_LIMIT + 1024  # just over the documented 4 MiB limit


def done(client, iid, timeout=60):
    st = client.wait_for_workflow_completion(iid, timeout_in_seconds=timeout)
    assert st is not None
    return st


@pytest.mark.parametrize("bad", ["has space", "semi;colon", "a/b", "dot.dot", "x" * 65, "ünï\u2603"])
def test_invalid_instance_id(runtime, client, bad):
    with pytest.raises(grpc.RpcError) as ei:
        client.schedule_new_workflow("chain", input=1, instance_id=bad)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ei.value
    assert client.get_workflow_state(bad) is None


def test_max_length_instance_id_ok(runtime, client, uid):
    iid = (uid.replace("-", "_") + "-" * 64)[:64]
    client.schedule_new_workflow("chain", input=1, instance_id=iid)
    assert done(client, iid).runtime_status == S.COMPLETED


def test_oversized_input_rejected(runtime, client, uid):
    with pytest.raises(grpc.RpcError) as ei:
        client.schedule_new_workflow("input_len", input="i" * OVER, instance_id=uid)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, ei.value
    assert client.get_workflow_state(uid) is None


def test_large_but_allowed_input(runtime, client, uid):
    # 3 MiB: under the limit. (Handed to an activity it would be in history twice, and a work item
    # over the worker's 4 MiB receive limit cannot be delivered - weft stalls such an instance.)
    n = 3 * 1024 * 1024
    client.schedule_new_workflow("input_len_direct", input="i" * n, instance_id=uid)
    st = client.wait_for_workflow_completion(uid, fetch_payloads=False, timeout_in_seconds=60)
    assert st.runtime_status == S.COMPLETED
    st = client.get_workflow_state(uid, fetch_payloads=True)
    assert json.loads(st.serialized_output) == n


def test_oversized_event_rejected(runtime, client, uid):
    client.schedule_new_workflow("wait_event", input="e", instance_id=uid)
    with pytest.raises(grpc.RpcError) as ei:
        client.raise_workflow_event(uid, "e", data="d" * OVER)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, ei.value
    assert client.get_workflow_state(uid).runtime_status == S.RUNNING
    client.raise_workflow_event(uid, "e", data="ok")
    st = done(client, uid)
    assert json.loads(st.serialized_output) == {"got": "ok"}


def test_oversized_terminate_output_rejected(runtime, client, uid):
    client.schedule_new_workflow("wait_event", input="e", instance_id=uid)
    with pytest.raises(grpc.RpcError) as ei:
        client.terminate_workflow(uid, output="t" * OVER)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, ei.value
    assert client.get_workflow_state(uid).runtime_status == S.RUNNING
    client.terminate_workflow(uid)


def test_oversized_activity_result_fails_activity(runtime, client, uid):
    """The SDK's CompleteActivityTask gets RESOURCE_EXHAUSTED and sends a failure instead (1.18+)."""
    client.schedule_new_workflow("big_activity_result", input=OVER, instance_id=uid)
    st = done(client, uid)
    assert st.runtime_status == S.FAILED, st
    assert "exceeds" in (st.failure_details.message or "") or "size" in (st.failure_details.message or ""), \
        st.failure_details.message


def test_oversized_workflow_output_fails_workflow(runtime, client, uid):
    """The SDK's CompleteOrchestratorTask gets RESOURCE_EXHAUSTED and completes the workflow FAILED."""
    client.schedule_new_workflow("big_output", input=OVER, instance_id=uid)
    st = client.wait_for_workflow_completion(uid, fetch_payloads=False, timeout_in_seconds=60)
    assert st is not None and st.runtime_status == S.FAILED, st
    st = client.get_workflow_state(uid)
    assert "max message size" in st.failure_details.message, st.failure_details.message


def test_activity_completion_for_unknown_work_item(weft):
    """CompleteActivityTask / CompleteOrchestratorTask for unknown work items: clear status, no crash."""
    from dapr.ext.workflow._durabletask.internal import protos as pb
    from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs

    with grpc.insecure_channel(weft.grpc_addr) as ch:
        stub = stubs.TaskHubSidecarServiceStub(ch)
        for call in (
            lambda: stub.CompleteActivityTask(pb.ActivityResponse(instanceId="nope-nope", taskId=7), timeout=10),
            lambda: stub.CompleteOrchestratorTask(pb.WorkflowResponse(instanceId="nope-nope"), timeout=10),
        ):
            try:
                call()  # daprd treats unknown completions as success; an error status is fine too
            except grpc.RpcError as e:
                assert e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                                    grpc.StatusCode.INVALID_ARGUMENT), e
        from google.protobuf import empty_pb2
        stub.Hello(empty_pb2.Empty(), timeout=10)  # still serving
    assert weft.alive()


def test_unimplemented_rpcs(weft):
    """RPCs nobody implements answer UNIMPLEMENTED (raw gRPC call by path)."""
    with grpc.insecure_channel(weft.grpc_addr) as ch:
        for method in ("RewindInstance", "QueryInstances", "SignalEntity", "NoSuchMethod"):
            call = ch.unary_unary(f"/TaskHubSidecarService/{method}",
                                  request_serializer=lambda b: b, response_deserializer=lambda b: b)
            with pytest.raises(grpc.RpcError) as ei:
                call(b"", timeout=10)
            assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED, (method, ei.value)


@pytest.mark.parametrize("name", ["nul\x00name", "n" * 5000], ids=["nul", "long"])
def test_unstorable_child_name_fails_the_workflow(runtime, client, uid, name):
    """A child workflow name no store can hold fails the parent with a clear error (not a commit
    that fails, is retried and triggers recovery scans forever)."""
    client.schedule_new_workflow("child_by_name", input=name, instance_id=uid)
    st = done(client, uid)
    assert st.runtime_status == S.FAILED, st
    assert "child workflow name" in st.failure_details.message, st.failure_details.message


def test_nul_bytes_are_refused_everywhere(runtime, client, uid):
    """IDs and names with a NUL byte are INVALID_ARGUMENT on both stores, never INTERNAL."""
    client.schedule_new_workflow("wait_event", input="e", instance_id=uid)
    bad = "a\x00b"
    calls = {
        "start": lambda: client.schedule_new_workflow("wait_event", input="e", instance_id=bad),
        "start name": lambda: client.schedule_new_workflow(bad, input="e"),
        "get": lambda: client.get_workflow_state(bad),
        "raise id": lambda: client.raise_workflow_event(bad, "e", data="x"),
        "raise name": lambda: client.raise_workflow_event(uid, bad, data="x"),
        "terminate": lambda: client.terminate_workflow(bad),
        "pause": lambda: client.pause_workflow(bad),
        "resume": lambda: client.resume_workflow(bad),
        "purge": lambda: client.purge_workflow(bad),
    }
    for what, call in calls.items():
        with pytest.raises(grpc.RpcError) as ei:
            call()
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, ei.value)
    assert client.get_workflow_state(uid).runtime_status == S.RUNNING
    client.raise_workflow_event(uid, "e", data="ok")
    assert done(client, uid).runtime_status == S.COMPLETED
