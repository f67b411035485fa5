//! The store conformance suite: every case is written once against the [`Store`] trait and run on
//! each backend through [`conformance_tests!`](crate::conformance_tests). Test-only code.

mod batches;
mod cases;
mod claims;
mod concurrency;
mod executions;
mod fold;
mod leases;
mod lifecycle;
mod scope;
mod slots;
mod timers;

pub use batches::*;
pub use cases::*;
pub use claims::*;
pub use concurrency::*;
pub use executions::*;
pub use fold::*;
pub use leases::*;
pub use lifecycle::*;
pub use scope::*;
pub use slots::*;
pub use timers::*;

use async_trait::async_trait;
use weft_core::{InstanceMeta, Micros, RuntimeStatus};
use weft_proto::durabletask::{
    EventRaisedEvent, ExecutionStartedEvent, HistoryEvent, TaskCompletedEvent,
    history_event::EventType,
};

use crate::{Checkpoint, CreateInstance, ReusePolicy, Store};

/// A fresh, empty database of one backend. Each `handle` is an independent connection to it, as
/// a second sidecar process would have.
#[async_trait]
pub trait Fixture: Send + Sync {
    type Handle: Store;
    async fn handle(&self) -> Self::Handle;
}

/// Generates one `#[tokio::test]` per conformance case. `$fixture` is an expression (may use
/// `.await`) giving `Option<impl Fixture>`; `None` means the backend is unavailable and the
/// fixture has already printed why (it must never skip silently).
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@cases $fixture;
            history_append_and_read,
            history_reset_starts_new_generation,
            inbox_append_read_consume,
            inbox_batch_reads_match_single_reads,
            fencing_conflict_changes_nothing,
            checkpoint_unknown_instance_conflicts,
            racing_handles_exactly_one_wins,
            reminders_claim_and_lease,
            reminder_claims_never_overlap,
            fire_reminder_is_idempotent,
            far_future_reminder_is_storable,
            outbound_deliver_and_create,
            outbound_create_conflict_delivers_on_conflict,
            complete_activity_once,
            complete_activity_batch_answers_each,
            a_claim_refuses_the_older_dispatch,
            cross_app_tasks_are_claimed_by_their_app_only,
            racing_claim_and_results_never_both_win,
            checkpoint_folds_activity_results,
            a_fold_under_an_old_claim_refuses_the_turn,
            cancel_pending_drops_old_work,
            purge_removes_everything,
            list_paging_and_filters,
            concurrent_checkpoints_on_different_instances,
            checkpoint_batch_isolates_a_conflict,
            racing_batches_settle_each_instance_once,
            create_reuse_policies,
            concurrent_creates_one_wins,
            scheduled_start_becomes_reminder,
            payloads_round_trip_exactly,
            scans_return_only_the_given_buckets,
            instances_record_their_app,
            every_inbox_write_is_found_in_its_bucket,
            inbox_rows_name_their_generation,
            recreation_continues_generation_and_version,
            purge_refuses_active_instances,
            purge_racing_deliveries_leaves_no_orphans,
            next_due_waits_for_leases,
            slots_lease_renew_expire_release,
            racing_slot_acquirers_never_share,
            list_by_completion_time,
            batch_equals_one_by_one,
            batch_losers_anywhere_fail_alone,
            create_batch_answers_each,
            holders_start_renew_and_end,
            buckets_pass_on_with_higher_epochs,
            an_expired_holder_is_taken_over,
            a_stale_epoch_changes_nothing,
            checkpoint_batch_fences_each_member,
            no_owner_write_lands_after_a_takeover,
            a_takeover_frees_claimed_reminders,
            slots_need_a_live_lease_holder,
        );
    };
    (@cases $fixture:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fx) = $fixture else { return };
                $crate::conformance::$case(&fx).await;
            }
        )*
    };
}

pub fn now() -> Micros {
    crate::codec::now_micros()
}

pub fn meta(id: &str, name: &str) -> InstanceMeta {
    let t = now();
    InstanceMeta {
        instance_id: id.to_string(),
        name: name.to_string(),
        status: RuntimeStatus::Pending,
        execution_id: format!("{id}-exec"),
        generation: 0,
        input: Some(format!("\"input of {id}\"")),
        output: None,
        custom_status: None,
        failure: None,
        parent_instance_id: None,
        created_at: t,
        updated_at: t,
        started_at: None,
        completed_at: None,
        scheduled_start_at: None,
        app_id: APP.to_string(),
        version: 0,
    }
}

/// The app every conformance instance belongs to.
pub const APP: &str = "conformance-app";

/// Every bucket of [`APP`]: a scan over the whole database of that app.
pub fn all() -> crate::Scope {
    crate::Scope::all(APP)
}

pub fn started(name: &str) -> HistoryEvent {
    HistoryEvent {
        event_id: -1,
        timestamp: None,
        router: None,
        event_type: Some(EventType::ExecutionStarted(ExecutionStartedEvent {
            name: name.to_string(),
            input: Some("\"in\"".into()),
            ..Default::default()
        })),
    }
}

pub fn raised(name: &str, event_id: i32) -> HistoryEvent {
    HistoryEvent {
        event_id,
        timestamp: None,
        router: None,
        event_type: Some(EventType::EventRaised(EventRaisedEvent {
            name: name.to_string(),
            input: Some(format!("{{\"n\":{event_id}}}")),
        })),
    }
}

pub fn task_completed(task_id: i32) -> HistoryEvent {
    HistoryEvent {
        event_id: -1,
        timestamp: None,
        router: None,
        event_type: Some(EventType::TaskCompleted(TaskCompletedEvent {
            task_scheduled_id: task_id,
            result: Some("42".into()),
            ..Default::default()
        })),
    }
}

pub fn create_req(id: &str, policy: ReusePolicy) -> CreateInstance {
    CreateInstance {
        meta: meta(id, "wf"),
        start_event: started("wf"),
        policy,
    }
}

/// Creates `id` (policy Error) and returns its loaded version.
pub async fn create<S: Store>(s: &S, id: &str) -> i64 {
    s.create_instance(create_req(id, ReusePolicy::Error))
        .await
        .expect("create");
    s.get_instance(id).await.expect("get").expect("row").version
}

/// A checkpoint that changes nothing but the row (status Running); callers fill in the rest.
pub fn empty_cp(m: &InstanceMeta) -> Checkpoint {
    Checkpoint {
        instance_id: m.instance_id.clone(),
        expected_version: m.version,
        meta: InstanceMeta {
            status: RuntimeStatus::Running,
            ..m.clone()
        },
        reset_history: false,
        append: vec![],
        consumed_inbox: vec![],
        completed_activities: vec![],
        new_activities: vec![],
        new_reminders: vec![],
        cancel_pending: false,
        outbound: vec![],
        fence: None,
    }
}

/// The row, for building a checkpoint.
/// The pending activity tasks as scheduled: claims them and clears the claim, so cases that
/// only look at what is pending compare with what they scheduled.
pub async fn pending<S: Store>(s: &S, scope: &crate::Scope) -> Vec<crate::ActivityTask> {
    let mut tasks = s.claim_activities(scope).await.unwrap();
    for t in &mut tasks {
        t.claim = 0;
    }
    tasks
}

pub async fn row<S: Store>(s: &S, id: &str) -> InstanceMeta {
    s.get_instance(id).await.expect("get").expect("row exists")
}
