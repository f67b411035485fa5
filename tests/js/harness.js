// Shared test harness: start a real `weft dev`, connect the npm @dapr/durabletask-js worker and
// client to it, bounded waits, and teardown.
//
// Every test file starts its own `weft dev` (free ports, temporary data dir) so files are
// independent and can run in any order. Nothing here sleeps to synchronise: waits are the SDK's
// own long polls, each bounded by a timeout.

import { spawn, execFile } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { TaskHubGrpcClient, TaskHubGrpcWorker } from "@dapr/durabletask-js";
import { OrchestrationStatus } from "@dapr/durabletask-js/orchestration/enum/orchestration-status.enum.js";

export { OrchestrationStatus };

const here = path.dirname(fileURLToPath(import.meta.url));

/** The binary under test: $WEFT_BIN, else the workspace's debug build. */
export const WEFT_BIN = process.env.WEFT_BIN || path.resolve(here, "../../target/debug/weft");

/** Generous for a debug build on a busy 2-core machine; a healthy start takes well under 1 s. */
const READY_TIMEOUT_MS = 30_000;

/** Default bound for waiting on a workflow; every test workflow finishes in a few seconds. */
export const WAIT_SECS = 20;

// The SDK logs every work item (console.log/info) and every expected activity failure with its
// stack (console.error). Keep test output readable: unless WEFT_JS_VERBOSE is set, its logging is
// kept in a small ring buffer that failure messages include.
const sdkLog = [];
if (!process.env.WEFT_JS_VERBOSE) {
  for (const level of ["log", "info", "warn", "error", "debug"]) {
    console[level] = (...args) => {
      const line = args.map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : String(a))).join(" ");
      sdkLog.push(`[${level}] ${line}`);
      if (sdkLog.length > 200) sdkLog.shift();
    };
  }
}

/** The SDK's last log lines (empty when WEFT_JS_VERBOSE shows them live). */
export function sdkLogTail(n = 20) {
  return sdkLog.slice(-n).join("\n");
}

/** The parent's Dapr/Weft settings must not leak into the sidecar under test. */
function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("DAPR_") && !k.startsWith("WEFT_")) env[k] = v;
  }
  return { ...env, ...extra };
}

/**
 * Starts `weft dev` and waits for its ready line (`weft dev ready grpc=HOST:PORT http=HOST:PORT`).
 * By default it gets free ports and a fresh data dir that `stop()` deletes. A restart test passes
 * the `dataDir` (then kept: the caller owns it) and the ports the previous process had.
 */
export async function startWeft({ env = {}, dataDir, grpcPort = 0, httpPort = 0 } = {}) {
  if (!existsSync(WEFT_BIN)) {
    throw new Error(`weft binary not found at ${WEFT_BIN}: run \`cargo build -p weft\` or set WEFT_BIN`);
  }
  const ownsDir = !dataDir;
  dataDir ??= await mkdtemp(path.join(tmpdir(), "weft-js-"));
  const child = spawn(
    WEFT_BIN,
    [
      "dev",
      "--data-dir",
      path.join(dataDir, "data"),
      "--grpc-port",
      String(grpcPort),
      "--http-port",
      String(httpPort),
      "--placement-port",
      "0",
      "--internal-port",
      "0",
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: cleanEnv(env) },
  );
  let log = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d) => {
    log += d;
    // Keep the tail only; a chatty sidecar must not eat the test's memory.
    if (log.length > 2_000_000) log = log.slice(-1_000_000);
  });
  // readline keeps draining stdout after the ready line, so the child never blocks on a full pipe.
  const lines = readline.createInterface({ input: child.stdout });

  /** SIGKILL by PID, as a crash: no shutdown path runs. The data dir is kept. */
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, "exit");
      process.kill(child.pid, "SIGKILL");
      await exited;
    }
  };

  const stop = async () => {
    lines.close();
    await kill();
    if (ownsDir) await rm(dataDir, { recursive: true, force: true });
  };

  let addrs;
  try {
    addrs = await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`weft dev printed no ready line within ${READY_TIMEOUT_MS} ms; log:\n${log}`)),
        READY_TIMEOUT_MS,
      );
      lines.on("line", (line) => {
        const m = /\bready\b.*\bgrpc=(\S+).*\bhttp=(\S+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve({ grpc: m[1], http: m[2] });
        }
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`weft dev exited (${code ?? signal}) before it was ready; log:\n${log}`));
      });
      child.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    grpc: addrs.grpc,
    http: `http://${addrs.http}`,
    pid: child.pid,
    dataDir,
    log: () => log,
    /** Last lines of the sidecar's log, for failure messages. */
    logTail: (n = 30) =>
      log
        .replace(/\x1b\[[0-9;]*m/g, "") // tracing's colours
        .trimEnd()
        .split("\n")
        .slice(-n)
        .join("\n"),
    stop,
    kill,
  };
}

