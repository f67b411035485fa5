//! Routing between real processes: one `weft placement` node and two `weft sidecar` processes on
//! a throwaway PostgreSQL. The only worker takes its work from sidecar A (so A owns every
//! instance) but sends every answer through sidecar B, and every client call goes to B: B
//! forwards the calls to A and routes the answers to A (the executor path).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use weft_proto::durabletask::task_hub_sidecar_service_client::TaskHubSidecarServiceClient as Client;
use weft_proto::durabletask::*;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const APP: &str = "routing";
const DEADLINE: Duration = Duration::from_secs(30);

/// A process this test spawned; SIGKILLed (by PID) and reaped on drop.
struct Proc {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(p: &Proc) -> String {
    let s = std::fs::read_to_string(&p.log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    format!(
        "--- {} ---\n{}",
        p.log.display(),
        lines[lines.len().saturating_sub(30)..].join("\n")
    )
}

fn spawn(name: &str, dir: &std::path::Path, args: &[&str]) -> (Proc, mpsc::Receiver<String>) {
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
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Proc { child, log }, rx)
}

/// A sidecar and the `key=value` fields of its ready line.
fn sidecar(
    name: &str,
    dir: &std::path::Path,
    db: &str,
    placement: &str,
) -> (Proc, BTreeMap<String, String>) {
    let args = [
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
        "1s",
    ];
    let (p, rx) = spawn(name, dir, &args);
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{name} printed no ready line\n{}", tail(&p)));
    assert!(line.contains(" ready "), "{line}");
    let fields = line
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (p, fields)
}

async fn metrics(http: &str) -> String {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

/// Sum of a metric's series whose line contains `label`.
fn sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn t<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(DEADLINE);
    r
}

fn action(id: i32, t: workflow_action::WorkflowActionType) -> WorkflowAction {
    WorkflowAction {
        id,
        workflow_action_type: Some(t),
        router: None,
    }
}

/// "act" runs activity "double" once and completes with its result; "wait" completes with the
/// first raised event's data.
fn decide(r: &WorkflowRequest) -> Vec<WorkflowAction> {
    use history_event::EventType as E;
    let all: Vec<&HistoryEvent> = r.past_events.iter().chain(&r.new_events).collect();
    let mut name = String::new();
    let mut scheduled = false;
    for e in &all {
        let done = match &e.event_type {
            Some(E::ExecutionStarted(s)) => {
                name = s.name.clone();
                None
            }
            Some(E::TaskScheduled(_)) => {
                scheduled = true;
                None
            }
            Some(E::EventRaised(ev)) => Some(ev.input.clone()),
            Some(E::TaskCompleted(t)) => Some(t.result.clone()),
            _ => None,
        };
        if let Some(result) = done {
            let c = CompleteWorkflowAction {
                workflow_status: OrchestrationStatus::Completed as i32,
                result,
                ..Default::default()
            };
            return vec![action(
                2,
                workflow_action::WorkflowActionType::CompleteWorkflow(c),
            )];
        }
    }
    if name == "act" && !scheduled {
        let s = ScheduleTaskAction {
            name: "double".into(),
            input: Some("21".into()),
            ..Default::default()
        };
        return vec![action(
            1,
            workflow_action::WorkflowActionType::ScheduleTask(s),
        )];
    }
    vec![]
}

/// Takes work from `from`, answers through `via`; returns the count of failed answers.
fn worker(from: String, via: String) -> tokio::sync::watch::Receiver<usize> {
    let (failed_tx, failed) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        let mut src = Client::connect(format!("http://{from}")).await.unwrap();
        let mut answer = Client::connect(format!("http://{via}")).await.unwrap();
        let mut stream = src
            .get_work_items(GetWorkItemsRequest::default())
            .await
            .unwrap()
            .into_inner();
        while let Ok(Some(item)) = stream.message().await {
            let token = item.completion_token.clone();
            let res = match item.request {
                Some(work_item::Request::WorkflowRequest(r)) => answer
                    .complete_orchestrator_task(t(WorkflowResponse {
                        instance_id: r.instance_id.clone(),
                        actions: decide(&r),
                        completion_token: token,
                        ..Default::default()
                    }))
                    .await
                    .map(|_| ()),
                Some(work_item::Request::ActivityRequest(a)) => {
                    let n: i64 = a.input.as_deref().unwrap_or("0").parse().unwrap_or(0);
                    let id = a.workflow_instance.map(|w| w.instance_id);
                    answer
                        .complete_activity_task(t(ActivityResponse {
                            instance_id: id.unwrap_or_default(),
                            task_id: a.task_id,
                            result: Some((n * 2).to_string()),
                            completion_token: token,
                            ..Default::default()
                        }))
                        .await
                        .map(|_| ())
                }
                _ => Ok(()),
            };
            if res.is_err() {
                failed_tx.send_modify(|n| *n += 1);
            }
        }
    });
    failed
}

