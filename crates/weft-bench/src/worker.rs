//! The benchmark's worker: a minimal, hand-written durabletask worker (no SDK) on one
//! `GetWorkItems` stream.
//!
//! The workflow's name and input (from its `ExecutionStarted` event) pick its shape:
//!
//! - `chain` (input K): a sequential loop of K activities. The worker counts `TaskScheduled` (its
//!   own earlier actions, in `pastEvents`) and `TaskCompleted` (in `pastEvents` + `newEvents`) and
//!   answers, as a replaying SDK would: nothing while an activity is outstanding, else
//!   `scheduleTask` with ID `completed + 1` (the n-th scheduled activity has ID n, matching the
//!   `eventId` the engine gives its `TaskScheduled`), and after K results `completeWorkflow`
//!   COMPLETED with ID K + 1;
//! - `fanout` (input N): N `scheduleTask` actions in the first turn, nothing until all N results
//!   are in, then `completeWorkflow` with ID N + 1;
//! - `wait`: no actions ever — the workflow waits for an external event that never comes (the
//!   idle-memory workload); each answered turn is reported as [`Notice::Waiting`].
//!
//! Activities return immediately. Each work item is answered by its own task, so many completion
//! RPCs are in flight and the engine's group commit can batch them. [`Permits::Split`] (the
//! default) gives workflow turns and activities a pool of `concurrency` permits each, taken after
//! the item is read, as the SDKs keep separate orchestration and activity limits: a full activity
//! pool never stops turns from being read and run. [`Permits::Shared`] is the older worker: one
//! pool for both, taken *before* the next item is read — the case where a worker whose
//! `CompleteActivityTask` waits for the commit of the turn consuming the result can deadlock.
//! A workflow whose completion RPC succeeded is reported as [`Notice::Completed`]; several
//! streams (one per sidecar, [`Worker::start_many`]) report into one channel.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use weft_proto::durabletask::history_event::EventType;
use weft_proto::durabletask::task_hub_sidecar_service_client::TaskHubSidecarServiceClient as Client;
use weft_proto::durabletask::workflow_action::WorkflowActionType;
use weft_proto::durabletask::{
    ActivityRequest, ActivityResponse, CompleteWorkflowAction, GetWorkItemsRequest,
    OrchestrationStatus, ScheduleTaskAction, WorkflowAction, WorkflowRequest, WorkflowResponse,
    work_item,
};

/// What the worker tells the driver.
#[derive(Debug)]
pub enum Notice {
    /// The engine accepted the `completeWorkflow` action of this instance (it is committed).
    Completed { instance_id: String, at: Instant },
    /// The worker answered a turn of a `wait` workflow.
    Waiting,
    /// Something went wrong; the benchmark must stop with this message.
    Failed(String),
}

/// How the worker limits its concurrent answers (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Permits {
    /// One pool for workflow turns and one for activities, `concurrency` each, taken after the
    /// item is read.
    #[default]
    Split,
    /// One pool of `concurrency` for both, taken before the next item is read.
    Shared,
}

