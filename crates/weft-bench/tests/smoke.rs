//! Proves the benchmark runs end to end: a tiny workload (5 workflows × 3 steps, two sequential
//! latency runs, two fan-outs of 20) on a SQLite file, through the same code the binary uses, with
//! either worker permit setting. No timing assertions — only that every workflow completed and the
//! figures are filled in.

use std::time::Duration;
use weft_bench::worker::Permits;
use weft_bench::{BenchStore, Plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_workload_completes_on_sqlite() {
    tiny_workload(Permits::Split).await;
}

/// The older worker (one permit pool, taken before the next item is read) still runs it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_workload_completes_with_shared_permits() {
    tiny_workload(Permits::Shared).await;
}

async fn tiny_workload(permits: Permits) {
    let dir = tempfile::tempdir().unwrap();
    let store = BenchStore::sqlite(&dir.path().join("smoke.db")).unwrap();
    let plan = Plan {
        workflows: 5,
        steps: 3,
        concurrency: 4,
        latency_runs: 2,
        throughput: true,
        warmup: 1,
        fanout: vec![20],
        fanout_runs: 2,
        rss: None,
        python: None,
        permits,
        pg_flush_wait: weft_bench::pgstat::FLUSH_WAIT,
    };
    let report = tokio::time::timeout(Duration::from_secs(60), weft_bench::run(store, &plan, None))
        .await
        .expect("the benchmark finished within 60 s")
        .expect("the benchmark succeeded");
    let rows = &report.rows;
    print!("{}", weft_bench::table(rows));
    assert_eq!(rows.len(), 3);
    let tp = &rows[0];
    assert_eq!((tp.workload.as_str(), tp.backend), ("throughput", "sqlite"));
    assert_eq!(tp.completed, 5, "all throughput workflows completed");
    assert!(tp.commits.unwrap() > 0 && tp.steps_per_sec > 0.0);
    let lat = &rows[1];
    assert_eq!(lat.workload, "latency");
    assert_eq!(lat.completed, 2, "all latency workflows completed");
    assert!(lat.p50 > Duration::ZERO);
    let fan = &rows[2];
    assert_eq!((fan.workload.as_str(), fan.steps), ("fanout-20", 20));
    assert_eq!(fan.completed, 2, "both fan-outs completed");
    let json = weft_bench::json::report("smoke", &report);
    assert_eq!(json["rows"].as_array().unwrap().len(), 3);
}
