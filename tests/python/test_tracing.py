"""Dapr's workflow spans over OTLP (issue 20, acceptance 1), end to end with dapr-ext-workflow:
a `weft dev` configured through a Configuration YAML's `spec.tracing` exports, for one
`metrics_probe` run (three activities, a timer, an external event), exactly one
`create_orchestration||…`, one `orchestration||…`, three `activity||…` and one `timer` span, all
in one trace with durabletask-go's parent links, kinds and attributes. The collector is a small
gRPC `TraceService` started by the test on a free port."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from dapr.ext.workflow import WorkflowStatus
from weft_harness import wait_until

KIND = trace_pb2.Span.SpanKind
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector that keeps every span it is sent."""

    def __init__(self):
        self.spans: list[tuple[str, trace_pb2.Span]] = []  # (service.name, span)
        self.cond = threading.Condition()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        with self.cond:
            for rs in request.resource_spans:
                service = next(
                    (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), ""
                )
                for ss in rs.scope_spans:
                    assert ss.scope.name == "durabletask"
                    self.spans.extend((service, s) for s in ss.spans)
            self.cond.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_instance(self, instance_id: str) -> list[trace_pb2.Span]:
        return [s for _, s in self.spans if attrs(s).get("durabletask.task.instance_id") == instance_id]

    def wait_for(self, pred, timeout: float = 30) -> list[trace_pb2.Span]:
        with self.cond:
            assert self.cond.wait_for(pred, timeout), f"spans so far: {[s.name for _, s in self.spans]}"
            return [s for _, s in self.spans]


def attrs(span) -> dict:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value if v.HasField("string_value") else v.int_value
    return out


@pytest.fixture
def collector():
    r = Receiver()
    yield r
    r.server.stop(grace=None)


@contextlib.contextmanager
def sdk(weft, wf_state):
    """A worker of wf_defs' workflows on `weft`, and a client."""
    import dapr.ext.workflow as wf
    from wf_defs import register_all

    rt = wf.WorkflowRuntime(host=weft.grpc_host, port=str(weft.grpc_port), worker_ready_timeout=30)
    register_all(rt, wf_state)
    rt.start()
    client = wf.DaprWorkflowClient(host=weft.grpc_host, port=str(weft.grpc_port))
    try:
        yield client
    finally:
        client.close()
        rt.shutdown()


@pytest.fixture
def traced(weft_factory, collector, tmp_path, wf_state):
    """A `weft dev` exporting to `collector` (configured by `spec.tracing`), with the SDK on it."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: traced\nspec:\n"
        "  tracing:\n    samplingRate: \"1\"\n    otel:\n"
        f"      endpointAddress: 127.0.0.1:{collector.port}\n      isSecure: false\n      protocol: grpc\n"
    )
    # A short batch delay so spans arrive within the test, not after the SDK's default 5 s.
    # JSON logs with the actor's debug lines, so a test can read the trace ID off them.
    weft = weft_factory(env={"WEFT_CONFIG": str(cfg), "OTEL_BSP_SCHEDULE_DELAY": "100",
                             "WEFT_LOG_FORMAT": "json", "RUST_LOG": "info,weft_sidecar::actor=debug"},
                        app_id="traced-app")
    with sdk(weft, wf_state) as client:
        yield weft, client


def run_probe(client, uid):
    client.wait_for_workflow_start(uid, timeout_in_seconds=30)
    client.raise_workflow_event(uid, "go", data=10)
    st = client.wait_for_workflow_completion(uid, timeout_in_seconds=60)
    assert st is not None and st.runtime_status == WorkflowStatus.COMPLETED, st
    assert json.loads(st.serialized_output) == 14


def probe_spans(collector, uid) -> dict:
    def done():
        names = [s.name for s in collector.of_instance(uid)]
        return "orchestration||metrics_probe" in names and names.count("activity||metric_step") == 3
    collector.wait_for(done)
    # The orchestration span comes with the last turn; everything else was exported before it.
    spans = collector.of_instance(uid)
    by_name: dict[str, list] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    return by_name


def test_one_workflow_yields_daprs_spans_in_one_trace(traced, collector, uid):
    weft, client = traced
    client.schedule_new_workflow("metrics_probe", input=1, instance_id=uid)
    run_probe(client, uid)
    by = probe_spans(collector, uid)
    assert sorted((n, len(v)) for n, v in by.items()) == [
        ("activity||metric_step", 3),
        ("create_orchestration||metrics_probe", 1),
        ("orchestration||metrics_probe", 1),
        ("timer", 1),
    ], by.keys()
    (create,) = by["create_orchestration||metrics_probe"]
    (orch,) = by["orchestration||metrics_probe"]
    (timer,) = by["timer"]
    acts = by["activity||metric_step"]

    # One trace; the create span is its root (this SDK sends no trace context of its own).
    everything = [create, orch, timer, *acts]
    assert {s.trace_id for s in everything} == {create.trace_id}
    assert create.parent_span_id == b""
    assert orch.parent_span_id == create.span_id
    assert timer.parent_span_id == orch.span_id
    assert all(a.parent_span_id == orch.span_id for a in acts)
    assert len({s.span_id for s in everything}) == len(everything)

    assert (create.kind, orch.kind, timer.kind) == (KIND.SPAN_KIND_CLIENT, KIND.SPAN_KIND_SERVER, KIND.SPAN_KIND_INTERNAL)
    assert all(a.kind == KIND.SPAN_KIND_SERVER for a in acts)

    base = {"durabletask.task.name": "metrics_probe", "durabletask.task.instance_id": uid}
    assert attrs(create) == {"durabletask.type": "orchestration", **base}
    assert attrs(orch) == {"durabletask.type": "orchestration", "durabletask.runtime_status": "COMPLETED", **base}
    for a in acts:
        at = attrs(a)
        assert at["durabletask.type"] == "activity"
        assert at["durabletask.task.name"] == "metric_step"
        assert at["durabletask.task.instance_id"] == uid
        assert isinstance(at["durabletask.task.task_id"], int)
    assert len({attrs(a)["durabletask.task.task_id"] for a in acts}) == 3
    t = attrs(timer)
    assert t["durabletask.type"] == "timer" and t["durabletask.task.instance_id"] == uid
    assert t["durabletask.fire_at"].endswith("Z") and isinstance(t["durabletask.task.task_id"], int)

    # The orchestration span covers the whole run, from the start to the last turn.
    assert orch.start_time_unix_nano <= min(s.start_time_unix_nano for s in [timer, *acts])
    assert orch.end_time_unix_nano >= max(s.end_time_unix_nano for s in [timer, *acts])
    assert timer.end_time_unix_nano - timer.start_time_unix_nano >= 200_000_000  # the 200 ms timer
    services = {svc for svc, s in collector.spans if s in everything}
    assert services == {"traced-app"}

    # durabletask-go's span events: the external event the run received, with its payload size.
    assert [(e.name, attrs(e)) for e in orch.events] == [("Received external event", {"name": "go", "size": 2})]
    assert orch.start_time_unix_nano <= orch.events[0].time_unix_nano <= orch.end_time_unix_nano


def start_with_traceparent(weft, uid: str, flags: str):
    """Starts `metrics_probe` through the Dapr HTTP API with the caller's W3C `traceparent`."""
    status, _, _ = weft.http(
        "POST",
        f"/v1.0/workflows/dapr/metrics_probe/start?instanceID={uid}",
        body=b"1",
        headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-{flags}", "content-type": "application/json"},
    )
    assert status == 202


