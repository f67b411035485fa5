//! Idle workflows cost nothing in memory: once their actors reach the idle timeout, no
//! per-instance record is left (actors, hub, stateful workers' cache records, limiter).

use crate::census::MemoryCensus;
use crate::engine::StartRequest;
use crate::{Engine, EngineConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weft_proto::durabletask::work_item::Request;
use weft_proto::durabletask::workflow_action::WorkflowActionType as A;
use weft_proto::durabletask::*;
use weft_store::SqliteStore;

const DEADLINE: Duration = Duration::from_secs(10);

async fn next_turn(rx: &mut crate::fold_tests::Items) -> (WorkflowRequest, String) {
    let item = crate::fold_tests::next(rx).await;
    match item.request {
        Some(Request::WorkflowRequest(r)) => (r, item.completion_token),
        other => panic!("expected a workflow turn, got {other:?}"),
    }
}

fn answer(id: &str, token: String, actions: Vec<WorkflowAction>) -> WorkflowResponse {
    WorkflowResponse {
        instance_id: id.into(),
        actions,
        completion_token: token,
        ..Default::default()
    }
}

/// Polls the census (it has no change signal) until `done` holds or the deadline passes.
async fn census_until(engine: &Engine, done: impl Fn(&MemoryCensus) -> bool) -> MemoryCensus {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let c = engine.memory_census();
        if done(&c) || tokio::time::Instant::now() >= until {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Regression test (fails before the fix: the stateful stream's cache records outlived the
/// actors, one per instance forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_idle_actors_leave_no_per_instance_record() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let shutdown = CancellationToken::new();
    let mut cfg = EngineConfig {
        idle_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    // A limit, so the limiter keeps records for admitted turns too.
    cfg.workflow.max_concurrent_workflow_invocations = Some(2);
    let engine = Engine::new(store, cfg);
    engine.start(shutdown.clone()).await.unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let (e, sd) = (engine.clone(), shutdown.clone());
    // A stateful-history worker: the hub records how much history its stream has seen.
    tokio::spawn(async move { e.open_stream(true).run(tx, sd).await });

    const N: usize = 10;
    for i in 0..N {
        engine
            .start_instance(StartRequest {
                instance_id: format!("idle-{i}"),
                name: "wait".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // Each first turn is answered with no actions: the workflow waits for an event.
    for _ in 0..N {
        let (r, token) = next_turn(&mut rx).await;
        engine
            .complete_workflow(answer(&r.instance_id, token, vec![]))
            .await
            .unwrap();
    }
    let busy = engine.memory_census();
    assert!(
        busy.actors > 0,
        "the actors are in memory right after their turns: {busy:?}"
    );
    assert_eq!(busy.warm_instances, N, "{busy:?}");

    let idle = census_until(&engine, |c| c.actors == 0).await;
    assert_eq!(idle, MemoryCensus::default(), "after the idle timeout");

    // The instance runs on from the store; with its cache record gone the worker gets the whole
    // history (a stateful worker takes that in place of its cache).
    engine.raise_event("idle-3", "go", None).await.unwrap();
    let (r, token) = next_turn(&mut rx).await;
    assert_eq!(r.instance_id, "idle-3");
    assert!(r.cached_history.is_none(), "{:?}", r.cached_history);
    let kinds: Vec<_> = r.past_events.iter().map(weft_core::history::kind).collect();
    assert!(
        kinds.contains(&"ExecutionStarted"),
        "full history: {kinds:?}"
    );
    let done = WorkflowAction {
        id: 0,
        workflow_action_type: Some(A::CompleteWorkflow(CompleteWorkflowAction {
            workflow_status: OrchestrationStatus::Completed as i32,
            result: Some("\"ok\"".into()),
            ..Default::default()
        })),
        router: None,
    };
    engine
        .complete_workflow(answer("idle-3", token, vec![done]))
        .await
        .unwrap();
    let meta = engine
        .get_instance("idle-3")
        .await
        .unwrap()
        .expect("instance");
    assert_eq!(meta.status, weft_core::RuntimeStatus::Completed);
    let after = census_until(&engine, |c| *c == MemoryCensus::default()).await;
    assert_eq!(
        after,
        MemoryCensus::default(),
        "after the finished actor retired"
    );
    shutdown.cancel();
}

/// What every actor in memory holds while it waits stays small: its mailbox allocates room for
/// 32 messages at once (160-byte messages made that 5 KB), and its task holds the loop's state,
/// not a turn's (the turn's futures are boxed; unboxed the task was 3.6 KB in a debug build).
#[tokio::test]
async fn a_waiting_actor_holds_little() {
    use crate::mailbox::ActorMsg;
    assert!(
        std::mem::size_of::<ActorMsg>() <= 32,
        "{}",
        std::mem::size_of::<ActorMsg>()
    );
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let engine = Engine::new(store, EngineConfig::default());
    let (_tx, rx) = mpsc::unbounded_channel();
    let task = crate::actor::Actor::new("x".into(), engine.inner.clone(), rx, None).run();
    let size = std::mem::size_of_val(&task);
    assert!(size <= 2048, "the actor's task is {size} bytes");
}

/// Issue 15 point 7 (fails before the fix: each actor idled for `idle_timeout`, one per
/// made-up ID a wake hint named): an actor for an instance that does not exist leaves at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_of_unknown_instances_leave_at_once() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let shutdown = CancellationToken::new();
    let cfg = EngineConfig {
        // Far beyond the deadline: only leaving at once can empty memory in time.
        idle_timeout: Duration::from_secs(3600),
        ..Default::default()
    };
    let engine = Engine::new(store, cfg);
    engine.start(shutdown.clone()).await.unwrap();
    for i in 0..200 {
        engine.inner.actors.wake(&format!("never-created-{i}"));
    }
    let c = census_until(&engine, |c| c.actors == 0).await;
    assert_eq!(c.actors, 0, "{c:?}");
    shutdown.cancel();
}
