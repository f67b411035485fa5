//! Store middleware: a [`Layer`] wraps another [`Store`] and forwards every call to it, so a
//! wrapper (call counting, fault injection, timing, ...) writes only the calls it intercepts.
//!
//! Every type implementing [`Layer`] is a [`Store`]. Each store method has a [`Layer`] method of
//! the same name whose default forwards to [`Layer::inner`] through the hook [`Layer::around`],
//! told which [`Call`] it is and how many items it carries. A layer overrides the hook to act on
//! every call (time it, fail it: [`Answer::failed`]) and a method to act on one (look at its
//! arguments or result). Batch calls are forwarded as batches, so the inner store's group commit
//! runs (the [`Store`] trait's own defaults would split them); a layer that must see each item as
//! its own call splits them with [`one_by_one`].
//!
//! Inside an `impl Layer`, name the trait when calling a sibling method
//! (`Layer::checkpoint(self, cp)`): the type is both a [`Layer`] and a [`Store`].

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use tokio::sync::broadcast;
use weft_core::{InstanceMeta, Micros};
use weft_proto::durabletask::HistoryEvent;

use crate::{
    ActivityCompletion, ActivityTask, BucketLease, Checkpoint, CreateInstance, CreateOutcome,
    Fence, InboxEntry, InstancePage, ListFilter, LoadedInstance, Reminder, Result, Scope,
    SlotLease, Store, StoreError, Wakeup,
};

/// The inner store's answer to one call, not yet awaited (what every [`Store`] method returns).
pub type InnerCall<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A [`Store`] method, as the hooks see it (every method but `subscribe`, which has no hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    CreateInstance,
    CreateInstanceBatch,
    GetInstance,
    Load,
    GetHistory,
    ReadInbox,
    ReadInboxBatch,
    AppendInbox,
    Checkpoint,
    CheckpointBatch,
    ClaimActivities,
    ClaimNewRemoteActivities,
    CompleteActivity,
    CompleteActivityBatch,
    InstancesWithInbox,
    ClaimDueReminders,
    FireReminder,
    NextReminderDue,
    StalledInstances,
    ListInstances,
    Purge,
    AcquireSlots,
    RenewSlots,
    ReleaseSlots,
    StartHolder,
    RenewHolder,
    EndHolder,
    AcquireBuckets,
    ReleaseBuckets,
    CrossAppBacklog,
    Health,
}

impl Call {
    /// Every call, in the order of the [`Store`] trait (`ALL[c as usize] == c`).
    pub const ALL: [Call; 31] = [
        Call::CreateInstance,
        Call::CreateInstanceBatch,
        Call::GetInstance,
        Call::Load,
        Call::GetHistory,
        Call::ReadInbox,
        Call::ReadInboxBatch,
        Call::AppendInbox,
        Call::Checkpoint,
        Call::CheckpointBatch,
        Call::ClaimActivities,
        Call::ClaimNewRemoteActivities,
        Call::CompleteActivity,
        Call::CompleteActivityBatch,
        Call::InstancesWithInbox,
        Call::ClaimDueReminders,
        Call::FireReminder,
        Call::NextReminderDue,
        Call::StalledInstances,
        Call::ListInstances,
        Call::Purge,
        Call::AcquireSlots,
        Call::RenewSlots,
        Call::ReleaseSlots,
        Call::StartHolder,
        Call::RenewHolder,
        Call::EndHolder,
        Call::AcquireBuckets,
        Call::ReleaseBuckets,
        Call::CrossAppBacklog,
        Call::Health,
    ];

