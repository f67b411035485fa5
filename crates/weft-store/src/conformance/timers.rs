//! Conformance cases for when the timer loop should wake: leases count, so a leased reminder is
//! not reported as due (which made the loop spin) until its lease runs out.

use super::*;
use crate::Reminder;

pub async fn next_due_waits_for_leases<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let other = fx.handle().await;
    create(&s, "lease").await;
    let m = row(&s, "lease").await;
    let mut cp = empty_cp(&m);
    cp.new_reminders = [100, 200, 300]
        .into_iter()
        .map(|due_at| Reminder {
            id: 0,
            instance_id: "lease".into(),
            generation: m.generation,
            due_at,
            event: raised("timer", due_at as i32),
        })
        .collect();
    s.checkpoint(cp).await.unwrap();
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), Some(100));

    // Another node holds the first two (say their fire failed): they are claimable only after
    // the lease, so the next wake-up is the unleased one at 300.
    let got = other
        .claim_due_reminders(&all(), 250, 1_000, 2)
        .await
        .unwrap();
    assert_eq!(got.iter().map(|r| r.due_at).collect::<Vec<_>>(), [100, 200]);
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), Some(300));
    let third = s.claim_due_reminders(&all(), 400, 5_000, 10).await.unwrap();
    assert_eq!(third.len(), 1);
    // Everything leased: the earliest lease end.
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), Some(1_000));
    assert!(
        s.claim_due_reminders(&all(), 1_000, 9_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Claimable after that, and the new lease counts.
    let again = s
        .claim_due_reminders(&all(), 1_001, 9_000, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), Some(5_000));
    // A reminder leased before it is due (a clock ahead of ours) waits for its due time.
    let mut cp = empty_cp(&row(&s, "lease").await);
    cp.new_reminders = vec![Reminder {
        id: 0,
        instance_id: "lease".into(),
        generation: m.generation,
        due_at: 7_000,
        event: raised("late", 1),
    }];
    s.checkpoint(cp).await.unwrap();
    for r in got.iter().chain(&third).chain(&again) {
        s.fire_reminder(r.id, None).await.unwrap();
    }
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), Some(7_000));
    let far = s
        .claim_due_reminders(&all(), 7_000, 6_000, 10)
        .await
        .unwrap();
    assert_eq!(far.len(), 1, "due at 7000, leased until 6000");
    assert_eq!(s.next_reminder_due(&all()).await.unwrap(), Some(7_000));
}
