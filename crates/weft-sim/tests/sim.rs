//! The seeded crash simulation, on SQLite and on a throwaway PostgreSQL. A fixed set of seeds
//! runs in `cargo test`; `WEFT_SIM_SEEDS=<n>` runs more, `WEFT_SIM_SEED=<s>` one (see
//! docs/testing.md). Each seed's figures go straight to stderr; a failure names its seed.

use std::io::Write;
use weft_sim::known_bugs::Enabled;
use weft_sim::node::Backend;
use weft_sim::{SeedConfig, SeedReport, run_seed};

/// Seeds per backend in the normal run.
const DEFAULT_SEEDS_SQLITE: u64 = 20;
const DEFAULT_SEEDS_POSTGRES: u64 = 10;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

fn say(line: &str) {
    // Past the test harness's capture: these figures belong in every run's output.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn seeds(default: u64) -> Vec<u64> {
    if let Some(s) = env_u64("WEFT_SIM_SEED") {
        return vec![s];
    }
    let n = env_u64("WEFT_SIM_SEEDS").unwrap_or(default);
    let first = env_u64("WEFT_SIM_FIRST_SEED").unwrap_or(1);
    (first..first + n).collect()
}

async fn run(
    backend_name: &str,
    default: u64,
    backend: impl AsyncFn(u64) -> Option<(Backend, Box<dyn std::any::Any + Send>)>,
) {
    let enabled = Enabled::from_env();
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for k in enabled.disabled() {
            let which = if k.bug.starts_with('N') {
                format!("new bug {}, found by this simulation", k.bug)
            } else {
                format!("bug {} of issue 7", k.bug)
            };
            say(&format!("weft-sim: {} off ({which}): {}", k.name, k.what));
        }
    });
    let parallel = env_u64("WEFT_SIM_PARALLEL").unwrap_or(2).max(1) as usize;
    let slow = std::env::var("WEFT_SIM_SLOW").is_ok_and(|v| v == "1");
    let seeds = seeds(default);
    let mut reports: Vec<SeedReport> = Vec::new();
    for chunk in seeds.chunks(parallel) {
        let mut runs = Vec::new();
        for &seed in chunk {
            let Some((b, guard)) = backend(seed).await else {
                return; // no PostgreSQL outside CI: the testkit printed a loud SKIP
            };
            let cfg = SeedConfig::new(seed, b, enabled.clone(), slow);
            runs.push(tokio::spawn(async move {
                let r = run_seed(cfg).await;
                drop(guard);
                r
            }));
        }
        for r in runs {
            let r = r.await.expect("a seed's run panicked");
            say(&format!("weft-sim: {}", r.summary()));
            reports.push(r);
        }
    }
    let calls: u64 = reports.iter().map(|r| r.faults.calls).sum();
    let sum = |f: fn(&SeedReport) -> u64| reports.iter().map(f).sum::<u64>();
    let crashes_before = sum(|r| r.faults.crashes_before);
    let crashes_after = sum(|r| r.faults.crashes_after);
    let errors_before = sum(|r| r.faults.errors_before);
    let errors_after = sum(|r| r.faults.errors_after);
    say(&format!(
        "weft-sim [{backend_name}]: {} seeds, {} instances, {calls} store calls; {} crashed the \
         engine ({crashes_before} before commit, {crashes_after} after commit before the reply), \
         {} failed with an error the engine survives ({errors_before} before, {errors_after} \
         after commit); {} engine starts",
        reports.len(),
        sum(|r| r.instances as u64),
        crashes_before + crashes_after,
        errors_before + errors_after,
        sum(|r| r.node.incarnations),
    ));
    let failed: Vec<&SeedReport> = reports.iter().filter(|r| !r.problems.is_empty()).collect();
    if !failed.is_empty() {
        let mut msg = String::new();
        for r in &failed {
            msg.push_str(&format!(
                "\nseed {} FAILED on {backend_name} — reproduce with \
                 `WEFT_SIM_SEED={} cargo test -p weft-sim --test sim -- {backend_name} --nocapture`\n",
                r.seed, r.seed
            ));
            for p in &r.problems {
                msg.push_str(&format!("  - {p}\n"));
            }
            for (n, op, f) in &r.faults.log {
                msg.push_str(&format!("    fault at call {n} of {op}: {f:?}\n"));
            }
            msg.push_str(&format!(
                "    store calls per operation: {:?}\n",
                r.faults.per_op
            ));
        }
        panic!("{} of {} seeds failed:{msg}", failed.len(), reports.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_path_buf();
    run("sqlite", DEFAULT_SEEDS_SQLITE, async |seed| {
        let b = Backend::Sqlite(root.join(format!("seed-{seed}.db")));
        Some((b, Box::new(()) as Box<dyn std::any::Any + Send>))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    run("postgres", DEFAULT_SEEDS_POSTGRES, async |_seed| {
        let db = weft_testkit::test_database().await?;
        let b = Backend::Postgres(db.url.clone());
        Some((b, Box::new(db) as Box<dyn std::any::Any + Send>))
    })
    .await;
}
