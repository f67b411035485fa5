// Work that was handed out but never acknowledged must be handed out again: when the worker goes
// away, and when `weft dev` is SIGKILLed and restarted on the same data dir and ports. Every
// workflow must then finish with the right output, and no task may complete twice although the
// worker reports some of them twice (once from before the crash, once after the re-dispatch).

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { TaskHubGrpcClient, TaskHubGrpcWorker } from "@dapr/durabletask-js";
import { OrchestrationStatus, http, show, startWeft, uid, waitDone, within } from "./harness.js";

/** The JS worker reconnects 5 s after its stream breaks; allow for that plus a slow machine. */
const REDISPATCH_TIMEOUT_MS = 30_000;

// Teardown in dependency order: the SDK before the sidecars (else the worker starts its
// reconnect loop), the sidecars before their data dir.
const sdk = [];
const sidecars = [];
const dirs = [];
after(async () => {
  await Promise.allSettled(sdk.map((x) => x.stop()));
  await Promise.allSettled(sidecars.map((w) => w.stop()));
  await Promise.allSettled(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** Resolves when `cond()` holds, re-checked whenever `notify` is called; rejects after `ms`. */
function condition(ms, what) {
  let resolve;
  let reject;
  const p = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  timer.unref();
  return {
    promise: p,
    check(cond) {
      if (cond()) {
        clearTimeout(timer);
        resolve();
      }
    },
  };
}

test("activities in flight survive a SIGKILL of weft dev, each completing once", { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "weft-js-crash-"));
  dirs.push(dir);
  const first = await startWeft({ dataDir: dir });
  sidecars.push(first);

  const n = 8;
  const calls = new Map(); // activity input -> number of invocations
  let release;
  const gate = new Promise((r) => {
    release = r;
  });
  const allStarted = condition(REDISPATCH_TIMEOUT_MS, `all ${n} activities to start`);
  const allRedispatched = condition(REDISPATCH_TIMEOUT_MS, `all ${n} activities to be dispatched again`);
  const count = () => [...calls.values()];

  const worker = new TaskHubGrpcWorker(first.grpc);
  worker.addNamedActivity("slow", async (_ctx, i) => {
    calls.set(i, (calls.get(i) ?? 0) + 1);
    allStarted.check(() => calls.size === n);
    allRedispatched.check(() => calls.size === n && count().every((c) => c >= 2));
    await gate;
    return i * 10;
  });
  worker.addNamedOrchestrator("crashy", async function* (ctx, i) {
    const a = yield ctx.callActivity("slow", i);
    return { i, a };
  });
  await worker.start();
  sdk.push(worker);
  const client = new TaskHubGrpcClient(first.grpc);
  sdk.push(client);

  const ids = [];
  for (let i = 1; i <= n; i++) ids.push(await client.scheduleNewOrchestration("crashy", i, uid("crash")));
  await allStarted.promise;

  // Crash while every activity is running, then restart on the same data and ports (the JS
  // worker only knows the old address).
  await first.kill();
  const [grpcPort, httpPort] = [first.grpc, first.http].map((a) => Number(a.split(":").pop()));
  const second = await startWeft({ dataDir: dir, grpcPort, httpPort });
  sidecars.push(second);
  const session = { client, weft: second };

  // The activities were never acknowledged, so the restarted sidecar must dispatch them again
  // once the worker is back. Only then are the old invocations released too, so their late
  // completions arrive as duplicates.
  await allRedispatched.promise.catch((e) => {
    throw new Error(`${e.message}; invocations per input: ${JSON.stringify([...calls])}\n${second.logTail()}`);
  });
  release();

  for (let k = 0; k < n; k++) {
    const st = await waitDone(session, ids[k], 30);
    assert.equal(st.runtimeStatus, OrchestrationStatus.COMPLETED, show(st));
    assert.deepEqual(JSON.parse(st.serializedOutput), { i: k + 1, a: (k + 1) * 10 });
  }
  for (const id of ids) {
    const h = await http(second, "GET", `/weft/v1/instances/${id}/history`);
    assert.equal(h.status, 200, JSON.stringify(h.body));
    const types = h.body.events.map((e) => e.type);
    const countOf = (t) => types.filter((x) => x === t).length;
    assert.equal(countOf("TaskScheduled"), 1, `${id}: ${types.join(", ")}`);
    assert.equal(countOf("TaskCompleted"), 1, `${id} completed its task more than once: ${types.join(", ")}`);
    assert.equal(countOf("ExecutionCompleted"), 1, `${id}: ${types.join(", ")}`);
  }
});

test("an activity whose worker goes away is dispatched to the next worker", { timeout: 60_000 }, async () => {
  const weft = await startWeft();
  sidecars.push(weft);
  let startedOnA;
  const aStarted = new Promise((r) => {
    startedOnA = r;
  });
  const job = async function* (ctx, x) {
    return yield ctx.callActivity("work", x);
  };

  // Worker A takes the activity and never finishes it.
  const a = new TaskHubGrpcWorker(weft.grpc);
  a.addNamedOrchestrator("job", job);
  a.addNamedActivity("work", () => {
    startedOnA();
    return new Promise(() => {});
  });
  await a.start();
  const client = new TaskHubGrpcClient(weft.grpc);
  sdk.push(client);
  const id = await client.scheduleNewOrchestration("job", 7, uid("handover"));
  await within(aStarted, 20_000, "worker A to start the activity");
  await a.stop();

  const b = new TaskHubGrpcWorker(weft.grpc);
  b.addNamedOrchestrator("job", job);
  b.addNamedActivity("work", (_ctx, x) => `done by B: ${x}`);
  await b.start();
  sdk.push(b);

  const st = await waitDone({ client, weft }, id);
  assert.equal(st.runtimeStatus, OrchestrationStatus.COMPLETED, show(st));
  assert.equal(st.serializedOutput, '"done by B: 7"');
});

test("a workflow turn whose worker goes away is dispatched to the next worker", { timeout: 60_000 }, async () => {
  const weft = await startWeft();
  sidecars.push(weft);
  let turnOnA;
  const aTurn = new Promise((r) => {
    turnOnA = r;
  });

  // Worker A receives the first turn and never answers it.
  const a = new TaskHubGrpcWorker(weft.grpc);
  a.addNamedOrchestrator("stuck_once", async function* () {
    turnOnA();
    await new Promise(() => {});
  });
  await a.start();
  const client = new TaskHubGrpcClient(weft.grpc);
  sdk.push(client);
  const id = await client.scheduleNewOrchestration("stuck_once", "x", uid("turn-handover"));
  await within(aTurn, 20_000, "worker A to receive the turn");
  await a.stop();

  const b = new TaskHubGrpcWorker(weft.grpc);
  b.addNamedOrchestrator("stuck_once", async function* (_ctx, x) {
    return `B ran ${x}`;
  });
  await b.start();
  sdk.push(b);

  const st = await waitDone({ client, weft }, id);
  assert.equal(st.runtimeStatus, OrchestrationStatus.COMPLETED, show(st));
  assert.equal(st.serializedOutput, '"B ran x"');
});
