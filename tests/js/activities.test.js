// @dapr/durabletask-js against `weft dev`: activities, fan-out/fan-in, child workflows, failures
// with details, custom status, and how the JS client's start request is treated.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { whenAll } from "@dapr/durabletask-js/task/index.js";
import { OrchestrationStatus, startSession, waitDone, waitStarted, show, uid } from "./harness.js";

const { COMPLETED, FAILED, PENDING } = OrchestrationStatus;

class InventoryError extends Error {
  constructor(message) {
    super(message);
    this.name = "InventoryError";
  }
}

let s;

before(async () => {
  s = await startSession((w) => {
    w.addNamedActivity("hello", (_ctx, name) => `Hello ${name}!`);
    w.addNamedOrchestrator("chain", async function* (ctx, cities) {
      const out = [];
      for (const city of cities) out.push(yield ctx.callActivity("hello", city));
      return out;
    });

    w.addNamedActivity("square", (_ctx, n) => n * n);
    w.addNamedOrchestrator("fan_out", async function* (ctx, n) {
      const tasks = [];
      for (let i = 1; i <= n; i++) tasks.push(ctx.callActivity("square", i));
      const results = yield whenAll(tasks);
      return { count: results.length, sum: results.reduce((a, b) => a + b, 0), results };
    });

    w.addNamedActivity("double", (_ctx, n) => n * 2);
    w.addNamedOrchestrator("child", async function* (ctx, n) {
      const doubled = yield ctx.callActivity("double", n);
      return { child: ctx.instanceId, doubled };
    });
    w.addNamedOrchestrator("parent", async function* (ctx, { n, childId }) {
      const fromChild = yield ctx.callSubOrchestrator("child", n, childId);
      return { parent: ctx.instanceId, fromChild };
    });

    w.addNamedActivity("reserve", (_ctx, item) => {
      throw new InventoryError(`out of ${item}`);
    });
    w.addNamedOrchestrator("fails", async function* (ctx, item) {
      yield ctx.callActivity("reserve", item);
      return "unreachable";
    });
    w.addNamedOrchestrator("catches", async function* (ctx, item) {
      try {
        yield ctx.callActivity("reserve", item);
        return "unreachable";
      } catch (e) {
        return { caught: e.details?.errorType, message: e.details?.message, hasStack: !!e.details?.stackTrace };
      }
    });
    w.addNamedOrchestrator("child_fails", async function* (ctx, item) {
      try {
        yield ctx.callSubOrchestrator("fails", item);
        return "unreachable";
      } catch (e) {
        return { caught: e.details?.errorType, message: e.details?.message };
      }
    });

    w.addNamedOrchestrator("status", async function* (ctx) {
      ctx.setCustomStatus("waiting for go");
      const v = yield ctx.waitForExternalEvent("go");
      ctx.setCustomStatus(`got ${v}`);
      return v;
    });

    // No yield: completes in its first turn.
    w.addNamedOrchestrator("echo", async function* (_ctx, x) {
      return x;
    });

    w.addNamedActivity("mirror", (_ctx, x) => x);
    w.addNamedOrchestrator("mirror_wf", async function* (ctx, x) {
      return yield ctx.callActivity("mirror", x);
    });
  });
});

after(async () => {
  await s?.close();
});

test("activity chain returns every activity's result in order", { timeout: 60_000 }, async () => {
  const input = ["Tokyo", "Seattle", "London"];
  const id = await s.client.scheduleNewOrchestration("chain", input, uid("chain"));
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.equal(st.name, "chain");
  assert.equal(st.serializedInput, JSON.stringify(input));
  assert.deepEqual(JSON.parse(st.serializedOutput), ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]);
  assert.equal(st.failureDetails, undefined);
});

test("fan-out/fan-in with whenAll collects every result", { timeout: 60_000 }, async () => {
  const n = 50;
  const id = await s.client.scheduleNewOrchestration("fan_out", n, uid("fan"));
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  const out = JSON.parse(st.serializedOutput);
  assert.equal(out.count, n);
  assert.equal(out.sum, (n * (n + 1) * (2 * n + 1)) / 6); // 1² + … + n²
  assert.deepEqual(out.results, Array.from({ length: n }, (_, i) => (i + 1) ** 2));
});

test("child workflow (callSubOrchestrator) returns its result to the parent", { timeout: 60_000 }, async () => {
  const id = uid("parent");
  const childId = `${id}-child`;
  await s.client.scheduleNewOrchestration("parent", { n: 21, childId }, id);
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.deepEqual(JSON.parse(st.serializedOutput), { parent: id, fromChild: { child: childId, doubled: 42 } });

  const child = await s.client.getOrchestrationState(childId, true);
  assert.ok(child, "the child instance exists on its own");
  assert.equal(child.runtimeStatus, COMPLETED, show(child));
  assert.equal(child.name, "child");
  assert.equal(child.serializedInput, "21");
});

test("child workflow with a generated ID", { timeout: 60_000 }, async () => {
  const id = uid("parent-gen");
  await s.client.scheduleNewOrchestration("parent", { n: 1 }, id);
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  const out = JSON.parse(st.serializedOutput);
  // The JS SDK derives child IDs as `<parent>:<4 hex digits of the action id>`.
  assert.equal(out.fromChild.child, `${id}:0001`);
  assert.equal(out.fromChild.doubled, 2);
});

