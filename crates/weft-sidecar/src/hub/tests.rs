//! Unit tests of the hub: dispatch, re-dispatch, tokens, deltas, push semantics and the cost of
//! pushing into a long queue.

use super::*;
use tokio_util::sync::CancellationToken;
use weft_proto::durabletask::work_item::Request;
use weft_proto::durabletask::{HistoryEvent, WorkItem};

fn wf(id: &str, past: usize) -> Job {
    Job::Workflow(
        WorkflowRequest {
            instance_id: id.into(),
            past_events: vec![HistoryEvent::default(); past],
            ..Default::default()
        }
        .into(),
    )
}

impl StreamHandle<'_> {
    /// `shape_for_worker`, decoded as the worker reads it.
    fn shape_frame(&self, job: Job, token: String) -> Option<WorkItem> {
        let frame = self.shape_for_worker(job, token)?;
        Some(frame.decode().expect("a frame decodes as a WorkItem"))
    }
}

#[test]
fn a_workflow_frame_is_the_bytes_prost_encodes() {
    use prost::Message;
    use weft_proto::durabletask::{
        CachedHistory, PropagatedHistory, TaskCompletedEvent, TaskScheduledEvent,
        history_event::EventType,
    };
    let ev = |id: i32, ty: EventType| HistoryEvent {
        event_id: id,
        timestamp: Some(prost_types::Timestamp {
            seconds: 1_700_000_000 + i64::from(id),
            nanos: 5,
        }),
        event_type: Some(ty),
        ..Default::default()
    };
    let scheduled = |id| {
        EventType::TaskScheduled(TaskScheduledEvent {
            name: format!("act-{id}"),
            input: Some("\"payload é\"".into()),
            ..Default::default()
        })
    };
    let past: Vec<HistoryEvent> = (0..300).map(|i| ev(i, scheduled(i))).collect();
    let new = vec![ev(
        -1,
        EventType::TaskCompleted(TaskCompletedEvent {
            task_scheduled_id: 3,
            result: Some("x".repeat(200)),
            ..Default::default()
        }),
    )];
    let propagated = PropagatedHistory::default();
    for (skip, cached, token, prop) in [
        (0, None, "", None),
        (0, None, "tok-1", Some(&propagated)),
        (120, Some(CachedHistory { event_count: 120 }), "t", None),
    ] {
        let expected = WorkItem {
            request: Some(Request::WorkflowRequest(WorkflowRequest {
                instance_id: "inst-ü".into(),
                past_events: past[skip..].to_vec(),
                new_events: new.clone(),
                propagated_history: prop.cloned(),
                cached_history: cached,
                ..Default::default()
            })),
            completion_token: token.into(),
        }
        .encode_to_vec();
        let frame =
            super::stream::workflow_frame("inst-ü", &past[skip..], &new, prop, cached, token);
        assert_eq!(
            frame.0.as_ref(),
            expected.as_slice(),
            "skip {skip}, token {token:?}"
        );
    }
}

#[tokio::test]
async fn dispatch_take_and_redeliver_on_disconnect() {
    let hub = std::sync::Arc::new(Hub::default());
    hub.push(wf("a", 0));
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(4);
    let h = hub.clone();
    let sd = shutdown.clone();
    let t = tokio::spawn(async move { h.open_stream(false).run(tx, sd).await });
    let item = rx.recv().await.unwrap().unwrap().decode().unwrap();
    assert!(matches!(item.request, Some(Request::WorkflowRequest(_))));
    assert_eq!(hub.queued(), 0);
    drop(rx); // the worker goes away without completing
    t.await.unwrap();
    assert_eq!(hub.queued(), 1, "the unanswered turn is queued again");
    assert!(hub.take_workflow("a", "").is_none());
    assert_eq!(*hub.connected().borrow(), 0);
}

#[tokio::test]
async fn a_late_answer_to_an_earlier_dispatch_is_refused() {
    let hub = Hub::default();
    hub.push(wf("a", 0));
    let (_, first) = hub.take(1).await;
    hub.release_stream(1); // the first worker died: the turn is queued again
    let (_, second) = hub.take(2).await;
    assert_ne!(first, second);
    assert!(
        hub.take_workflow("a", &first).is_none(),
        "stale token refused"
    );
    assert!(
        hub.take_workflow("a", &second).is_some(),
        "the record was left for the current dispatch"
    );
    hub.push(wf("b", 0));
    hub.take(3).await;
    assert!(
        hub.take_workflow("b", "").is_some(),
        "workers without tokens match by key"
    );
}

