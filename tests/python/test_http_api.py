"""Dapr HTTP workflow API (protocol.md section 5), Weft HTTP extensions, health endpoints."""

from __future__ import annotations

import json

import httpx
import pytest

from weft_harness import wait_until

BASE = "/v1.0/workflows/dapr"


@pytest.fixture
def http(weft):
    with httpx.Client(base_url=weft.http_url, timeout=15) as c:
        yield c


def get_status(http, iid):
    r = http.get(f"{BASE}/{iid}")
    return r.json().get("runtimeStatus") if r.status_code == 200 else None


def wait_http_status(http, iid, status, timeout=20):
    wait_until(lambda: get_status(http, iid) == status, timeout, what=f"{iid} -> {status} over HTTP")
    return http.get(f"{BASE}/{iid}").json()


def test_health(weft, http):
    for path in ("/v1.0/healthz", "/v1.0/healthz/outbound"):
        r = http.get(path)
        assert r.status_code == 204, (path, r.status_code, r.text)


def test_start_get_complete(runtime, http, uid):
    r = http.post(f"{BASE}/chain/start", params={"instanceID": uid}, content=b"4",
                  headers={"content-type": "application/json"})
    assert r.status_code == 202, r.text
    assert r.json() == {"instanceID": uid}
    body = wait_http_status(http, uid, "COMPLETED")
    assert body["instanceID"] == uid
    assert body["workflowName"] == "chain"
    assert body["createdAt"] and body["lastUpdatedAt"]
    assert json.loads(body["properties"]["dapr.workflow.input"]) == 4
    assert json.loads(body["properties"]["dapr.workflow.output"]) == 36
    assert "dapr.workflow.failure.error_type" not in body["properties"]


@pytest.mark.parametrize("ver", ["v1.0-beta1", "v1.0-alpha1"])
def test_api_version_aliases(runtime, http, uid, ver):
    r = http.post(f"/{ver}/workflows/dapr/chain/start", params={"instanceID": uid}, content=b"0")
    assert r.status_code == 202, r.text
    wait_until(lambda: http.get(f"/{ver}/workflows/dapr/{uid}").json().get("runtimeStatus") == "COMPLETED",
               20, what="completion via alias path")


def test_start_without_instance_id_generates_one(runtime, http):
    r = http.post(f"{BASE}/chain/start", content=b"1")
    assert r.status_code == 202, r.text
    iid = r.json()["instanceID"]
    assert iid and len(iid) <= 64
    body = wait_http_status(http, iid, "COMPLETED")
    assert json.loads(body["properties"]["dapr.workflow.output"]) == 9


def test_start_input_passed_raw(runtime, http, uid):
    raw = b'{"a": [1, 2, {"b": "\xc3\xa9"}]}'
    r = http.post(f"{BASE}/echo_wf/start", params={"instanceID": uid}, content=raw)
    assert r.status_code == 202
    body = wait_http_status(http, uid, "COMPLETED")
    assert body["properties"]["dapr.workflow.input"] == raw.decode()
    assert json.loads(body["properties"]["dapr.workflow.output"])["input"] == {"a": [1, 2, {"b": "é"}]}


def test_raise_event_pause_resume_terminate_purge(runtime, http, client, uid):
    iid = f"{uid}-ev"
    assert http.post(f"{BASE}/wait_event/start", params={"instanceID": iid}, content=b'"approve"').status_code == 202
    wait_http_status(http, iid, "RUNNING")
    r = http.post(f"{BASE}/{iid}/pause")
    assert r.status_code == 202, r.text
    wait_http_status(http, iid, "SUSPENDED")
    r = http.post(f"{BASE}/{iid}/raiseEvent/approve", content=b'{"by": "alice"}')
    assert r.status_code == 202, r.text
    with pytest.raises(TimeoutError):
        client.wait_for_workflow_completion(iid, timeout_in_seconds=2)
    assert get_status(http, iid) == "SUSPENDED"
    r = http.post(f"{BASE}/{iid}/resume")
    assert r.status_code == 202, r.text
    body = wait_http_status(http, iid, "COMPLETED")
    assert json.loads(body["properties"]["dapr.workflow.output"]) == {"got": {"by": "alice"}}
    r = http.post(f"{BASE}/{iid}/purge")
    assert r.status_code == 202, r.text
    r = http.get(f"{BASE}/{iid}")
    assert r.status_code == 404, r.text
    assert r.json()["errorCode"] == "ERR_INSTANCE_ID_NOT_FOUND"

    # terminate over HTTP is always recursive
    par = f"{uid}-par"
    assert http.post(f"{BASE}/parent_waiting/start", params={"instanceID": par}).status_code == 202
    wait_http_status(http, f"{par}-kid", "RUNNING")
    r = http.post(f"{BASE}/{par}/terminate")
    assert r.status_code == 202, r.text
    wait_http_status(http, par, "TERMINATED")
    wait_http_status(http, f"{par}-kid", "TERMINATED")
    # purge over HTTP is always recursive
    r = http.post(f"{BASE}/{par}/purge")
    assert r.status_code == 202, r.text
    assert http.get(f"{BASE}/{par}").status_code == 404
    assert http.get(f"{BASE}/{par}-kid").status_code == 404