test("an activity that throws fails the workflow with failure details", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("fails", "widgets", uid("fails"));
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, FAILED, show(st));
  assert.ok(st.failureDetails, `no failure details: ${show(st)}`);
  // The orchestrator did not catch the activity's error, so the SDK reports it as TaskFailedError
  // whose message embeds the activity's message.
  assert.equal(st.failureDetails.errorType, "TaskFailedError");
  assert.match(st.failureDetails.message, /out of widgets/);
  assert.ok(st.failureDetails.stackTrace, "stack trace is kept");
  assert.equal(st.serializedOutput, undefined);
  assert.throws(() => st.raiseIfFailed(), /out of widgets/);
});

test("the activity's own failure details reach the orchestrator", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("catches", "bolts", uid("catches"));
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.deepEqual(JSON.parse(st.serializedOutput), {
    caught: "InventoryError",
    message: "out of bolts",
    hasStack: true,
  });
});

test("a failing child workflow fails the parent's task with details", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("child_fails", "nuts", uid("child-fails"));
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  const out = JSON.parse(st.serializedOutput);
  assert.equal(out.caught, "TaskFailedError", JSON.stringify(out));
  assert.match(out.message, /out of nuts/);
});

test("an unregistered workflow name fails the instance", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("no_such_workflow", 1, uid("unregistered"));
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, FAILED, show(st));
  assert.equal(st.failureDetails?.errorType, "OrchestratorNotRegisteredError", show(st));
});

test("custom status is visible while running and after completion", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("status", undefined, uid("status"));
  // Leaving PENDING means the first turn (which set the status) is committed.
  const running = await waitStarted(s, id);
  assert.equal(running.serializedCustomStatus, "waiting for go", show(running));
  await s.client.raiseOrchestrationEvent(id, "go", "now");
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.equal(st.serializedCustomStatus, "got now");
  assert.equal(st.serializedOutput, '"now"');
});

test("the JS client's epoch-0 scheduledStartTimestamp starts immediately", { timeout: 60_000 }, async () => {
  // scheduleNewOrchestration always sends scheduledStartTimestamp = {} (1970-01-01T00:00:00Z)
  // when no start time is given; it must mean "now", not "wait" nor "created in 1970".
  const before = Date.now();
  const id = await s.client.scheduleNewOrchestration("echo", { v: 1 }, uid("epoch0"));
  const st = await waitDone(s, id, 10);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.equal(st.serializedOutput, JSON.stringify({ v: 1 }));
  const skew = 5_000;
  assert.ok(st.createdAt.getTime() >= before - skew, `createdAt is ${st.createdAt.toISOString()}`);
  assert.ok(st.lastUpdatedAt.getTime() >= st.createdAt.getTime(), show(st));
});

test("a start time in the future delays the start", { timeout: 60_000 }, async () => {
  const delayMs = 2_000;
  const before = Date.now();
  const startAt = new Date(before + delayMs);
  const id = await s.client.scheduleNewOrchestration("echo", "later", uid("scheduled"), startAt);
  const early = await s.client.getOrchestrationState(id, true);
  assert.ok(early, "the scheduled instance exists right away");
  assert.equal(early.runtimeStatus, PENDING, show(early));
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  // Timestamps have millisecond or coarser precision on the way; allow for rounding.
  const elapsed = Date.now() - before;
  assert.ok(elapsed >= delayMs - 50, `completed after ${elapsed} ms, before its start time`);
});

test("many instances run concurrently, each with its own result", { timeout: 90_000 }, async () => {
  const n = 25;
  const ids = await Promise.all(
    Array.from({ length: n }, (_, i) => s.client.scheduleNewOrchestration("chain", [`a${i}`, `b${i}`], uid("many"))),
  );
  const states = await Promise.all(ids.map((id) => waitDone(s, id, 45)));
  states.forEach((st, i) => {
    assert.equal(st.runtimeStatus, COMPLETED, show(st));
    assert.deepEqual(JSON.parse(st.serializedOutput), [`Hello a${i}!`, `Hello b${i}!`], show(st));
  });
});

test("payloads round-trip exactly: unicode, nesting, 1 MiB", { timeout: 60_000 }, async () => {
  const odd = { text: "zażółć gęślą jaźń — 東京 🚀", quote: '"\\n', nested: [[1, { x: null }], true], n: 1.5e-7 };
  const id1 = await s.client.scheduleNewOrchestration("mirror_wf", odd, uid("unicode"));
  const st1 = await waitDone(s, id1);
  assert.equal(st1.runtimeStatus, COMPLETED, show(st1));
  assert.equal(st1.serializedInput, JSON.stringify(odd));
  assert.equal(st1.serializedOutput, JSON.stringify(odd));

  const big = "x".repeat(1024 * 1024);
  const id2 = await s.client.scheduleNewOrchestration("mirror_wf", big, uid("big"));
  const st2 = await waitDone(s, id2);
  assert.equal(st2.runtimeStatus, COMPLETED, `status ${st2.runtimeStatus}, failure ${show(st2)}`);
  assert.equal(st2.serializedOutput.length, big.length + 2);
  assert.equal(JSON.parse(st2.serializedOutput), big);
});

test("an input over the payload limit is refused and creates nothing", { timeout: 60_000 }, async () => {
  // weft dev's default limit is 4 MiB per payload.
  const id = uid("oversized");
  const huge = "y".repeat(5 * 1024 * 1024);
  await assert.rejects(s.client.scheduleNewOrchestration("echo", huge, id), (e) => {
    assert.ok(typeof e.code === "number" && e.code !== 0, `not a gRPC error: ${e}`);
    assert.match(e.details ?? e.message, /limit|large|size|exceed/i, `unclear message: ${e.details}`);
    return true;
  });
  assert.equal(await s.client.getOrchestrationState(id, true), undefined);
});
