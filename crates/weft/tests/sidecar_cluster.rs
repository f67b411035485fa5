//! Multi-process cluster smoke test: one `weft placement` node and two `weft sidecar` processes
//! on a throwaway PostgreSQL, each with a hand-written gRPC worker. A workflow started on one
//! sidecar runs on the one that owns it; a SIGTERM hands the leaver's instances over.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use weft_placement::PlacementTable;
use weft_placement::proto::placement::{HostInfo, Table};
use weft_proto::durabletask::task_hub_sidecar_service_client::TaskHubSidecarServiceClient as Client;
use weft_proto::durabletask::*;
use weft_sidecar::cluster::{ActorKind, Owner, Registry};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const APP: &str = "smoke";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Proc {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Proc {
    fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

fn tail(path: &std::path::Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    format!(
        "--- {} ---\n{}",
        path.display(),
        lines[lines.len().saturating_sub(40)..].join("\n")
    )
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGKILL of the PID this test spawned, then reap it.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Spawns a process, returning it and the fields of its ready line (`key=value` words).
fn spawn_ready(
    name: &str,
    dir: &std::path::Path,
    args: &[&str],
) -> (Proc, BTreeMap<String, String>) {
    let log = dir.join(format!("{name}.log"));
    let mut child = Command::new(WEFT)
        .args(args)
        .env("RUST_LOG", "info,openraft=warn")
        .env_remove("DAPR_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn weft");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let proc = Proc {
        child: Some(child),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(" ready ") => {
                let fields = line
                    .split_whitespace()
                    .filter_map(|w| w.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                return (proc, fields);
            }
            Ok(_) => {}
            Err(_) => panic!("{name} printed no ready line\n{}", proc.log_tail()),
        }
    }
}

fn spawn_placement(dir: &std::path::Path) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let log = dir.join("placement.log");
    let child = Command::new(WEFT)
        .args(["placement", "--id", "1", "--listen", &addr])
        .arg("--data-dir")
        .arg(dir.join("placement"))
        .args(["--initial-cluster", &format!("1={addr}")])
        .env("RUST_LOG", "info,openraft=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn weft placement");
    (
        Proc {
            child: Some(child),
            log,
        },
        addr,
    )
}

fn spawn_sidecar(
    name: &str,
    dir: &std::path::Path,
    db: &str,
    placement: &str,
) -> (Proc, BTreeMap<String, String>) {
    spawn_ready(
        name,
        dir,
        &[
            "sidecar",
            "--database-url",
            db,
            "--placement",
            placement,
            "--app-id",
            APP,
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--internal-port",
            "0",
            "--drain-timeout",
            "5s",
        ],
    )
}

/// `weft cluster status --output json`.
fn cluster_status(placement: &str) -> serde_json::Value {
    let out = Command::new(WEFT)
        .args([
            "cluster",
            "status",
            "--placement",
            placement,
            "--output",
            "json",
        ])
        .output()
        .expect("weft cluster status");
    assert!(out.status.success(), "cluster status failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("status json")
}

/// Hosts (internal address → actor types) of the status.
fn hosts(status: &serde_json::Value) -> BTreeMap<String, (String, Vec<String>, u64)> {
    status["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let types = h["actor_types"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(String::from))
                .collect();
            (
                h["address"].as_str().unwrap_or_default().to_string(),
                (
                    h["host_id"].as_str().unwrap_or_default().to_string(),
                    types,
                    h["acked_version"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

/// The owner registry as any sidecar computes it, rebuilt from `weft cluster status`.
fn registry_from(status: &serde_json::Value) -> Registry {
    let hosts = hosts(status)
        .into_iter()
        .map(|(address, (host_id, actor_types, _))| HostInfo {
            host_id,
            address,
            app_id: APP.into(),
            actor_types,
            weight: 1,
            zone: String::new(),
        })
        .collect();
    let table = PlacementTable::from_proto(Table {
        version: status["table_version"].as_u64().unwrap(),
        hosts,
        vnodes_per_host: 0,
        cluster_id: status["cluster_id"].as_str().unwrap_or_default().into(),
    })
    .unwrap();
    let r = Registry::placed("observer");
    r.apply(table);
    r
}

/// A minimal worker: each workflow schedules one activity and completes with its result; the
/// activity answers with this worker's name. Counts the instances it ran turns for.
fn worker(name: &'static str, grpc: String) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        let mut c = Client::connect(format!("http://{grpc}"))
            .await
            .expect("connect");
        let mut stream = c
            .get_work_items(GetWorkItemsRequest::default())
            .await
            .expect("stream")
            .into_inner();
        while let Ok(Some(item)) = stream.message().await {
            let token = item.completion_token.clone();
            match item.request {
                Some(work_item::Request::WorkflowRequest(r)) => {
                    seen2.lock().unwrap().push(r.instance_id.clone());
                    let result = r.new_events.iter().find_map(|e| match &e.event_type {
                        Some(history_event::EventType::TaskCompleted(t)) => t.result.clone(),
                        _ => None,
                    });
                    let action = match result {
                        None => {
                            workflow_action::WorkflowActionType::ScheduleTask(ScheduleTaskAction {
                                name: "who".into(),
                                ..Default::default()
                            })
                        }
                        Some(out) => workflow_action::WorkflowActionType::CompleteWorkflow(
                            CompleteWorkflowAction {
                                workflow_status: OrchestrationStatus::Completed as i32,
                                result: Some(out),
                                ..Default::default()
                            },
                        ),
                    };
                    let id = if result_is_first(&r) { 1 } else { 2 };
                    let _ = c
                        .complete_orchestrator_task(WorkflowResponse {
                            instance_id: r.instance_id,
                            actions: vec![WorkflowAction {
                                id,
                                workflow_action_type: Some(action),
                                router: None,
                            }],
                            completion_token: token,
                            ..Default::default()
                        })
                        .await;
                }
                Some(work_item::Request::ActivityRequest(a)) => {
                    let _ = c
                        .complete_activity_task(ActivityResponse {
                            instance_id: a
                                .workflow_instance
                                .map(|w| w.instance_id)
                                .unwrap_or_default(),
                            task_id: a.task_id,
                            result: Some(format!("\"{name}\"")),
                            completion_token: token,
                            ..Default::default()
                        })
                        .await;
                }
                _ => {}
            }
        }
    });
    seen
}

/// The first turn (no task scheduled yet) gets action ID 1.
fn result_is_first(r: &WorkflowRequest) -> bool {
    !r.past_events.iter().chain(&r.new_events).any(|e| {
        matches!(
            e.event_type,
            Some(history_event::EventType::TaskScheduled(_))
        )
    })
}

async fn start_and_wait(grpc: &str, id: &str) -> String {
    let mut c: Client<Channel> = Client::connect(format!("http://{grpc}")).await.unwrap();
    c.start_instance(CreateInstanceRequest {
        instance_id: id.into(),
        name: "wf".into(),
        scheduled_start_timestamp: Some(prost_types::Timestamp::default()),
        ..Default::default()
    })
    .await
    .expect("start");
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        c.wait_for_instance_completion(GetInstanceRequest {
            instance_id: id.into(),
            get_inputs_and_outputs: true,
            ..Default::default()
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("{id} did not complete within 60 s"))
    .expect("wait")
    .into_inner();
    let st = done.workflow_state.expect("state");
    assert_eq!(st.workflow_status, OrchestrationStatus::Completed as i32);
    st.output.unwrap_or_default()
}

async fn metrics(http: &str) -> String {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn poll(
    what: &str,
    within: Duration,
    mut cond: impl FnMut() -> bool,
    logs: impl Fn() -> String,
) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < within,
            "timed out waiting for {what}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_share_the_work_by_ownership() {
    let Some(db) = weft_testkit::test_database().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (placement, paddr) = spawn_placement(tmp.path());
    let (a, fa) = spawn_sidecar("sidecar-a", tmp.path(), &db.url, &paddr);
    let (b, fb) = spawn_sidecar("sidecar-b", tmp.path(), &db.url, &paddr);
    for f in [&fa, &fb] {
        for k in ["grpc", "http", "internal"] {
            assert!(f.contains_key(k), "ready line lacks {k}: {f:?}");
        }
    }
    let paths = [placement.log.clone(), a.log.clone(), b.log.clone()];
    let logs = || paths.iter().map(|p| tail(p)).collect::<Vec<_>>().join("\n");

    // Before any worker connects the sidecars are members without actor types.
    let s = cluster_status(&paddr);
    let h = hosts(&s);
    assert_eq!(h.len(), 2, "both sidecars registered: {s}");
    assert!(h.values().all(|(_, types, _)| types.is_empty()), "{s}");

    let seen_a = worker("A", fa["grpc"].clone());
    let seen_b = worker("B", fb["grpc"].clone());
    let mut status = serde_json::Value::Null;
    poll(
        "both sidecars to offer their actor types",
        Duration::from_secs(30),
        || {
            status = cluster_status(&paddr);
            let v = status["table_version"].as_u64().unwrap_or(0);
            let h = hosts(&status);
            eprintln!("status: version {v}, hosts {h:?}");
            // (acked_version is printed, not required: placement may report 0 for a host whose
            // ack preceded its applied registration — see the report of the cluster branch.)
            h.len() == 2 && h.values().all(|(_, t, acked)| t.len() == 3 && *acked <= v)
        },
        logs,
    )
    .await;
    println!("cluster status with workers:\n{status:#}");
    // Both sidecars finished the hand-off of that table, and together serve every bucket once.
    let version = status["table_version"].as_u64().unwrap();
    let start = Instant::now();
    loop {
        let mut settled = true;
        let mut owned = 0.0;
        let mut seen = Vec::new();
        for f in [&fa, &fb] {
            let m = metrics(&f["http"]).await;
            let v = gauge(&m, "weft_ownership_version");
            let o = gauge(&m, "weft_owned_buckets");
            seen.push((v, o));
            settled &= v == Some(version as f64);
            owned += o.unwrap_or(0.0);
        }
        if settled {
            assert_eq!(
                owned,
                4096.0,
                "each bucket served by exactly one sidecar: {seen:?}\n{}",
                logs()
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "hand-off did not settle\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let reg = registry_from(&status);
    let owner_of = |id: &str| match reg.owner(APP, ActorKind::Workflow, id) {
        Owner::Remote { address, .. } => address,
        other => panic!("unexpected owner {other:?}"),
    };
    let on_b = (0..1000)
        .map(|i| format!("wf-{i}"))
        .find(|id| owner_of(id) == fb["internal"])
        .expect("some ID owned by B");
    let on_a = (0..1000)
        .map(|i| format!("wf-{i}"))
        .find(|id| owner_of(id) == fa["internal"])
        .expect("some ID owned by A");

    // Started on A, owned by B: B's worker runs it.
    let out = start_and_wait(&fa["grpc"], &on_b).await;
    assert_eq!(out, "\"B\"", "{}", logs());
    let out = start_and_wait(&fb["grpc"], &on_a).await;
    assert_eq!(out, "\"A\"", "{}", logs());
    assert!(!seen_a.lock().unwrap().contains(&on_b));
    assert!(!seen_b.lock().unwrap().contains(&on_a));

    // Steady state: no fenced-checkpoint conflicts on either sidecar.
    for f in [&fa, &fb] {
        let m = metrics(&f["http"]).await;
        assert!(
            m.lines().any(|l| l == "weft_checkpoint_conflicts_total 0"),
            "conflict counter missing or non-zero:\n{m}"
        );
    }

    // SIGTERM B: it drains, leaves placement and exits; A takes over B's keys at once.
    let b_pid = b.child.as_ref().map(Child::id).unwrap();
    let term = Command::new("kill")
        .args(["-TERM", &b_pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut b = b;
    let mut child = b.child.take().unwrap();
    drop(b);
    let t0 = Instant::now();
    let code = loop {
        if let Some(c) = child.try_wait().unwrap() {
            break c;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "B did not exit after SIGTERM\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "B exited with {code:?}\n{}", logs());
    println!(
        "sidecar B drained and exited {:?} after SIGTERM",
        t0.elapsed()
    );
    poll(
        "placement to drop B",
        Duration::from_secs(15),
        || hosts(&cluster_status(&paddr)).len() == 1,
        logs,
    )
    .await;
    // An instance B used to own now runs on A.
    let next_on_b = (1000..3000)
        .map(|i| format!("wf-{i}"))
        .find(|id| owner_of(id) == fb["internal"])
        .unwrap();
    let out = start_and_wait(&fa["grpc"], &next_on_b).await;
    assert_eq!(out, "\"A\"", "{}", logs());
    drop(a);
    drop(placement);
    drop(db);
}
