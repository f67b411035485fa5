// Workflows run by the @dapr/durabletask-js worker, managed through the Dapr HTTP API and the
// `weft workflow` CLI: what those surfaces show for instances that really run, complete and fail
// (the CLI's own tests have no worker, so they cannot get this far).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  OrchestrationStatus,
  assertStaysIncomplete,
  http,
  startSession,
  waitDone,
  waitStarted,
  show,
  uid,
  weftCli,
} from "./harness.js";

const { COMPLETED, FAILED, TERMINATED } = OrchestrationStatus;

let s;

before(async () => {
  s = await startSession((w) => {
    w.addNamedActivity("hello", (_ctx, name) => `Hello ${name}!`);
    w.addNamedOrchestrator("greet", async function* (ctx, name) {
      ctx.setCustomStatus("greeting");
      return yield ctx.callActivity("hello", name);
    });
    w.addNamedOrchestrator("gate", async function* (ctx) {
      return yield ctx.waitForExternalEvent("open");
    });
    w.addNamedOrchestrator("parent_of_gate", async function* (ctx, childId) {
      return yield ctx.callSubOrchestrator("gate", undefined, childId);
    });
    w.addNamedActivity("explode", () => {
      throw new RangeError("kaboom");
    });
    w.addNamedOrchestrator("explodes", async function* (ctx) {
      yield ctx.callActivity("explode", 1);
    });
  });
});

after(async () => {
  await s?.close();
});

function assertCli(run, what) {
  assert.equal(run.code, 0, `${what} exited ${run.code}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`);
  return run;
}

test("HTTP start runs on the JS worker; HTTP get shows the result", { timeout: 60_000 }, async () => {
  const id = uid("http");
  const start = await http(s.weft, "POST", `/v1.0/workflows/dapr/greet/start?instanceID=${id}`, '"http"');
  assert.equal(start.status, 202, JSON.stringify(start.body));
  assert.deepEqual(start.body, { instanceID: id });

  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.equal(st.serializedOutput, '"Hello http!"');

  const get = await http(s.weft, "GET", `/v1.0/workflows/dapr/${id}`);
  assert.equal(get.status, 200, JSON.stringify(get.body));
  assert.equal(get.body.instanceID, id);
  assert.equal(get.body.workflowName, "greet");
  assert.equal(get.body.runtimeStatus, "COMPLETED");
  assert.deepEqual(get.body.properties, {
    "dapr.workflow.input": '"http"',
    "dapr.workflow.output": '"Hello http!"',
    "dapr.workflow.custom_status": "greeting",
  });
  for (const k of ["createdAt", "lastUpdatedAt"]) {
    assert.ok(!Number.isNaN(Date.parse(get.body[k])), `${k}: ${get.body[k]}`);
  }
});

test("a failed instance shows its failure over HTTP and in the CLI", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("explodes", undefined, uid("explodes"));
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, FAILED, show(st));

  const get = await http(s.weft, "GET", `/v1.0/workflows/dapr/${id}`);
  assert.equal(get.body.runtimeStatus, "FAILED", JSON.stringify(get.body));
  assert.equal(get.body.properties["dapr.workflow.failure.error_type"], "TaskFailedError");
  assert.match(get.body.properties["dapr.workflow.failure.error_message"], /kaboom/);

  const human = assertCli(await weftCli(s.weft, ["get", id]), "weft workflow get");
  assert.match(human.stdout, /^Status:\s+FAILED$/m);
  assert.match(human.stdout, /^Failure type:\s+TaskFailedError$/m);
  assert.match(human.stdout, /^Failure message:.*kaboom/m);
});

test("CLI start, get and history of a completed workflow", { timeout: 60_000 }, async () => {
  const id = uid("cli");
  const started = assertCli(
    await weftCli(s.weft, ["--output", "json", "start", "greet", "--id", id, "--input", '"cli"']),
    "weft workflow start",
  );
  assert.deepEqual(JSON.parse(started.stdout), { instanceID: id });

  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.equal(st.serializedOutput, '"Hello cli!"');

  const got = JSON.parse(assertCli(await weftCli(s.weft, ["--output", "json", "get", id]), "get").stdout);
  assert.equal(got.runtimeStatus, "COMPLETED");
  assert.equal(got.properties["dapr.workflow.output"], '"Hello cli!"');

  const hist = JSON.parse(assertCli(await weftCli(s.weft, ["--output", "json", "history", id]), "history").stdout);
  assert.equal(hist.instanceID, id);
  const types = hist.events.map((e) => e.type);
  for (const t of ["ExecutionStarted", "TaskScheduled", "TaskCompleted", "ExecutionCompleted"]) {
    assert.ok(types.includes(t), `history lacks ${t}: ${types.join(", ")}`);
  }
  const scheduled = hist.events.find((e) => e.type === "TaskScheduled");
  assert.equal(scheduled.name, "hello");
  assert.equal(scheduled.input, '"cli"');
  const completed = hist.events.find((e) => e.type === "TaskCompleted");
  assert.equal(completed.result, '"Hello cli!"');
  for (const e of hist.events) {
    assert.ok(Number.isInteger(e.eventId), JSON.stringify(e));
    assert.ok(!Number.isNaN(Date.parse(e.timestamp)), JSON.stringify(e));
  }

  const human = assertCli(await weftCli(s.weft, ["history", id]), "history (human)");
  assert.equal(human.stdout.trimEnd().split("\n").length, hist.events.length + 1, human.stdout);

  const listed = JSON.parse(
    assertCli(await weftCli(s.weft, ["--output", "json", "list", "--status", "completed"]), "list").stdout,
  );
  assert.ok(
    listed.instances.some((i) => i.instanceID === id),
    `list --status completed lacks ${id}`,
  );
});

