"""durabletask-dapr 0.17.4 (raw TaskHubGrpcWorker / TaskHubGrpcClient) against `weft dev`.

The SDK runs in a subprocess (dt_scenarios.py) — it cannot share a process with dapr-ext-workflow —
once per module; each test checks one scenario's reported result.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from weft_harness import PY_TESTS, WeftDev, require_binary


@pytest.fixture(scope="module")
def dt_results(tmp_path_factory):
    require_binary()
    base = tmp_path_factory.mktemp("weft-dt")
    w = WeftDev(base / "data", base / "logs").start()
    env = w.sdk_env()
    env["PYTHONUNBUFFERED"] = "1"
    try:
        p = subprocess.run([sys.executable, str(PY_TESTS / "dt_scenarios.py"), w.grpc_addr], env=env,
                           capture_output=True, text=True, timeout=240)
        results = {}
        for line in p.stdout.splitlines():
            if line.startswith("RESULT "):
                r = json.loads(line[7:])
                results[r["scenario"]] = r
        # Histories asked for by a scenario (it reports the instance ID), read while weft runs.
        for r in results.values():
            v = r.get("value")
            if isinstance(v, dict) and "iid" in v:
                v["history"] = w.history(v["iid"])
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"dt_scenarios.py timed out\nstdout:{e.stdout}\nstderr:{(e.stderr or '')[-4000:]}"
                    f"\nweft:{w.all_stderr()}")
    finally:
        w.stop()
    results["_log"] = f"rc={p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-6000:]}\nweft:\n{w.all_stderr()}"
    results["_done"] = "ALL DONE" in p.stdout
    return results


def value(results, name):
    r = results.get(name)
    assert r is not None, f"scenario {name} did not report\n{results['_log']}"
    assert "error" not in r, f"{name}: {r['error']}\n{r.get('trace')}\n{results['_log']}"
    return r["value"]


def test_driver_finished(dt_results):
    assert dt_results["_done"], dt_results["_log"]


def test_chain(dt_results):
    assert value(dt_results, "chain") == {"status": "COMPLETED", "output": 3, "custom_status": None, "failure": None}


def test_fan_out(dt_results):
    v = value(dt_results, "fan_out")
    assert v["status"] == "COMPLETED" and v["output"] == sum(range(1, 11))


def test_sub_orchestrations(dt_results):
    v = value(dt_results, "sub_orchestrations")
    assert v["status"] == "COMPLETED"
    assert [r["v"] for r in v["output"]] == [10, 20, 30]
    assert len({r["id"] for r in v["output"]}) == 3


def test_timer(dt_results):
    v = value(dt_results, "timer")
    assert v["status"] == "COMPLETED" and v["output"] >= 1.5


def test_external_event(dt_results):
    v = value(dt_results, "external_event")
    assert v["was_running"] is True
    assert v["custom_status_while_waiting"] is not None and "waiting" in v["custom_status_while_waiting"]
    assert v["final"]["status"] == "COMPLETED" and v["final"]["output"] == {"yes": 1}


def test_external_event_timeout(dt_results):
    v = value(dt_results, "external_event_timeout")
    assert v["status"] == "COMPLETED" and v["output"] == "timeout"


def test_suspend_resume(dt_results):
    v = value(dt_results, "suspend_resume")
    assert v["suspended"] == "SUSPENDED"
    assert v["returned_while_suspended"] is False
    assert v["final"]["status"] == "COMPLETED" and v["final"]["output"] == "x"


def test_terminate_recursive(dt_results):
    v = value(dt_results, "terminate_recursive")
    assert v["final"]["status"] == "TERMINATED" and v["final"]["output"] == "stopped"
    assert v["kid_terminated"] is True


def test_retry(dt_results):
    v = value(dt_results, "retry")
    assert v["status"] == "COMPLETED" and v["output"] == 3


def test_retry_exhausted_completion_reuses_a_timer_id(dt_results):
    # The SDK's last answer is a completeOrchestration whose ID equals the first retry timer's;
    # daprd accepts it, and so must Weft: FAILED with the activity's TaskFailedError.
    v = value(dt_results, "retry_exhausted")
    assert v["final"]["status"] == "FAILED", v
    assert v["final"]["failure"]["type"] == "TaskFailedError", v
    assert "always" in v["final"]["failure"]["message"], v
    events = v["history"]["events"]
    timers = [e["eventId"] for e in events if e["type"] == "TimerCreated"]
    done = [e["eventId"] for e in events if e["type"] == "ExecutionCompleted"]
    assert len(done) == 1 and done[0] in timers, f"the completion's ID {done} is one of the timers' {timers}"


def test_failure_details(dt_results):
    v = value(dt_results, "failure_details")
    assert v["status"] == "FAILED"
    assert v["failure"] is not None and "dt boom" in v["failure"]["message"]


def test_continue_as_new(dt_results):
    v = value(dt_results, "continue_as_new")
    assert v["status"] == "COMPLETED" and v["output"] == 4


def test_purge_recursive(dt_results):
    v = value(dt_results, "purge_recursive")
    assert v["kids_before"] == ["COMPLETED", "COMPLETED"]
    assert v["parent"] is None and v["kids_after"] == [None, None]


def test_unknown_instance(dt_results):
    assert value(dt_results, "unknown_instance") == {"state": None}
