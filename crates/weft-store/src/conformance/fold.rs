//! Conformance case for activity results folded into a turn: the checkpoint that appends the
//! result to history also deletes the task row, atomically and fenced like the rest of it.

use super::{Fixture, all, create, empty_cp, pending, row, task_completed};
use crate::{ActivityTask, Store, StoreError};

pub async fn checkpoint_folds_activity_results<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "f").await;
    let m = row(&s, "f").await;
    let g = m.generation;
    let task = |task_id| ActivityTask {
        app_id: String::new(),
        claim: 0,
        instance_id: "f".into(),
        generation: g,
        task_id,
        request: vec![task_id as u8],
    };
    let mut cp = empty_cp(&m);
    cp.new_activities = vec![task(1), task(2), task(3), task(4)];
    s.checkpoint(cp).await.unwrap();
    let inbox0 = s.read_inbox("f").await.unwrap().len();

    // A fenced-out checkpoint folds nothing: the row stays and history is unchanged.
    let m = row(&s, "f").await;
    let mut stale = empty_cp(&m);
    stale.expected_version = m.version - 1;
    stale.append = vec![task_completed(1)];
    stale.completed_activities = vec![(1, g, None)];
    assert!(matches!(
        s.checkpoint(stale).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(pending(&s, &all()).await.len(), 4);
    assert!(s.get_history("f").await.unwrap().unwrap().is_empty());

    // The fold: row gone and event appended in one checkpoint; the inbox is not touched.
    // A pair naming another generation matches no row and leaves task 2 alone.
    let mut cp = empty_cp(&m);
    cp.append = vec![task_completed(1)];
    cp.completed_activities = vec![(1, g, None), (2, g + 1, None)];
    s.checkpoint(cp).await.unwrap();
    assert_eq!(pending(&s, &all()).await, vec![task(2), task(3), task(4)]);
    assert_eq!(
        s.get_history("f").await.unwrap().unwrap(),
        vec![task_completed(1)]
    );
    assert_eq!(s.read_inbox("f").await.unwrap().len(), inbox0);
    assert!(
        !s.complete_activity("f", 1, g, task_completed(1))
            .await
            .unwrap(),
        "a late durable copy of a folded result finds no task"
    );

    // A row already deleted (the same result recorded durably meanwhile) is no error: the
    // checkpoint commits; the inbox copy stays for the next turn to drop as a duplicate.
    assert!(
        s.complete_activity("f", 3, g, task_completed(3))
            .await
            .unwrap()
    );
    let m = row(&s, "f").await;
    let mut cp = empty_cp(&m);
    cp.append = vec![task_completed(3), task_completed(4)];
    cp.completed_activities = vec![(3, g, None), (4, g, None)];
    s.checkpoint(cp).await.unwrap();
    assert_eq!(row(&s, "f").await.version, m.version + 1);
    assert_eq!(pending(&s, &all()).await, vec![task(2)]);
    assert_eq!(s.read_inbox("f").await.unwrap().len(), inbox0 + 1);

    // In a group commit too (the path the engine uses).
    let m = row(&s, "f").await;
    let mut cp = empty_cp(&m);
    cp.append = vec![task_completed(2)];
    cp.completed_activities = vec![(2, g, None)];
    // With a second member, so a set-based batch path is taken where a store has one.
    create(&s, "f2").await;
    let m2 = row(&s, "f2").await;
    let mut cp2 = empty_cp(&m2);
    cp2.new_activities = vec![ActivityTask {
        app_id: String::new(),
        claim: 0,
        instance_id: "f2".into(),
        generation: m2.generation,
        task_id: 7,
        request: vec![7],
    }];
    let r = s.checkpoint_batch(vec![cp, cp2]).await;
    assert!(r.into_iter().all(|r| r.is_ok()));
    let left: Vec<(String, i32)> = pending(&s, &all())
        .await
        .into_iter()
        .map(|t| (t.instance_id, t.task_id))
        .collect();
    assert_eq!(left, vec![("f2".to_string(), 7)], "f's task 2 folded");
    assert_eq!(s.get_history("f").await.unwrap().unwrap().len(), 4);
}

/// A folded result whose task was claimed since its dispatch refuses its turn (alone, in a
/// batch), as `complete_activity_batch` refuses such a result: the claimer's dispatch completes
/// the task, so no stale fold deletes it.
pub async fn a_fold_under_an_old_claim_refuses_the_turn<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    create(&s, "rf").await;
    create(&s, "rf-other").await;
    let m = row(&s, "rf").await;
    let g = m.generation;
    let mut cp = empty_cp(&m);
    cp.new_activities = vec![ActivityTask {
        app_id: String::new(),
        claim: 0,
        instance_id: "rf".into(),
        generation: g,
        task_id: 1,
        request: vec![1],
    }];
    s.checkpoint(cp).await.unwrap();
    let claimed = s.claim_activities(&all()).await.unwrap();
    assert_eq!(claimed.iter().map(|t| t.claim).collect::<Vec<_>>(), vec![1]);

    let m = row(&s, "rf").await;
    let mut stale = empty_cp(&m);
    stale.append = vec![task_completed(1)];
    stale.completed_activities = vec![(1, g, Some(0))];
    assert!(matches!(
        s.checkpoint(stale.clone()).await,
        Err(StoreError::Reclaimed { task_id: 1, .. })
    ));
    let other = empty_cp(&row(&s, "rf-other").await);
    let out = s.checkpoint_batch(vec![stale, other]).await;
    assert!(
        matches!(out[0], Err(StoreError::Reclaimed { task_id: 1, .. })),
        "{:?}",
        out[0]
    );
    assert!(out[1].is_ok(), "{:?}", out[1]);
    assert_eq!(row(&s, "rf").await.version, m.version, "turn refused");
    assert!(s.get_history("rf").await.unwrap().unwrap().is_empty());

    let mut current = empty_cp(&m);
    current.append = vec![task_completed(1)];
    current.completed_activities = vec![(1, g, Some(1))];
    s.checkpoint(current).await.unwrap();
    assert!(
        pending(&s, &all()).await.is_empty(),
        "folded under the current claim"
    );
}