    /// The method's name, e.g. `"checkpoint_batch"`.
    pub fn name(self) -> &'static str {
        match self {
            Call::CreateInstance => "create_instance",
            Call::CreateInstanceBatch => "create_instance_batch",
            Call::GetInstance => "get_instance",
            Call::Load => "load",
            Call::GetHistory => "get_history",
            Call::ReadInbox => "read_inbox",
            Call::ReadInboxBatch => "read_inbox_batch",
            Call::AppendInbox => "append_inbox",
            Call::Checkpoint => "checkpoint",
            Call::CheckpointBatch => "checkpoint_batch",
            Call::ClaimActivities => "claim_activities",
            Call::ClaimNewRemoteActivities => "claim_new_remote_activities",
            Call::CompleteActivity => "complete_activity",
            Call::CompleteActivityBatch => "complete_activity_batch",
            Call::InstancesWithInbox => "instances_with_inbox",
            Call::ClaimDueReminders => "claim_due_reminders",
            Call::FireReminder => "fire_reminder",
            Call::NextReminderDue => "next_reminder_due",
            Call::StalledInstances => "stalled_instances",
            Call::ListInstances => "list_instances",
            Call::Purge => "purge",
            Call::AcquireSlots => "acquire_slots",
            Call::RenewSlots => "renew_slots",
            Call::ReleaseSlots => "release_slots",
            Call::StartHolder => "start_holder",
            Call::RenewHolder => "renew_holder",
            Call::EndHolder => "end_holder",
            Call::AcquireBuckets => "acquire_buckets",
            Call::ReleaseBuckets => "release_buckets",
            Call::CrossAppBacklog => "cross_app_backlog",
            Call::Health => "health",
        }
    }

    /// A lease call: concurrency slots, holder leases or bucket leases (the sidecar's ownership
    /// bookkeeping, as opposed to the workflow state the engine reads and writes).
    pub fn is_lease(self) -> bool {
        matches!(
            self,
            Call::AcquireSlots
                | Call::RenewSlots
                | Call::ReleaseSlots
                | Call::StartHolder
                | Call::RenewHolder
                | Call::EndHolder
                | Call::AcquireBuckets
                | Call::ReleaseBuckets
        )
    }
}

/// What a store call answers: one result, or one per item of a batch (so one hook serves both).
pub trait Answer: Send {
    /// The answer of a call of `n` items that failed with `err` before or after reaching the
    /// inner store (every item fails alike).
    fn failed(n: usize, err: StoreError) -> Self;
}

impl<T: Send> Answer for Result<T> {
    fn failed(_: usize, err: StoreError) -> Self {
        Err(err)
    }
}

impl<T: Send> Answer for Vec<Result<T>> {
    fn failed(n: usize, err: StoreError) -> Self {
        (0..n).map(|_| Err(err.duplicate())).collect()
    }
}

/// Answers a batch by making each item's own call in order, as the [`Store`] trait's defaults
/// do: for a layer that counts, fails or faults items one at a time.
pub async fn one_by_one<I, T, F>(items: Vec<I>, mut call: impl FnMut(I) -> F) -> Vec<T>
where
    F: Future<Output = T>,
{
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(call(item).await);
    }
    out
}

