"""durabletask-dapr 0.17.4 driver (run as a subprocess: its protobuf symbols clash with dapr-ext-workflow's).

Usage: python dt_scenarios.py HOST:PORT
Runs a raw `durabletask.worker.TaskHubGrpcWorker` and `durabletask.client.TaskHubGrpcClient` (old
Orchestrator/Orchestration proto names) against the sidecar and prints one `RESULT {json}` line per
scenario. The pytest side (test_durabletask_dapr.py) asserts on the values. Every wait is bounded.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import uuid
from datetime import timedelta

from durabletask import client as dtc
from durabletask import task
from durabletask import worker as dtw

ADDR = sys.argv[1]
CALLS: dict[str, int] = {}


def add_one(ctx: task.ActivityContext, x: int) -> int:
    return x + 1


def flaky(ctx: task.ActivityContext, fail_times: int) -> int:
    k = ctx.orchestration_id
    CALLS[k] = CALLS.get(k, 0) + 1
    if CALLS[k] <= fail_times:
        raise ConnectionError(f"transient #{CALLS[k]}")
    return CALLS[k]


def boom(ctx: task.ActivityContext, msg: str):
    raise ValueError(msg)


def chain(ctx: task.OrchestrationContext, x: int):
    a = yield ctx.call_activity(add_one, input=x)
    b = yield ctx.call_activity(add_one, input=a)
    return b


def fan(ctx: task.OrchestrationContext, n: int):
    rs = yield task.when_all([ctx.call_activity(add_one, input=i) for i in range(n)])
    return sum(rs)


def sub(ctx: task.OrchestrationContext, x: int):
    r = yield ctx.call_activity(add_one, input=x)
    return {"id": ctx.instance_id, "v": r * 10}


def parent(ctx: task.OrchestrationContext, n: int):
    rs = yield task.when_all([ctx.call_sub_orchestrator(sub, input=i) for i in range(n)])
    return rs


def timer(ctx: task.OrchestrationContext, secs: float):
    t0 = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=secs))
    return (ctx.current_utc_datetime - t0).total_seconds()


def waiter(ctx: task.OrchestrationContext, name: str):
    ctx.set_custom_status("waiting")
    v = yield ctx.wait_for_external_event(name)
    return v


def waiter_timeout(ctx: task.OrchestrationContext, secs: float):
    ev = ctx.wait_for_external_event("e")
    t = ctx.create_timer(timedelta(seconds=secs))
    w = yield task.when_any([ev, t])
    return "timeout" if w == t else ev.get_result()


def retry(ctx: task.OrchestrationContext, fail_times: int):
    rp = task.RetryPolicy(first_retry_interval=timedelta(milliseconds=300), max_number_of_attempts=fail_times + 1)
    r = yield ctx.call_activity(flaky, input=fail_times, retry_policy=rp)
    return r


def retry_exhausted(ctx: task.OrchestrationContext, msg: str):
    # The policy (1 s, backoff 2, 5 attempts, retry_timeout 13 s) at half the intervals:
    # attempts at 0, .5, 1.5, 3.5 and 7.5 s. The SDK checks retry_timeout against the wall clock
    # while replaying, so the replay at 7.5 s gives up at the first failure and completes with
    # the next sequence number, 2: the ID of the first retry timer.
    rp = task.RetryPolicy(first_retry_interval=timedelta(seconds=0.5), backoff_coefficient=2,
                          max_number_of_attempts=5, retry_timeout=timedelta(seconds=6.5))
    yield ctx.call_activity(boom, input=msg, retry_policy=rp)


def failing(ctx: task.OrchestrationContext, msg: str):
    yield ctx.call_activity(boom, input=msg)


def counter(ctx: task.OrchestrationContext, n: int):
    if n >= 4:
        return n
    yield ctx.create_timer(timedelta(milliseconds=10))
    ctx.continue_as_new(n + 1)


def kid_waits(ctx: task.OrchestrationContext, _):
    v = yield ctx.wait_for_external_event("never")
    return v


def parent_waits(ctx: task.OrchestrationContext, _):
    v = yield ctx.call_sub_orchestrator(kid_waits, input=None, instance_id=f"{ctx.instance_id}-kid")
    return v


def status(c, iid):
    st = c.get_orchestration_state(iid)
    return st.runtime_status.name if st else None


def wait_status(c, iid, name, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status(c, iid) == name:
            return True
        time.sleep(0.1)
    return False


def st_json(st):
    if st is None:
        return None
    return {
        "status": st.runtime_status.name,
        "output": json.loads(st.serialized_output) if st.serialized_output else None,
        "custom_status": st.serialized_custom_status,
        "failure": ({"type": st.failure_details.error_type, "message": st.failure_details.message}
                    if st.failure_details else None),
    }


def main() -> None:
    w = dtw.TaskHubGrpcWorker(host_address=ADDR)
    for o in (chain, fan, sub, parent, timer, waiter, waiter_timeout, retry, retry_exhausted, failing, counter,
              kid_waits, parent_waits):
        w.add_orchestrator(o)
    for a in (add_one, flaky, boom):
        w.add_activity(a)
    w.start()
    c = dtc.TaskHubGrpcClient(host_address=ADDR)
    p = uuid.uuid4().hex[:8]

    def done(iid, timeout=30):
        return c.wait_for_orchestration_completion(iid, timeout=timeout)

    def scenario(name, fn):
        try:
            res = fn()
            print("RESULT " + json.dumps({"scenario": name, "value": res}), flush=True)
        except Exception as e:  # noqa: BLE001
            print("RESULT " + json.dumps({"scenario": name, "error": f"{type(e).__name__}: {e}",
                                          "trace": traceback.format_exc()[-2000:]}), flush=True)

    scenario("chain", lambda: st_json(done(c.schedule_new_orchestration(chain, input=1, instance_id=f"dt-chain-{p}"))))
    scenario("fan_out", lambda: st_json(done(c.schedule_new_orchestration(fan, input=10, instance_id=f"dt-fan-{p}"))))
    scenario("sub_orchestrations", lambda: st_json(done(c.schedule_new_orchestration(parent, input=3, instance_id=f"dt-par-{p}"))))
    scenario("timer", lambda: st_json(done(c.schedule_new_orchestration(timer, input=1.5, instance_id=f"dt-tmr-{p}"))))

    def external_event():
        iid = c.schedule_new_orchestration(waiter, input="approve", instance_id=f"dt-ev-{p}")
        ok = wait_status(c, iid, "RUNNING")
        cs = c.get_orchestration_state(iid).serialized_custom_status
        c.raise_orchestration_event(iid, "approve", data={"yes": 1})
        return {"was_running": ok, "custom_status_while_waiting": cs, "final": st_json(done(iid))}
    scenario("external_event", external_event)

    scenario("external_event_timeout",
             lambda: st_json(done(c.schedule_new_orchestration(waiter_timeout, input=1, instance_id=f"dt-evt-{p}"))))

    def suspend_resume():
        iid = c.schedule_new_orchestration(waiter, input="go", instance_id=f"dt-sr-{p}")
        wait_status(c, iid, "RUNNING")
        c.suspend_orchestration(iid)
        suspended = status(c, iid)
        c.raise_orchestration_event(iid, "go", data="x")
        try:
            c.wait_for_orchestration_completion(iid, timeout=2)
            returned_while_suspended = True
        except TimeoutError:
            returned_while_suspended = False
        c.resume_orchestration(iid)
        return {"suspended": suspended, "returned_while_suspended": returned_while_suspended, "final": st_json(done(iid))}
    scenario("suspend_resume", suspend_resume)

    def terminate():
        iid = c.schedule_new_orchestration(parent_waits, input=None, instance_id=f"dt-term-{p}")
        wait_status(c, f"{iid}-kid", "RUNNING")
        c.terminate_orchestration(iid, output="stopped", recursive=True)
        final = st_json(done(iid))
        kid_terminated = wait_status(c, f"{iid}-kid", "TERMINATED")
        return {"final": final, "kid_terminated": kid_terminated}
    scenario("terminate_recursive", terminate)

    scenario("retry", lambda: st_json(done(c.schedule_new_orchestration(retry, input=2, instance_id=f"dt-retry-{p}"), 60)))
    def exhausted():
        iid = c.schedule_new_orchestration(retry_exhausted, input="always", instance_id=f"dt-exh-{p}")
        return {"iid": iid, "final": st_json(done(iid, 60))}
    scenario("retry_exhausted", exhausted)
    scenario("failure_details",
             lambda: st_json(done(c.schedule_new_orchestration(failing, input="dt boom", instance_id=f"dt-fail-{p}"))))
    scenario("continue_as_new",
             lambda: st_json(done(c.schedule_new_orchestration(counter, input=0, instance_id=f"dt-can-{p}"))))

    def purge():
        iid = c.schedule_new_orchestration(parent, input=2, instance_id=f"dt-purge-{p}")
        kids = [r["id"] for r in json.loads(done(iid).serialized_output)]
        before = [status(c, k) for k in kids]
        c.purge_orchestration(iid, recursive=True)
        return {"parent": status(c, iid), "kids_before": before, "kids_after": [status(c, k) for k in kids]}
    scenario("purge_recursive", purge)

    def unknown():
        return {"state": st_json(c.get_orchestration_state(f"dt-missing-{p}"))}
    scenario("unknown_instance", unknown)

    print("ALL DONE", flush=True)
    c.close()
    w.stop()


if __name__ == "__main__":
    main()
