//! The seed corpus: valid messages of every kind each target reads, written once to
//! `corpus/<target>/` by `cargo test -p weft-fuzz --test seeds -- --ignored` and committed.

use crate::harness::{Rng, crate_dir};
use prost::Message;
use weft_placement::proto::placement as pb;
use weft_placement::proto::raft::RaftPayload;
use weft_proto::durabletask as dt;
use weft_proto::internal as int;

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn sel(selector: u8, msg: &impl Message) -> Vec<u8> {
    let mut v = vec![selector];
    v.extend(msg.encode_to_vec());
    v
}

fn schedule(id: i32, name: &str) -> dt::WorkflowAction {
    dt::WorkflowAction {
        id,
        workflow_action_type: Some(dt::workflow_action::WorkflowActionType::ScheduleTask(
            dt::ScheduleTaskAction {
                name: name.into(),
                input: Some("\"x\"".into()),
                ..Default::default()
            },
        )),
        router: None,
    }
}

fn complete(id: i32) -> dt::WorkflowAction {
    dt::WorkflowAction {
        id,
        workflow_action_type: Some(dt::workflow_action::WorkflowActionType::CompleteWorkflow(
            dt::CompleteWorkflowAction {
                workflow_status: dt::OrchestrationStatus::Completed as i32,
                result: Some("\"done\"".into()),
                ..Default::default()
            },
        )),
        router: None,
    }
}

fn workflow_response() -> dt::WorkflowResponse {
    dt::WorkflowResponse {
        instance_id: "wf-1".into(),
        actions: vec![schedule(0, "charge"), complete(1)],
        custom_status: Some("\"step 1\"".into()),
        completion_token: "1@fuzz-1@127.0.0.1:1".into(),
        ..Default::default()
    }
}

fn activity_response() -> dt::ActivityResponse {
    dt::ActivityResponse {
        instance_id: "wf-1".into(),
        task_id: 0,
        result: Some("42".into()),
        completion_token: "2@fuzz-1@127.0.0.1:1".into(),
        ..Default::default()
    }
}

fn durabletask() -> Vec<Vec<u8>> {
    let mut seeds = client_requests();
    seeds.extend(worker_requests());
    seeds
}

