//! End-to-end tests of the `weft workflow …` commands against a real `weft dev` process.
//!
//! Each test starts its own `weft dev` (free ports, temporary data dir), waits for its ready line
//! and kills it by PID when dropped. No worker is connected, so instances never get past PENDING:
//! these tests cover what the CLI can observe without one (start, get, list, history, the
//! operations' exit codes, errors). Running workflows to completion is the job of the SDK suites
//! under `tests/`.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// Generous for a debug build on a busy 2-core machine; a healthy start takes well under 1 s.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// A running `weft dev`.
struct Dev {
    child: Child,
    http: String,
    dir: tempfile::TempDir,
}

impl Dev {
    fn start() -> Dev {
        Self::start_with_env(&[])
    }

    fn start_with_env(env: &[(&str, &str)]) -> Dev {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("dev.log")).expect("log file");
        let mut cmd = Command::new(WEFT);
        cmd.args([
            "dev",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--placement-port",
            "0",
            "--internal-port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
        scrub_env(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn weft dev");

        // Read stdout on a thread so the deadline holds even if the child prints nothing, and
        // keep draining it afterwards so the child never blocks on a full pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let mut dev = Dev {
            child,
            http: String::new(),
            dir,
        };
        let deadline = std::time::Instant::now() + READY_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(http) = parse_ready_line(&line) {
                        dev.http = format!("http://{http}");
                        return dev;
                    }
                }
                Err(_) => panic!(
                    "weft dev printed no ready line within {READY_DEADLINE:?}; its log:\n{}",
                    dev.log()
                ),
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dev.log")).unwrap_or_default()
    }

    /// Runs `weft workflow <args>` against this sidecar.
    fn wf(&self, args: &[&str]) -> Run {
        wf_at(&self.http, args, &[])
    }

    fn wf_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        wf_at(&self.http, args, env)
    }

    /// `get --output json`, asserting success.
    fn get_json(&self, id: &str) -> Value {
        self.wf(&["--output", "json", "get", id]).ok().json()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to the PID we spawned; wait reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `weft dev ready grpc=127.0.0.1:PORT http=127.0.0.1:PORT` → the http address.
fn parse_ready_line(line: &str) -> Option<String> {
    if !line.contains("ready") {
        return None;
    }
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .map(str::to_string)
}

/// The test's own environment must not leak into the processes under test.
fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("WEFT_") || k.starts_with("DAPR_") {
            cmd.env_remove(k.as_ref());
        }
    }
}

/// Output of one CLI run.
struct Run {
    args: Vec<String>,
    out: Output,
}

impl Run {
    fn code(&self) -> i32 {
        self.out.status.code().expect("exited, not killed")
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    fn describe(&self) -> String {
        format!(
            "weft workflow {:?} exited {:?}\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.out.status.code(),
            self.stdout(),
            self.stderr()
        )
    }
    /// Asserts exit code 0.
    fn ok(self) -> Self {
        assert_eq!(self.code(), 0, "{}", self.describe());
        self
    }
    fn expect_code(self, code: i32) -> Self {
        assert_eq!(self.code(), code, "{}", self.describe());
        self
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.describe()))
    }
}

fn wf_at(endpoint: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(WEFT);
    cmd.arg("workflow").args(args).stdin(Stdio::null());
    scrub_env(&mut cmd);
    // The timeout bounds every request, so a hung server fails the test instead of hanging it.
    cmd.env("WEFT_ENDPOINT", endpoint).env("WEFT_TIMEOUT", "20");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run weft workflow");
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        out,
    }
}

fn prop<'a>(instance: &'a Value, key: &str) -> Option<&'a str> {
    instance["properties"][key].as_str()
}

fn listed_ids(list: &Value) -> Vec<String> {
    list["instances"]
        .as_array()
        .expect("instances array")
        .iter()
        .map(|i| i["instanceID"].as_str().expect("instanceID").to_string())
        .collect()
}

