// @dapr/durabletask-js against `weft dev`: durable timers, external events, and whenAny of an
// event against a timeout timer.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { whenAll, whenAny } from "@dapr/durabletask-js/task/index.js";
import { OrchestrationStatus, startSession, waitDone, waitStarted, show, uid } from "./harness.js";

const { COMPLETED } = OrchestrationStatus;

/** Timer deadline relative to the workflow's deterministic clock (replay-safe). */
function deadline(ctx, ms) {
  return new Date(ctx.currentUtcDateTime.getTime() + ms);
}

let s;

before(async () => {
  s = await startSession((w) => {
    w.addNamedOrchestrator("sleepy", async function* (ctx, ms) {
      const startedAt = ctx.currentUtcDateTime.getTime();
      yield ctx.createTimer(deadline(ctx, ms));
      // After the timer, "now" is the turn's WorkflowStarted time, which must be past the deadline.
      return { waitedMs: ctx.currentUtcDateTime.getTime() - startedAt };
    });
    w.addNamedOrchestrator("two_timers", async function* (ctx) {
      yield whenAll([ctx.createTimer(deadline(ctx, 300)), ctx.createTimer(deadline(ctx, 600))]);
      return "both fired";
    });
    w.addNamedOrchestrator("approval", async function* (ctx, who) {
      const decision = yield ctx.waitForExternalEvent("approval");
      return { who, decision };
    });
    w.addNamedOrchestrator("three_events", async function* (ctx) {
      const got = [];
      for (let i = 0; i < 3; i++) got.push(yield ctx.waitForExternalEvent("item"));
      return got;
    });
    w.addNamedOrchestrator("ask_with_timeout", async function* (ctx, timeoutMs) {
      const answer = ctx.waitForExternalEvent("answer");
      const timeout = ctx.createTimer(deadline(ctx, timeoutMs));
      const winner = yield whenAny([answer, timeout]);
      if (winner === answer) return { answered: answer.getResult() };
      return "timed out";
    });
  });
});

after(async () => {
  await s?.close();
});

test("a durable timer fires at or after its deadline", { timeout: 60_000 }, async () => {
  const ms = 1_500;
  const before = Date.now();
  const id = await s.client.scheduleNewOrchestration("sleepy", ms, uid("timer"));
  const st = await waitDone(s, id);
  const elapsed = Date.now() - before;
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.ok(elapsed >= ms - 50, `completed after ${elapsed} ms, before the timer's ${ms} ms`);
  const { waitedMs } = JSON.parse(st.serializedOutput);
  assert.ok(waitedMs >= ms - 1, `workflow clock advanced only ${waitedMs} ms across the timer`);
});

test("two concurrent timers both fire", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("two_timers", undefined, uid("timers"));
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.equal(st.serializedOutput, '"both fired"');
});

test("an external event resumes a waiting workflow with its data", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("approval", "ana", uid("approval"));
  await waitStarted(s, id);
  await s.client.raiseOrchestrationEvent(id, "approval", { approved: true, by: "bob" });
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.deepEqual(JSON.parse(st.serializedOutput), { who: "ana", decision: { approved: true, by: "bob" } });
});

test("an event raised before the workflow waits for it is kept", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("approval", "early", uid("early"));
  // No wait for the start: the event may reach the sidecar before the first turn runs.
  await s.client.raiseOrchestrationEvent(id, "approval", "yes");
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.deepEqual(JSON.parse(st.serializedOutput), { who: "early", decision: "yes" });
});

test("events with the same name are delivered once each, in order", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("three_events", undefined, uid("three"));
  await waitStarted(s, id);
  for (const v of ["a", "b", "c"]) await s.client.raiseOrchestrationEvent(id, "item", v);
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.deepEqual(JSON.parse(st.serializedOutput), ["a", "b", "c"]);
});

test("whenAny: the event wins against a long timeout", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("ask_with_timeout", 60_000, uid("any-event"));
  await waitStarted(s, id);
  await s.client.raiseOrchestrationEvent(id, "answer", 42);
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.deepEqual(JSON.parse(st.serializedOutput), { answered: 42 });
});

test("whenAny: the timeout wins when no event comes", { timeout: 60_000 }, async () => {
  const before = Date.now();
  const id = await s.client.scheduleNewOrchestration("ask_with_timeout", 1_000, uid("any-timeout"));
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.equal(st.serializedOutput, '"timed out"');
  assert.ok(Date.now() - before >= 950, "timed out before the timer's deadline");
});

test("an event raised after completion changes nothing", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("approval", "done", uid("late"));
  await s.client.raiseOrchestrationEvent(id, "approval", "first");
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  // daprd drops events for completed instances; the call itself may succeed or fail, but the
  // result must not change.
  await s.client.raiseOrchestrationEvent(id, "approval", "second").catch(() => {});
  const again = await s.client.getOrchestrationState(id, true);
  assert.equal(again.runtimeStatus, COMPLETED, show(again));
  assert.equal(again.serializedOutput, st.serializedOutput);
});