/// A running worker. Dropping it stops the stream loops.
pub struct Worker {
    notices: mpsc::UnboundedReceiver<Notice>,
    cancel: CancellationToken,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Worker {
    /// Opens the work-item stream (the hub queues anything pushed before it is read) and starts
    /// answering items, limited by `permits` of `concurrency` (see the module docs).
    pub async fn start(
        client: Client<Channel>,
        concurrency: usize,
        permits: Permits,
    ) -> anyhow::Result<Self> {
        Self::start_many(vec![client], concurrency, permits).await
    }

    /// One stream per client (each its own connection, e.g. one per sidecar), each with its own
    /// permit pools, all reporting to this one worker: a workflow's completion may be seen by
    /// any of them.
    pub async fn start_many(
        clients: Vec<Client<Channel>>,
        concurrency: usize,
        permits: Permits,
    ) -> anyhow::Result<Self> {
        let (tx, notices) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        // Dropping `worker` on an early return cancels the streams already running.
        let worker = Self { notices, cancel };
        for mut client in clients {
            let stream = client
                .get_work_items(GetWorkItemsRequest::default())
                .await?
                .into_inner();
            let pools = Pools::new(concurrency.max(1), permits);
            tokio::spawn(run(
                client,
                stream,
                pools,
                tx.clone(),
                worker.cancel.clone(),
            ));
        }
        Ok(worker)
    }

    /// The next notice, or `None` once the worker has stopped.
    pub async fn next(&mut self) -> Option<Notice> {
        self.notices.recv().await
    }

    /// Consumes notices already waiting; fails on the first [`Notice::Failed`].
    pub fn drain(&mut self) -> anyhow::Result<()> {
        while let Ok(n) = self.notices.try_recv() {
            if let Notice::Failed(e) = n {
                anyhow::bail!("worker: {e}");
            }
        }
        Ok(())
    }
}

/// The permit pools of one stream.
struct Pools {
    /// Taken after reading an item and before reading the next ([`Permits::Shared`]).
    shared: Option<Arc<Semaphore>>,
    /// Taken by each item's task after it was read ([`Permits::Split`]).
    workflows: Arc<Semaphore>,
    activities: Arc<Semaphore>,
}

impl Pools {
    fn new(concurrency: usize, permits: Permits) -> Self {
        let pool = || Arc::new(Semaphore::new(concurrency));
        Self {
            shared: (permits == Permits::Shared).then(pool),
            workflows: pool(),
            activities: pool(),
        }
    }

    /// The split pool an item waits in (none for a shared worker or a health ping).
    fn of(&self, request: &Option<work_item::Request>) -> Option<Arc<Semaphore>> {
        if self.shared.is_some() {
            return None;
        }
        match request {
            Some(work_item::Request::WorkflowRequest(_)) => Some(self.workflows.clone()),
            Some(work_item::Request::ActivityRequest(_)) => Some(self.activities.clone()),
            Some(work_item::Request::HealthPing(_)) | None => None,
        }
    }
}

async fn run(
    client: Client<Channel>,
    mut stream: tonic::Streaming<weft_proto::durabletask::WorkItem>,
    pools: Pools,
    tx: mpsc::UnboundedSender<Notice>,
    cancel: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return,
            m = stream.message() => m,
        };
        let request = match msg {
            Ok(Some(item)) => item.request,
            Ok(None) => {
                if !cancel.is_cancelled() {
                    let _ = tx.send(Notice::Failed("work-item stream closed".into()));
                }
                return;
            }
            Err(status) => {
                if !cancel.is_cancelled() {
                    let _ = tx.send(Notice::Failed(format!("work-item stream: {status}")));
                }
                return;
            }
        };
        // A shared worker reads nothing more until a permit is free (the older behaviour).
        let shared_permit = match &pools.shared {
            Some(limit) => tokio::select! {
                _ = cancel.cancelled() => return,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => Some(p),
                    Err(_) => return,
                },
            },
            None => None,
        };
        let pool = pools.of(&request);
        let mut c = client.clone();
        let tx = tx.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _shared = shared_permit;
            // The item waits for a permit of its own kind; the loop goes on reading.
            let _permit = match pool {
                Some(p) => tokio::select! {
                    _ = cancel.cancelled() => return,
                    p = p.acquire_owned() => match p {
                        Ok(p) => Some(p),
                        Err(_) => return,
                    },
                },
                None => None,
            };
            let notice = match request {
                Some(work_item::Request::WorkflowRequest(r)) => on_workflow(&mut c, r).await,
                Some(work_item::Request::ActivityRequest(r)) => on_activity(&mut c, r).await,
                Some(work_item::Request::HealthPing(_)) | None => None,
            };
            if let Some(n) = notice {
                let _ = tx.send(n);
            }
        });
    }
}