#[test]
fn start_then_get_shows_name_status_and_verbatim_input() {
    let dev = Dev::start();
    let input = r#"{"who": "weft", "n": [1, 2]}"#;
    let run = dev
        .wf(&["start", "greet", "--id", "g-1", "--input", input])
        .ok();
    assert_eq!(run.stdout(), "Started workflow greet as instance g-1\n");

    let v = dev.get_json("g-1");
    assert_eq!(v["instanceID"], "g-1");
    assert_eq!(v["workflowName"], "greet");
    let status = v["runtimeStatus"].as_str().unwrap_or_default();
    assert!(
        matches!(status, "PENDING" | "RUNNING"),
        "status {status}: {v}"
    );
    assert_eq!(prop(&v, "dapr.workflow.input"), Some(input), "{v}");
    assert!(
        v["createdAt"].as_str().is_some_and(|t| !t.is_empty()),
        "{v}"
    );

    let human = dev.wf(&["get", "g-1"]).ok().stdout();
    assert!(human.contains("Instance ID:"), "{human}");
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("Workflow:") && l.ends_with(" greet")),
        "{human}"
    );
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("Input:") && l.ends_with(input)),
        "{human}"
    );
}

#[test]
fn start_without_id_returns_the_generated_id() {
    let dev = Dev::start();
    let v = dev.wf(&["--output", "json", "start", "noid"]).ok().json();
    let id = v["instanceID"].as_str().expect("instanceID").to_string();
    assert!(!id.is_empty());
    assert_eq!(dev.get_json(&id)["workflowName"], "noid");
}

#[test]
fn starting_an_active_id_again_fails_with_the_servers_error() {
    let dev = Dev::start();
    dev.wf(&["start", "wf", "--id", "dup"]).ok();
    let run = dev.wf(&["start", "wf", "--id", "dup"]).expect_code(1);
    assert!(
        run.stderr().contains("ERR_START_WORKFLOW"),
        "{}",
        run.describe()
    );
}

