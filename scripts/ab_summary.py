"""Median table of an A/B run of weft-bench (scripts/ab-bench.sh): per backend and figure, the
median of each side, B/A, and every run's value."""
import glob
import json
import statistics
import sys

FIGURES = (("throughput", "steps_per_s"), ("throughput", "p50_ms"), ("latency", "p50_ms"),
           ("latency", "p99_ms"), ("latency", "commits_per_step"))


def values(out: str, backend: str, side: str, workload: str, key: str) -> list:
    got = []
    for f in sorted(glob.glob(f"{out}/{backend}-{side}-*.json")):
        with open(f) as fh:
            rows = json.load(fh)["rows"]
        got += [r[key] for r in rows if r["workload"] == workload and r[key] is not None]
    return got


def main(out: str) -> None:
    print("| backend | figure | A (median) | B (median) | B/A | A runs | B runs |")
    print("|---|---|---|---|---|---|---|")
    for backend in ("sqlite", "pg"):
        for workload, key in FIGURES:
            a, b = (values(out, backend, s, workload, key) for s in "ab")
            if not a or not b:
                continue
            ma, mb = statistics.median(a), statistics.median(b)
            fmt = (lambda v: f"{v:.3f}") if key == "commits_per_step" else (lambda v: f"{v:.1f}")
            print(f"| {backend} | {workload} {key} | {fmt(ma)} | {fmt(mb)} | {mb / ma:.2f} | "
                  f"{', '.join(fmt(v) for v in a)} | {', '.join(fmt(v) for v in b)} |")


if __name__ == "__main__":
    main(sys.argv[1])
