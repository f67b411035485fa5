//! Claims and results (issue 15 points 2 and 3): results on their way to the store meet this
//! sidecar's own recovery scan, which dispatches nothing for them (they are recorded under its
//! claim); refused results make only the bucket's holder claim again, at most once a second.

use crate::EngineConfig;
use crate::fold_tests::{
    DEADLINE, Items, answer, answered, complete, holding, next, patient, schedule, setup,
    task_completed_count,
};
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;
use weft_proto::durabletask::work_item::Request;
use weft_proto::durabletask::{ActivityResponse, WorkItem};

/// Whether the hub queues or dispatched (and awaits) an activity of instance `f`.
fn activity_out(engine: &crate::Engine) -> bool {
    engine.inner.hub.holds("f", Some(0)) || engine.inner.hub.queued() > 0
}

/// Starts `f`, has it schedule one activity and takes that from the stream.
async fn one_activity(
    cfg: EngineConfig,
) -> (
    std::sync::Arc<crate::testing::Spy>,
    crate::Engine,
    Items,
    CancellationToken,
    WorkItem,
) {
    let (spy, engine, mut rx, shutdown) = setup(cfg).await;
    let first = next(&mut rx).await;
    answer(&engine, first, vec![schedule(0)]).await;
    let act = next(&mut rx).await;
    (spy, engine, rx, shutdown, act)
}