def test_a_clients_traceparent_becomes_the_root(traced, collector, uid):
    """A start with a W3C `traceparent` joins the caller's trace."""
    weft, client = traced
    start_with_traceparent(weft, uid, "01")
    run_probe(client, uid)
    by = probe_spans(collector, uid)
    (create,) = by["create_orchestration||metrics_probe"]
    (orch,) = by["orchestration||metrics_probe"]
    assert create.trace_id.hex() == CLIENT_TRACE
    assert create.parent_span_id.hex() == CLIENT_SPAN
    assert orch.trace_id.hex() == CLIENT_TRACE and orch.parent_span_id == create.span_id
    assert all(a.trace_id.hex() == CLIENT_TRACE for a in by["activity||metric_step"])


def actor_log_lines(weft, instance_id: str) -> list[dict]:
    """The JSON log lines logged inside the actor of `instance_id` (its span in `spans`)."""
    out = []
    for line in weft.stderr_path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        actor = [s for s in rec.get("spans", []) if s.get("name") == "actor" and s.get("instance") == instance_id]
        if actor:
            out.append({**rec, "actor": actor[-1]})
    return out


def test_log_lines_of_a_traced_instance_carry_its_trace_id(traced, collector, uid):
    """Every line the actor of a traced instance logs names the trace (JSON logs, issue 20)."""
    weft, client = traced
    start_with_traceparent(weft, uid, "01")
    run_probe(client, uid)
    lines = wait_until(lambda: actor_log_lines(weft, uid), 10, what=f"log lines of {uid}'s actor")
    assert all(rec["actor"].get("trace_id") == CLIENT_TRACE for rec in lines), lines[:3]
    assert all(rec["actor"].get("app_id") == "traced-app" for rec in lines), lines[:3]


def test_an_unsampled_client_trace_exports_nothing(traced, collector, uid):
    """Parent-based sampling: a caller that did not sample its trace gets no workflow spans."""
    weft, client = traced
    start_with_traceparent(weft, uid, "00")
    run_probe(client, uid)
    # A traced run after it: once its spans are in, the batch that would hold ours has gone out.
    later = uid + "-later"
    client.schedule_new_workflow("metrics_probe", input=1, instance_id=later)
    run_probe(client, later)
    probe_spans(collector, later)
    assert collector.of_instance(uid) == []


class HttpReceiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP (protobuf) collector: POST /v1/traces, spans into `sink`."""

    def __init__(self, sink: Receiver):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                assert self.path == "/v1/traces", self.path
                sink.Export(trace_service_pb2.ExportTraceServiceRequest.FromString(body), None)
                out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_otlp_http_and_the_otel_variables(weft_factory, collector, wf_state, uid):
    """The same spans over OTLP/HTTP, configured only by the standard OTEL_* variables."""
    receiver = HttpReceiver(collector)
    try:
        weft = weft_factory(env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "from-env",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        })
        with sdk(weft, wf_state) as client:
            client.schedule_new_workflow("metrics_probe", input=1, instance_id=uid)
            run_probe(client, uid)
            by = probe_spans(collector, uid)
        assert {n: len(v) for n, v in by.items()} == {
            "create_orchestration||metrics_probe": 1,
            "orchestration||metrics_probe": 1,
            "activity||metric_step": 3,
            "timer": 1,
        }
        assert {svc for svc, _ in collector.spans} == {"from-env"}
    finally:
        receiver.shutdown()
        receiver.server_close()
