//! Activity results folded into the turn they wake: one checkpoint per idle step and no inbox
//! read, and the durable path whenever the instance's actor is not in memory.

use crate::engine::StartRequest;
use crate::testing::Spy;
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

pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// A worker stream's receiving end, as `GetWorkItems` feeds it.
pub(crate) type Items = mpsc::Receiver<Result<weft_proto::wire::WorkItemFrame, tonic::Status>>;

/// The next work item, decoded as a worker decodes it.
pub(crate) async fn next(rx: &mut Items) -> WorkItem {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("a work item within the deadline")
        .expect("stream open")
        .expect("no error")
        .decode()
        .expect("a work item decodes")
}

pub(crate) fn action(id: i32, ty: A) -> WorkflowAction {
    WorkflowAction {
        id,
        workflow_action_type: Some(ty),
        router: None,
    }
}

/// Completes the workflow with output `"ok"`.
pub(crate) fn complete_workflow(id: i32) -> WorkflowAction {
    action(
        id,
        A::CompleteWorkflow(CompleteWorkflowAction {
            workflow_status: OrchestrationStatus::Completed as i32,
            result: Some("\"ok\"".into()),
            ..Default::default()
        }),
    )
}

pub(crate) fn schedule(id: i32) -> WorkflowAction {
    action(
        id,
        A::ScheduleTask(ScheduleTaskAction {
            name: "step".into(),
            ..Default::default()
        }),
    )
}

