"""DAPR_API_TOKEN on the sidecar: `dapr-api-token` required on gRPC and HTTP; health endpoints exempt."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

TOKEN = "s3cr3t-t0ken"


@pytest.fixture
def secured(weft_factory):
    return weft_factory(env={"DAPR_API_TOKEN": TOKEN})


def test_http_requires_token(secured):
    with httpx.Client(base_url=secured.http_url, timeout=10) as h:
        for path in ("/v1.0/healthz", "/v1.0/healthz/outbound"):
            assert h.get(path).status_code == 204, path  # exempt
        r = h.post("/v1.0/workflows/dapr/chain/start", params={"instanceID": "tok-1"}, content=b"1")
        assert r.status_code == 401, r.text
        assert h.get("/v1.0/workflows/dapr/tok-1", headers={"dapr-api-token": "wrong"}).status_code == 401
        assert h.get("/weft/v1/instances").status_code == 401
        r = h.get("/v1.0/workflows/dapr/tok-1", headers={"dapr-api-token": TOKEN})
        assert r.status_code == 404, r.text  # authorised, and the rejected start created nothing


def test_grpc_requires_token(secured):
    from google.protobuf import empty_pb2
    from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs
    from dapr.ext.workflow._durabletask.internal import protos as pb

    with grpc.insecure_channel(secured.grpc_addr) as ch:
        stub = stubs.TaskHubSidecarServiceStub(ch)
        for md in (None, (("dapr-api-token", "wrong"),)):
            with pytest.raises(grpc.RpcError) as ei:
                stub.Hello(empty_pb2.Empty(), metadata=md, timeout=10)
            assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED, ei.value
            with pytest.raises(grpc.RpcError) as ei:
                stub.GetInstance(pb.GetInstanceRequest(instanceId="x"), metadata=md, timeout=10)
            assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED, ei.value
            stream = stub.GetWorkItems(pb.GetWorkItemsRequest(), metadata=md, timeout=10)
            with pytest.raises(grpc.RpcError) as ei:
                next(iter(stream))
            assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED, ei.value
        stub.Hello(empty_pb2.Empty(), metadata=(("dapr-api-token", TOKEN),), timeout=10)


def test_sdk_with_token_runs_workflows(secured, monkeypatch):
    import dapr.ext.workflow as wf
    from dapr.ext.workflow import WorkflowStatus as S
    from wf_defs import SharedState, register_all

    # without the token the SDK client is refused
    monkeypatch.delenv("DAPR_API_TOKEN", raising=False)
    anon = wf.DaprWorkflowClient(host=secured.grpc_host, port=str(secured.grpc_port))
    with pytest.raises(grpc.RpcError) as ei:
        anon.schedule_new_workflow("chain", input=1, instance_id="tok-anon")
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    anon.close()

    monkeypatch.setenv("DAPR_API_TOKEN", TOKEN)  # read by WorkflowRuntime / DaprWorkflowClient
    rt = wf.WorkflowRuntime(host=secured.grpc_host, port=str(secured.grpc_port), worker_ready_timeout=30)
    register_all(rt, SharedState())
    rt.start()
    c = wf.DaprWorkflowClient(host=secured.grpc_host, port=str(secured.grpc_port))
    try:
        c.schedule_new_workflow("chain", input=2, instance_id="tok-ok")
        st = c.wait_for_workflow_completion("tok-ok", timeout_in_seconds=30)
        assert st.runtime_status == S.COMPLETED and json.loads(st.serialized_output) == 16
        assert c.get_workflow_state("tok-anon") is None
        with httpx.Client(base_url=secured.http_url, timeout=10) as h:
            r = h.get("/v1.0/workflows/dapr/tok-ok", headers={"dapr-api-token": TOKEN})
            assert r.status_code == 200 and r.json()["runtimeStatus"] == "COMPLETED"
    finally:
        c.close()
        rt.shutdown()
