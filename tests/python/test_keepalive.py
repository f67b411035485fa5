"""An idle connected worker for > 30 s: the SDK's 30 s Hello keepalive and HTTP/2 keepalive pings
(without calls) must not get the stream torn down (e.g. GOAWAY too_many_pings), and the worker must
never receive a work item it does not understand (1.18.3 crashes its loop on e.g. healthPing)."""

from __future__ import annotations

import json
import logging
import time

IDLE_SECONDS = 36


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.INFO)
        self.records: list[str] = []

    def emit(self, record):
        self.records.append(record.getMessage())


def test_idle_worker_stream_survives_keepalives(weft_factory):
    import dapr.ext.workflow as wf
    from dapr.ext.workflow import WorkflowStatus as S
    from wf_defs import SharedState, register_all

    weft = weft_factory()
    h = _Collect()
    lg = logging.getLogger("durabletask-worker")
    lg.addHandler(h)
    old_level = lg.level
    lg.setLevel(logging.INFO)
    rt = wf.WorkflowRuntime(host=weft.grpc_host, port=str(weft.grpc_port), worker_ready_timeout=30)
    register_all(rt, SharedState())
    rt.start()
    c = wf.DaprWorkflowClient(host=weft.grpc_host, port=str(weft.grpc_port))
    try:
        c.schedule_new_workflow("chain", input=1, instance_id="ka-1")
        assert c.wait_for_workflow_completion("ka-1", timeout_in_seconds=30).runtime_status == S.COMPLETED
        time.sleep(IDLE_SECONDS)  # deliberate idle period (not synchronisation): keepalives happen now
        t0 = time.monotonic()
        c.schedule_new_workflow("chain", input=2, instance_id="ka-2")
        st = c.wait_for_workflow_completion("ka-2", timeout_in_seconds=30)
        assert st.runtime_status == S.COMPLETED and json.loads(st.serialized_output) == 16
        assert time.monotonic() - t0 < 5, "the idle worker needed a reconnect to get work"
        mine = [m for m in h.records if weft.grpc_addr in m or "work item" in m.lower()]
        bad = [m for m in mine if any(k in m for k in ("stream ended", "Unexpected work item", "too_many_pings",
                                                          "GOAWAY", "healthPing", "Connection failed"))]
        assert not bad, f"worker stream problems while idle: {bad}"
    finally:
        c.close()
        rt.shutdown()
        lg.removeHandler(h)
        lg.setLevel(old_level)
