//! The fold-answer mutation check (issue 19): with the engine answering a worker's
//! `CompleteActivityTask` before the turn that folds its result has committed, a crash in between
//! must make the crash simulation see an acknowledged activity dispatched again (see
//! docs/testing.md). `WEFT_SIM_FOLD_SEED=<s>` runs that seed instead of the fixed ones.

use std::io::Write;
use std::time::Duration;
use weft_sim::known_bugs::Enabled;
use weft_sim::node::Backend;
use weft_sim::{SeedConfig, run_seed};

/// Seeds whose workload folds an activity result early (the fold fault then crashes the engine
/// before that turn's checkpoint).
const SEEDS: [u64; 2] = [1, 2];

fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fold_answer_mutation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let seeds = match std::env::var("WEFT_SIM_FOLD_SEED") {
        Ok(s) => vec![s.trim().parse().expect("WEFT_SIM_FOLD_SEED is a number")],
        Err(_) => SEEDS.to_vec(),
    };
    let mut uncaught = String::new();
    for seed in seeds {
        let backend = Backend::Sqlite(dir.path().join(format!("fold-{seed}.db")));
        let mut cfg = SeedConfig::new(seed, backend, Enabled::from_env(), false);
        cfg.unguarded_fold_answer = true;
        cfg.deadline = Duration::from_secs(30);
        let r = run_seed(cfg).await;
        say(&format!("weft-sim fold mutation: {}", r.summary()));
        let caught = r
            .problems
            .iter()
            .find(|p| p.contains("re-dispatched after its result was acknowledged"));
        if let Some(p) = caught {
            say(&format!(
                "weft-sim: answering before the folding turn commits is caught by seed {seed} in \
                 {:.1}s: {p}",
                r.elapsed.as_secs_f64()
            ));
        } else {
            uncaught.push_str(&format!(
                "\nseed {seed} did not catch it (reproduce with `WEFT_SIM_FOLD_SEED={seed} cargo \
                 test -p weft-sim --test fold -- --nocapture`); its problems: {:?}",
                r.problems
            ));
        }
    }
    assert!(
        uncaught.is_empty(),
        "answering CompleteActivityTask before the folding turn commits went unnoticed:{uncaught}"
    );
}