def test_failed_workflow_properties(runtime, http, uid):
    assert http.post(f"{BASE}/raise_in_wf/start", params={"instanceID": uid}, content=b'"kaput 3"').status_code == 202
    body = wait_http_status(http, uid, "FAILED")
    p = body["properties"]
    assert p["dapr.workflow.failure.error_type"] == "RuntimeError"
    assert p["dapr.workflow.failure.error_message"] == "kaput 3"
    assert "dapr.workflow.output" not in p


def test_custom_status_property(runtime, http, uid):
    assert http.post(f"{BASE}/custom_status/start", params={"instanceID": uid}).status_code == 202
    wait_until(lambda: http.get(f"{BASE}/{uid}").json().get("properties", {}).get("dapr.workflow.custom_status")
               == "step1", 15, what="custom status over HTTP")
    http.post(f"{BASE}/{uid}/raiseEvent/go", content=b'"y"')
    body = wait_http_status(http, uid, "COMPLETED")
    assert body["properties"]["dapr.workflow.custom_status"] == "step2:y"


# ---------------------------------------------------------------------------- errors
def test_get_unknown_is_404(http, uid):
    r = http.get(f"{BASE}/{uid}-nope")
    assert r.status_code == 404, r.text
    j = r.json()
    assert j["errorCode"] == "ERR_INSTANCE_ID_NOT_FOUND"
    assert f"{uid}-nope" in j["message"]


@pytest.mark.parametrize("op", ["terminate", "purge", "pause", "resume", "raiseEvent/x"])
def test_operations_on_unknown_instance(http, uid, op):
    r = http.post(f"{BASE}/{uid}-nope/{op}")
    assert 400 <= r.status_code < 600 and r.status_code != 202, (op, r.status_code, r.text)
    assert "errorCode" in r.json(), r.text
    assert http.get(f"{BASE}/{uid}-nope").status_code == 404  # nothing was created


@pytest.mark.parametrize("bad", ["has space", "semi;colon", "dot.dot", "x" * 65, "slash%2Fin"])
def test_start_invalid_instance_id_is_400(runtime, http, bad):
    r = http.post(f"{BASE}/chain/start", params={"instanceID": bad}, content=b"1")
    assert r.status_code == 400, (bad, r.status_code, r.text)
    assert r.json()["errorCode"] in ("ERR_INSTANCE_ID_INVALID", "ERR_INSTANCE_ID_TOO_LONG"), r.text
    assert http.get(f"{BASE}/{bad}").status_code in (400, 404)


def test_start_max_length_id_ok(runtime, http, uid):
    iid = (uid + "_" * 64)[:64]
    r = http.post(f"{BASE}/chain/start", params={"instanceID": iid}, content=b"1")
    assert r.status_code == 202, r.text
    wait_http_status(http, iid, "COMPLETED")


def test_start_oversized_body_is_413_and_changes_nothing(runtime, http, uid):
    big = json.dumps("x" * (4 * 1024 * 1024 + 16)).encode()
    r = http.post(f"{BASE}/chain/start", params={"instanceID": uid}, content=big)
    assert r.status_code == 413, (r.status_code, r.text[:300])
    assert http.get(f"{BASE}/{uid}").status_code == 404


def test_raise_event_oversized_body_is_413(runtime, http, uid):
    assert http.post(f"{BASE}/wait_event/start", params={"instanceID": uid}, content=b'"e"').status_code == 202
    wait_http_status(http, uid, "RUNNING")
    r = http.post(f"{BASE}/{uid}/raiseEvent/e", content=b"y" * (4 * 1024 * 1024 + 16))
    assert r.status_code == 413, (r.status_code, r.text[:300])
    assert get_status(http, uid) == "RUNNING"
    assert http.post(f"{BASE}/{uid}/raiseEvent/e", content=b'"small"').status_code == 202
    body = wait_http_status(http, uid, "COMPLETED")
    assert json.loads(body["properties"]["dapr.workflow.output"]) == {"got": "small"}


