// @dapr/durabletask-js against a `weft dev` that requires an API token (DAPR_API_TOKEN).
//
// The SDK has no token option, but it hands its options to the gRPC client, so a gRPC interceptor
// can add the `dapr-api-token` header: that is how @dapr/dapr's workflow client does it.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import grpc from "@grpc/grpc-js";
import { TaskHubGrpcClient, TaskHubGrpcWorker } from "@dapr/durabletask-js";
import { OrchestrationStatus, http, show, startWeft, uid, waitDone } from "./harness.js";

const TOKEN = "s3cret-token";

/** Adds `dapr-api-token: <token>` to every call, unary and streaming. */
function tokenInterceptor(token) {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("dapr-api-token", token);
        next(metadata, listener);
      },
    });
}

let weft;
let worker;
let client;
const extraClients = [];

before(async () => {
  weft = await startWeft({ env: { DAPR_API_TOKEN: TOKEN } });
  const options = { interceptors: [tokenInterceptor(TOKEN)] };
  worker = new TaskHubGrpcWorker(weft.grpc, options);
  worker.addNamedOrchestrator("echo", async function* (_ctx, x) {
    return x;
  });
  await worker.start();
  client = new TaskHubGrpcClient(weft.grpc, options);
});

after(async () => {
  await Promise.allSettled([worker?.stop(), client?.stop(), ...extraClients.map((c) => c.stop())]);
  await weft?.stop();
});

test("with the token, workflows run as usual", { timeout: 60_000 }, async () => {
  const id = await client.scheduleNewOrchestration("echo", { ok: true }, uid("auth"));
  const st = await waitDone({ client, weft }, id);
  assert.equal(st.runtimeStatus, OrchestrationStatus.COMPLETED, show(st));
  assert.equal(st.serializedOutput, '{"ok":true}');
});

test("without the token, or with a wrong one, calls are UNAUTHENTICATED", { timeout: 60_000 }, async () => {
  const bare = new TaskHubGrpcClient(weft.grpc);
  const wrong = new TaskHubGrpcClient(weft.grpc, { interceptors: [tokenInterceptor("nope")] });
  extraClients.push(bare, wrong);
  for (const [what, c] of [
    ["no token", bare],
    ["wrong token", wrong],
  ]) {
    await assert.rejects(c.getOrchestrationState("anything"), (e) => {
      assert.equal(e.code, grpc.status.UNAUTHENTICATED, `${what}: ${e}`);
      return true;
    });
    const id = uid("unauth");
    await assert.rejects(c.scheduleNewOrchestration("echo", 1, id), (e) => {
      assert.equal(e.code, grpc.status.UNAUTHENTICATED, `${what}: ${e}`);
      return true;
    });
    assert.equal(await client.getOrchestrationState(id), undefined, `${what}: nothing was created`);
  }
});

test("the HTTP API wants the dapr-api-token header; health checks do not", { timeout: 60_000 }, async () => {
  const denied = await http(weft, "GET", "/v1.0/workflows/dapr/whatever");
  assert.equal(denied.status, 401, JSON.stringify(denied.body));
  const res = await fetch(`${weft.http}/v1.0/workflows/dapr/whatever`, {
    headers: { "dapr-api-token": TOKEN },
    signal: AbortSignal.timeout(20_000),
  });
  assert.equal(res.status, 404, "authorised: the instance is simply unknown");
  await res.body?.cancel();
  const health = await fetch(`${weft.http}/v1.0/healthz`, { signal: AbortSignal.timeout(20_000) });
  assert.equal(health.status, 204);
});