#[test]
fn list_filters_by_status_follows_pages_and_honours_limit() {
    let dev = Dev::start();
    // More than one server page (the CLI asks for at most 100 per request).
    let n = 105;
    for i in 0..n {
        dev.wf(&["start", "many", "--id", &format!("m-{i:03}")])
            .ok();
    }
    let all = dev.wf(&["--output", "json", "list"]).ok().json();
    let mut ids = listed_ids(&all);
    ids.sort();
    let mut expected: Vec<String> = (0..n).map(|i| format!("m-{i:03}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert!(all.get("next").is_none(), "complete listing has no cursor");

    let pending = dev
        .wf(&["--output", "json", "list", "--status", "pending"])
        .ok()
        .json();
    assert_eq!(listed_ids(&pending).len(), n, "no worker: all stay PENDING");
    for inst in pending["instances"].as_array().unwrap() {
        assert_eq!(inst["runtimeStatus"], "PENDING", "{inst}");
    }
    let completed = dev
        .wf(&["--output", "json", "list", "--status", "COMPLETED"])
        .ok()
        .json();
    assert_eq!(listed_ids(&completed), Vec::<String>::new());

    let limited = dev
        .wf(&["--output", "json", "list", "--limit", "7"])
        .ok()
        .json();
    assert_eq!(listed_ids(&limited).len(), 7);
    assert!(limited["next"].as_str().is_some(), "{limited}");

    let human = dev.wf(&["list", "--limit", "3"]).ok().stdout();
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines.len(), 4, "{human}");
    assert!(lines[0].starts_with("INSTANCE ID"), "{human}");
}

#[test]
fn list_of_an_empty_store_says_so() {
    let dev = Dev::start();
    let human = dev.wf(&["list"]).ok().stdout();
    assert_eq!(human, "No workflow instances found.\n");
    let v = dev.wf(&["--output", "json", "list"]).ok().json();
    assert_eq!(v, serde_json::json!({"instances": []}));
}

#[test]
fn operations_on_an_active_instance_succeed() {
    let dev = Dev::start();
    dev.wf(&["start", "ops", "--id", "op-1"]).ok();
    let run = dev
        .wf(&["raise", "op-1", "approve", "--data", r#"{"ok": true}"#])
        .ok();
    assert_eq!(run.stdout(), "Raised event approve on instance op-1\n");
    dev.wf(&["raise", "op-1", "no-data"]).ok();
    dev.wf(&["suspend", "op-1", "--reason", "maintenance"]).ok();
    dev.wf(&["resume", "op-1", "--reason", "done"]).ok();
    let run = dev.wf(&["terminate", "op-1"]).ok();
    assert_eq!(run.stdout(), "Termination requested for instance op-1\n");
    // Still known to the server afterwards.
    assert_eq!(dev.get_json("op-1")["instanceID"], "op-1");
}

#[test]
fn purge_of_an_active_instance_fails_clearly_and_keeps_it() {
    let dev = Dev::start();
    dev.wf(&["start", "p", "--id", "p-1"]).ok();
    let run = dev.wf(&["purge", "p-1"]).expect_code(1);
    let err = run.stderr();
    assert!(err.contains("ERR_PURGE_WORKFLOW"), "{}", run.describe());
    // The message says why: the instance has not completed.
    assert!(
        err.contains("p-1") && err.to_lowercase().contains("complet"),
        "{}",
        run.describe()
    );
    assert!(run.stdout().is_empty(), "{}", run.describe());
    assert_eq!(dev.get_json("p-1")["instanceID"], "p-1");
}

#[test]
fn unknown_instance_is_an_error_with_the_404_message() {
    let dev = Dev::start();
    let run = dev.wf(&["get", "nope"]).expect_code(1);
    let err = run.stderr();
    assert!(err.contains("404"), "{}", run.describe());
    assert!(
        err.contains("ERR_INSTANCE_ID_NOT_FOUND"),
        "{}",
        run.describe()
    );
    assert!(err.contains("nope"), "{}", run.describe());
    assert!(run.stdout().is_empty());

    let run = dev.wf(&["history", "nope"]).expect_code(1);
    assert!(run.stderr().contains("404"), "{}", run.describe());

    // The operations fail too (daprd answers 404 or 500 depending on the operation).
    for args in [
        &["raise", "nope", "ev"][..],
        &["suspend", "nope"],
        &["resume", "nope"],
        &["terminate", "nope"],
        &["purge", "nope"],
    ] {
        let run = dev.wf(args);
        assert_eq!(run.code(), 1, "{}", run.describe());
        assert!(run.stderr().contains("ERR_"), "{}", run.describe());
    }
}

#[test]
fn history_of_a_new_instance_is_a_json_event_list() {
    let dev = Dev::start();
    dev.wf(&["start", "h", "--id", "h-1", "--input", "7"]).ok();
    let v = dev.wf(&["--output", "json", "history", "h-1"]).ok().json();
    assert_eq!(v["instanceID"], "h-1");
    let events = v["events"].as_array().expect("events array");
    for e in events {
        assert!(e["eventId"].is_i64(), "{e}");
        assert!(e["type"].is_string(), "{e}");
    }
    let human = dev.wf(&["history", "h-1"]).ok().stdout();
    if events.is_empty() {
        assert_eq!(human, "No history events.\n");
    } else {
        assert!(human.starts_with("ID"), "{human}");
        assert_eq!(human.lines().count(), events.len() + 1, "{human}");
    }
}

#[test]
fn json_output_parses_for_every_command() {
    let dev = Dev::start();
    let j = |args: &[&str]| {
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(args);
        dev.wf(&full).ok().json()
    };
    assert_eq!(
        j(&["start", "js", "--id", "j-1", "--input", "[1]"])["instanceID"],
        "j-1"
    );
    assert_eq!(j(&["get", "j-1"])["instanceID"], "j-1");
    assert!(j(&["list"])["instances"].is_array());
    assert!(j(&["history", "j-1"])["events"].is_array());
    for args in [
        &["raise", "j-1", "e", "--data", "1"][..],
        &["suspend", "j-1"],
        &["resume", "j-1"],
        &["terminate", "j-1"],
    ] {
        assert!(j(args).is_object(), "{args:?}");
    }
}

#[test]
fn env_vars_configure_every_flag() {
    let dev = Dev::start();
    let env = [
        ("WEFT_OUTPUT", "json"),
        ("WEFT_ID", "env-1"),
        ("WEFT_INPUT", r#""from env""#),
    ];
    let v = dev.wf_env(&["start", "envwf"], &env).ok().json();
    assert_eq!(v["instanceID"], "env-1");
    let v = dev
        .wf_env(&["get", "env-1"], &[("WEFT_OUTPUT", "json")])
        .ok()
        .json();
    assert_eq!(prop(&v, "dapr.workflow.input"), Some(r#""from env""#));
    let v = dev
        .wf_env(
            &["list"],
            &[
                ("WEFT_OUTPUT", "json"),
                ("WEFT_STATUS", "pending"),
                ("WEFT_LIMIT", "1"),
            ],
        )
        .ok()
        .json();
    assert_eq!(listed_ids(&v), ["env-1"]);
    // An invalid value from the environment is rejected like one from the command line.
    dev.wf_env(&["start", "envwf"], &[("WEFT_INPUT", "{oops")])
        .expect_code(2);
}

/// Nothing may be sent when the input is invalid: the endpoint is a listener we own, and it must
/// see no connection at all.
#[test]
fn invalid_json_exits_2_without_contacting_the_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    for args in [
        &["start", "wf", "--input", "{not json"][..],
        &["start", "wf", "--input", "bare words"],
        &["raise", "id", "ev", "--data", "[1,"],
        &["start", "wf", "--id", "bad id!"],
    ] {
        let run = wf_at(&endpoint, args, &[]).expect_code(2);
        assert!(run.stdout().is_empty(), "{}", run.describe());
        assert!(!run.stderr().is_empty(), "{}", run.describe());
    }
    let run = wf_at(&endpoint, &["start", "wf", "--input", "{x"], &[]);
    assert!(
        run.stderr().contains("not valid JSON"),
        "{}",
        run.describe()
    );
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the CLI connected although its input was invalid: {other:?}"),
    }
}

#[test]
fn unreachable_sidecar_exits_3_naming_the_endpoint() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let run = wf_at(&endpoint, &["get", "x"], &[]).expect_code(3);
    assert!(run.stderr().contains(&endpoint), "{}", run.describe());
    assert!(run.stderr().contains("refused"), "{}", run.describe());
}

#[test]
fn api_token_is_required_when_the_sidecar_has_one() {
    let dev = Dev::start_with_env(&[("DAPR_API_TOKEN", "s3cret")]);
    let run = dev.wf(&["list"]).expect_code(1);
    assert!(run.stderr().contains("401"), "{}", run.describe());
    dev.wf(&["--api-token", "s3cret", "list"]).ok();
    dev.wf_env(&["list"], &[("WEFT_API_TOKEN", "s3cret")]).ok();
    dev.wf_env(&["list"], &[("DAPR_API_TOKEN", "s3cret")]).ok();
    dev.wf(&["--api-token", "wrong", "list"]).expect_code(1);
}

#[test]
fn ready_line_parsing() {
    assert_eq!(
        parse_ready_line("weft dev ready grpc=127.0.0.1:1 http=127.0.0.1:2").as_deref(),
        Some("127.0.0.1:2")
    );
    assert_eq!(parse_ready_line("starting http=1"), None);
}

#[test]
fn json_log_format_writes_one_object_per_line() {
    let dev = Dev::start_with_env(&[
        ("WEFT_LOG_FORMAT", "json"),
        ("RUST_LOG", "info,weft_sidecar=debug"),
    ]);
    dev.wf(&["start", "wf", "--id", "json-log"]).ok();
    let log = dev.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "too few log lines:\n{log}");
    for line in &lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "message", "target"] {
            assert!(v.get(key).is_some(), "no `{key}` in {line}");
        }
    }
    // Lines about an instance carry its ID as a field of their own.
    assert!(
        lines.iter().any(|l| l.contains(r#""instance":"json-log""#)),
        "no line names the instance as a field:\n{log}"
    );
}
