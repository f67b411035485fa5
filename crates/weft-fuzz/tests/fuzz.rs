//! One test per fuzz target: replays the committed corpus, then fuzzes for `WEFT_FUZZ_SECS`
//! (default 3 s per target). Any panic or broken invariant fails the test and leaves the input
//! in `crates/weft-fuzz/crashes/`.

use weft_fuzz::harness::Target;
use weft_fuzz::targets;

fn fuzz(target: &mut dyn Target) {
    let report = weft_fuzz::fuzz_for_budget(target).expect("fuzz run");
    assert!(report.iterations > 0, "{report}");
    assert!(
        report.crashes.is_empty(),
        "{report}: inputs in {:?}",
        report.crashes
    );
}

#[test]
fn durabletask() {
    fuzz(&mut targets::durabletask::target().expect("sidecar"));
}

#[test]
fn internal() {
    fuzz(&mut targets::internal::target().expect("sidecar"));
}

#[test]
fn placement() {
    fuzz(&mut targets::placement::Placement::default());
}

#[test]
fn http() {
    fuzz(&mut targets::http::target().expect("sidecar"));
}

#[test]
fn config() {
    fuzz(&mut targets::config::Config);
}

#[test]
fn core() {
    fuzz(&mut targets::core::Core);
}
