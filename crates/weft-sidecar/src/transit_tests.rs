//! Results on their way to the store meet this sidecar's own recovery scan (issue 15 point 3):
//! the scan dispatches nothing for them and they are recorded under its claim, so the activity
//! runs exactly once.

use crate::EngineConfig;
use crate::fold_tests::{DEADLINE, answer, complete, next, schedule, setup, task_completed_count};
use weft_proto::durabletask::work_item::Request;

/// Whether the hub queues or dispatched (and awaits) an activity of instance `f`.
fn activity_out(engine: &crate::Engine) -> bool {
    engine.inner.hub.holds("f", Some(0)) || engine.inner.hub.queued() > 0
}

async fn scan_while_a_result_is_in_transit(fold: bool) {
    let cfg = EngineConfig {
        fold_activity_results: fold,
        ..Default::default()
    };
    let (spy, engine, mut rx, shutdown) = setup(cfg).await;
    let first = next(&mut rx).await;
    answer(&engine, first, vec![schedule(0)]).await;
    let act = next(&mut rx).await;
    let turn = if fold {
        // Held by the actor for the turn it dispatches now, committed when that is answered.
        complete(&engine, &act).await;
        let turn = next(&mut rx).await;
        engine.inner.resync().await.unwrap();
        assert!(
            !activity_out(&engine),
            "the scan dispatched the activity again"
        );
        answer(&engine, turn, vec![]).await;
        None
    } else {
        // Its commit held at the store's door, as a slow or ambiguous commit is.
        spy.hold_activity_results(true);
        let done = {
            let (e, a) = (engine.clone(), act.clone());
            tokio::spawn(async move { complete(&e, &a).await })
        };
        tokio::time::timeout(DEADLINE, spy.activity_arrived.notified())
            .await
            .expect("the result reaches the store");
        engine.inner.resync().await.unwrap();
        assert!(
            !activity_out(&engine),
            "the scan dispatched the activity again"
        );
        spy.hold_activity_results(false);
        tokio::time::timeout(DEADLINE, done)
            .await
            .expect("the result is answered")
            .expect("and accepted");
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
