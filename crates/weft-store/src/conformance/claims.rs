//! Conformance cases for activity task claims: a recovery scan's claim and a result made under an
//! older claim exclude each other, so a task whose result was recorded is never handed out again.

use std::sync::Arc;

use super::{Fixture, all, create, empty_cp, row, task_completed};
use crate::{ActivityCompletion, ActivityTask, Store, StoreError};

fn task(id: &str, generation: i64, task_id: i32) -> ActivityTask {
    ActivityTask {
        app_id: String::new(),
        instance_id: id.into(),
        generation,
        task_id,
        request: format!("req-{task_id}").into_bytes(),
        claim: 0,
    }
}

fn done(id: &str, generation: i64, task_id: i32, claim: Option<i64>) -> ActivityCompletion {
    ActivityCompletion {
        instance_id: id.into(),
        task_id,
        generation,
        claim,
        event: task_completed(task_id),
    }
}

/// Schedules tasks `1..=n` of a new instance `id`; returns its generation.
async fn schedule<S: Store>(s: &S, id: &str, n: i32) -> i64 {
    create(s, id).await;
    let m = row(s, id).await;
    let mut cp = empty_cp(&m);
    cp.new_activities = (1..=n).map(|t| task(id, m.generation, t)).collect();
    s.checkpoint(cp).await.unwrap();
    m.generation
}

/// A task addressed to another app (multi-app workflows) is claimed only by that app: never by
/// a scan of the instance's own app, once by the target app's claim of new tasks (claim 0 → 1),
/// again by its take-over scan; its result lands in the calling instance's inbox.
pub async fn cross_app_tasks_are_claimed_by_their_app_only<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "x").await;
    let m = row(&s, "x").await;
    let mut cp = empty_cp(&m);
    let mut remote = task("x", m.generation, 2);
    remote.app_id = "billing".into();
    cp.new_activities = vec![task("x", m.generation, 1), remote];
    s.checkpoint(cp).await.unwrap();
    let billing = crate::Scope::all("billing");
    assert_eq!(
        s.cross_app_backlog().await.unwrap(),
        vec![("billing".to_string(), 1)],
        "the unclaimed task waits for its app"
    );
    let tasks = |v: Vec<ActivityTask>| -> Vec<(i32, i64, String)> {
        v.into_iter()
            .map(|t| (t.task_id, t.claim, t.app_id))
            .collect()
    };

    // The instance's own app claims its own task only; nothing is new for it.
    assert_eq!(
        tasks(s.claim_activities(&all()).await.unwrap()),
        vec![(1, 1, String::new())]
    );
    assert!(
        s.claim_new_remote_activities(&all())
            .await
            .unwrap()
            .is_empty()
    );
    // The target app claims the new task once, with its app; a second look finds nothing new.
    assert_eq!(
        tasks(s.claim_new_remote_activities(&billing).await.unwrap()),
        vec![(2, 1, "billing".into())]
    );
    assert!(
        s.claim_new_remote_activities(&billing)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.cross_app_backlog().await.unwrap().is_empty());
    // A take-over scan of the target app claims it again (and nothing of the caller's app).
    assert_eq!(
        tasks(s.claim_activities(&billing).await.unwrap()),
        vec![(2, 2, "billing".into())]
    );
    // Outside the target app's scope it is not claimed.
    let none = crate::Scope {
        app_id: "billing".into(),
        buckets: vec![],
        epochs: None,
    };
    assert!(
        s.claim_new_remote_activities(&none)
            .await
            .unwrap()
            .is_empty()
    );
    // The target's result under its claim lands in the caller's inbox; the old claim's is refused.
    let before = s.read_inbox("x").await.unwrap().len();
    let r = s
        .complete_activity_batch(vec![done("x", m.generation, 2, Some(1))])
        .await;
    assert!(
        matches!(r.as_slice(), [Err(StoreError::Reclaimed { .. })]),
        "{r:?}"
    );
    let r = s
        .complete_activity_batch(vec![done("x", m.generation, 2, Some(2))])
        .await;
    assert!(matches!(r.as_slice(), [Ok(true)]), "{r:?}");
    assert_eq!(s.read_inbox("x").await.unwrap().len(), before + 1);
}

