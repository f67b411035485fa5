"""Workflows and activities used by the dapr-ext-workflow tests (1.18.3 and 1.19 share this file).

`register_all(runtime, state)` defines fresh function objects on every call (the SDK refuses to
register the same function object twice), registers them under stable names and returns them.
`state` is a `SharedState` used by activities to count executions and to fail on purpose; worker
subprocesses pass a directory-backed side-effect log instead.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Optional

import dapr.ext.workflow as wf


class SharedState:
    def __init__(self, side_dir: Optional[Path] = None):
        self.lock = threading.Lock()
        self.calls: dict[str, int] = defaultdict(int)  # "<activity>:<instance>" -> executions
        self.side_dir = Path(side_dir) if side_dir else None
        self.gates: dict[str, threading.Event] = {}

    def bump(self, key: str) -> int:
        with self.lock:
            self.calls[key] += 1
            return self.calls[key]

    def count(self, key: str) -> int:
        with self.lock:
            return self.calls.get(key, 0)


def register_all(rt: wf.WorkflowRuntime, state: SharedState) -> dict:
    reg: dict = {}

    def activity(name):
        def deco(fn):
            rt.register_activity(fn, name=name)
            reg[name] = fn
            return fn
        return deco

    def workflow(name):
        def deco(fn):
            rt.register_workflow(fn, name=name)
            reg[name] = fn
            return fn
        return deco

    # ---------------------------------------------------------------- activities
    @activity("add_one")
    def add_one(ctx: wf.WorkflowActivityContext, x: int) -> int:
        state.bump(f"add_one:{ctx.workflow_id}")
        return x + 1

    @activity("square")
    def square(ctx: wf.WorkflowActivityContext, x: int) -> int:
        return x * x

    @activity("echo")
    def echo(ctx: wf.WorkflowActivityContext, x):
        return x

    @activity("length")
    def length(ctx: wf.WorkflowActivityContext, x) -> int:
        return len(x)

    @activity("big_result")
    def big_result(ctx: wf.WorkflowActivityContext, n: int) -> str:
        return "r" * n

    @activity("flaky")
    def flaky(ctx: wf.WorkflowActivityContext, inp: dict) -> dict:
        # fails the first `fail_times` attempts for this workflow instance, then succeeds
        n = state.bump(f"flaky:{ctx.workflow_id}")
        if n <= inp["fail_times"]:
            raise ConnectionError(f"transient failure #{n}")
        return {"attempts": n}

    @activity("always_fails")
    def always_fails(ctx: wf.WorkflowActivityContext, msg: str):
        state.bump(f"always_fails:{ctx.workflow_id}")
        raise ValueError(msg)

    @activity("record")
    def record(ctx: wf.WorkflowActivityContext, tag: str) -> str:
        state.bump(f"record:{tag}:{ctx.workflow_id}")
        return tag

    @activity("gated")
    def gated(ctx: wf.WorkflowActivityContext, key: str) -> str:
        # blocks until the test opens the gate (bounded)
        ev = state.gates.setdefault(key, threading.Event())
        ev.wait(30)
        return f"gated:{key}"

    @activity("metric_step")
    def metric_step(ctx: wf.WorkflowActivityContext, x: int) -> int:
        return x + 1

    # ---------------------------------------------------------------- workflows
    @workflow("metrics_probe")
    def metrics_probe(ctx: wf.DaprWorkflowContext, x: int):
        # Used only by test_metrics.py: its names label the series that test counts exactly.
        for _ in range(3):
            x = yield ctx.call_activity(metric_step, input=x)
        yield ctx.create_timer(timedelta(milliseconds=200))
        extra = yield ctx.wait_for_external_event("go")
        return x + extra

    @workflow("chain")
    def chain(ctx: wf.DaprWorkflowContext, x: int):
        a = yield ctx.call_activity(add_one, input=x)
        b = yield ctx.call_activity(add_one, input=a)
        c = yield ctx.call_activity(square, input=b)
        return c

    @workflow("long_chain")
    def long_chain(ctx: wf.DaprWorkflowContext, n: int):
        v = 0
        for _ in range(n):
            v = yield ctx.call_activity(add_one, input=v)
        return v

    @workflow("fan_out")
    def fan_out(ctx: wf.DaprWorkflowContext, n: int):
        tasks = [ctx.call_activity(square, input=i) for i in range(n)]
        results = yield wf.when_all(tasks)
        return {"sum": sum(results), "results": results}

    @workflow("child")
    def child(ctx: wf.DaprWorkflowContext, x: int):
        y = yield ctx.call_activity(add_one, input=x)
        return {"child": ctx.instance_id, "value": y}

    @workflow("parent")
    def parent(ctx: wf.DaprWorkflowContext, n: int):
        tasks = [ctx.call_child_workflow(child, input=i) for i in range(n)]
        named = ctx.call_child_workflow(child, input=100, instance_id=f"{ctx.instance_id}-named")
        results = yield wf.when_all(tasks + [named])
        return results

    @workflow("failing_child")
    def failing_child(ctx: wf.DaprWorkflowContext, msg: str):
        raise RuntimeError(msg)
        yield  # pragma: no cover - makes this a generator

    @workflow("parent_of_failing")
    def parent_of_failing(ctx: wf.DaprWorkflowContext, msg: str):
        try:
            yield ctx.call_child_workflow(failing_child, input=msg)
        except wf.TaskFailedError as e:
            fd = e.details
            return {"caught": True, "type": fd.error_type, "message": fd.message}
        return {"caught": False}

    @workflow("waiting_child")
    def waiting_child(ctx: wf.DaprWorkflowContext, _):
        v = yield ctx.wait_for_external_event("never")
        return v

    @workflow("parent_waiting")
    def parent_waiting(ctx: wf.DaprWorkflowContext, _):
        v = yield ctx.call_child_workflow(waiting_child, input=None, instance_id=f"{ctx.instance_id}-kid")
        return v

    @workflow("timer")
    def timer(ctx: wf.DaprWorkflowContext, seconds: float):
        t0 = ctx.current_utc_datetime
        yield ctx.create_timer(timedelta(seconds=seconds))
        t1 = ctx.current_utc_datetime
        return {"elapsed": (t1 - t0).total_seconds()}

    @workflow("child_by_name")
    def child_by_name(ctx: wf.DaprWorkflowContext, name: str):
        return (yield ctx.call_child_workflow(name, input=None))

    @workflow("wait_event")
    def wait_event(ctx: wf.DaprWorkflowContext, name: str):
        v = yield ctx.wait_for_external_event(name)  # indefinite wait -> sentinel timer (1.18+)
        return {"got": v}

    @workflow("wait_event_timeout")
    def wait_event_timeout(ctx: wf.DaprWorkflowContext, inp: dict):
        try:
            v = yield ctx.wait_for_external_event(inp["name"], timeout=timedelta(seconds=inp["seconds"]))
        except Exception as e:  # the SDK fails the task with a TimeoutError-like exception
            return {"timed_out": True, "error": type(e).__name__}
        return {"timed_out": False, "got": v}

    @workflow("wait_event_when_any")
    def wait_event_when_any(ctx: wf.DaprWorkflowContext, inp: dict):
        evt = ctx.wait_for_external_event(inp["name"])
        tmr = ctx.create_timer(timedelta(seconds=inp["seconds"]))
        winner = yield wf.when_any([evt, tmr])
        if winner == tmr:
            return {"timed_out": True}
        return {"timed_out": False, "got": evt.get_result()}

    @workflow("multi_event")
    def multi_event(ctx: wf.DaprWorkflowContext, names: list):
        got = []
        for n in names:
            v = yield ctx.wait_for_external_event(n)
            got.append(v)
        return got

    @workflow("custom_status")
    def custom_status(ctx: wf.DaprWorkflowContext, _):
        ctx.set_custom_status("step1")
        v = yield ctx.wait_for_external_event("go")
        ctx.set_custom_status(f"step2:{v}")
        return "done"

    @workflow("counter_can")
    def counter_can(ctx: wf.DaprWorkflowContext, n: int):
        if n >= 5:
            return n
        yield ctx.call_activity(record, input=f"gen{n}")
        ctx.continue_as_new(n + 1)

    @workflow("can_save_events")
    def can_save_events(ctx: wf.DaprWorkflowContext, acc: list):
        v = yield ctx.wait_for_external_event("item")
        acc = acc + [v]
        if len(acc) >= 3:
            return acc
        ctx.continue_as_new(acc, save_events=True)

    @workflow("can_ordered")
    def can_ordered(ctx: wf.DaprWorkflowContext, inp: dict):
        # One event per generation; the rest are carried over (save_events) in the order received.
        v = yield ctx.wait_for_external_event("item")
        acc = inp["acc"] + [v]
        if len(acc) >= inp["n"]:
            return acc
        ctx.continue_as_new({"acc": acc, "n": inp["n"]}, save_events=True)

    @workflow("retry_ok")
    def retry_ok(ctx: wf.DaprWorkflowContext, fail_times: int):
        policy = wf.RetryPolicy(first_retry_interval=timedelta(milliseconds=300),
                                max_number_of_attempts=fail_times + 1, backoff_coefficient=1.0)
        r = yield ctx.call_activity(flaky, input={"fail_times": fail_times}, retry_policy=policy)
        return r

    @workflow("retry_exhausted")
    def retry_exhausted(ctx: wf.DaprWorkflowContext, msg: str):
        policy = wf.RetryPolicy(first_retry_interval=timedelta(milliseconds=200),
                                max_number_of_attempts=2)
        r = yield ctx.call_activity(always_fails, input=msg, retry_policy=policy)
        return r

    @workflow("raise_in_wf")
    def raise_in_wf(ctx: wf.DaprWorkflowContext, msg: str):
        yield ctx.call_activity(echo, input=1)
        raise RuntimeError(msg)

    @workflow("activity_fails_uncaught")
    def activity_fails_uncaught(ctx: wf.DaprWorkflowContext, msg: str):
        r = yield ctx.call_activity(always_fails, input=msg)
        return r

    @workflow("activity_fails_caught")
    def activity_fails_caught(ctx: wf.DaprWorkflowContext, msg: str):
        try:
            yield ctx.call_activity(always_fails, input=msg)
        except wf.TaskFailedError as e:
            return {"type": e.details.error_type, "message": e.details.message,
                    "has_stack": bool(e.details.stack_trace)}
        return "not failed"

    @workflow("noop")
    def noop(ctx: wf.DaprWorkflowContext):
        return None
        yield  # pragma: no cover

    @workflow("echo_wf")
    def echo_wf(ctx: wf.DaprWorkflowContext, x):
        return {"input": x, "now": ctx.current_utc_datetime.isoformat()}
        yield  # pragma: no cover

    @workflow("input_len")
    def input_len(ctx: wf.DaprWorkflowContext, x: str):
        n = yield ctx.call_activity(length, input=x)
        return n

    @workflow("input_len_direct")
    def input_len_direct(ctx: wf.DaprWorkflowContext, x: str):
        return len(x)
        yield  # pragma: no cover

    @workflow("big_activity_result")
    def big_activity_result(ctx: wf.DaprWorkflowContext, n: int):
        r = yield ctx.call_activity(big_result, input=n)
        return len(r)

    @workflow("big_output")
    def big_output(ctx: wf.DaprWorkflowContext, n: int):
        return "o" * n
        yield  # pragma: no cover

    @workflow("gated_wf")
    def gated_wf(ctx: wf.DaprWorkflowContext, key: str):
        r = yield ctx.call_activity(gated, input=key)
        return r

    @workflow("gated_then_event")
    def gated_then_event(ctx: wf.DaprWorkflowContext, key: str):
        r = yield ctx.call_activity(gated, input=key)
        return r

    @workflow("flaky_child")
    def flaky_child(ctx: wf.DaprWorkflowContext, fail_times: int):
        r = yield ctx.call_activity(flaky, input={"fail_times": fail_times})  # no activity retry
        return r

    @workflow("child_retry")
    def child_retry(ctx: wf.DaprWorkflowContext, fail_times: int):
        policy = wf.RetryPolicy(first_retry_interval=timedelta(milliseconds=300),
                                max_number_of_attempts=fail_times + 1)
        r = yield ctx.call_child_workflow(flaky_child, input=fail_times, retry_policy=policy,
                                          instance_id=f"{ctx.instance_id}-child")
        return r

    @workflow("calls_unregistered")
    def calls_unregistered(ctx: wf.DaprWorkflowContext, _):
        r = yield ctx.call_activity("no_such_activity", input=1)
        return r

    @workflow("rerunnable")
    def rerunnable(ctx: wf.DaprWorkflowContext, x: int):
        a = yield ctx.call_activity(record, input="step1")
        b = yield ctx.call_activity(add_one, input=x)
        c = yield ctx.call_activity(record, input="step3")
        return [a, b, c]

    return reg


def activity_sleep() -> float:
    return float(os.environ.get("WEFT_TEST_ACTIVITY_SLEEP", "0"))


def sleepy(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)
