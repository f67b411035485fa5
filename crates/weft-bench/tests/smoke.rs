//! Proves the benchmark runs end to end: a tiny workload (5 workflows × 3 steps, plus two
//! sequential latency runs) on a SQLite file, through the same code the binary uses. No timing
//! assertions — only that every workflow completed and the figures are filled in.

use std::time::Duration;
use weft_bench::{BenchStore, Plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_workload_completes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = BenchStore::sqlite(&dir.path().join("smoke.db")).unwrap();
    let plan = Plan {
        workflows: 5,
        steps: 3,
        concurrency: 4,
        latency_runs: 2,
        throughput: true,
        warmup: 1,
    };
    let rows = tokio::time::timeout(Duration::from_secs(60), weft_bench::run(store, &plan))
        .await
        .expect("the benchmark finished within 60 s")
        .expect("the benchmark succeeded");
    print!("{}", weft_bench::table(&rows));
    assert_eq!(rows.len(), 2);
    let tp = &rows[0];
    assert_eq!((tp.workload, tp.backend), ("throughput", "sqlite"));
    assert_eq!(tp.completed, 5, "all throughput workflows completed");
    assert!(tp.commits > 0 && tp.steps_per_sec > 0.0);
    let lat = &rows[1];
    assert_eq!(lat.workload, "latency");
    assert_eq!(lat.completed, 2, "all latency workflows completed");
    assert!(lat.p50 > Duration::ZERO);
}
