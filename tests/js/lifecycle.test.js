// @dapr/durabletask-js against `weft dev`: suspend/resume, terminate, continue-as-new (with and
// without carried events), purge, and instance-ID reuse.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  OrchestrationStatus,
  assertStaysIncomplete,
  startSession,
  waitDone,
  waitStarted,
  show,
  uid,
} from "./harness.js";

const { COMPLETED, RUNNING, SUSPENDED, TERMINATED } = OrchestrationStatus;

/** gRPC status code ALREADY_EXISTS. */
const ALREADY_EXISTS = 6;

let s;

before(async () => {
  s = await startSession((w) => {
    w.addNamedOrchestrator("gate", async function* (ctx) {
      return yield ctx.waitForExternalEvent("open");
    });
    w.addNamedOrchestrator("echo", async function* (_ctx, x) {
      return x;
    });
    w.addNamedActivity("inc", (_ctx, n) => n + 1);
    // Counts up to 5, one generation per step. The SDK drops a falsy continue-as-new input, so
    // counting starts at 1.
    w.addNamedOrchestrator("counter", async function* (ctx, n) {
      if (n >= 5) return n;
      const next = yield ctx.callActivity("inc", n);
      ctx.continueAsNew(next, false);
    });
    // Generation 1 buffers "tick" events nobody waits for, then continues as new carrying them;
    // generation 2 consumes the carried events.
    w.addNamedOrchestrator("carry", async function* (ctx, gen) {
      if (gen === 1) {
        yield ctx.waitForExternalEvent("start");
        ctx.continueAsNew(2, true);
        return;
      }
      const a = yield ctx.waitForExternalEvent("tick");
      const b = yield ctx.waitForExternalEvent("tick");
      return { gen, ticks: [a, b] };
    });
  });
});

after(async () => {
  await s?.close();
});

test("suspend holds a workflow, resume lets it finish", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("gate", undefined, uid("suspend"));
  await waitStarted(s, id);

  // Dapr's SuspendInstance returns once the instance is SUSPENDED.
  await s.client.suspendOrchestration(id);
  const suspended = await s.client.getOrchestrationState(id, true);
  assert.equal(suspended.runtimeStatus, SUSPENDED, show(suspended));

  // An event that would complete it must not while suspended.
  await s.client.raiseOrchestrationEvent(id, "open", "after resume");
  await assertStaysIncomplete(s, id, 2);
  const still = await s.client.getOrchestrationState(id, true);
  assert.equal(still.runtimeStatus, SUSPENDED, show(still));

  // ResumeInstance returns once the instance is RUNNING again (or already done).
  await s.client.resumeOrchestration(id);
  const resumed = await s.client.getOrchestrationState(id, true);
  assert.ok([RUNNING, COMPLETED].includes(resumed.runtimeStatus), show(resumed));

  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.equal(st.serializedOutput, '"after resume"');
});

test("terminate ends a running workflow with the given output", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("gate", undefined, uid("terminate"));
  await waitStarted(s, id);
  // Dapr's TerminateInstance returns once the instance is terminal.
  await s.client.terminateOrchestration(id, { reason: "stopped by test" });
  const st = await s.client.getOrchestrationState(id, true);
  assert.equal(st.runtimeStatus, TERMINATED, show(st));
  assert.equal(st.serializedOutput, JSON.stringify({ reason: "stopped by test" }));

  // A terminated instance stays terminated; a late event changes nothing.
  await s.client.raiseOrchestrationEvent(id, "open", "too late").catch(() => {});
  const again = await waitDone(s, id, 5);
  assert.equal(again.runtimeStatus, TERMINATED, show(again));
});

test("a suspended workflow can be terminated", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("gate", undefined, uid("suspend-term"));
  await waitStarted(s, id);
  await s.client.suspendOrchestration(id);
  await s.client.terminateOrchestration(id, "while suspended");
  const st = await waitDone(s, id, 10);
  assert.equal(st.runtimeStatus, TERMINATED, show(st));
  assert.equal(st.serializedOutput, '"while suspended"');
});

test("continue-as-new restarts with the new input until done", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("counter", 1, uid("can"));
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.equal(st.serializedOutput, "5");
  // The instance shows the input of its last generation.
  assert.equal(st.serializedInput, "5");
});

test("continue-as-new carries unprocessed events into the next generation", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("carry", 1, uid("carry"));
  await waitStarted(s, id);
  await s.client.raiseOrchestrationEvent(id, "tick", "a");
  await s.client.raiseOrchestrationEvent(id, "tick", "b");
  await s.client.raiseOrchestrationEvent(id, "start", true);
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.deepEqual(JSON.parse(st.serializedOutput), { gen: 2, ticks: ["a", "b"] });
});

test("purge deletes a completed instance", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("echo", "bye", uid("purge"));
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  const res = await s.client.purgeOrchestration(id);
  assert.equal(res?.deletedInstanceCount, 1);
  assert.equal(await s.client.getOrchestrationState(id, true), undefined);
});

test("purge refuses a running instance and keeps it", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("gate", undefined, uid("purge-active"));
  await waitStarted(s, id);
  // daprd answers an error ("orchestration has not yet completed"); a zero count would also be
  // acceptable to the SDK. Deleting it is not.
  let deleted = 0;
  try {
    deleted = (await s.client.purgeOrchestration(id))?.deletedInstanceCount ?? 0;
  } catch (e) {
    assert.ok(e.code !== undefined, `not a gRPC error: ${e}`);
  }
  assert.equal(deleted, 0);
  const still = await s.client.getOrchestrationState(id, true);
  assert.ok(still, "the running instance is still there");
  assert.equal(still.runtimeStatus, RUNNING, show(still));
  await s.client.terminateOrchestration(id);
});

test("purge of an unknown instance deletes nothing", { timeout: 60_000 }, async () => {
  let deleted = 0;
  try {
    deleted = (await s.client.purgeOrchestration(uid("never-existed")))?.deletedInstanceCount ?? 0;
  } catch (e) {
    assert.ok(e.code !== undefined, `not a gRPC error: ${e}`);
  }
  assert.equal(deleted, 0);
});

test("a finished instance ID can be reused, an active one cannot", { timeout: 60_000 }, async () => {
  const id = uid("reuse");
  await s.client.scheduleNewOrchestration("echo", "one", id);
  assert.equal((await waitDone(s, id)).serializedOutput, '"one"');
  await s.client.scheduleNewOrchestration("echo", "two", id);
  const second = await waitDone(s, id);
  assert.equal(second.runtimeStatus, COMPLETED, show(second));
  assert.equal(second.serializedOutput, '"two"', "the second run's result, not the first's");

  const active = uid("active");
  await s.client.scheduleNewOrchestration("gate", undefined, active);
  await waitStarted(s, active);
  await assert.rejects(s.client.scheduleNewOrchestration("gate", undefined, active), (e) => {
    assert.equal(e.code, ALREADY_EXISTS, `${e}`);
    return true;
  });
  await s.client.terminateOrchestration(active);
});
