//! `--config` and `weft config check`: bad files are refused before anything starts, with one
//! message naming the key and its line, and exit code 2; good files are accepted.

use std::process::{Command, Output, Stdio};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

const HEAD: &str = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec:\n  workflow:\n";

fn weft(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(WEFT);
    cmd.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("WEFT_") || k.starts_with("DAPR_") {
            cmd.env_remove(k.as_ref());
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run weft")
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// The refusal every entry point must give for `text`: exit 2, and stderr naming each of `words`.
fn assert_refused(text: &str, words: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "bad.yaml", text);
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let dev_args = [
        "dev",
        "--config",
        &file,
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--placement-port",
        "0",
        "--data-dir",
        data,
    ];
    // A placement address so the one error is the configuration's (nothing is contacted).
    let sidecar_env = [
        ("WEFT_CONFIG", file.as_str()),
        ("WEFT_PLACEMENT", "127.0.0.1:1"),
    ];
    let runs = [
        ("config check", weft(&["config", "check", &file], &[])),
        ("dev --config", weft(&dev_args, &[])),
        (
            "sidecar with WEFT_CONFIG",
            weft(
                &["sidecar", "--database-url", "postgres://127.0.0.1:1/none"],
                &sidecar_env,
            ),
        ),
    ];
    for (what, out) in runs {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        let first_error: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(first_error.len(), 1, "{what}: one message expected: {err}");
        for w in words {
            assert!(err.contains(w), "{what}: {w:?} missing from: {err}");
        }
        assert!(err.contains("bad.yaml"), "{what}: file not named: {err}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "nothing may start on a bad config"
    );
}

#[test]
fn unknown_key_is_refused_with_its_line() {
    assert_refused(
        &format!("{HEAD}    maxConcurrentActivityInvocations: 3\n    maxConcurentWorkflows: 2\n"),
        &["maxConcurentWorkflows", "line 6"],
    );
}

#[test]
fn negative_limit_is_refused() {
    assert_refused(
        &format!("{HEAD}    maxConcurrentWorkflowInvocations: -1\n"),
        &["maxConcurrentWorkflowInvocations", "at least 1", "line 5"],
    );
    assert_refused(
        &format!(
            "{HEAD}    activityConcurrencyLimits:\n      - name: charge\n        maxConcurrent: -3\n"
        ),
        &["maxConcurrent", "line 7"],
    );
}

#[test]
fn wrong_kind_is_refused() {
    assert_refused(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nspec: {}\n",
        &["kind", "Component", "line 2"],
    );
}

#[test]
fn bad_duration_is_refused() {
    assert_refused(
        &format!("{HEAD}    stateRetentionPolicy:\n      completed: 2 days\n"),
        &["completed", "2 days", "line 6"],
    );
}

#[test]
fn missing_file_is_refused() {
    let out = weft(&["config", "check", "/nonexistent/weft.yaml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/weft.yaml"));
}

#[test]
fn a_good_file_checks_ok_and_lists_what_it_sets() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "ok.yaml",
        &format!(
            "{HEAD}    maxConcurrentActivityInvocations: 3\n    activityConcurrencyLimits:\n      - {{name: charge, maxConcurrent: 1}}\n    stateRetentionPolicy:\n      completed: 1h30m\n  tracing:\n    samplingRate: \"1\"\n"
        ),
    );
    let out = weft(&["config", "check", &file], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("maxConcurrentActivityInvocations: 3"),
        "{stdout}"
    );
    assert!(stdout.contains("charge=1"), "{stdout}");
    assert!(stdout.contains("completed=1h30m0s"), "{stdout}");
    assert!(
        stdout.contains("tracing: samplingRate=1 endpointAddress=unset (off)"),
        "{stdout}"
    );
}

#[test]
fn bad_override_flags_exit_2() {
    let out = weft(&["dev", "--max-concurrent-activity-invocations=0"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1"));
    let out = weft(&["dev"], &[("WEFT_RETENTION_COMPLETED", "soon")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("soon"));
}
