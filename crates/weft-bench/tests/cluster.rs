//! Cluster mode end to end, through the code `weft-bench --cluster N` runs: 3 placement nodes and
//! 1 or 3 `weft sidecar`s on a throwaway PostgreSQL (and once through HAProxy with the shared
//! worker permits), a tiny workload (10 workflows × 3 steps, 5 latency runs). Checks every
//! workflow completed and the figures are there; no timing assertions.
//!
//! Needs the `weft` binary (`WEFT_BIN`, else the one `cargo build --workspace` put next to this
//! test's target directory), PostgreSQL and, for the HAProxy case, `haproxy`: under `CI=true` a
//! missing one fails the test, otherwise it is skipped loudly.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use weft_bench::Plan;
use weft_bench::cluster::ClusterOptions;
use weft_bench::worker::Permits;
use weft_testkit::postgres::TEST_DATABASE_URL_ENV;
use weft_testkit::{haproxy::haproxy_bin, postgres_bin_dir, test_database};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `WEFT_BIN`, else `target/<profile>/weft` (this test runs from `target/<profile>/deps/`).
fn weft_bin() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("WEFT_BIN") {
        return Some(PathBuf::from(b));
    }
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("weft");
    p.is_file().then_some(p)
}

/// The `weft` binary when everything the case needs is installed; fails under CI when not.
fn prerequisites(haproxy: bool) -> Option<PathBuf> {
    let bin = weft_bin();
    let missing: Vec<&str> = [
        (
            bin.is_none(),
            "the weft binary (cargo build -p weft, or WEFT_BIN)",
        ),
        (
            postgres_bin_dir().is_none() && std::env::var_os(TEST_DATABASE_URL_ENV).is_none(),
            "PostgreSQL server binaries",
        ),
        (haproxy && haproxy_bin().is_none(), "haproxy"),
    ]
    .into_iter()
    .filter_map(|(m, what)| m.then_some(what))
    .collect();
    if missing.is_empty() {
        return bin;
    }
    assert!(!in_ci(), "CI=true and {missing:?} not available");
    eprintln!(
        "\n!!!!! SKIP: {missing:?} not available; the cluster bench test is NOT being run !!!!!\n"
    );
    None
}

fn tiny_plan(permits: Permits) -> Plan {
    Plan {
        workflows: 10,
        steps: 3,
        concurrency: 8,
        latency_runs: 5,
        throughput: true,
        warmup: 2,
        fanout: vec![],
        fanout_runs: 1,
        rss: None,
        python: None,
        permits,
        // Long enough for every backend's first transaction of a workload to be flushed (they
        // flush at most once a second while busy): the counts are positive, if not complete.
        pg_flush_wait: Duration::from_secs(2),
    }
}

fn run_cluster(sidecars: usize, via_haproxy: bool, permits: Permits) {
    let Some(weft_bin) = prerequisites(via_haproxy) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = rt.block_on(test_database()) else {
        return;
    };
    drop(rt);
    let opts = ClusterOptions {
        weft_bin,
        sidecars,
        placement_nodes: 3,
        via_haproxy,
        database_url: db.url.clone(),
        sidecar_args: vec![],
    };
    let plan = tiny_plan(permits);
    // Started on this test's thread, which outlives the cluster (its processes die with it).
    let report = weft_bench::cluster::bench(&opts, &plan, Instant::now() + Duration::from_secs(55))
        .expect("the cluster benchmark succeeded");
    let facts = report.cluster.as_ref().expect("cluster facts");
    let summary = weft_bench::cluster::summary(facts, &report.rows);
    print!("{}{summary}", weft_bench::table(&report.rows));
    assert_eq!(facts.sidecars, sidecars);
    assert!(facts.sidecars_with_workers >= 1);
    if !via_haproxy {
        assert_eq!(
            facts.sidecars_with_workers, sidecars,
            "a worker on every sidecar"
        );
    }
    assert_eq!(report.rows.len(), 2);
    let (tp, lat) = (&report.rows[0], &report.rows[1]);
    assert_eq!(
        (tp.workload.as_str(), tp.sidecar),
        ("throughput", "cluster")
    );
    assert_eq!(tp.completed, 10, "every throughput workflow completed");
    assert!(tp.steps_per_sec > 0.0 && tp.p50 > Duration::ZERO);
    assert_eq!(lat.workload, "latency");
    assert_eq!(lat.completed, 5, "every latency workflow completed");
    assert!(lat.p50 > Duration::ZERO && lat.p99 >= lat.p50);
    for r in &report.rows {
        let pg =
            r.pg.unwrap_or_else(|| panic!("{}: PostgreSQL figures", r.workload));
        assert!(
            pg.xact_commit > 0 && pg.write_xacts > 0,
            "{}: PostgreSQL transactions counted: {pg:?}",
            r.workload
        );
    }
    let json = weft_bench::json::report("cluster test", &report);
    assert_eq!(json["cluster"]["sidecars"], sidecars);
    assert!(json["rows"][0]["pg_xacts_per_step"].as_f64().unwrap() > 0.0);
    // Lease renewals alone make an idle cluster's background positive.
    assert!(
        json["cluster"]["background_pg_xacts_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(summary.contains("net of the idle cluster's"), "{summary}");
}

#[test]
fn one_sidecar() {
    run_cluster(1, false, Permits::Split);
}

#[test]
fn three_sidecars() {
    run_cluster(3, false, Permits::Split);
}

#[test]
fn two_sidecars_via_haproxy_with_shared_permits() {
    run_cluster(2, true, Permits::Shared);
}