#[tokio::test]
async fn stateful_streams_send_deltas() {
    let hub = Hub::default();
    let s = hub.open_stream(true);
    let first = s.shape_frame(wf("a", 3), String::new()).unwrap();
    let second = s.shape_frame(wf("a", 5), String::new()).unwrap();
    let Some(Request::WorkflowRequest(r1)) = first.request else {
        panic!()
    };
    let Some(Request::WorkflowRequest(r2)) = second.request else {
        panic!()
    };
    assert_eq!(r1.past_events.len(), 3);
    assert!(r1.cached_history.is_none());
    assert_eq!(r2.past_events.len(), 2);
    assert_eq!(r2.cached_history.unwrap().event_count, 3);
    // After continue-as-new the history is shorter than the cache: full send.
    let third = s.shape_frame(wf("a", 1), String::new()).unwrap();
    let Some(Request::WorkflowRequest(r3)) = third.request else {
        panic!()
    };
    assert_eq!(r3.past_events.len(), 1);
    let plain = hub.open_stream(false);
    let Some(Request::WorkflowRequest(r)) = plain
        .shape_frame(wf("a", 5), String::new())
        .unwrap()
        .request
    else {
        panic!()
    };
    assert!(r.cached_history.is_none() && r.past_events.len() == 5);
}

/// The history travels shared: queueing and dispatching a turn copy no past events; only the
/// stream's wire message does.
#[tokio::test]
async fn a_dispatched_turn_shares_the_history() {
    let hub = std::sync::Arc::new(Hub::default());
    let past = std::sync::Arc::new(vec![HistoryEvent::default(); 100]);
    hub.push(Job::Workflow(WorkflowTurn {
        instance_id: "a".into(),
        past_events: past.clone(),
        new_events: vec![],
        propagated: None,
    }));
    assert_eq!(std::sync::Arc::strong_count(&past), 2, "queued: shared");
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(4);
    let (h, sd) = (hub.clone(), shutdown.clone());
    tokio::spawn(async move { h.open_stream(false).run(tx, sd).await });
    let item = rx.recv().await.unwrap().unwrap().decode().unwrap();
    let Some(Request::WorkflowRequest(r)) = item.request else {
        panic!("expected a turn")
    };
    assert_eq!(r.past_events.len(), 100);
    assert_eq!(
        std::sync::Arc::strong_count(&past),
        2,
        "in flight: the record shares it too"
    );
    assert!(hub.take_workflow("a", &item.completion_token).is_some());
    assert_eq!(
        std::sync::Arc::strong_count(&past),
        1,
        "answered: ours alone"
    );
    shutdown.cancel();
}

fn act(id: &str, task_id: i32, generation: i64) -> Job {
    claimed(id, task_id, generation, 0)
}

fn claimed(id: &str, task_id: i32, generation: i64, claim: i64) -> Job {
    Job::Activity {
        generation,
        claim,
        request: ActivityRequest {
            name: "a".into(),
            task_id,
            workflow_instance: Some(weft_proto::durabletask::WorkflowInstance {
                instance_id: id.into(),
                execution_id: None,
            }),
            ..Default::default()
        },
    }
}

#[tokio::test]
async fn a_repush_leaves_an_activity_with_its_worker() {
    let hub = Hub::default();
    hub.push(act("a", 1, 0));
    let (_, token) = hub.take(1).await;
    // A recovery scan claims and re-pushes every pending activity, this one included.
    hub.push(claimed("a", 1, 0, 1));
    assert_eq!(hub.queued(), 0, "not queued a second time");
    assert_eq!(
        hub.take_activity("a", 1, &token).map(|t| t.claim),
        Some(1),
        "the running worker's answer is still accepted, under the scan's claim"
    );
    hub.push(act("b", 1, 0));
    hub.push(claimed("b", 1, 0, 3));
    hub.push(claimed("b", 1, 0, 2));
    assert_eq!(hub.queued(), 1, "a queued copy is not duplicated");
    let (_, token) = hub.take(1).await;
    assert_eq!(
        hub.take_activity("b", 1, &token).map(|t| t.claim),
        Some(3),
        "the queued copy took the newest claim"
    );
}

#[tokio::test]
async fn a_newer_generation_supersedes_an_older_dispatch() {
    let hub = Hub::default();
    hub.push(act("a", 0, 0));
    let (_, old) = hub.take(1).await;
    hub.push(act("a", 0, 1)); // continue-as-new reused task ID 0
    assert_eq!(hub.queued(), 1);
    assert!(hub.take_activity("a", 0, &old).is_none());
    let (job, new) = hub.take(1).await;
    assert_eq!(job.generation(), Some(1));
    assert_eq!(
        hub.take_activity("a", 0, &new).map(|t| t.generation),
        Some(1)
    );
}

