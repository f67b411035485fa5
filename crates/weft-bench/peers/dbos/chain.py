"""DBOS Transact ten-step chain benchmark (issue 11 comparison).

A workflow of ten sequential @DBOS.step() calls, each returning its input + 1,
mirroring Weft's ten-step chain (crates/weft-bench/python/chain_bench.py).

  python chain.py --system-database-url URL [--latency-runs 100] [--warmup 10]
                  [--workflows 200] [--steps 10]

URL is postgresql://... or sqlite:///path. Prints one summary line per figure.
"""

import argparse
import os
import statistics
import sys
import time
import uuid

from dbos import DBOS, DBOSConfig

p = argparse.ArgumentParser()
p.add_argument("--system-database-url", required=True)
p.add_argument("--latency-runs", type=int, default=100)
p.add_argument("--warmup", type=int, default=10)
p.add_argument("--workflows", type=int, default=200)
p.add_argument("--steps", type=int, default=10)
args = p.parse_args()

STEPS = args.steps
URL = args.system_database_url
STORE = "postgres" if URL.startswith("postgres") else "sqlite"

config: DBOSConfig = {
    "name": "weft-chain-bench",
    "system_database_url": URL,
    "log_level": "WARNING",
}
DBOS(config=config)


@DBOS.step()
def inc(x: int) -> int:
    return x + 1


@DBOS.workflow()
def chain(x: int) -> int:
    for _ in range(STEPS):
        x = inc(x)
    return x


def xact_commit() -> "int | None":
    """pg_stat_database.xact_commit summed over all databases (PostgreSQL only)."""
    if STORE != "postgres":
        return None
    import psycopg

    u = URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(u, autocommit=True) as c:
        c.execute("select pg_stat_clear_snapshot()")
        return c.execute("select sum(xact_commit) from pg_stat_database").fetchone()[0]


def run_one(i: int) -> float:
    t0 = time.perf_counter()
    r = DBOS.start_workflow(chain, i).get_result()
    dt = time.perf_counter() - t0
    assert r == i + STEPS, r
    return dt


def pct(xs, p):
    """Nearest-rank percentile, p in (0, 1]; same as Weft's chain_bench.py."""
    xs = sorted(xs)
    k = max(1, -(-int(p * 1000) * len(xs) // 1000))
    return xs[min(k, len(xs)) - 1]


if __name__ == "__main__":
    DBOS.launch()
    print(f"dbos chain bench: store={STORE} steps={STEPS} python={sys.version.split()[0]}", flush=True)

    # (a) idle latency: one workflow at a time, start -> result.
    for i in range(args.warmup):
        run_one(i)
    time.sleep(1.0)  # let stats / background threads settle
    c0 = xact_commit()
    lat = [run_one(i) * 1000.0 for i in range(args.latency_runs)]
    c1 = xact_commit()
    extra = ""
    if c0 is not None:
        # The two stats queries themselves add a couple of commits; negligible over 100 runs.
        extra = f" xact_commit/wf={(c1 - c0) / args.latency_runs:.1f}"
    print(
        f"DBOS idle latency ({STORE}): n={len(lat)} p50={statistics.median(lat):.2f} ms "
        f"p99={pct(lat, 0.99):.2f} ms mean={statistics.mean(lat):.2f} ms{extra}",
        flush=True,
    )

    # (b) throughput: start N workflows concurrently, then wait for all.
    n = args.workflows
    t0 = time.perf_counter()
    handles = [DBOS.start_workflow(chain, i) for i in range(n)]
    for i, h in enumerate(handles):
        assert h.get_result() == i + STEPS
    dt = time.perf_counter() - t0
    print(
        f"DBOS throughput ({STORE}): {n} workflows x {STEPS} steps in {dt:.2f} s = "
        f"{n / dt:.1f} wf/s, {n * STEPS / dt:.0f} steps/s",
        flush=True,
    )
    DBOS.destroy()
    os._exit(0)