/// The workflow shapes the worker knows (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chain(usize),
    FanOut(usize),
    Wait,
}

/// The shape of the workflow this request belongs to, from its `ExecutionStarted` event.
pub fn shape(req: &WorkflowRequest) -> Result<Shape, String> {
    let started = req
        .past_events
        .iter()
        .chain(req.new_events.iter())
        .find_map(|e| match &e.event_type {
            Some(EventType::ExecutionStarted(s)) => Some(s),
            _ => None,
        })
        .ok_or_else(|| format!("{}: no ExecutionStarted in the work item", req.instance_id))?;
    let n = || -> Result<usize, String> {
        let input = started.input.as_deref().unwrap_or("");
        input
            .trim()
            .parse()
            .map_err(|_| format!("{}: input {input:?} is not a count", req.instance_id))
    };
    match started.name.as_str() {
        "chain" => Ok(Shape::Chain(n()?)),
        "fanout" => Ok(Shape::FanOut(n()?)),
        "wait" => Ok(Shape::Wait),
        other => Err(format!("{}: unknown workflow {other:?}", req.instance_id)),
    }
}

/// The actions a replaying SDK would return for this turn (see the module docs).
pub fn decide(req: &WorkflowRequest) -> Result<Vec<WorkflowAction>, String> {
    let shape = shape(req)?;
    let is = |f: fn(&EventType) -> bool| {
        move |e: &&weft_proto::durabletask::HistoryEvent| e.event_type.as_ref().is_some_and(f)
    };
    let scheduled = req
        .past_events
        .iter()
        .filter(is(|t| matches!(t, EventType::TaskScheduled(_))))
        .count();
    let all = || req.past_events.iter().chain(req.new_events.iter());
    let completed = all()
        .filter(is(|t| matches!(t, EventType::TaskCompleted(_))))
        .count();
    if all().any(|e| matches!(e.event_type, Some(EventType::TaskFailed(_)))) {
        return Err(format!("{}: an activity failed", req.instance_id));
    }
    let action = |id: usize, t: WorkflowActionType| WorkflowAction {
        id: id as i32,
        workflow_action_type: Some(t),
        router: None,
    };
    let schedule = |id: usize| {
        action(
            id,
            WorkflowActionType::ScheduleTask(ScheduleTaskAction {
                name: "step".into(),
                input: Some(id.to_string()),
                ..Default::default()
            }),
        )
    };
    let complete = |id: usize| {
        action(
            id,
            WorkflowActionType::CompleteWorkflow(CompleteWorkflowAction {
                workflow_status: OrchestrationStatus::Completed as i32,
                result: Some(completed.to_string()),
                ..Default::default()
            }),
        )
    };
    Ok(match shape {
        Shape::Wait => vec![],
        Shape::Chain(steps) => {
            if completed < scheduled {
                vec![] // waiting for the outstanding activity
            } else if completed < steps {
                vec![schedule(completed + 1)]
            } else {
                vec![complete(steps + 1)]
            }
        }
        Shape::FanOut(n) => {
            if scheduled == 0 && n > 0 {
                (1..=n).map(schedule).collect()
            } else if completed < n {
                vec![]
            } else {
                vec![complete(n + 1)]
            }
        }
    })
}

async fn on_workflow(c: &mut Client<Channel>, r: WorkflowRequest) -> Option<Notice> {
    let waits = matches!(shape(&r), Ok(Shape::Wait));
    let actions = match decide(&r) {
        Ok(a) => a,
        Err(e) => return Some(Notice::Failed(e)),
    };
    let completes = actions.iter().any(|a| {
        matches!(
            a.workflow_action_type,
            Some(WorkflowActionType::CompleteWorkflow(_))
        )
    });
    let resp = WorkflowResponse {
        instance_id: r.instance_id.clone(),
        actions,
        ..Default::default()
    };
    match c.complete_orchestrator_task(resp).await {
        Ok(_) if completes => Some(Notice::Completed {
            instance_id: r.instance_id,
            at: Instant::now(),
        }),
        Ok(_) if waits => Some(Notice::Waiting),
        Ok(_) => None,
        Err(s) => Some(Notice::Failed(format!(
            "CompleteOrchestratorTask({}): {s}",
            r.instance_id
        ))),
    }
}