#[tokio::test]
async fn continue_as_new_withdraws_queued_work_of_older_generations() {
    let hub = Hub::default();
    hub.push(act("a", 0, 0));
    hub.push(act("a", 1, 0));
    hub.push(act("b", 0, 0));
    hub.push(act("a", 5, 1));
    hub.new_execution("a", 1);
    assert_eq!(hub.queued(), 2);
    let (first, _) = hub.take(1).await;
    let (second, _) = hub.take(1).await;
    assert_eq!(first.key(), Key::Activity("b".into(), 0));
    assert_eq!(second.key(), Key::Activity("a".into(), 5));
    hub.forget_instance("a");
    hub.forget_instance("b");
    assert!(hub.lock().by_instance.is_empty(), "index pruned");
}

#[tokio::test]
async fn the_history_cache_is_reset_per_execution_and_pruned() {
    let hub = Hub::default();
    let s = hub.open_stream(true);
    let first = s.shape_frame(wf("a", 3), String::new()).unwrap();
    assert!(
        matches!(first.request, Some(Request::WorkflowRequest(ref r)) if r.past_events.len() == 3)
    );
    // Continue-as-new: the new execution's history is longer than the old cache, but none of it
    // is cached.
    hub.new_execution("a", 1);
    let Some(Request::WorkflowRequest(r)) =
        s.shape_frame(wf("a", 5), String::new()).unwrap().request
    else {
        panic!()
    };
    assert!(r.cached_history.is_none(), "{r:?}");
    assert_eq!(r.past_events.len(), 5);
    s.shape_frame(wf("b", 2), String::new()).unwrap();
    assert_eq!(hub.lock().warm.entries(), 2);
    hub.forget_instance("a"); // finished or purged
    assert_eq!(hub.lock().warm.entries(), 1);
    drop(s); // the stream ended
    assert_eq!(hub.lock().warm.entries(), 0);
}

#[tokio::test]
async fn the_size_limit_applies_to_what_is_sent() {
    // Each empty event encodes to 2 bytes: 450 fit under the limit, 600 do not.
    let limit = 1000;
    let hub = Hub::new(limit);
    let mut reports = hub.oversize_reports().unwrap();
    let warm = hub.open_stream(true);
    hub.push(wf("a", 450));
    let (job, token) = hub.take(warm.id).await;
    assert!(warm.shape_frame(job, token).is_some());
    // The next turn's whole history is over the limit, but the delta a warm worker gets is not.
    hub.push(wf("a", 600));
    let (job, token) = hub.take(warm.id).await;
    let Some(Request::WorkflowRequest(r)) = warm.shape_frame(job, token).unwrap().request else {
        panic!()
    };
    assert_eq!(r.past_events.len(), 150);
    assert!(reports.try_recv().is_err(), "nothing refused yet");
    // A worker without the cache would get all of it: refused and reported.
    let cold = hub.open_stream(false);
    hub.push(wf("a", 600));
    let (job, token) = hub.take(cold.id).await;
    assert!(cold.shape_frame(job, token).is_none(), "too large");
    let rep = reports.try_recv().expect("reported");
    assert_eq!(rep.instance_id, "a");
    assert!(rep.size > limit);
    assert!(
        hub.take_workflow("a", "").is_none(),
        "the refused dispatch holds no record"
    );
}

/// A large fan-out: pushing, re-pushing and taking stay cheap however long the queue is (the old
/// queue scanned itself on every push). Prints the figures; asserts only correctness.
#[tokio::test]
async fn push_cost_does_not_grow_with_queue_length() {
    const PROBE: i32 = 2000;
    for len in [1_000, 100_000] {
        let hub = Hub::default();
        for t in 0..len {
            hub.push(act("fan", t, 0));
        }
        let t0 = std::time::Instant::now();
        for t in len..len + PROBE {
            hub.push(act("fan", t, 0));
        }
        let push = t0.elapsed() / PROBE as u32;
        let t0 = std::time::Instant::now();
        for t in 0..PROBE {
            hub.push(act("fan", t, 0)); // re-push of queued items: no-ops
        }
        let repush = t0.elapsed() / PROBE as u32;
        let t0 = std::time::Instant::now();
        for _ in 0..PROBE {
            hub.take(1).await;
        }
        let take = t0.elapsed() / PROBE as u32;
        println!("queue of {len}: push {push:?}, re-push {repush:?}, take {take:?} per call");
        assert_eq!(hub.queued(), (len + PROBE - PROBE) as usize);
        let (next, _) = hub.take(1).await;
        assert_eq!(
            next.key(),
            Key::Activity("fan".into(), PROBE),
            "FIFO order kept"
        );
    }
}

