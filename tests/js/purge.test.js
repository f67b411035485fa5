// @dapr/durabletask-js 1.0 `purgeOrchestration(criteria)` against `weft dev`: purge by created-time
// range and runtime status deletes exactly the finished instances that match and never a running
// one (daprd answers UNIMPLEMENTED here).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { PurgeInstanceCriteria } from "@dapr/durabletask-js/orchestration/orchestration-purge-criteria.js";
import { OrchestrationStatus, startSession, waitDone, waitStarted, show, uid } from "./harness.js";

const { COMPLETED, FAILED, RUNNING } = OrchestrationStatus;

let s;

before(async () => {
  s = await startSession((w) => {
    w.addNamedOrchestrator("echo", async function* (_ctx, x) {
      return x;
    });
    w.addNamedOrchestrator("boom", async function* () {
      throw new Error("boom");
    });
    w.addNamedOrchestrator("gate", async function* (ctx) {
      return yield ctx.waitForExternalEvent("open");
    });
  });
});

after(async () => {
  await s?.close();
});

async function finished(name, prefix, want) {
  const id = await s.client.scheduleNewOrchestration(name, prefix, uid(prefix));
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, want, show(st));
  return id;
}

async function exists(id) {
  return (await s.client.getOrchestrationState(id, false)) !== undefined;
}

function criteria({ from, to, statuses = [] }) {
  const c = new PurgeInstanceCriteria();
  c.setCreatedTimeFrom(from);
  c.setCreatedTimeTo(to);
  c.setRuntimeStatusList(statuses);
  return c;
}

test("purge by filter deletes exactly the finished instances that match", { timeout: 90_000 }, async () => {
  const early = [await finished("echo", "early", COMPLETED), await finished("echo", "early", COMPLETED)];
  const earlyFailed = await finished("boom", "early-failed", FAILED);
  const running = await s.client.scheduleNewOrchestration("gate", undefined, uid("running"));
  await waitStarted(s, running);
  // Created-time boundary: everything above was created before it, everything below after.
  const cut = new Date();
  for (let i = 0; i < 1000 && Date.now() <= cut.getTime(); i++) await new Promise(setImmediate);
  const late = await finished("echo", "late", COMPLETED);
  const lateFailed = await finished("boom", "late-failed", FAILED);

  // Completed before the cut: the two early ones only.
  let res = await s.client.purgeOrchestration(criteria({ to: cut, statuses: [COMPLETED] }));
  assert.equal(res?.deletedInstanceCount, 2);
  for (const id of early) assert.equal(await exists(id), false, `${id} should be purged`);
  for (const id of [earlyFailed, running, late, lateFailed]) assert.ok(await exists(id), `${id} kept`);

  // Failed after the cut.
  res = await s.client.purgeOrchestration(criteria({ from: cut, statuses: [FAILED] }));
  assert.equal(res?.deletedInstanceCount, 1);
  assert.equal(await exists(lateFailed), false);
  assert.ok(await exists(earlyFailed));

  // Asking for RUNNING too never touches a running instance.
  res = await s.client.purgeOrchestration(criteria({ statuses: [RUNNING, COMPLETED, FAILED] }));
  assert.equal(res?.deletedInstanceCount, 2, "the late completed and the early failed");
  assert.equal(await exists(late), false);
  assert.equal(await exists(earlyFailed), false);
  const still = await s.client.getOrchestrationState(running, false);
  assert.equal(still?.runtimeStatus, RUNNING, "the running instance is untouched");

  // Nothing left to purge: zero, not an error.
  res = await s.client.purgeOrchestration(criteria({}));
  assert.equal(res?.deletedInstanceCount, 0);
  await s.client.raiseOrchestrationEvent(running, "open", 1);
  assert.equal((await waitDone(s, running)).runtimeStatus, COMPLETED);
});