/// A store wrapper that forwards to [`Layer::inner`] whatever it does not override (see the
/// module documentation).
#[async_trait]
pub trait Layer: Send + Sync + 'static {
    /// The store calls are forwarded to.
    fn inner(&self) -> &dyn Store;

    /// Runs the inner store's answer to `call`, a call of `n` items (1 unless it is a batch);
    /// fail it with [`Answer::failed`]. The default just awaits it.
    async fn around<A: Answer>(&self, call: Call, n: usize, inner: InnerCall<'_, A>) -> A {
        let _ = (call, n);
        inner.await
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Wakeup>> {
        self.inner().subscribe()
    }

    async fn create_instance(&self, req: CreateInstance) -> Result<CreateOutcome> {
        self.around(Call::CreateInstance, 1, self.inner().create_instance(req))
            .await
    }

    async fn create_instance_batch(&self, reqs: Vec<CreateInstance>) -> Vec<Result<CreateOutcome>> {
        let n = reqs.len();
        let inner = self.inner().create_instance_batch(reqs);
        self.around(Call::CreateInstanceBatch, n, inner).await
    }

    async fn get_instance(&self, instance_id: &str) -> Result<Option<InstanceMeta>> {
        self.around(Call::GetInstance, 1, self.inner().get_instance(instance_id))
            .await
    }

    async fn load(&self, instance_id: &str) -> Result<Option<LoadedInstance>> {
        self.around(Call::Load, 1, self.inner().load(instance_id))
            .await
    }

    async fn get_history(&self, instance_id: &str) -> Result<Option<Vec<HistoryEvent>>> {
        self.around(Call::GetHistory, 1, self.inner().get_history(instance_id))
            .await
    }

    async fn read_inbox(&self, instance_id: &str) -> Result<Vec<InboxEntry>> {
        self.around(Call::ReadInbox, 1, self.inner().read_inbox(instance_id))
            .await
    }

    async fn read_inbox_batch(&self, ids: Vec<String>) -> Result<Vec<Vec<InboxEntry>>> {
        let n = ids.len();
        let inner = self.inner().read_inbox_batch(ids);
        self.around(Call::ReadInboxBatch, n, inner).await
    }

    async fn append_inbox(&self, instance_id: &str, event: HistoryEvent) -> Result<bool> {
        let inner = self.inner().append_inbox(instance_id, event);
        self.around(Call::AppendInbox, 1, inner).await
    }

    async fn checkpoint(&self, cp: Checkpoint) -> Result<()> {
        self.around(Call::Checkpoint, 1, self.inner().checkpoint(cp))
            .await
    }

    async fn checkpoint_batch(&self, cps: Vec<Checkpoint>) -> Vec<Result<()>> {
        let n = cps.len();
        let inner = self.inner().checkpoint_batch(cps);
        self.around(Call::CheckpointBatch, n, inner).await
    }

    async fn claim_activities(&self, scope: &Scope) -> Result<Vec<ActivityTask>> {
        self.around(
            Call::ClaimActivities,
            1,
            self.inner().claim_activities(scope),
        )
        .await
    }

    async fn claim_new_remote_activities(&self, scope: &Scope) -> Result<Vec<ActivityTask>> {
        self.around(
            Call::ClaimNewRemoteActivities,
            1,
            self.inner().claim_new_remote_activities(scope),
        )
        .await
    }

    async fn complete_activity(
        &self,
        instance_id: &str,
        task_id: i32,
        generation: i64,
        event: HistoryEvent,
    ) -> Result<bool> {
        let inner = self
            .inner()
            .complete_activity(instance_id, task_id, generation, event);
        self.around(Call::CompleteActivity, 1, inner).await
    }

    async fn complete_activity_batch(&self, items: Vec<ActivityCompletion>) -> Vec<Result<bool>> {
        let n = items.len();
        let inner = self.inner().complete_activity_batch(items);
        self.around(Call::CompleteActivityBatch, n, inner).await
    }

    async fn instances_with_inbox(&self, scope: &Scope) -> Result<Vec<String>> {
        let inner = self.inner().instances_with_inbox(scope);
        self.around(Call::InstancesWithInbox, 1, inner).await
    }

    async fn claim_due_reminders(
        &self,
        scope: &Scope,
        now: Micros,
        lease_until: Micros,
        limit: usize,
    ) -> Result<Vec<Reminder>> {
        let inner = self
            .inner()
            .claim_due_reminders(scope, now, lease_until, limit);
        self.around(Call::ClaimDueReminders, 1, inner).await
    }

    async fn fire_reminder(&self, reminder_id: i64, fence: Option<&Fence>) -> Result<bool> {
        let inner = self.inner().fire_reminder(reminder_id, fence);
        self.around(Call::FireReminder, 1, inner).await
    }

    async fn next_reminder_due(&self, scope: &Scope) -> Result<Option<Micros>> {
        let inner = self.inner().next_reminder_due(scope);
        self.around(Call::NextReminderDue, 1, inner).await
    }

    async fn stalled_instances(&self, scope: &Scope, limit: usize) -> Result<Vec<String>> {
        let inner = self.inner().stalled_instances(scope, limit);
        self.around(Call::StalledInstances, 1, inner).await
    }

    async fn list_instances(&self, filter: ListFilter) -> Result<InstancePage> {
        let inner = self.inner().list_instances(filter);
        self.around(Call::ListInstances, 1, inner).await
    }

    async fn purge(&self, instance_id: &str, force: bool, fence: Option<&Fence>) -> Result<bool> {
        let inner = self.inner().purge(instance_id, force, fence);
        self.around(Call::Purge, 1, inner).await
    }

    async fn acquire_slots(
        &self,
        bucket: &str,
        limit: u32,
        holder: &str,
        want: u32,
        now: Micros,
        until: Micros,
    ) -> Result<Vec<u32>> {
        let inner = self
            .inner()
            .acquire_slots(bucket, limit, holder, want, now, until);
        self.around(Call::AcquireSlots, 1, inner).await
    }

    async fn renew_slots(
        &self,
        holder: &str,
        now: Micros,
        until: Micros,
    ) -> Result<Vec<SlotLease>> {
        let inner = self.inner().renew_slots(holder, now, until);
        self.around(Call::RenewSlots, 1, inner).await
    }

    async fn release_slots(&self, bucket: &str, holder: &str, slots: &[u32]) -> Result<()> {
        let inner = self.inner().release_slots(bucket, holder, slots);
        self.around(Call::ReleaseSlots, 1, inner).await
    }

    async fn start_holder(&self, holder: &str, ttl: Micros) -> Result<()> {
        let inner = self.inner().start_holder(holder, ttl);
        self.around(Call::StartHolder, 1, inner).await
    }

    async fn renew_holder(&self, holder: &str, ttl: Micros) -> Result<bool> {
        let inner = self.inner().renew_holder(holder, ttl);
        self.around(Call::RenewHolder, 1, inner).await
    }

    async fn end_holder(&self, holder: &str) -> Result<()> {
        let inner = self.inner().end_holder(holder);
        self.around(Call::EndHolder, 1, inner).await
    }

    async fn acquire_buckets(
        &self,
        app_id: &str,
        holder: &str,
        buckets: &[i32],
    ) -> Result<Vec<BucketLease>> {
        let inner = self.inner().acquire_buckets(app_id, holder, buckets);
        self.around(Call::AcquireBuckets, 1, inner).await
    }

    async fn release_buckets(&self, app_id: &str, holder: &str, buckets: &[i32]) -> Result<()> {
        let inner = self.inner().release_buckets(app_id, holder, buckets);
        self.around(Call::ReleaseBuckets, 1, inner).await
    }

    async fn cross_app_backlog(&self) -> Result<Vec<(String, i64)>> {
        self.around(Call::CrossAppBacklog, 1, self.inner().cross_app_backlog())
            .await
    }

    async fn health(&self) -> Result<()> {
        self.around(Call::Health, 1, self.inner().health()).await
    }
}

