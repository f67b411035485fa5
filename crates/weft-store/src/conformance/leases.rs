//! Conformance cases for ownership leases: holders that expire for good, bucket leases whose
//! epoch rises with every take-over, and owner writes that a stale epoch cannot make.

use std::sync::Arc;
use std::time::Duration;

use weft_core::bucket::bucket_of;

use super::{APP, Fixture, create, empty_cp, raised, row, task_completed};
use crate::{ActivityTask, BucketLease, Fence, Reminder, Scope, Store, StoreError};

const LONG: i64 = 60_000_000;

fn fence(bucket: i32, epoch: i64) -> Fence {
    Fence {
        app_id: APP.into(),
        bucket,
        epoch,
    }
}

fn scope_at(lease: BucketLease) -> Scope {
    Scope {
        app_id: APP.into(),
        buckets: vec![lease.bucket],
        epochs: Some(vec![lease.epoch]),
    }
}

/// Takes `bucket` for `holder`, which must get it.
async fn take<S: Store>(s: &S, holder: &str, bucket: i32) -> BucketLease {
    let got = s.acquire_buckets(APP, holder, &[bucket]).await.unwrap();
    assert_eq!(got.len(), 1, "{holder} should get bucket {bucket}: {got:?}");
    got[0]
}

/// Waits (with a deadline) until `holder`'s lease has run out: renewing fails from then on.
async fn wait_expired<S: Store>(s: &S, other: &str, bucket: i32) -> BucketLease {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = s.acquire_buckets(APP, other, &[bucket]).await.unwrap();
        if let Some(l) = got.first() {
            return *l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lease never ran out"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A holder starts once, renews while alive, and once ended (or run out) never renews again.
pub async fn holders_start_renew_and_end<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    s.start_holder("h1", LONG).await.unwrap();
    assert!(matches!(
        s.start_holder("h1", LONG).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(s.renew_holder("h1", LONG).await.unwrap());
    s.end_holder("h1").await.unwrap();
    assert!(!s.renew_holder("h1", LONG).await.unwrap(), "ended for good");
    assert!(!s.renew_holder("never", LONG).await.unwrap());
    assert!(
        s.acquire_buckets(APP, "h1", &[1]).await.unwrap().is_empty(),
        "an ended holder takes nothing"
    );
}

/// Free buckets are taken, a live holder keeps its own, a released one passes on with a higher
/// epoch, and taking again what one holds keeps the epoch.
pub async fn buckets_pass_on_with_higher_epochs<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let other = fx.handle().await;
    s.start_holder("a", LONG).await.unwrap();
    other.start_holder("b", LONG).await.unwrap();
    let a = s.acquire_buckets(APP, "a", &[2, 1, 2]).await.unwrap();
    assert_eq!(a.iter().map(|l| l.bucket).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(
        s.acquire_buckets(APP, "a", &[1, 2]).await.unwrap(),
        a,
        "kept"
    );
    let b = other.acquire_buckets(APP, "b", &[2, 3]).await.unwrap();
    assert_eq!(
        b.iter().map(|l| l.bucket).collect::<Vec<_>>(),
        vec![3],
        "2 is a's"
    );
    s.release_buckets(APP, "a", &[2]).await.unwrap();
    other.release_buckets(APP, "b", &[1]).await.unwrap(); // not b's: ignored
    let b2 = take(&other, "b", 2).await;
    assert!(b2.epoch > a[1].epoch, "a take-over raises the epoch");
    assert!(s.acquire_buckets(APP, "a", &[1, 2]).await.unwrap() == vec![a[0]]);
    // Another app's bucket 2 is another lease.
    assert_eq!(
        s.acquire_buckets("other-app", "a", &[2])
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A holder whose lease ran out loses its buckets to the next taker and can never renew.
pub async fn an_expired_holder_is_taken_over<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    s.start_holder("short", 300_000).await.unwrap();
    s.start_holder("next", LONG).await.unwrap();
    let first = take(&s, "short", 7).await;
    let next = wait_expired(&s, "next", 7).await;
    assert!(next.epoch > first.epoch);
    assert!(
        !s.renew_holder("short", LONG).await.unwrap(),
        "dead for good"
    );
    assert!(
        s.acquire_buckets(APP, "short", &[7])
            .await
            .unwrap()
            .is_empty()
    );
}

/// Every owner write — checkpoint, activity claim, reminder claim and fire, purge — commits
/// under the current epoch and changes nothing under a stale one.
pub async fn a_stale_epoch_changes_nothing<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let id = "fenced";
    let b = bucket_of(id);
    s.start_holder("old", LONG).await.unwrap();
    s.start_holder("new", LONG).await.unwrap();
    let old = take(&s, "old", b).await;
    create(&s, id).await;
    let m = row(&s, id).await;
    let mut cp = empty_cp(&m);
    cp.fence = Some(fence(b, old.epoch));
    cp.new_activities = vec![ActivityTask {
        app_id: String::new(),
        instance_id: id.into(),
        generation: m.generation,
        task_id: 1,
        request: b"r".to_vec(),
        claim: 0,
    }];
    cp.new_reminders = vec![Reminder {
        id: 0,
        instance_id: id.into(),
        generation: m.generation,
        due_at: 10,
        event: raised("t", 1),
    }];
    s.checkpoint(cp).await.unwrap();
    s.release_buckets(APP, "old", &[b]).await.unwrap();
    let new = take(&s, "new", b).await;

    let m = row(&s, id).await;
    let mut stale = empty_cp(&m);
    stale.fence = Some(fence(b, old.epoch));
    stale.append = vec![task_completed(1)];
    assert!(matches!(
        s.checkpoint(stale.clone()).await,
        Err(StoreError::Fenced { epoch, .. }) if epoch == old.epoch
    ));
    let batch = s.checkpoint_batch(vec![stale]).await;
    assert!(matches!(batch[0], Err(StoreError::Fenced { .. })));
    assert_eq!(row(&s, id).await.version, m.version, "row unchanged");
    assert!(s.get_history(id).await.unwrap().unwrap().is_empty());

    assert!(s.claim_activities(&scope_at(old)).await.unwrap().is_empty());
    assert!(
        s.claim_due_reminders(&scope_at(old), 100, 200, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The current holder finds both untouched: claim 1 (the first claim), reminder unleased.
    let tasks = s.claim_activities(&scope_at(new)).await.unwrap();
    assert_eq!(tasks.iter().map(|t| t.claim).collect::<Vec<_>>(), vec![1]);
    let due = s
        .claim_due_reminders(&scope_at(new), 100, 200, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert!(matches!(
        s.fire_reminder(due[0].id, Some(&fence(b, old.epoch))).await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(
        s.fire_reminder(due[0].id, Some(&fence(b, new.epoch)))
            .await
            .unwrap()
    );
    assert!(matches!(
        s.purge(id, true, Some(&fence(b, old.epoch))).await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(s.get_instance(id).await.unwrap().is_some());
    let mut cp = empty_cp(&row(&s, id).await);
    cp.fence = Some(fence(b, new.epoch));
    s.checkpoint(cp).await.unwrap();
    assert!(s.purge(id, true, Some(&fence(b, new.epoch))).await.unwrap());
}

/// A batch answers each member's fence alone: a stale member fails, the others commit.
pub async fn checkpoint_batch_fences_each_member<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    s.start_holder("h", LONG).await.unwrap();
    let (good, bad) = ("member-good", "member-bad");
    create(&s, good).await;
    create(&s, bad).await;
    let lg = take(&s, "h", bucket_of(good)).await;
    let lb = take(&s, "h", bucket_of(bad)).await;
    let mut g = empty_cp(&row(&s, good).await);
    g.fence = Some(fence(lg.bucket, lg.epoch));
    let mut w = empty_cp(&row(&s, bad).await);
    w.fence = Some(fence(lb.bucket, lb.epoch + 1));
    let out = s.checkpoint_batch(vec![w, g]).await;
    assert!(
        matches!(out[0], Err(StoreError::Fenced { .. })),
        "{:?}",
        out[0]
    );
    assert!(out[1].is_ok(), "{:?}", out[1]);
}

/// An owner writing as fast as it can while its bucket is taken over: once the take-over has
/// returned, not one more of the old owner's writes commits (they are ordered in the database,
/// not by timing).
pub async fn no_owner_write_lands_after_a_takeover<F: Fixture>(fx: &F) {
    let s = Arc::new(fx.handle().await);
    let other = fx.handle().await;
    let id = "race-takeover";
    let b = bucket_of(id);
    s.start_holder("old", LONG).await.unwrap();
    other.start_holder("new", LONG).await.unwrap();
    let old = take(&*s, "old", b).await;
    create(&*s, id).await;
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut commits = 0u32;
            loop {
                let mut cp = empty_cp(&row(&*s, id).await);
                cp.fence = Some(fence(b, old.epoch));
                match s.checkpoint(cp).await {
                    Ok(()) => commits += 1,
                    Err(StoreError::Fenced { .. }) => return commits,
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        })
    };
    // Let the writer commit a few times, then take over from it as if its lease ran out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while row(&other, id).await.version < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "writer made no progress"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    other.end_holder("old").await.unwrap();
    let new = take(&other, "new", b).await;
    let at_takeover = row(&other, id).await.version;
    let commits = writer.await.unwrap();
    assert!(commits >= 3);
    assert_eq!(
        row(&other, id).await.version,
        at_takeover,
        "the old owner committed after the take-over"
    );
    let mut cp = empty_cp(&row(&other, id).await);
    cp.fence = Some(fence(b, new.epoch));
    other.checkpoint(cp).await.unwrap();
}

/// A take-over frees the reminders the earlier holder had claimed (their fires are fenced), so
/// the new holder fires them at once instead of after the claim's lease; a holder taking its
/// own bucket again, and other apps' reminders in the bucket, keep their claims.
pub async fn a_takeover_frees_claimed_reminders<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let id = "reminder-takeover";
    let b = bucket_of(id);
    s.start_holder("old", LONG).await.unwrap();
    s.start_holder("new", LONG).await.unwrap();
    let old = take(&s, "old", b).await;
    create(&s, id).await;
    // Another app's instance in the same bucket: the take-over's bucket holds both apps'.
    let other_id = (0..)
        .map(|n| format!("reminder-other-{n}"))
        .find(|o| bucket_of(o) == b)
        .expect("some ID falls in the bucket");
    let mut other_app = super::create_req(&other_id, crate::ReusePolicy::Error);
    other_app.meta.app_id = "other-app".into();
    s.create_instance(other_app).await.unwrap();
    for (inst, fence_) in [(id, Some(fence(b, old.epoch))), (other_id.as_str(), None)] {
        let m = row(&s, inst).await;
        let mut cp = empty_cp(&m);
        cp.fence = fence_;
        cp.new_reminders = vec![Reminder {
            id: 0,
            instance_id: inst.into(),
            generation: m.generation,
            due_at: 10,
            event: raised("t", 1),
        }];
        s.checkpoint(cp).await.unwrap();
    }
    let far = 100 + LONG;
    let mine = s
        .claim_due_reminders(&scope_at(old), 100, far, 10)
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    let theirs = s
        .claim_due_reminders(&Scope::all("other-app"), 100, far, 10)
        .await
        .unwrap();
    assert_eq!(theirs.len(), 1);
    // Taking one's own bucket again changes nothing.
    assert_eq!(take(&s, "old", b).await, old);
    assert!(
        s.claim_due_reminders(&Scope::all(APP), 200, far, 10)
            .await
            .unwrap()
            .is_empty(),
        "still claimed by its holder"
    );
    s.end_holder("old").await.unwrap();
    let new = take(&s, "new", b).await;
    assert!(new.epoch > old.epoch);
    let due = s
        .claim_due_reminders(&scope_at(new), 200, far, 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![mine[0].id],
        "the new holder claims the reminder at once"
    );
    assert!(
        s.claim_due_reminders(&Scope::all("other-app"), 200, far, 10)
            .await
            .unwrap()
            .is_empty(),
        "another app's claim in the bucket is kept"
    );
    assert!(matches!(
        s.fire_reminder(mine[0].id, Some(&fence(b, old.epoch)))
            .await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(
        s.fire_reminder(due[0].id, Some(&fence(b, new.epoch)))
            .await
            .unwrap()
    );
}

/// Slot grants are owner writes: slots leased under an ownership-lease holder are granted and
/// renewed only while that holder is live; once it ran out it gets none, keeps none, and the
/// others may take its slots at once. A holder that names no ownership lease is unaffected.
pub async fn slots_need_a_live_lease_holder<F: Fixture>(fx: &F) {
    let s = fx.handle().await;
    let (t, later) = (super::now(), super::now() + LONG);
    s.start_holder("slots-short", 300_000).await.unwrap();
    s.start_holder("slots-next", LONG).await.unwrap();
    take(&s, "slots-short", 9).await;
    let got = s
        .acquire_slots("activity", 2, "slots-short", 1, t, later)
        .await
        .unwrap();
    assert_eq!(got, vec![0], "a live holder is granted slots");
    wait_expired(&s, "slots-next", 9).await;
    let t = super::now();
    assert!(
        s.acquire_slots("activity", 2, "slots-short", 1, t, later)
            .await
            .unwrap()
            .is_empty(),
        "a holder whose lease ran out got a slot"
    );
    assert!(
        s.renew_slots("slots-short", t, later)
            .await
            .unwrap()
            .is_empty(),
        "a holder whose lease ran out renewed its slots"
    );
    assert_eq!(
        s.acquire_slots("activity", 2, "slots-next", 2, t, later)
            .await
            .unwrap(),
        vec![0, 1],
        "its slot is free at once"
    );
    assert_eq!(
        s.acquire_slots("activity:x", 1, "no-lease", 1, t, later)
            .await
            .unwrap(),
        vec![0]
    );
}