pub(crate) async fn setup(cfg: EngineConfig) -> (Arc<Spy>, Engine, Items, CancellationToken) {
    let spy = Spy::new(Arc::new(SqliteStore::open_in_memory().unwrap()));
    let shutdown = CancellationToken::new();
    let engine = Engine::new(spy.clone(), cfg);
    engine.start(shutdown.clone()).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    let (e, sd) = (engine.clone(), shutdown.clone());
    tokio::spawn(async move { e.open_stream(false).run(tx, sd).await });
    engine
        .start_instance(StartRequest {
            instance_id: "f".into(),
            name: "wf".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    (spy, engine, rx, shutdown)
}

/// Answers the turn in `item` with `actions`.
pub(crate) async fn answer(engine: &Engine, item: WorkItem, actions: Vec<WorkflowAction>) {
    engine
        .complete_workflow(WorkflowResponse {
            instance_id: "f".into(),
            actions,
            completion_token: item.completion_token,
            ..Default::default()
        })
        .await
        .unwrap();
}

/// A worker's `CompleteActivityTask` in flight.
pub(crate) type Call = tokio::task::JoinHandle<crate::error::Result<()>>;

/// Answers the activity in `item` with its task ID as the result, without waiting for the
/// answer, as a worker's call runs beside its turns: with folding, it returns only once the
/// turn consuming the result committed.
pub(crate) fn complete(engine: &Engine, item: &WorkItem) -> Call {
    let Some(Request::ActivityRequest(a)) = &item.request else {
        panic!("expected an activity, got {item:?}");
    };
    let resp = ActivityResponse {
        instance_id: "f".into(),
        task_id: a.task_id,
        result: Some(a.task_id.to_string()),
        completion_token: item.completion_token.clone(),
        ..Default::default()
    };
    let engine = engine.clone();
    tokio::spawn(async move { engine.complete_activity(resp).await })
}

/// The answer to a completion call (within the deadline).
pub(crate) async fn answered(call: Call) -> crate::error::Result<()> {
    tokio::time::timeout(DEADLINE, call)
        .await
        .expect("the completion call answered within the deadline")
        .expect("the completion call did not panic")
}

/// Waits until the actor of `f` holds `n` results in memory.
pub(crate) async fn holding(engine: &Engine, n: usize) {
    let waited = tokio::time::timeout(DEADLINE, async {
        loop {
            let (tx, rx) = tokio::sync::oneshot::channel();
            engine
                .inner
                .actors
                .send_existing("f", crate::mailbox::ActorMsg::Held(tx));
            if rx.await.is_ok_and(|held| held == n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the actor never held {n} results");
}

/// Answers the activity in `item` and returns the next workflow turn, its new event kinds, and
/// the completion call (answered once that turn commits, when the result was folded).
pub(crate) async fn run_activity(
    engine: &Engine,
    rx: &mut Items,
    item: WorkItem,
) -> (WorkItem, Vec<String>, Call) {
    let call = complete(engine, &item);
    let turn = next(rx).await;
    let Some(Request::WorkflowRequest(r)) = &turn.request else {
        panic!("expected a workflow turn, got {turn:?}");
    };
    let kinds = r
        .new_events
        .iter()
        .map(|e| weft_core::history::kind(e).to_string())
        .collect();
    (turn, kinds, call)
}

/// Folding with a `fold_wait` no test outlasts: results are durable only through their turns.
pub(crate) fn patient() -> EngineConfig {
    EngineConfig {
        fold_wait: Duration::from_secs(60),
        ..Default::default()
    }
}

pub(crate) fn task_completed_count(h: &[HistoryEvent]) -> usize {
    h.iter()
        .filter(|e| weft_core::history::kind(e) == "TaskCompleted")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_step_commits_once_and_reads_no_inbox() {
    let (spy, engine, mut rx, shutdown) = setup(EngineConfig::default()).await;
    let first = next(&mut rx).await;
    answer(&engine, first, vec![schedule(0)]).await;
    for step in 0..3 {
        let activity = next(&mut rx).await;
        let (cps, reads) = (
            spy.counts.checkpoints.load(Ordering::SeqCst),
            spy.counts.inbox_reads.load(Ordering::SeqCst),
        );
        let (turn, kinds, call) = run_activity(&engine, &mut rx, activity).await;
        assert_eq!(kinds, ["WorkflowStarted", "TaskCompleted"], "step {step}");
        answer(&engine, turn, vec![schedule(step + 1)]).await;
        answered(call).await.unwrap();
        // The result and the turn it woke share one checkpoint; nothing was read.
        assert_eq!(
            spy.counts.checkpoints.load(Ordering::SeqCst) - cps,
            1,
            "step {step}"
        );
        assert_eq!(spy.counts.inbox_reads.load(Ordering::SeqCst), reads);
    }
    assert_eq!(
        spy.counts.results.load(Ordering::SeqCst),
        0,
        "no durable path"
    );
    let h = engine.history("f").await.unwrap().unwrap();
    assert_eq!(task_completed_count(&h), 3);
    let pending = engine
        .store()
        .claim_activities(&weft_store::Scope::all("weft-dev"))
        .await
        .unwrap();
    assert_eq!(
        pending.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        [3],
        "folded results' task rows are gone; the one just scheduled remains"
    );
    shutdown.cancel();
}

/// An actor that retired (idle) is not activated for a result: the result is written on its
/// own and the fresh actor finds it in the inbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_for_a_retired_actor_takes_the_durable_path() {
    let cfg = EngineConfig {
        idle_timeout: Duration::from_millis(20),
        ..Default::default()
    };
    let (spy, engine, mut rx, shutdown) = setup(cfg).await;
    let first = next(&mut rx).await;
    answer(&engine, first, vec![schedule(0)]).await;
    let activity = next(&mut rx).await;
    let retired = tokio::time::timeout(DEADLINE, async {
        while engine.actors_in_memory() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(retired.is_ok(), "the idle actor retires");
    let (turn, kinds, call) = run_activity(&engine, &mut rx, activity).await;
    assert_eq!(kinds, ["WorkflowStarted", "TaskCompleted"]);
    answered(call).await.unwrap();
    assert_eq!(spy.counts.results.load(Ordering::SeqCst), 1);
    answer(&engine, turn, vec![complete_workflow(1)]).await;
    let h = engine.history("f").await.unwrap().unwrap();
    assert_eq!(task_completed_count(&h), 1);
    shutdown.cancel();
}

/// A result that arrives while a worker holds the instance's turn is recorded on its own and
/// delivered by the following turn, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_during_a_held_turn_takes_the_durable_path() {
    let (spy, engine, mut rx, shutdown) = setup(EngineConfig::default()).await;
    let first = next(&mut rx).await;
    answer(&engine, first, vec![schedule(0), schedule(1)]).await;
    let (a0, a1) = (next(&mut rx).await, next(&mut rx).await);
    // a0 folds into a turn the worker then holds; a1 arrives meanwhile.
    let (turn, kinds, a0_call) = run_activity(&engine, &mut rx, a0).await;
    assert_eq!(kinds, ["WorkflowStarted", "TaskCompleted"]);
    let Some(Request::ActivityRequest(r1)) = &a1.request else {
        panic!("expected an activity");
    };
    engine
        .complete_activity(ActivityResponse {
            instance_id: "f".into(),
            task_id: r1.task_id,
            result: Some("1".into()),
            completion_token: a1.completion_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(spy.counts.results.load(Ordering::SeqCst), 1);
    answer(&engine, turn, vec![]).await;
    answered(a0_call).await.unwrap();
    let turn = next(&mut rx).await;
    let Some(Request::WorkflowRequest(r)) = &turn.request else {
        panic!("expected a workflow turn");
    };
    assert_eq!(task_completed_count(&r.new_events), 1);
    answer(&engine, turn, vec![]).await;
    let h = engine.history("f").await.unwrap().unwrap();
    assert_eq!(task_completed_count(&h), 2);
    shutdown.cancel();
}

/// An actor that panics loses what it held in memory — here a folded result whose turn the
/// worker holds — but not the instance: the recovery scan dispatches the activity again, a fresh
/// actor takes over, and the workflow completes with one `TaskCompleted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_actor_loses_its_held_result_but_not_the_instance() {
    let (spy, engine, mut rx, shutdown) = setup(EngineConfig::default()).await;
    let first = next(&mut rx).await;
    answer(&engine, first, vec![schedule(0)]).await;
    let activity = next(&mut rx).await;
    let (_held_turn, kinds, call) = run_activity(&engine, &mut rx, activity).await;
    assert_eq!(kinds, ["WorkflowStarted", "TaskCompleted"]);
    assert_eq!(spy.counts.results.load(Ordering::SeqCst), 0, "folded");
    engine
        .inner
        .actors
        .send_existing("f", crate::mailbox::ActorMsg::Panic);
    // The worker learns its result was not recorded (the activity runs again).
    assert!(matches!(
        answered(call).await,
        Err(crate::error::EngineError::Unavailable(_))
    ));
    // The activity comes back (its task row was never deleted); turns meanwhile get no actions.
    let again = tokio::time::timeout(DEADLINE, async {
        loop {
            let item = next(&mut rx).await;
            match &item.request {
                Some(Request::ActivityRequest(_)) => return item,
                _ => answer(&engine, item, vec![]).await,
            }
        }
    })
    .await
    .expect("the activity is dispatched again after the panic");
    let (turn, kinds, call) = run_activity(&engine, &mut rx, again).await;
    assert!(kinds.contains(&"TaskCompleted".to_string()), "{kinds:?}");
    answer(&engine, turn, vec![complete_workflow(1)]).await;
    answered(call).await.unwrap();
    let meta = engine.get_instance("f").await.unwrap().unwrap();
    assert_eq!(meta.status, weft_core::RuntimeStatus::Completed);
    let h = engine.history("f").await.unwrap().unwrap();
    assert_eq!(task_completed_count(&h), 1);
    shutdown.cancel();
}

/// A join's results that arrive while its turn waits in the queue: one is folded into the turn,
/// the others take the durable path, so their workers are answered after a group commit and not
/// after the turn (a fan-out's worker would otherwise hold every activity slot until the join's
/// turn commits). The turn then carries them all, and every call is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_folds_one_result_and_records_the_others() {
    const N: i32 = 8;
    let (spy, engine, mut rx, shutdown) = setup(patient()).await;
    let first = next(&mut rx).await;
    answer(&engine, first, (0..N).map(schedule).collect()).await;
    let mut activities = Vec::new();
    for _ in 0..N {
        activities.push(next(&mut rx).await);
    }
    // No worker takes the turn the results prepare: it stays queued while they arrive.
    engine.inner.hub.pause();
    let mut calls: Vec<Call> = activities.iter().map(|a| complete(&engine, a)).collect();
    holding(&engine, 1).await;
    // All but the folded one are answered with the turn still queued.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut answered_early = 0;
    while answered_early < N - 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {answered_early} of {} durable results answered while the turn was queued",
            N - 1
        );
        let (done, waiting): (Vec<Call>, Vec<Call>) =
            calls.into_iter().partition(|c| c.is_finished());
        for call in done {
            answered(call).await.unwrap();
            answered_early += 1;
        }
        calls = waiting;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        calls.len(),
        1,
        "the folded result's call waits for its turn"
    );
    assert_eq!(spy.counts.results.load(Ordering::SeqCst), (N - 1) as usize);
    engine.inner.hub.resume();
    let mut completed = 0;
    while completed < N as usize {
        let turn = next(&mut rx).await;
        let Some(Request::WorkflowRequest(r)) = &turn.request else {
            panic!("expected the join's turn, got {turn:?}");
        };
        completed = task_completed_count(&r.past_events) + task_completed_count(&r.new_events);
        answer(&engine, turn, vec![]).await;
    }
    answered(calls.pop().unwrap()).await.unwrap();
    let h = engine.history("f").await.unwrap().unwrap();
    assert_eq!(task_completed_count(&h), N as usize);
    shutdown.cancel();
}

/// A result whose commit outcome is unknown is written again (idempotent under its claim), not
/// handed out again: the activity does not run twice (issue 15, point 5).
#[tokio::test]
async fn a_result_with_an_unknown_outcome_is_not_dispatched_again() {
    let cfg = EngineConfig {
        fold_activity_results: false,
        ..Default::default()
    };
    let (spy, engine, mut rx, shutdown) = setup(cfg).await;
    let first = next(&mut rx).await;
    answer(&engine, first, vec![schedule(0)]).await;
    let act = next(&mut rx).await;
    spy.fail_next_results(crate::testing::Fail::Unknown);
    answered(complete(&engine, &act)).await.unwrap();
    let turn = next(&mut rx).await;
    assert!(
        matches!(turn.request, Some(Request::WorkflowRequest(_))),
        "the activity was dispatched again: {turn:?}"
    );
    shutdown.cancel();
}

/// The worker's `CompleteActivityTask` returns only once the turn that folded its result has
/// committed: a result it was told is recorded is never lost with the sidecar (issue 19).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_is_answered_once_the_turn_folding_its_result_committed() {
    let (spy, engine, mut rx, shutdown) = setup(patient()).await;
    let first = next(&mut rx).await;
    answer(&engine, first, vec![schedule(0)]).await;
    let activity = next(&mut rx).await;
    let cps = spy.counts.checkpoints.load(Ordering::SeqCst);
    let (turn, kinds, mut call) = run_activity(&engine, &mut rx, activity).await;
    assert_eq!(kinds, ["WorkflowStarted", "TaskCompleted"]);
    let early = tokio::time::timeout(Duration::from_millis(100), &mut call).await;
    assert!(
        early.is_err(),
        "answered before the turn carrying the result committed: {early:?}"
    );
    answer(&engine, turn, vec![complete_workflow(1)]).await;
    answered(call).await.unwrap();
    assert_eq!(spy.counts.checkpoints.load(Ordering::SeqCst) - cps, 1);
    assert_eq!(spy.counts.results.load(Ordering::SeqCst), 0, "folded");
    shutdown.cancel();
}

/// A worker that cannot run the turn while its activity call waits (its activities and turns
/// share one pool) is answered after `fold_wait`: the result is recorded on its own, the turn
/// still carries it, history keeps it once, and folding pauses (the next result takes the
/// durable path at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_run_the_turn_is_answered_after_the_fold_wait() {
    let cfg = EngineConfig {
        fold_wait: Duration::from_millis(50),
        ..Default::default()
    };
    let (spy, engine, mut rx, shutdown) = setup(cfg).await;
    let first = next(&mut rx).await;
    answer(&engine, first, vec![schedule(0)]).await;
    let activity = next(&mut rx).await;
    // The turn is handed out but not answered until the activity call returns.
    let (turn, kinds, call) = run_activity(&engine, &mut rx, activity).await;
    assert_eq!(kinds, ["WorkflowStarted", "TaskCompleted"]);
    answered(call).await.unwrap();
    assert_eq!(
        spy.counts.results.load(Ordering::SeqCst),
        1,
        "recorded alone"
    );
    answer(&engine, turn, vec![schedule(1)]).await;
    let activity = next(&mut rx).await;
    let (turn, kinds, call) = run_activity(&engine, &mut rx, activity).await;
    assert_eq!(
        kinds,
        ["WorkflowStarted", "TaskCompleted"],
        "the first result's inbox copy is not delivered again"
    );
    answered(call).await.unwrap();
    assert_eq!(
        spy.counts.results.load(Ordering::SeqCst),
        2,
        "folding paused"
    );
    answer(&engine, turn, vec![complete_workflow(2)]).await;
    let h = engine.history("f").await.unwrap().unwrap();
    assert_eq!(task_completed_count(&h), 2);
    shutdown.cancel();
}