// Each store method runs the layer's method of the same name.
#[async_trait]
impl<L: Layer> Store for L {
    async fn create_instance(&self, req: CreateInstance) -> Result<CreateOutcome> {
        Layer::create_instance(self, req).await
    }
    async fn create_instance_batch(&self, reqs: Vec<CreateInstance>) -> Vec<Result<CreateOutcome>> {
        Layer::create_instance_batch(self, reqs).await
    }
    async fn get_instance(&self, instance_id: &str) -> Result<Option<InstanceMeta>> {
        Layer::get_instance(self, instance_id).await
    }
    async fn load(&self, instance_id: &str) -> Result<Option<LoadedInstance>> {
        Layer::load(self, instance_id).await
    }
    async fn get_history(&self, instance_id: &str) -> Result<Option<Vec<HistoryEvent>>> {
        Layer::get_history(self, instance_id).await
    }
    async fn read_inbox(&self, instance_id: &str) -> Result<Vec<InboxEntry>> {
        Layer::read_inbox(self, instance_id).await
    }
    async fn read_inbox_batch(&self, ids: Vec<String>) -> Result<Vec<Vec<InboxEntry>>> {
        Layer::read_inbox_batch(self, ids).await
    }
    async fn append_inbox(&self, instance_id: &str, event: HistoryEvent) -> Result<bool> {
        Layer::append_inbox(self, instance_id, event).await
    }
    async fn checkpoint(&self, cp: Checkpoint) -> Result<()> {
        Layer::checkpoint(self, cp).await
    }
    async fn checkpoint_batch(&self, cps: Vec<Checkpoint>) -> Vec<Result<()>> {
        Layer::checkpoint_batch(self, cps).await
    }
    async fn claim_activities(&self, scope: &Scope) -> Result<Vec<ActivityTask>> {
        Layer::claim_activities(self, scope).await
    }
    async fn claim_new_remote_activities(&self, scope: &Scope) -> Result<Vec<ActivityTask>> {
        Layer::claim_new_remote_activities(self, scope).await
    }
    async fn complete_activity(
        &self,
        instance_id: &str,
        task_id: i32,
        generation: i64,
        event: HistoryEvent,
    ) -> Result<bool> {
        Layer::complete_activity(self, instance_id, task_id, generation, event).await
    }
    async fn complete_activity_batch(&self, items: Vec<ActivityCompletion>) -> Vec<Result<bool>> {
        Layer::complete_activity_batch(self, items).await
    }
    async fn instances_with_inbox(&self, scope: &Scope) -> Result<Vec<String>> {
        Layer::instances_with_inbox(self, scope).await
    }
    async fn claim_due_reminders(
        &self,
        scope: &Scope,
        now: Micros,
        lease_until: Micros,
        limit: usize,
    ) -> Result<Vec<Reminder>> {
        Layer::claim_due_reminders(self, scope, now, lease_until, limit).await
    }
    async fn fire_reminder(&self, reminder_id: i64, fence: Option<&Fence>) -> Result<bool> {
        Layer::fire_reminder(self, reminder_id, fence).await
    }
    async fn next_reminder_due(&self, scope: &Scope) -> Result<Option<Micros>> {
        Layer::next_reminder_due(self, scope).await
    }
    async fn stalled_instances(&self, scope: &Scope, limit: usize) -> Result<Vec<String>> {
        Layer::stalled_instances(self, scope, limit).await
    }
    async fn list_instances(&self, filter: ListFilter) -> Result<InstancePage> {
        Layer::list_instances(self, filter).await
    }
    async fn purge(&self, instance_id: &str, force: bool, fence: Option<&Fence>) -> Result<bool> {
        Layer::purge(self, instance_id, force, fence).await
    }
    async fn acquire_slots(
        &self,
        bucket: &str,
        limit: u32,
        holder: &str,
        want: u32,
        now: Micros,
        until: Micros,
    ) -> Result<Vec<u32>> {
        Layer::acquire_slots(self, bucket, limit, holder, want, now, until).await
    }
    async fn renew_slots(
        &self,
        holder: &str,
        now: Micros,
        until: Micros,
    ) -> Result<Vec<SlotLease>> {
        Layer::renew_slots(self, holder, now, until).await
    }
    async fn release_slots(&self, bucket: &str, holder: &str, slots: &[u32]) -> Result<()> {
        Layer::release_slots(self, bucket, holder, slots).await
    }
    async fn start_holder(&self, holder: &str, ttl: Micros) -> Result<()> {
        Layer::start_holder(self, holder, ttl).await
    }
    async fn renew_holder(&self, holder: &str, ttl: Micros) -> Result<bool> {
        Layer::renew_holder(self, holder, ttl).await
    }
    async fn end_holder(&self, holder: &str) -> Result<()> {
        Layer::end_holder(self, holder).await
    }
    async fn acquire_buckets(
        &self,
        app_id: &str,
        holder: &str,
        buckets: &[i32],
    ) -> Result<Vec<BucketLease>> {
        Layer::acquire_buckets(self, app_id, holder, buckets).await
    }
    async fn release_buckets(&self, app_id: &str, holder: &str, buckets: &[i32]) -> Result<()> {
        Layer::release_buckets(self, app_id, holder, buckets).await
    }
    fn subscribe(&self) -> Option<broadcast::Receiver<Wakeup>> {
        Layer::subscribe(self)
    }
    async fn cross_app_backlog(&self) -> Result<Vec<(String, i64)>> {
        Layer::cross_app_backlog(self).await
    }
    async fn health(&self) -> Result<()> {
        Layer::health(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{create_req, empty_cp, row};
    use crate::{ReusePolicy, SqliteStore};
    use std::sync::{Arc, Mutex};
    use weft_core::RuntimeStatus;

    /// Refuses purges and records the calls it saw; everything else is forwarded.
    struct NoPurge {
        inner: Arc<dyn Store>,
        seen: Mutex<Vec<(Call, usize)>>,
    }

    #[async_trait]
    impl Layer for NoPurge {
        fn inner(&self) -> &dyn Store {
            &*self.inner
        }
        async fn around<A: Answer>(&self, call: Call, n: usize, inner: InnerCall<'_, A>) -> A {
            self.seen.lock().unwrap().push((call, n));
            inner.await
        }
        async fn purge(&self, id: &str, _force: bool, _fence: Option<&Fence>) -> Result<bool> {
            Err(StoreError::NotTerminal(id.into()))
        }
    }

    #[tokio::test]
    async fn a_layer_overrides_one_call_and_forwards_the_rest() {
        let layer = NoPurge {
            inner: Arc::new(SqliteStore::open_in_memory().unwrap()),
            seen: Mutex::default(),
        };
        let store: &dyn Store = &layer;
        let reqs = vec![
            create_req("a", ReusePolicy::Error),
            create_req("b", ReusePolicy::Error),
        ];
        let created = store.create_instance_batch(reqs).await;
        assert!(created.iter().all(Result::is_ok));
        let cp = empty_cp(&row(&layer, "a").await);
        let done = store.checkpoint_batch(vec![cp]).await;
        assert!(done[0].is_ok(), "{done:?}");
        assert_eq!(row(&layer, "a").await.status, RuntimeStatus::Running);
        assert!(matches!(
            store.purge("a", true, None).await,
            Err(StoreError::NotTerminal(_))
        ));
        assert!(
            store.get_instance("a").await.unwrap().is_some(),
            "not purged"
        );
        assert!(store.subscribe().is_none(), "SQLite has no notifications");
        store.health().await.unwrap();
        let filter = ListFilter {
            limit: 10,
            ..Default::default()
        };
        assert_eq!(store.list_instances(filter).await.unwrap().items.len(), 2);

        // Batches reached the hooks whole (one call of n items), the purge none at all.
        assert_eq!(
            *layer.seen.lock().unwrap(),
            [
                (Call::CreateInstanceBatch, 2),
                (Call::GetInstance, 1),
                (Call::CheckpointBatch, 1),
                (Call::GetInstance, 1),
                (Call::GetInstance, 1),
                (Call::Health, 1),
                (Call::ListInstances, 1),
            ]
        );
    }

    #[test]
    fn calls_are_listed_in_trait_order_with_unique_names() {
        for (i, c) in Call::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        let names: std::collections::HashSet<_> = Call::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Call::ALL.len());
    }
}