async fn completion(c: &mut Client<Channel>, id: &str) -> WorkflowState {
    c.wait_for_instance_completion(t(GetInstanceRequest {
        instance_id: id.into(),
        get_inputs_and_outputs: true,
        ..Default::default()
    }))
    .await
    .expect("completion")
    .into_inner()
    .workflow_state
    .expect("state")
}

fn start(id: &str, name: &str) -> CreateInstanceRequest {
    CreateInstanceRequest {
        instance_id: id.into(),
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_answers_through_the_sidecar_that_owns_nothing_reach_the_owner() {
    let Some(db) = weft_testkit::test_database().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let paddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let init = format!("1={paddr}");
    let pdir = tmp.path().join("placement").display().to_string();
    let placement_args = [
        "placement",
        "--id",
        "1",
        "--listen",
        &paddr,
        "--data-dir",
        &pdir,
        "--initial-cluster",
        &init,
    ];
    let (placement, _) = spawn("placement", tmp.path(), &placement_args);
    let (a, fa) = sidecar("sidecar-a", tmp.path(), &db.url, &paddr);
    let (b, fb) = sidecar("sidecar-b", tmp.path(), &db.url, &paddr);
    let logs = || [&placement, &a, &b].map(tail).join("\n");

    let failed = worker(fa["grpc"].clone(), fb["grpc"].clone());
    // Only A has a worker, so only A offers the app's actor types: wait until B's table says so
    // (B then owns nothing and knows A owns everything).
    let t0 = Instant::now();
    loop {
        let m = metrics(&fb["http"]).await;
        let ma = metrics(&fa["http"]).await;
        let settled = |m: &str| sum(m, "weft_ownership_version", "");
        if sum(&ma, "weft_owned_buckets", "") == 4096.0
            && settled(&m) > 0.0
            && settled(&m) == settled(&ma)
        {
            break;
        }
        assert!(
            t0.elapsed() < DEADLINE,
            "A never owned everything\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before_b = metrics(&fb["http"]).await;
    let mut cb = Client::connect(format!("http://{}", fb["grpc"]))
        .await
        .unwrap();

    // A plain start waits for the first turn: dispatched by A, answered through B.
    cb.start_instance(t(start("r-1", "act")))
        .await
        .expect("start at B");
    let done = completion(&mut cb, "r-1").await;
    assert_eq!(done.output.as_deref(), Some("42"), "{}", logs());

    cb.start_instance(t(start("r-2", "wait"))).await.unwrap();
    cb.raise_event(t(RaiseEventRequest {
        instance_id: "r-2".into(),
        name: "go".into(),
        input: Some("\"ev\"".into()),
        ..Default::default()
    }))
    .await
    .expect("raise at B");
    assert_eq!(
        completion(&mut cb, "r-2").await.output.as_deref(),
        Some("\"ev\"")
    );

    cb.start_instance(t(start("r-3", "wait"))).await.unwrap();
    cb.terminate_instance(t(TerminateRequest {
        instance_id: "r-3".into(),
        recursive: true,
        ..Default::default()
    }))
    .await
    .expect("terminate at B");
    assert_eq!(
        completion(&mut cb, "r-3").await.workflow_status,
        OrchestrationStatus::Terminated as i32
    );
    let purged = cb
        .purge_instances(t(PurgeInstancesRequest {
            request: Some(purge_instances_request::Request::InstanceId("r-3".into())),
            ..Default::default()
        }))
        .await
        .expect("purge at B")
        .into_inner();
    assert_eq!(purged.deleted_instance_count, 1);

    let after_b = metrics(&fb["http"]).await;
    let forwarded = sum(&after_b, "weft_forwarded_calls_total", "answered")
        - sum(&before_b, "weft_forwarded_calls_total", "answered");
    let routed = sum(&after_b, "weft_executor_routed_total", "")
        - sum(&before_b, "weft_executor_routed_total", "");
    println!("forwarded client calls: {forwarded}, routed worker answers: {routed}");
    // start ×3, raise, terminate, purge; turns: r-1 ×2 + activity, r-2 ×2, r-3 ×1 or 2.
    assert!(forwarded >= 6.0, "B forwarded its calls\n{after_b}");
    assert!(routed >= 6.0, "B routed the worker's answers\n{after_b}");
    assert_eq!(*failed.borrow(), 0, "every routed answer was accepted");
    let ma = metrics(&fa["http"]).await;
    assert_eq!(
        sum(&ma, "weft_checkpoint_conflicts_total", ""),
        0.0,
        "no raced turns"
    );
    drop(db);
}