fn limited(activities: u32) -> Hub {
    Hub::configured(
        usize::MAX,
        &weft_config::WorkflowConfig {
            max_concurrent_activity_invocations: Some(activities),
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn over_the_limit_work_waits_and_enters_as_slots_free() {
    let hub = limited(2);
    for t in 0..4 {
        hub.push(act("a", t, 0));
    }
    assert_eq!(hub.queued(), 2, "two admitted, two waiting in the limiter");
    assert_eq!(hub.waiting_for_slot().len(), 1);
    hub.take(1).await;
    hub.take(1).await;
    assert_eq!(hub.queued(), 0);
    // A dead stream gives its work back; it keeps its slots (nothing more enters).
    hub.release_stream(1);
    assert_eq!(hub.queued(), 2);
    let (job, token) = hub.take(2).await;
    let Job::Activity { request, .. } = job else {
        panic!("an activity")
    };
    assert!(hub.take_activity("a", request.task_id, &token).is_some());
    assert_eq!(hub.queued(), 2, "the completion let the third in");
    // Purging the instance frees everything it held and drops what waited.
    hub.forget_instance("a");
    assert_eq!(hub.queued(), 0);
    assert!(hub.waiting_for_slot().is_empty());
    hub.push(act("b", 0, 0));
    assert_eq!(
        hub.queued(),
        1,
        "slots of the purged instance are free again"
    );
}

#[tokio::test]
async fn a_new_execution_frees_the_slots_of_older_generations() {
    let hub = limited(1);
    hub.push(act("a", 0, 0));
    hub.push(act("a", 1, 0));
    assert_eq!(hub.queued(), 1);
    // Continue-as-new: the queued old-generation activity goes and so does the waiting one.
    hub.new_execution("a", 1);
    assert_eq!(hub.queued(), 0);
    assert!(hub.waiting_for_slot().is_empty());
    hub.push(act("a", 0, 1));
    assert_eq!(
        hub.queued(),
        1,
        "the new execution's activity gets the slot"
    );
}

/// A hand-off withdraws what waits for a slot as well as what is queued, and keeps the slots of
/// activities a worker is running (freeing them would admit more than the limit).
#[tokio::test]
async fn a_hand_off_withdraws_slot_waiting_work_and_keeps_running_slots() {
    let hub = limited(2);
    hub.push(act("moved", 0, 0));
    hub.push(act("moved", 1, 0));
    hub.push(act("moved", 2, 0));
    hub.push(act("stays", 0, 0));
    let (_running, _) = hub.take(1).await; // "moved" task 0 is at a worker
    assert_eq!(
        hub.queued(),
        1,
        "moved/1 queued; moved/2 and stays/0 wait for a slot"
    );
    hub.withdraw_queued(|id| id == "moved");
    assert!(
        !hub.waiting_for_slot().contains("moved"),
        "work waiting for a slot is withdrawn too"
    );
    // The running activity still holds one slot; the freed one admits the other instance only.
    assert_eq!(hub.queued(), 1, "stays/0 took the freed slot");
    hub.push(act("other", 0, 0));
    assert_eq!(
        hub.queued(),
        1,
        "the running activity's slot was not freed: the limit of 2 holds"
    );
    assert!(hub.waiting_for_slot().contains("other"));
}

/// A sidecar woken from a pause (SIGSTOP) past its lease must not hand out what was queued
/// before it: the gate is checked when an item leaves the queue, not only by the lease loop.
#[tokio::test]
async fn a_closed_dispatch_gate_holds_queued_work_until_it_opens() {
    let hub = Arc::new(Hub::new(usize::MAX));
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    hub.set_dispatch_gate(Box::new(move || gate.load(Ordering::SeqCst)));
    hub.push(wf("a", 0));
    let h = hub.clone();
    let taker = tokio::spawn(async move { h.take(1).await });
    // Several re-checks of the closed gate pass while the item stays queued.
    let held = tokio::time::timeout(GATE_RECHECK * 4, async {
        while !taker.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(held.is_err(), "work left the hub through a closed gate");
    open.store(true, Ordering::SeqCst);
    let (job, _) = tokio::time::timeout(std::time::Duration::from_secs(5), taker)
        .await
        .expect("the opened gate lets the queued item out")
        .unwrap();
    assert!(matches!(job.key(), Key::Workflow(id) if id == "a"));
}
