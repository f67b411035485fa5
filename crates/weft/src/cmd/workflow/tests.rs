//! Unit tests of `weft workflow`: argument parsing (the CLI contract), and request/response
//! handling against a tiny in-process HTTP stub, so none of them needs a real sidecar.

use super::*;
use clap::{CommandFactory, Parser, error::ErrorKind};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser, Debug)]
#[command(name = "weft")]
struct TestCli {
    #[command(subcommand)]
    cmd: TestCmd,
}

#[derive(clap::Subcommand, Debug)]
enum TestCmd {
    Workflow(WorkflowArgs),
}

fn parse(args: &[&str]) -> Result<WorkflowArgs, clap::Error> {
    let mut full = vec!["weft", "workflow"];
    full.extend_from_slice(args);
    TestCli::try_parse_from(full).map(|c| match c.cmd {
        TestCmd::Workflow(w) => w,
    })
}

fn parse_err(args: &[&str]) -> clap::Error {
    parse(args).expect_err("should be rejected")
}

#[test]
fn start_keeps_the_input_text_verbatim() {
    let a = parse(&[
        "start",
        "order_wf",
        "--id",
        "o-1",
        "--input",
        r#"{ "n" : 1 }"#,
    ])
    .unwrap();
    match a.command {
        WorkflowCommand::Start { name, id, input } => {
            assert_eq!(name, "order_wf");
            assert_eq!(id.as_deref(), Some("o-1"));
            assert_eq!(input.as_deref(), Some(r#"{ "n" : 1 }"#));
        }
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn invalid_json_is_a_usage_error_with_exit_code_2() {
    for args in [
        &["start", "wf", "--input", "{not json"][..],
        &["start", "wf", "--input", "hello"],
        &["start", "wf", "--input", ""],
        &["raise", "id", "ev", "--data", "[1,"],
    ] {
        let e = parse_err(args);
        assert_eq!(e.kind(), ErrorKind::ValueValidation, "{args:?}");
        assert_eq!(e.exit_code(), i32::from(EXIT_USAGE), "{args:?}");
        assert!(e.to_string().contains("not valid JSON"), "{e}");
    }
}

#[test]
fn any_json_value_is_accepted_as_payload() {
    for payload in ["42", "\"text\"", "null", "[1, 2]", "{\"a\": {\"b\": true}}"] {
        parse(&["raise", "id", "ev", "--data", payload]).unwrap();
        parse(&["start", "wf", "--input", payload]).unwrap();
    }
}

#[test]
fn start_checks_the_instance_id_rule() {
    parse(&["start", "wf", "--id", "Ab_9-x"]).unwrap();
    parse(&["start", "wf", "--id", &"a".repeat(64)]).unwrap();
    for bad in ["", "has space", "a/b", "x.y", &"a".repeat(65)] {
        let e = parse_err(&["start", "wf", "--id", bad]);
        assert_eq!(e.exit_code(), 2, "{bad:?}");
    }
    // Other commands take any ID, since gRPC-created instances may not follow the rule.
    parse(&["get", "x.y:z"]).unwrap();
}

#[test]
fn empty_names_and_ids_are_rejected() {
    for args in [
        &["start", ""][..],
        &["get", ""],
        &["raise", "id", ""],
        &["purge", " "],
    ] {
        assert_eq!(parse_err(args).exit_code(), 2, "{args:?}");
    }
}

#[test]
fn global_options_go_before_or_after_the_subcommand() {
    let a = parse(&["--endpoint", "http://h:1", "--output", "json", "get", "x"]).unwrap();
    assert_eq!(a.global.endpoint, "http://h:1");
    assert_eq!(a.global.output, OutputFormat::Json);
    let a = parse(&[
        "get",
        "x",
        "--endpoint",
        "http://h:2",
        "--output",
        "human",
        "--api-token",
        "t",
    ])
    .unwrap();
    assert_eq!(a.global.endpoint, "http://h:2");
    assert_eq!(a.global.output, OutputFormat::Human);
    assert_eq!(a.global.api_token.as_deref(), Some("t"));
    assert_eq!(parse_err(&["get", "x", "--output", "yaml"]).exit_code(), 2);
}

#[test]
fn list_normalises_status_and_checks_limit() {
    let a = parse(&["list", "--status", "running", "--limit", "3"]).unwrap();
    match a.command {
        WorkflowCommand::List { status, limit } => {
            assert_eq!(status.as_deref(), Some("RUNNING"));
            assert_eq!(limit, Some(3));
        }
        other => panic!("parsed as {other:?}"),
    }
    let e = parse_err(&["list", "--status", "bogus"]);
    assert!(e.to_string().contains("SUSPENDED"), "{e}");
    assert_eq!(parse_err(&["list", "--limit", "0"]).exit_code(), 2);
}

#[test]
fn timeout_must_be_positive_seconds() {
    assert_eq!(parse_timeout("2.5").unwrap(), Duration::from_millis(2500));
    for bad in ["0", "-1", "abc", "NaN", "1e9"] {
        assert!(parse_timeout(bad).is_err(), "{bad}");
    }
}

/// The contract: exactly these commands, each flag also settable as `WEFT_<FLAG>`.
#[test]
fn every_flag_has_a_weft_env_var() {
    let cmd = TestCli::command();
    let wf = cmd.find_subcommand("workflow").unwrap();
    let names: Vec<&str> = wf.get_subcommands().map(|c| c.get_name()).collect();
    assert_eq!(
        names,
        [
            "start",
            "get",
            "list",
            "history",
            "raise",
            "suspend",
            "resume",
            "terminate",
            "purge"
        ]
    );
    let mut checked = 0;
    for sub in std::iter::once(wf).chain(wf.get_subcommands()) {
        for arg in sub.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            let expected = format!("WEFT_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(expected.as_str()),
                "--{long} of `{}`",
                sub.get_name()
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} flags seen");
}

#[test]
fn documented_defaults() {
    let cmd = TestCli::command();
    let wf = cmd.find_subcommand("workflow").unwrap();
    let default_of = |id: &str| {
        let arg = wf.get_arguments().find(|a| a.get_id() == id).unwrap();
        arg.get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(default_of("endpoint"), ["http://127.0.0.1:3500"]);
    assert_eq!(default_of("output"), ["human"]);
    assert_eq!(default_of("timeout"), ["30"]);
}

#[test]
fn failures_map_to_documented_exit_codes() {
    let usage = Failure::Usage("x".into());
    let server = Failure::Api(ApiError::Server {
        status: reqwest::StatusCode::NOT_FOUND,
        code: None,
        message: String::new(),
        hint: None,
    });
    let unreachable = Failure::Api(ApiError::Unreachable {
        endpoint: "e".into(),
        detail: "d".into(),
    });
    let protocol = Failure::Api(ApiError::Protocol("p".into()));
    assert_eq!(usage.exit_code(), 2);
    assert_eq!(server.exit_code(), 1);
    assert_eq!(protocol.exit_code(), 1);
    assert_eq!(unreachable.exit_code(), 3);
}

// ----- against a stub HTTP server --------------------------------------------------------------

/// One request as the stub saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Responder = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// A minimal HTTP/1.1 server: one request per connection, answers from `respond`, records all.
async fn stub(respond: Box<Responder>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let respond: Arc<Responder> = Arc::from(respond);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            let respond = respond.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = sock.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.split("\r\n");
                let mut first = lines.next().unwrap().split(' ');
                let method = first.next().unwrap().to_string();
                let target = first.next().unwrap().to_string();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                while buf.len() < head_end + len {
                    let n = sock.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "client closed mid-body");
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
                let req = Seen {
                    method,
                    target,
                    headers,
                    body,
                };
                let (status, resp_body) = respond(&req);
                log.lock().unwrap().push(req);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{resp_body}",
                    resp_body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

async fn exec(endpoint: &str, args: &[&str]) -> Result<String, Failure> {
    let mut full = vec!["--endpoint", endpoint];
    full.extend_from_slice(args);
    execute(parse(&full).unwrap()).await
}

#[tokio::test]
async fn start_sends_name_id_input_and_token() {
    let (ep, seen) = stub(Box::new(|_| (202, r#"{"instanceID":"o-1"}"#.into()))).await;
    let out = exec(
        &ep,
        &[
            "start",
            "order wf",
            "--id",
            "o-1",
            "--input",
            r#"{ "n": 1 }"#,
            "--api-token",
            "sekret",
        ],
    )
    .await
    .unwrap();
    assert_eq!(out, "Started workflow order wf as instance o-1\n");
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.target,
        "/v1.0/workflows/dapr/order%20wf/start?instanceID=o-1"
    );
    assert_eq!(req.body, r#"{ "n": 1 }"#);
    assert_eq!(req.header("dapr-api-token"), Some("sekret"));
    assert_eq!(req.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn json_output_is_the_servers_json() {
    let body = r#"{"instanceID":"a","workflowName":"w","runtimeStatus":"RUNNING","properties":{"dapr.workflow.input":"1"}}"#;
    let (ep, _) = stub(Box::new(move |_| (200, body.into()))).await;
    let out = exec(&ep, &["--output", "json", "get", "a"]).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        serde_json::from_str::<Value>(body).unwrap()
    );
    let human = exec(&ep, &["get", "a"]).await.unwrap();
    assert!(human.contains("Status:        RUNNING\n"), "{human}");
}

#[tokio::test]
async fn server_errors_carry_code_and_message_and_exit_1() {
    let (ep, _) = stub(Box::new(|_| {
        (
            404,
            r#"{"errorCode":"ERR_INSTANCE_ID_NOT_FOUND","message":"unable to find workflow with the provided instance ID: nope"}"#
                .into(),
        )
    }))
    .await;
    let err = exec(&ep, &["get", "nope"]).await.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    let msg = err.to_string();
    assert!(msg.contains("404"), "{msg}");
    assert!(msg.contains("ERR_INSTANCE_ID_NOT_FOUND"), "{msg}");
    assert!(msg.contains("provided instance ID: nope"), "{msg}");
}

#[tokio::test]
async fn operations_hit_the_dapr_routes() {
    let (ep, seen) = stub(Box::new(|_| (202, String::new()))).await;
    for (args, expect) in [
        (
            &["raise", "i", "approve", "--data", "true"][..],
            "/v1.0/workflows/dapr/i/raiseEvent/approve",
        ),
        (
            &["suspend", "i", "--reason", "a b"],
            "/v1.0/workflows/dapr/i/pause?reason=a+b",
        ),
        (&["resume", "i"], "/v1.0/workflows/dapr/i/resume"),
        (&["terminate", "i"], "/v1.0/workflows/dapr/i/terminate"),
        (&["purge", "i"], "/v1.0/workflows/dapr/i/purge"),
    ] {
        let out = exec(&ep, &[&["--output", "json"], args].concat())
            .await
            .unwrap();
        assert_eq!(out, "{}\n", "{args:?}");
        let req = seen.lock().unwrap().pop().unwrap();
        assert_eq!((req.method.as_str(), req.target.as_str()), ("POST", expect));
    }
    exec(&ep, &["raise", "i", "approve", "--data", "true"])
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().pop().unwrap().body, "true");
}

/// Serves `total` instances named i000…, `page` at a time, honouring `limit` and `after`.
fn paged(total: usize, page: usize) -> Box<Responder> {
    Box::new(move |req: &Seen| {
        let url = reqwest::Url::parse(&format!("http://x{}", req.target)).unwrap();
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        let limit: usize = q["limit"].parse().unwrap();
        let start = q
            .get("after")
            .map_or(0, |a| a[1..].parse::<usize>().unwrap() + 1);
        let end = (start + limit.min(page)).min(total);
        let items: Vec<Value> = (start..end)
            .map(|i| serde_json::json!({"instanceID": format!("i{i:03}"), "runtimeStatus": "RUNNING"}))
            .collect();
        let mut body = serde_json::json!({ "instances": items });
        if end < total {
            body["next"] = Value::String(format!("i{:03}", end - 1));
        }
        (200, body.to_string())
    })
}

fn ids(out: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(out).unwrap();
    instances_of(&v)
        .iter()
        .map(|i| i["instanceID"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn list_follows_next_through_every_page() {
    let (ep, seen) = stub(paged(7, 3)).await;
    let out = exec(&ep, &["--output", "json", "list", "--status", "running"])
        .await
        .unwrap();
    assert_eq!(ids(&out).len(), 7);
    assert!(
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .get("next")
            .is_none()
    );
    let targets: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    assert_eq!(
        targets,
        [
            "/weft/v1/instances?limit=100&status=RUNNING",
            "/weft/v1/instances?limit=100&status=RUNNING&after=i002",
            "/weft/v1/instances?limit=100&status=RUNNING&after=i005",
        ]
    );
    let human = exec(&ep, &["list"]).await.unwrap();
    assert_eq!(human.lines().count(), 8, "{human}");
}

#[tokio::test]
async fn list_limit_stops_early_and_reports_the_cursor() {
    let (ep, _) = stub(paged(10, 3)).await;
    let out = exec(&ep, &["--output", "json", "list", "--limit", "4"])
        .await
        .unwrap();
    assert_eq!(ids(&out), ["i000", "i001", "i002", "i003"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["next"], "i003");
    let out = exec(&ep, &["--output", "json", "list", "--limit", "10"])
        .await
        .unwrap();
    assert_eq!(ids(&out).len(), 10);
}

#[tokio::test]
async fn list_limit_holds_when_the_server_ignores_it() {
    // Always answers a full page of 5 with a cursor, whatever `limit` says.
    let (ep, _) = stub(Box::new(|_| {
        let items: Vec<Value> = (0..5)
            .map(|i| serde_json::json!({"instanceID": format!("i{i:03}")}))
            .collect();
        (
            200,
            serde_json::json!({"instances": items, "next": "i004"}).to_string(),
        )
    }))
    .await;
    let out = exec(&ep, &["--output", "json", "list", "--limit", "2"])
        .await
        .unwrap();
    assert_eq!(ids(&out), ["i000", "i001"]);
    // The cursor continues after the last instance shown, not after the server's page.
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["next"], "i001");
}

#[tokio::test]
async fn list_refuses_a_cursor_that_does_not_move() {
    let (ep, _) = stub(Box::new(|_| {
        (200, r#"{"instances":[],"next":"same"}"#.into())
    }))
    .await;
    let err = exec(&ep, &["list"]).await.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("same"), "{err}");
}

#[tokio::test]
async fn list_on_a_non_weft_sidecar_says_so() {
    let (ep, _) = stub(Box::new(|_| (404, "404 page not found".into()))).await;
    let err = exec(&ep, &["list"]).await.unwrap_err();
    assert!(err.to_string().contains("Weft extension"), "{err}");
}

#[tokio::test]
async fn history_renders_a_table() {
    let body =
        r#"{"instanceID":"a","events":[{"eventId":-1,"timestamp":"t","type":"WorkflowStarted"}]}"#;
    let (ep, seen) = stub(Box::new(move |_| (200, body.into()))).await;
    let out = exec(&ep, &["history", "a"]).await.unwrap();
    assert!(out.starts_with("ID  TIMESTAMP  TYPE"), "{out}");
    assert_eq!(
        seen.lock().unwrap()[0].target,
        "/weft/v1/instances/a/history"
    );
}

#[tokio::test]
async fn bad_endpoint_is_a_usage_error() {
    let err = exec("https://h:1", &["get", "a"]).await.unwrap_err();
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn waiting_on_lists_unanswered_cross_app_work() {
    let h = serde_json::json!({"events": [
        {"eventId": -1, "type": "ExecutionStarted", "router": {"sourceAppID": "appa"}},
        {"eventId": 1, "type": "TaskScheduled", "name": "bill",
         "router": {"sourceAppID": "appa", "targetAppID": "appb"}},
        {"eventId": 2, "type": "TaskScheduled", "name": "local", "router": {"sourceAppID": "appa"}},
        {"eventId": 3, "type": "ChildWorkflowInstanceCreated", "name": "ship", "instanceId": "x:0003",
         "router": {"sourceAppID": "appa", "targetAppID": "appc"}},
        {"eventId": 4, "type": "TaskScheduled", "name": "done",
         "router": {"sourceAppID": "appa", "targetAppID": "appb"}},
        {"eventId": -1, "type": "TaskCompleted", "taskScheduledId": 4},
    ]});
    let w = super::render::waiting_on(&h);
    assert_eq!(
        w,
        vec![
            serde_json::json!({"app": "appb", "kind": "activity", "name": "bill", "id": "task 1"}),
            serde_json::json!({"app": "appc", "kind": "workflow", "name": "ship", "id": "x:0003"}),
        ]
    );
    let mut v = serde_json::json!({"instanceID": "x", "runtimeStatus": "RUNNING"});
    v["waitingOn"] = serde_json::Value::Array(w);
    let text = super::render::instance(&v);
    assert!(text.contains("Waiting on:"), "{text}");
    assert!(
        text.contains("app appb: activity 'bill' (task 1)"),
        "{text}"
    );
}