/**
 * A running `weft dev` with a started worker (registered by `register(worker)`) and a client.
 */
export async function startSession(register) {
  const weft = await startWeft();
  const worker = new TaskHubGrpcWorker(weft.grpc);
  const client = new TaskHubGrpcClient(weft.grpc);
  try {
    register(worker);
    await worker.start();
  } catch (e) {
    await weft.stop();
    throw e;
  }
  return {
    weft,
    worker,
    client,
    async close() {
      // Stop the SDK first so the worker does not enter its reconnect loop when the sidecar dies.
      await Promise.allSettled([worker.stop(), client.stop()]);
      await weft.stop();
    },
  };
}

/**
 * Runs `fn` with timers made non-blocking: the SDK's `waitFor…` methods race the call against a
 * `setTimeout` that is never cleared, which would keep the test process alive for the full
 * timeout after the test is done. The timer still fires if the wait really hangs.
 */
function withUnrefTimers(fn) {
  const original = globalThis.setTimeout;
  globalThis.setTimeout = (...args) => {
    const t = original(...args);
    t?.unref?.();
    return t;
  };
  try {
    return fn();
  } finally {
    globalThis.setTimeout = original;
  }
}

/** Readable summary of an OrchestrationState for assertion messages. */
export function show(st) {
  if (!st) return "undefined (no such instance)";
  return JSON.stringify({
    instanceId: st.instanceId,
    name: st.name,
    status: OrchestrationStatus[st.runtimeStatus] ?? st.runtimeStatus,
    input: st.serializedInput,
    output: st.serializedOutput,
    customStatus: st.serializedCustomStatus,
    failure: st.failureDetails && {
      type: st.failureDetails.errorType,
      message: st.failureDetails.message,
    },
  });
}

async function boundedWait(session, id, secs, what, call) {
  try {
    const st = await withUnrefTimers(call);
    if (!st) throw new Error(`instance ${id} does not exist`);
    return st;
  } catch (e) {
    let now;
    try {
      now = show(await session.client.getOrchestrationState(id, true));
    } catch (e2) {
      now = `(GetInstance failed: ${e2.message})`;
    }
    throw new Error(
      `waiting ${secs}s for instance ${id} to ${what} failed: ${e?.name ?? ""} ${e?.message ?? e}\n` +
        `state now: ${now}\nweft dev log tail:\n${session.weft.logTail()}\nSDK log tail:\n${sdkLogTail()}`,
    );
  }
}

/** Waits (bounded) until the instance is terminal; returns its state with payloads. */
export function waitDone(session, id, secs = WAIT_SECS) {
  return boundedWait(session, id, secs, "complete", () =>
    session.client.waitForOrchestrationCompletion(id, true, secs),
  );
}

/** Waits (bounded) until the instance has left PENDING; returns its state with payloads. */
export function waitStarted(session, id, secs = WAIT_SECS) {
  return boundedWait(session, id, secs, "start", () => session.client.waitForOrchestrationStart(id, true, secs));
}

/**
 * Asserts that the instance does NOT complete within `secs`: the wait must time out. This is an
 * assertion of non-progress (e.g. while suspended), not synchronisation.
 */
export async function assertStaysIncomplete(session, id, secs) {
  let st;
  try {
    st = await withUnrefTimers(() => session.client.waitForOrchestrationCompletion(id, true, secs));
  } catch (e) {
    if (e?.constructor?.name === "TimeoutError") return;
    throw e;
  }
  throw new Error(`instance ${id} completed although it should not have: ${show(st)}`);
}

/** Resolves like `promise`, or rejects if it takes longer than `ms` (the timer never holds the process). */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    timer.unref();
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A unique instance ID per call, readable in logs. */
let seq = 0;
export function uid(prefix) {
  seq += 1;
  return `${prefix}-${process.pid}-${seq}-${Math.random().toString(16).slice(2, 8)}`;
}

/** Runs `weft workflow <args>` against the session's HTTP API; resolves { code, stdout, stderr }. */
export async function weftCli(weft, args) {
  try {
    const { stdout, stderr } = await promisify(execFile)(WEFT_BIN, ["workflow", ...args], {
      env: cleanEnv({ WEFT_ENDPOINT: weft.http, WEFT_TIMEOUT: "20" }),
      timeout: 30_000,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    if (typeof e.code !== "number") throw e;
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** One HTTP request to the sidecar; resolves { status, body } with body parsed when JSON. */
export async function http(weft, method, urlPath, body) {
  const res = await fetch(weft.http + urlPath, {
    method,
    body,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    signal: AbortSignal.timeout(20_000),
  });
  const text = await res.text();
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // keep the raw text
  }
  return { status: res.status, body: parsed };
}