/// The client API's requests (selectors 0–8): start, query, raise, terminate, suspend, purge.
fn client_requests() -> Vec<Vec<u8>> {
    let get = dt::GetInstanceRequest {
        instance_id: "wf-1".into(),
        get_inputs_and_outputs: true,
        router: None,
    };
    vec![
        sel(
            0,
            &dt::CreateInstanceRequest {
                instance_id: "wf-1".into(),
                name: "order".into(),
                input: Some("{\"n\":1}".into()),
                ..Default::default()
            },
        ),
        sel(
            0,
            &dt::CreateInstanceRequest {
                instance_id: "wf-2".into(),
                name: "order".into(),
                scheduled_start_timestamp: ts(4_000_000_000),
                orchestration_id_reuse_policy: Some(dt::OrchestrationIdReusePolicy {
                    action: dt::CreateOrchestrationAction::Terminate as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        sel(1, &get),
        sel(2, &get),
        sel(3, &get),
        sel(
            4,
            &dt::RaiseEventRequest {
                instance_id: "wf-1".into(),
                name: "approve".into(),
                input: Some("true".into()),
                router: None,
            },
        ),
        sel(
            5,
            &dt::TerminateRequest {
                instance_id: "wf-1".into(),
                output: Some("\"stop\"".into()),
                recursive: true,
                router: None,
            },
        ),
        sel(
            6,
            &dt::SuspendRequest {
                instance_id: "wf-1".into(),
                reason: Some("pause".into()),
                router: None,
            },
        ),
        sel(
            7,
            &dt::ResumeRequest {
                instance_id: "wf-1".into(),
                reason: Some("go".into()),
                router: None,
            },
        ),
        sel(
            8,
            &dt::PurgeInstancesRequest {
                request: Some(dt::purge_instances_request::Request::InstanceId(
                    "wf-1".into(),
                )),
                recursive: true,
                force: Some(false),
                router: None,
            },
        ),
        sel(
            8,
            &dt::PurgeInstancesRequest {
                request: Some(dt::purge_instances_request::Request::PurgeInstanceFilter(
                    dt::PurgeInstanceFilter {
                        created_time_from: ts(1_700_000_000),
                        created_time_to: ts(1_800_000_000),
                        runtime_status: vec![1, 3],
                    },
                )),
                recursive: false,
                force: None,
                router: None,
            },
        ),
    ]
}

/// The worker API's and the remaining client requests (selectors 9–16).
fn worker_requests() -> Vec<Vec<u8>> {
    vec![
        sel(
            9,
            &dt::GetWorkItemsRequest {
                capabilities: vec![dt::WorkerCapability::StatefulHistory as i32],
                ..Default::default()
            },
        ),
        sel(10, &activity_response()),
        sel(11, &workflow_response()),
        sel(
            12,
            &dt::AbandonActivityTaskRequest {
                completion_token: "2@fuzz-1@127.0.0.1:1".into(),
            },
        ),
        sel(
            13,
            &dt::AbandonOrchestrationTaskRequest {
                completion_token: "1@fuzz-1@127.0.0.1:1".into(),
            },
        ),
        sel(
            14,
            &dt::RerunWorkflowFromEventRequest {
                source_instance_id: "wf-1".into(),
                event_id: 2,
                new_instance_id: Some("wf-1-rerun".into()),
                input: Some("1".into()),
                overwrite_input: true,
                ..Default::default()
            },
        ),
        sel(
            15,
            &dt::ListInstanceIDsRequest {
                continuation_token: Some("wf-0".into()),
                page_size: Some(10),
            },
        ),
        sel(
            16,
            &dt::GetInstanceHistoryRequest {
                instance_id: "wf-1".into(),
            },
        ),
        // Regression: a token naming another sidecar at an address that is no URI (was INTERNAL).
        sel(
            11,
            &dt::WorkflowResponse {
                completion_token: "1@fuzz-2@17.0.0.1\x01:1".into(),
                ..workflow_response()
            },
        ),
    ]
}

fn internal() -> Vec<Vec<u8>> {
    vec![
        sel(
            0,
            &int::StartCall {
                caller_app_id: String::new(),
                app_id: "fuzz".into(),
                instance_id: "wf-1".into(),
                name: "order".into(),
                version: Some("1".into()),
                input: Some("1".into()),
                scheduled_start_at: Some(1_800_000_000_000_000),
                policy: int::ReusePolicy::Ignore as i32,
                traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
                tracestate: None,
            },
        ),
        sel(
            1,
            &int::RaiseEventCall {
                caller_app_id: String::new(),
                app_id: "fuzz".into(),
                instance_id: "wf-1".into(),
                name: "approve".into(),
                input: Some("true".into()),
            },
        ),
        sel(
            2,
            &int::TerminateCall {
                caller_app_id: String::new(),
                app_id: String::new(),
                instance_id: "wf-1".into(),
                output: None,
                recursive: true,
            },
        ),
        sel(
            3,
            &int::SuspendCall {
                caller_app_id: String::new(),
                app_id: "fuzz".into(),
                instance_id: "wf-1".into(),
                reason: Some("r".into()),
            },
        ),
        sel(
            4,
            &int::ResumeCall {
                caller_app_id: String::new(),
                app_id: "fuzz".into(),
                instance_id: "wf-1".into(),
                reason: None,
            },
        ),
        sel(
            5,
            &int::PurgeCall {
                caller_app_id: String::new(),
                app_id: "fuzz".into(),
                instance_id: "wf-1".into(),
                recursive: true,
                force: true,
            },
        ),
        sel(
            6,
            &int::RerunCall {
                caller_app_id: String::new(),
                app_id: "fuzz".into(),
                request: Some(dt::RerunWorkflowFromEventRequest {
                    source_instance_id: "wf-1".into(),
                    event_id: 0,
                    ..Default::default()
                }),
            },
        ),
        sel(7, &workflow_response()),
        sel(8, &activity_response()),
        sel(
            9,
            &int::AbandonCall {
                completion_token: "1@fuzz-1@127.0.0.1:1".into(),
                workflow: true,
            },
        ),
        sel(
            10,
            &int::WakeHint {
                app_id: "fuzz".into(),
                instance_ids: vec!["wf-1".into(), "wf-2".into()],
            },
        ),
    ]
}

fn host(id: &str, types: &[&str]) -> pb::HostInfo {
    pb::HostInfo {
        host_id: id.into(),
        address: format!("{id}:50002"),
        app_id: "app".into(),
        actor_types: types.iter().map(|t| t.to_string()).collect(),
        weight: 1,
        zone: "z1".into(),
    }
}

fn raft(selector: u8, json: &str) -> Vec<u8> {
    sel(
        selector,
        &RaftPayload {
            json: json.as_bytes().to_vec(),
        },
    )
}

fn placement() -> Vec<Vec<u8>> {
    use pb::{placement_message::Msg as P, sidecar_message::Msg as S};
    let side = |m: S| pb::SidecarMessage { msg: Some(m) };
    let table = pb::Table {
        version: 3,
        hosts: vec![
            host("a", &["app.workflow", "app.activity"]),
            host("b", &["app.workflow"]),
        ],
        vnodes_per_host: 100,
        cluster_id: "c-1".into(),
    };
    let vote = r#"{"leader_id":{"term":2,"node_id":1},"committed":true}"#;
    let log_id = r#"{"leader_id":{"term":2,"node_id":1},"index":7}"#;
    vec![
        sel(0, &side(S::Register(host("a", &["app.workflow"])))),
        sel(
            0,
            &side(S::Heartbeat(host("b", &["app.workflow", "app.activity"]))),
        ),
        sel(0, &side(S::Ack(pb::TableAck { version: 4 }))),
        sel(0, &side(S::Leave(pb::Leave {}))),
        sel(
            1,
            &pb::PlacementMessage {
                msg: Some(P::Table(table)),
            },
        ),
        // Regression: an absurd ring parameter (overflowed the point count before MAX_VNODES).
        sel(
            1,
            &pb::PlacementMessage {
                msg: Some(P::Table(pb::Table {
                    version: 1,
                    hosts: vec![pb::HostInfo {
                        weight: 100,
                        ..host("a", &["app.workflow"])
                    }],
                    vnodes_per_host: u32::MAX,
                    cluster_id: String::new(),
                })),
            },
        ),
        sel(
            1,
            &pb::PlacementMessage {
                msg: Some(P::Redirect(pb::Redirect {
                    leader_id: 2,
                    leader_address: "10.0.0.2:50005".into(),
                })),
            },
        ),
        sel(
            2,
            &pb::AddNodeRequest {
                id: 4,
                address: "p4:50005".into(),
            },
        ),
        sel(3, &pb::RemoveNodeRequest { id: 4 }),
        raft(
            4,
            &format!(
                r#"{{"vote":{vote},"prev_log_id":{log_id},"entries":[{{"log_id":{log_id},"payload":{{"Normal":{{"Upsert":{{"host_id":"a","address":"a:1","app_id":"app","actor_types":["t"],"weight":1,"zone":""}}}}}}}}],"leader_commit":{log_id}}}"#
            ),
        ),
        raft(5, &format!(r#"{{"vote":{vote},"last_log_id":{log_id}}}"#)),
        raft(6, &format!(r#"{{"vote":{vote},"last_log_id":null}}"#)),
        raft(
            7,
            &format!(
                r#"[{vote},{{"last_log_id":{log_id},"last_membership":{{"log_id":null,"membership":{{"configs":[[1]],"nodes":{{"1":{{"addr":"p1:50005"}}}}}}}},"snapshot_id":"s-1"}},[123,125]]"#
            ),
        ),
    ]
}

/// `(method, path shape, segments…)` drawn the way the HTTP target reads its input.
fn http() -> Vec<Vec<u8>> {
    let req = |method: u8, shape: u8, segs: &[u8], query: u8, body: &[u8]| {
        let mut v = vec![method, shape];
        v.extend_from_slice(segs);
        v.push(query);
        v.extend_from_slice(body);
        v
    };
    vec![
        // POST /v1.0/workflows/dapr/order/start?instanceID=wf-1 {"n":1}
        req(1, 0, &[0, 3], 0, b"{\"n\":1}"),
        // GET /v1.0/workflows/dapr/wf-1
        req(0, 1, &[0, 2], 8, b""),
        // POST /v1.0/workflows/dapr/wf-1/{terminate,pause,resume,purge}
        req(1, 2, &[0, 2, 4], 8, b"{}"),
        req(1, 2, &[0, 2, 5], 6, b""),
        req(1, 2, &[0, 2, 6], 6, b""),
        req(1, 2, &[1, 2, 7], 8, b""),
        // POST /v1.0/workflows/dapr/wf-1/raiseEvent/order "yes"
        req(1, 3, &[0, 2, 3], 8, b"\"yes\""),
        req(0, 4, &[], 1, b""),
        req(0, 4, &[], 4, b""),
        req(1, 5, &[], 3, b""),
        req(0, 6, &[2], 8, b""),
        req(0, 7, &[], 8, b""),
        // A raw query: status=RUNNING&limit=x
        {
            let q = b"status=RUNNING&limit=x";
            let mut v = vec![0, 4, 8];
            v.push(q.len() as u8);
            v.extend_from_slice(q);
            v
        },
    ]
}

fn config() -> Vec<Vec<u8>> {
    let full = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: weft\nspec:\n  tracing:\n    samplingRate: \"1\"\n  workflow:\n    maxConcurrentWorkflowInvocations: 2\n    maxConcurrentActivityInvocations: 3\n    globalMaxConcurrentWorkflowInvocations: 20\n    globalMaxConcurrentActivityInvocations: 40\n    workflowConcurrencyLimits:\n      - name: nightly\n        maxConcurrent: 1\n    activityConcurrencyLimits:\n      - name: charge\n        maxConcurrent: 1\n    stateRetentionPolicy:\n      anyTerminal: 24h\n      completed: 2s\n      failed: 1h30m\n      terminated: 1.5h\n";
    let small = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec:\n  workflow:\n    stateRetentionPolicy:\n      completed: 250ms\n";
    let flow = "{apiVersion: dapr.io/v1alpha1, kind: Configuration, spec: {workflow: {maxConcurrentActivityInvocations: 3, activityConcurrencyLimits: [{name: a, maxConcurrent: 2}]}}}\n";
    [full, small, flow, "250ms\n1h2m3.5s\n0\n7\n"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
}

/// Core inputs are read as choices, so seeded random bytes are valid programs; one seed is a
/// plain happy path: start, schedule, result, complete.
fn core() -> Vec<Vec<u8>> {
    let mut seeds = vec![vec![
        2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // turn: one ScheduleTask
        0, 0, 0, 1, 2, 0, 0, // a TaskCompleted
        2, 1, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0, // turn: complete
    ]];
    let mut rng = Rng::new(7);
    for n in [32, 64, 128, 256, 512] {
        seeds.push((0..n).map(|_| rng.next_u64() as u8).collect());
    }
    seeds
}

/// Every target's seeds.
pub fn all() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("durabletask", durabletask()),
        ("internal", internal()),
        ("placement", placement()),
        ("http", http()),
        ("config", config()),
        ("core", core()),
    ]
}

/// Writes the seeds as `corpus/<target>/seed-<n>` (other files there are kept).
pub fn write() -> Result<usize, crate::FuzzError> {
    let mut n = 0;
    for (target, seeds) in all() {
        let dir = crate_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), s)?;
            n += 1;
        }
    }
    Ok(n)
}