/// A claim raises the task's claim; a result of the older dispatch is refused and changes
/// nothing, the claimer's result lands once, a result without a claim is taken from anyone, and
/// a task completed before a claim is not claimed.
pub async fn a_claim_refuses_the_older_dispatch<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let g = schedule(&s, "c", 3).await;
    let inbox0 = s.read_inbox("c").await.unwrap().len();

    // Task 3 completes under the scheduling dispatch's claim before anyone claims.
    assert!(matches!(
        s.complete_activity_batch(vec![done("c", g, 3, Some(0))])
            .await
            .as_slice(),
        [Ok(true)]
    ));
    let claimed = s.claim_activities(&all()).await.unwrap();
    let got: Vec<(i32, i64)> = claimed.iter().map(|t| (t.task_id, t.claim)).collect();
    assert_eq!(got, vec![(1, 1), (2, 1)], "completed task 3 is not claimed");
    assert_eq!(claimed[0].request, b"req-1".to_vec());

    // One batch: the old dispatch's result for 1 is refused, 2 lands without a claim, an
    // unknown task is simply not recorded. Each answers itself.
    let r = s
        .complete_activity_batch(vec![
            done("c", g, 1, Some(0)),
            done("c", g, 2, None),
            done("c", g, 9, Some(0)),
        ])
        .await;
    assert!(
        matches!(
            r.as_slice(),
            [
                Err(StoreError::Reclaimed { task_id: 1, .. }),
                Ok(true),
                Ok(false)
            ]
        ),
        "{r:?}"
    );
    assert_eq!(s.read_inbox("c").await.unwrap().len(), inbox0 + 2);

    // A second claim makes the first claimer's result stale too.
    let again = s.claim_activities(&all()).await.unwrap();
    assert_eq!(
        again
            .iter()
            .map(|t| (t.task_id, t.claim))
            .collect::<Vec<_>>(),
        vec![(1, 2)]
    );
    assert!(matches!(
        s.complete_activity_batch(vec![done("c", g, 1, Some(1))])
            .await
            .as_slice(),
        [Err(StoreError::Reclaimed { .. })]
    ));
    assert!(matches!(
        s.complete_activity_batch(vec![done("c", g, 1, Some(2))])
            .await
            .as_slice(),
        [Ok(true)]
    ));
    assert!(
        matches!(
            s.complete_activity_batch(vec![done("c", g, 1, Some(2))])
                .await
                .as_slice(),
            [Ok(false)]
        ),
        "a duplicate of a recorded result is not an error"
    );
    let inbox = s.read_inbox("c").await.unwrap();
    assert_eq!(inbox.len(), inbox0 + 3, "one result per task");
    assert!(s.claim_activities(&all()).await.unwrap().is_empty());
}

/// A recovery scan on one handle races results of the older dispatch on another (the bucket's
/// new owner against the old owner's worker): every task ends either recorded by the old
/// dispatch and not claimed, or claimed and its old result refused — never both, never neither.
pub async fn racing_claim_and_results_never_both_win<F: Fixture>(fx: &F) {
    let a = Arc::new(fx.handle().await);
    let b = Arc::new(fx.handle().await);
    const TASKS: i32 = 40;
    for round in 0..8 {
        let id = format!("race-{round}");
        let g = schedule(a.as_ref(), &id, TASKS).await;
        let inbox0 = a.read_inbox(&id).await.unwrap().len();
        // The old owner's results arrive in several group commits while the new owner claims.
        let results = tokio::spawn({
            let a = a.clone();
            let id = id.clone();
            async move {
                let mut out = Vec::new();
                for chunk in (1..=TASKS).collect::<Vec<_>>().chunks(10) {
                    let batch = chunk.iter().map(|t| done(&id, g, *t, Some(0))).collect();
                    out.extend(a.complete_activity_batch(batch).await);
                }
                out
            }
        });
        let claimed = b.claim_activities(&all()).await.unwrap();
        let results = results.await.expect("join");
        let mine: Vec<i32> = claimed
            .iter()
            .filter(|t| t.instance_id == id)
            .map(|t| t.task_id)
            .collect();
        for (k, r) in results.iter().enumerate() {
            let t = k as i32 + 1;
            match r {
                Ok(true) => assert!(
                    !mine.contains(&t),
                    "round {round} task {t}: recorded by the old dispatch and claimed anew"
                ),
                Err(StoreError::Reclaimed { .. }) => assert!(
                    mine.contains(&t),
                    "round {round} task {t}: refused but not claimed"
                ),
                other => panic!("round {round} task {t}: unexpected {other:?}"),
            }
        }
        // The claimer finishes what it claimed; nothing stays pending.
        let finish = mine.iter().map(|t| done(&id, g, *t, Some(1))).collect();
        assert!(
            b.complete_activity_batch(finish)
                .await
                .iter()
                .all(|r| matches!(r, Ok(true)))
        );
        assert_eq!(
            a.read_inbox(&id).await.unwrap().len(),
            inbox0 + TASKS as usize,
            "round {round}: every task's result recorded exactly once"
        );
    }
    assert!(a.claim_activities(&all()).await.unwrap().is_empty());
}