async fn on_activity(c: &mut Client<Channel>, r: ActivityRequest) -> Option<Notice> {
    let instance_id = r
        .workflow_instance
        .map(|w| w.instance_id)
        .unwrap_or_default();
    let resp = ActivityResponse {
        instance_id: instance_id.clone(),
        task_id: r.task_id,
        result: Some("1".into()),
        ..Default::default()
    };
    match c.complete_activity_task(resp).await {
        Ok(_) => None,
        Err(s) => Some(Notice::Failed(format!(
            "CompleteActivityTask({instance_id}/{}): {s}",
            r.task_id
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::durabletask::{
        ExecutionStartedEvent, HistoryEvent, TaskCompletedEvent, TaskScheduledEvent,
    };

    fn ev(t: EventType) -> HistoryEvent {
        HistoryEvent {
            event_id: -1,
            event_type: Some(t),
            ..Default::default()
        }
    }

    fn ids(a: &[WorkflowAction]) -> Vec<i32> {
        a.iter().map(|a| a.id).collect()
    }

    fn started(name: &str, input: &str) -> HistoryEvent {
        ev(EventType::ExecutionStarted(ExecutionStartedEvent {
            name: name.into(),
            input: Some(input.into()),
            ..Default::default()
        }))
    }

    fn sched() -> HistoryEvent {
        ev(EventType::TaskScheduled(TaskScheduledEvent::default()))
    }

    fn done() -> HistoryEvent {
        ev(EventType::TaskCompleted(TaskCompletedEvent::default()))
    }

    #[test]
    fn chain_schedules_one_step_at_a_time_then_completes() {
        let mut r = WorkflowRequest {
            new_events: vec![started("chain", "2")],
            ..Default::default()
        };
        assert_eq!(ids(&decide(&r).unwrap()), [1]);
        r.past_events = vec![started("chain", "2"), sched()];
        r.new_events = vec![];
        assert!(decide(&r).unwrap().is_empty(), "step 1 still running");
        r.new_events = vec![done()];
        assert_eq!(ids(&decide(&r).unwrap()), [2]);
        r.past_events = vec![started("chain", "2"), sched(), done(), sched()];
        r.new_events = vec![done()];
        let last = decide(&r).unwrap();
        assert_eq!(ids(&last), [3]);
        assert!(matches!(
            last[0].workflow_action_type,
            Some(WorkflowActionType::CompleteWorkflow(_))
        ));
    }

    #[test]
    fn fanout_schedules_all_then_joins() {
        let mut r = WorkflowRequest {
            new_events: vec![started("fanout", "3")],
            ..Default::default()
        };
        assert_eq!(ids(&decide(&r).unwrap()), [1, 2, 3]);
        r.past_events = vec![started("fanout", "3"), sched(), sched(), sched(), done()];
        r.new_events = vec![done()];
        assert!(decide(&r).unwrap().is_empty(), "one result still missing");
        r.new_events = vec![done(), done()];
        assert_eq!(ids(&decide(&r).unwrap()), [4]);
    }

    #[test]
    fn wait_never_acts_and_bad_input_is_an_error() {
        let r = WorkflowRequest {
            new_events: vec![started("wait", "")],
            ..Default::default()
        };
        assert!(decide(&r).unwrap().is_empty());
        let bad = WorkflowRequest {
            new_events: vec![started("chain", "x")],
            ..Default::default()
        };
        assert!(decide(&bad).is_err());
        assert!(decide(&WorkflowRequest::default()).is_err());
    }
}