def test_start_existing_active_id_fails(runtime, http, uid):
    assert http.post(f"{BASE}/wait_event/start", params={"instanceID": uid}, content=b'"e"').status_code == 202
    wait_http_status(http, uid, "RUNNING")
    r = http.post(f"{BASE}/chain/start", params={"instanceID": uid}, content=b"1")
    assert r.status_code in (409, 500), (r.status_code, r.text)  # daprd: 500 ERR_START_WORKFLOW
    body = http.get(f"{BASE}/{uid}").json()
    assert body["workflowName"] == "wait_event" and body["runtimeStatus"] == "RUNNING"
    http.post(f"{BASE}/{uid}/terminate")


def test_purge_running_is_rejected(runtime, http, uid):
    assert http.post(f"{BASE}/wait_event/start", params={"instanceID": uid}, content=b'"e"').status_code == 202
    wait_http_status(http, uid, "RUNNING")
    r = http.post(f"{BASE}/{uid}/purge")
    assert r.status_code >= 400, (r.status_code, r.text)
    assert get_status(http, uid) == "RUNNING"
    http.post(f"{BASE}/{uid}/terminate")


def test_malformed_requests(runtime, http, uid):
    # missing event name
    r = http.post(f"{BASE}/{uid}/raiseEvent/")
    assert r.status_code in (400, 404, 405), r.status_code
    # missing workflow name
    r = http.post(f"{BASE}//start")
    assert r.status_code in (400, 404), r.status_code
    # wrong method
    r = http.get(f"{BASE}/chain/start")
    assert r.status_code in (404, 405), r.status_code
    # unknown route
    assert http.get("/v1.0/nope").status_code == 404
    # malformed JSON in a terminate body (daprd parses it as protojson) -> 400, nothing changes
    assert http.post(f"{BASE}/wait_event/start", params={"instanceID": uid}, content=b'"e"').status_code == 202
    wait_http_status(http, uid, "RUNNING")
    r = http.post(f"{BASE}/{uid}/terminate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400, (r.status_code, r.text)
    assert get_status(http, uid) == "RUNNING"
    http.post(f"{BASE}/{uid}/terminate")
    wait_http_status(http, uid, "TERMINATED")


# ---------------------------------------------------------------------------- Weft extensions
def test_weft_list_instances_paging_and_filter(runtime, http, client, uid):
    ids = [f"{uid}-{i:02d}" for i in range(7)]
    for i in ids:
        client.schedule_new_workflow("chain", input=1, instance_id=i)
    for i in ids:
        client.wait_for_workflow_completion(i, timeout_in_seconds=30)
    run = f"{uid}-running"
    client.schedule_new_workflow("wait_event", input="e", instance_id=run)

    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 3}
        if after:
            params["after"] = after
        r = http.get("/weft/v1/instances", params=params)
        assert r.status_code == 200, r.text
        j = r.json()
        assert len(j["instances"]) <= 3
        for inst in j["instances"]:
            assert {"instanceID", "workflowName", "runtimeStatus"} <= set(inst), inst
        seen += [inst["instanceID"] for inst in j["instances"]]
        pages += 1
        assert pages < 1000
        if "next" not in j or not j["next"]:
            break
        after = j["next"]
    assert len(seen) == len(set(seen)), "duplicate instance across pages"
    assert set(ids) | {run} <= set(seen)

    r = http.get("/weft/v1/instances", params={"status": "RUNNING", "limit": 1000})
    assert r.status_code == 200
    running = r.json()["instances"]
    assert all(i["runtimeStatus"] == "RUNNING" for i in running)
    assert run in {i["instanceID"] for i in running}
    assert not set(ids) & {i["instanceID"] for i in running}
    client.terminate_workflow(run)


def test_weft_history_endpoint(runtime, http, client, uid):
    client.schedule_new_workflow("chain", input=2, instance_id=uid)
    client.wait_for_workflow_completion(uid, timeout_in_seconds=30)
    r = http.get(f"/weft/v1/instances/{uid}/history")
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["instanceID"] == uid
    evs = j["events"]
    for e in evs:
        assert isinstance(e["eventId"], int) and e["timestamp"] and e["type"], e
    types = [e["type"] for e in evs]
    assert "ExecutionStarted" in types and types[-1] == "ExecutionCompleted", types
    assert http.get(f"/weft/v1/instances/{uid}-nope/history").status_code == 404


def test_start_unregistered_workflow_fails_with_details(runtime, http, uid):
    r = http.post(f"{BASE}/no_such_workflow/start", params={"instanceID": uid}, content=b"1")
    assert r.status_code == 202, r.text
    body = wait_http_status(http, uid, "FAILED")
    assert "no_such_workflow" in body["properties"]["dapr.workflow.failure.error_message"], body