async fn scan_while_a_result_is_in_transit(fold: bool) {
    let cfg = EngineConfig {
        fold_activity_results: fold,
        ..Default::default()
    };
    let (spy, engine, mut rx, shutdown, act) = one_activity(cfg).await;
    let turn = if fold {
        // Held by the actor for the turn it dispatches now, committed when that is answered.
        let call = complete(&engine, &act);
        let turn = next(&mut rx).await;
        crate::recovery::resync(&engine.inner).await.unwrap();
        assert!(
            !activity_out(&engine),
            "the scan dispatched the activity again"
        );
        answer(&engine, turn, vec![]).await;
        answered(call).await.unwrap();
        None
    } else {
        // Its commit held at the store's door, as a slow or ambiguous commit is.
        spy.hold_activity_results(true);
        let done = complete(&engine, &act);
        tokio::time::timeout(DEADLINE, spy.activity_arrived.notified())
            .await
            .expect("the result reaches the store");
        crate::recovery::resync(&engine.inner).await.unwrap();
        assert!(
            !activity_out(&engine),
            "the scan dispatched the activity again"
        );
        spy.hold_activity_results(false);
        tokio::time::timeout(DEADLINE, done)
            .await
            .expect("the result is answered")
            .expect("and accepted")
            .expect("and recorded");
        Some(next(&mut rx).await)
    };
    if let Some(turn) = turn {
        let Some(Request::WorkflowRequest(r)) = &turn.request else {
            panic!("expected the turn with the result, got {turn:?}");
        };
        assert_eq!(task_completed_count(&r.new_events), 1);
        answer(&engine, turn, vec![]).await;
    }
    let h = engine.history("f").await.unwrap().unwrap();
    assert_eq!(task_completed_count(&h), 1, "one result recorded");
    assert!(!activity_out(&engine), "the activity ran once");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_does_not_rerun_a_result_being_recorded() {
    scan_while_a_result_is_in_transit(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_does_not_rerun_a_result_held_for_the_next_turn() {
    scan_while_a_result_is_in_transit(true).await;
}

/// Schedules `n` activities of `f` (one bucket) on an engine without folding, takes them from
/// the stream, and has "another sidecar" claim them all, so every result is refused.
async fn refused_results(
    n: i32,
) -> (
    std::sync::Arc<crate::testing::Spy>,
    crate::Engine,
    Vec<WorkItem>,
    CancellationToken,
    Items,
) {
    let cfg = EngineConfig {
        fold_activity_results: false,
        ..Default::default()
    };
    let (spy, engine, mut rx, shutdown) = setup(cfg).await;
    let first = next(&mut rx).await;
    answer(&engine, first, (0..n).map(schedule).collect()).await;
    let mut acts = Vec::new();
    for _ in 0..n {
        acts.push(next(&mut rx).await);
    }
    assert_eq!(
        spy.claim_as_another(engine.inner.app_id()).await.len(),
        n as usize
    );
    // The stream stays open (returned): a closed one gives its items back to the queue.
    (spy, engine, acts, shutdown, rx)
}

/// Answers every activity at once; returns how many results were refused and how many claims
/// they made, once every claim begun (`Inner::reclaims`) has reached the store.
async fn answer_all(
    spy: &crate::testing::Spy,
    engine: &crate::Engine,
    acts: &[WorkItem],
) -> (usize, usize) {
    let scans = spy.counts.scans.load(Ordering::SeqCst);
    let begun = engine.inner.view.reclaims.load(Ordering::SeqCst);
    let calls = acts.iter().map(|item| {
        let Some(Request::ActivityRequest(a)) = &item.request else {
            panic!("expected an activity, got {item:?}");
        };
        engine.complete_activity(ActivityResponse {
            instance_id: "f".into(),
            task_id: a.task_id,
            result: Some("1".into()),
            completion_token: item.completion_token.clone(),
            ..Default::default()
        })
    });
    let out = futures::future::join_all(calls).await;
    let refused = out.iter().filter(|r| r.is_err()).count();
    let claims = engine.inner.view.reclaims.load(Ordering::SeqCst) - begun;
    let end = tokio::time::Instant::now() + DEADLINE;
    while spy.counts.scans.load(Ordering::SeqCst) - scans < claims {
        assert!(
            tokio::time::Instant::now() < end,
            "claims never reached the store"
        );
        let _ = tokio::time::timeout_at(end, spy.changed.notified()).await;
    }
    assert_eq!(spy.counts.scans.load(Ordering::SeqCst) - scans, claims);
    (refused, claims)
}

/// Issue 15 point 2: a sidecar that does not hold the bucket never claims after its results
/// are refused (its claim would refuse the holder's results in turn).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_holder_never_claims_after_a_refused_result() {
    let (spy, engine, acts, shutdown, _rx) = refused_results(5).await;
    let app = engine.inner.app_id().to_string();
    engine
        .inner
        .view
        .update_owned(|_| crate::cluster::owned::Owned::new(&app, &[]));
    let (refused, claims) = answer_all(&spy, &engine, &acts).await;
    assert_eq!(refused, 5, "all refused");
    assert_eq!(claims, 0, "a non-holder claimed");
    shutdown.cancel();
}

/// Issue 15 point 2: the holder receiving a burst of refused results in one bucket claims it
/// again at most once a second, not once per result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_refused_results_claims_once() {
    let (spy, engine, acts, shutdown, _rx) = refused_results(50).await;
    let (refused, claims) = answer_all(&spy, &engine, &acts).await;
    assert!(refused > 0);
    println!("{refused} refused results made {claims} claims");
    assert!(
        (1..=2).contains(&claims),
        "{claims} claims for {refused} refused results"
    );
    shutdown.cancel();
}

/// Issue 15 point 8: a result folded into a turn after another sidecar claimed its task is
/// refused with the turn (no stale fold deletes the reclaimed task); the claimer's result is
/// the one recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fold_under_an_old_claim_leaves_the_task_to_its_claimer() {
    let (spy, engine, mut rx, shutdown, act) = one_activity(EngineConfig::default()).await;
    let claimed = spy.claim_as_another(engine.inner.app_id()).await;
    assert_eq!(claimed.len(), 1);
    let call = complete(&engine, &act); // held by the actor
    let turn = next(&mut rx).await;
    let folded = engine
        .complete_workflow(weft_proto::durabletask::WorkflowResponse {
            instance_id: "f".into(),
            completion_token: turn.completion_token,
            ..Default::default()
        })
        .await;
    assert!(
        folded.is_err(),
        "the turn folding a reclaimed result committed"
    );
    assert!(
        answered(call).await.is_err(),
        "the worker was told a refused result was recorded"
    );
    use weft_proto::durabletask::{HistoryEvent, TaskCompletedEvent, history_event::EventType};
    let theirs = weft_store::ActivityCompletion {
        instance_id: "f".into(),
        task_id: 0,
        generation: claimed[0].generation,
        claim: Some(claimed[0].claim),
        event: HistoryEvent {
            event_id: -1,
            timestamp: None,
            router: None,
            event_type: Some(EventType::TaskCompleted(TaskCompletedEvent {
                task_scheduled_id: 0,
                result: Some("2".into()),
                ..Default::default()
            })),
        },
    };
    let out = spy.complete_as_another(vec![theirs]).await;
    assert!(
        matches!(out[0], Ok(true)),
        "the claimer's result was not recorded: {:?}",
        out[0]
    );
    engine.inner.actors.wake("f");
    let turn = next(&mut rx).await;
    answer(&engine, turn, vec![]).await;
    let h = engine.history("f").await.unwrap().unwrap();
    assert_eq!(task_completed_count(&h), 1);
    shutdown.cancel();
}

/// Issue 15 point 8: with folding on, the shutdown drain records the results actors hold for
/// turns that will not run here any more, before the lease ends (else the next owner runs
/// those activities again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_records_results_held_in_memory() {
    let (spy, engine, _rx, shutdown, act) = one_activity(patient()).await;
    // Handing out stops first (as the drain does), so the turn carrying the result stays
    // queued and the result stays in the actor's memory.
    engine.inner.hub.pause();
    let call = complete(&engine, &act);
    holding(&engine, 1).await;
    assert_eq!(
        engine.inner.hub.results_in_transit(),
        1,
        "held by the actor"
    );
    assert_eq!(engine.drain(DEADLINE).await, 0);
    answered(call)
        .await
        .expect("answered once the drain recorded it");
    assert!(
        spy.claim_as_another(engine.inner.app_id()).await.is_empty(),
        "the task is still pending: its activity would run again"
    );
    let inbox = engine.inner.store.read_inbox("f").await.unwrap();
    assert_eq!(
        inbox
            .iter()
            .filter(|e| weft_core::history::kind(&e.event) == "TaskCompleted")
            .count(),
        1
    );
    shutdown.cancel();
}
