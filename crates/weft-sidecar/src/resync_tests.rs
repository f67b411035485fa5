//! Failed commits: a rejected one triggers no recovery scan, an ambiguous one does (at most once a
//! second), a failing turn backs off instead of looping hot, and a running activity survives all
//! of it (its worker's answer is still accepted).

use crate::engine::StartRequest;
use crate::testing::{Fail, Spy};
use crate::{Engine, EngineConfig};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weft_proto::durabletask::work_item::Request;
use weft_proto::durabletask::workflow_action::WorkflowActionType as A;
use weft_proto::durabletask::*;
use weft_store::SqliteStore;

/// How long failing turns are answered at once, as a fast worker would.
const WINDOW: Duration = Duration::from_millis(1500);

use crate::fold_tests::next;

fn answer(id: &str, token: String, actions: Vec<WorkflowAction>) -> WorkflowResponse {
    WorkflowResponse {
        instance_id: id.into(),
        actions,
        completion_token: token,
        ..Default::default()
    }
}

async fn failing_commits(mode: Fail) -> (usize, usize) {
    let spy = Spy::new(Arc::new(SqliteStore::open_in_memory().unwrap()));
    let shutdown = CancellationToken::new();
    let engine = Engine::new(spy.clone(), EngineConfig::default());
    engine.start(shutdown.clone()).await.unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let (e, sd) = (engine.clone(), shutdown.clone());
    tokio::spawn(async move { e.open_stream(false).run(tx, sd).await });

    engine
        .start_instance(StartRequest {
            instance_id: "w".into(),
            name: "wf".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let turn = next(&mut rx).await;
    let schedule = WorkflowAction {
        id: 0,
        workflow_action_type: Some(A::ScheduleTask(ScheduleTaskAction {
            name: "slow".into(),
            ..Default::default()
        })),
        router: None,
    };
    engine
        .complete_workflow(answer("w", turn.completion_token, vec![schedule]))
        .await
        .unwrap();
    let activity = next(&mut rx).await;
    assert!(matches!(
        activity.request,
        Some(Request::ActivityRequest(_))
    ));

    // While the activity runs, every commit of the workflow fails.
    spy.fail_checkpoints_of("w", Some(mode));
    let scans = spy.counts.scans.load(Ordering::SeqCst);
    let commits = spy.counts.checkpoints.load(Ordering::SeqCst);
    engine.raise_event("w", "e", None).await.unwrap();
    let end = tokio::time::Instant::now() + WINDOW;
    while spy.counts.checkpoints.load(Ordering::SeqCst) - commits <= 50 {
        let item = tokio::select! {
            item = next(&mut rx) => item,
            _ = tokio::time::sleep_until(end) => break,
        };
        assert!(matches!(item.request, Some(Request::WorkflowRequest(_))));
        let r = engine
            .complete_workflow(answer("w", item.completion_token, vec![]))
            .await;
        assert!(r.is_err(), "the commit failed");
    }
    let attempts = spy.counts.checkpoints.load(Ordering::SeqCst) - commits;
    let rescans = spy.counts.scans.load(Ordering::SeqCst) - scans;
    println!("{mode:?}: {attempts} commit attempts and {rescans} recovery scans in {WINDOW:?}");

    spy.fail_checkpoints_of("w", None);
    engine
        .complete_activity(ActivityResponse {
            instance_id: "w".into(),
            task_id: 0,
            result: Some("1".into()),
            completion_token: activity.completion_token,
            ..Default::default()
        })
        .await
        .expect("the running activity's answer is still accepted");
    shutdown.cancel();
    (attempts, rescans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_commit_backs_off_and_triggers_no_scan() {
    let (attempts, rescans) = failing_commits(Fail::Rejected).await;
    // Backoff 200, 400, 800 ms: four attempts in the window; a hot loop makes dozens.
    assert!(attempts <= 6, "{attempts} attempts: no backoff");
    assert_eq!(rescans, 0, "nothing was written, so nothing to recover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_commit_scans_without_disturbing_running_work() {
    let (attempts, rescans) = failing_commits(Fail::Unknown).await;
    assert!(attempts <= 6, "{attempts} attempts: no backoff");
    assert!(
        (1..=2).contains(&rescans),
        "{rescans} scans: expected one, at most one a second"
    );
}