test("CLI raise delivers the event data to a waiting workflow", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("gate", undefined, uid("cli-raise"));
  await waitStarted(s, id);
  assertCli(await weftCli(s.weft, ["raise", id, "open", "--data", '{"k": [1, 2]}']), "weft workflow raise");
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.deepEqual(JSON.parse(st.serializedOutput), { k: [1, 2] });
});

test("CLI suspend and resume", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("gate", undefined, uid("cli-suspend"));
  await waitStarted(s, id);
  assertCli(await weftCli(s.weft, ["suspend", id, "--reason", "test"]), "weft workflow suspend");
  // The HTTP API does not wait for the suspension, but it is queued before this event.
  await s.client.raiseOrchestrationEvent(id, "open", "x");
  await assertStaysIncomplete(s, id, 2);
  assertCli(await weftCli(s.weft, ["resume", id]), "weft workflow resume");
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
});

test("CLI terminate and purge", { timeout: 60_000 }, async () => {
  const id = await s.client.scheduleNewOrchestration("gate", undefined, uid("cli-term"));
  await waitStarted(s, id);
  assertCli(await weftCli(s.weft, ["terminate", id]), "weft workflow terminate");
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, TERMINATED, show(st));

  assertCli(await weftCli(s.weft, ["purge", id]), "weft workflow purge");
  assert.equal(await s.client.getOrchestrationState(id, true), undefined);
  const gone = await weftCli(s.weft, ["get", id]);
  assert.equal(gone.code, 1, gone.stderr);
  assert.match(gone.stderr, /ERR_INSTANCE_ID_NOT_FOUND/);
});

test("HTTP terminate and purge are recursive over child workflows", { timeout: 60_000 }, async () => {
  const id = uid("tree");
  const childId = `${id}-child`;
  await s.client.scheduleNewOrchestration("parent_of_gate", childId, id);
  // The child exists once the parent's first turn is committed, and runs once it has started.
  await waitStarted(s, id);
  await waitStarted(s, childId);

  assertCli(await weftCli(s.weft, ["terminate", id]), "weft workflow terminate");
  const parent = await waitDone(s, id);
  assert.equal(parent.runtimeStatus, TERMINATED, show(parent));
  const child = await waitDone(s, childId);
  assert.equal(child.runtimeStatus, TERMINATED, `Dapr's HTTP terminate is recursive: ${show(child)}`);

  assertCli(await weftCli(s.weft, ["purge", id]), "weft workflow purge");
  assert.equal(await s.client.getOrchestrationState(id, true), undefined);
  assert.equal(await s.client.getOrchestrationState(childId, true), undefined, "Dapr's HTTP purge is recursive");
});

test("the CLI reaches child instances whose generated IDs contain ':'", { timeout: 60_000 }, async () => {
  const id = uid("gen-child");
  await s.client.scheduleNewOrchestration("parent_of_gate", undefined, id);
  // The JS SDK names the child `<parent>:0001`; such IDs are valid on gRPC, not in HTTP start.
  const childId = `${id}:0001`;
  // The child is created with the parent's first checkpoint.
  await waitStarted(s, id);
  await waitStarted(s, childId);
  const got = JSON.parse(assertCli(await weftCli(s.weft, ["--output", "json", "get", childId]), "get").stdout);
  assert.equal(got.instanceID, childId);
  assert.equal(got.workflowName, "gate");
  assertCli(await weftCli(s.weft, ["raise", childId, "open", "--data", '"via cli"']), "raise");
  const st = await waitDone(s, id);
  assert.equal(st.runtimeStatus, COMPLETED, show(st));
  assert.equal(st.serializedOutput, '"via cli"');
});
