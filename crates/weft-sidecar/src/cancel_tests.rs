//! Callers that go away mid-call: hyper drops a request's future when the connection closes, and
//! the engine must still finish what the call started (write the result, then wake the instance).

use crate::engine::StartRequest;
use crate::testing::Spy;
use crate::{Engine, EngineConfig};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weft_proto::durabletask::work_item::Request;
use weft_proto::durabletask::workflow_action::WorkflowActionType as A;
use weft_proto::durabletask::*;
use weft_store::SqliteStore;

use crate::fold_tests::next;

fn answer(id: &str, token: String, actions: Vec<WorkflowAction>) -> WorkflowResponse {
    WorkflowResponse {
        instance_id: id.into(),
        actions,
        completion_token: token,
        ..Default::default()
    }
}

/// The flake in `test_two_workers_one_killed_mid_run`: a worker sends an activity result and is
/// SIGKILLed while it is being written. The write lands, but the dropped call never woke the
/// instance, so its next turn was never dispatched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_result_whose_caller_went_away_still_wakes_the_instance() {
    let spy = Spy::new(Arc::new(SqliteStore::open_in_memory().unwrap()));
    let shutdown = CancellationToken::new();
    // The durable path (a result folded into the turn is never written on its own).
    let cfg = EngineConfig {
        fold_activity_results: false,
        ..Default::default()
    };
    let engine = Engine::new(spy.clone(), cfg);
    engine.start(shutdown.clone()).await.unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let (e, sd) = (engine.clone(), shutdown.clone());
    tokio::spawn(async move { e.open_stream(false).run(tx, sd).await });

    engine
        .start_instance(StartRequest {
            instance_id: "c".into(),
            name: "wf".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let turn = next(&mut rx).await;
    let schedule = WorkflowAction {
        id: 0,
        workflow_action_type: Some(A::ScheduleTask(ScheduleTaskAction {
            name: "step".into(),
            ..Default::default()
        })),
        router: None,
    };
    engine
        .complete_workflow(answer("c", turn.completion_token, vec![schedule]))
        .await
        .unwrap();
    let activity = next(&mut rx).await;
    assert!(matches!(
        activity.request,
        Some(Request::ActivityRequest(_))
    ));

    // The result reaches the store; the caller is dropped right then, as hyper drops the
    // handler of a connection that closed.
    spy.hold_activity_results(true);
    let mut call = Box::pin(engine.complete_activity(ActivityResponse {
        instance_id: "c".into(),
        task_id: 0,
        result: Some("1".into()),
        completion_token: activity.completion_token,
        ..Default::default()
    }));
    tokio::select! {
        r = &mut call => panic!("answered while the store held the write: {r:?}"),
        _ = spy.activity_arrived.notified() => {}
    }
    drop(call);
    spy.hold_activity_results(false);

    let next_turn = next(&mut rx).await;
    let Some(Request::WorkflowRequest(r)) = next_turn.request else {
        panic!("expected the next workflow turn, got {next_turn:?}");
    };
    let kinds: Vec<_> = r.new_events.iter().map(weft_core::history::kind).collect();
    assert!(kinds.contains(&"TaskCompleted"), "{kinds:?}");
    let done = WorkflowAction {
        id: 1,
        workflow_action_type: Some(A::CompleteWorkflow(CompleteWorkflowAction {
            workflow_status: OrchestrationStatus::Completed as i32,
            result: Some("\"ok\"".into()),
            ..Default::default()
        })),
        router: None,
    };
    engine
        .complete_workflow(answer("c", next_turn.completion_token, vec![done]))
        .await
        .unwrap();
    let meta = engine.get_instance("c").await.unwrap().expect("instance");
    assert_eq!(meta.status, weft_core::RuntimeStatus::Completed);
    shutdown.cancel();
}
