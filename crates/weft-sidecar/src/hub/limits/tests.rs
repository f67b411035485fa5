//! The limiter with synthetic jobs: order, no head-of-line blocking, withdraw and forget.

use super::*;
use weft_config::NameLimit;
use weft_proto::durabletask::{
    ActivityRequest, ExecutionStartedEvent, HistoryEvent, WorkflowInstance, WorkflowRequest,
};

fn act(inst: &str, task: i32, name: &str) -> (Key, Job) {
    let job = Job::Activity {
        claim: 0,
        generation: 1,
        request: ActivityRequest {
            name: name.into(),
            task_id: task,
            workflow_instance: Some(WorkflowInstance {
                instance_id: inst.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    (job.key(), job)
}

fn wf(inst: &str, name: &str) -> (Key, Job) {
    let job = Job::Workflow(
        WorkflowRequest {
            instance_id: inst.into(),
            new_events: vec![HistoryEvent {
                event_type: Some(EventType::ExecutionStarted(ExecutionStartedEvent {
                    name: name.into(),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }
        .into(),
    );
    (job.key(), job)
}

fn task_of(j: &Job) -> i32 {
    match j {
        Job::Activity { request, .. } => request.task_id,
        Job::Workflow(_) => -1,
    }
}

#[test]
fn per_sidecar_limit_admits_n_and_the_rest_in_order() {
    let mut l = Limits::new(&WorkflowConfig {
        max_concurrent_activity_invocations: Some(2),
        ..Default::default()
    });
    let mut admitted = 0;
    for t in 0..5 {
        let (k, j) = act("a", t, "x");
        if l.admit(k, j).is_some() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 2);
    assert!(l.is_waiting("a"));
    // Completing task 0 lets task 2 (the oldest waiting) in, and only it.
    let next = l.release(&act("a", 0, "x").0);
    assert_eq!(next.iter().map(task_of).collect::<Vec<_>>(), vec![2]);
    let next = l.release(&act("a", 1, "x").0);
    assert_eq!(next.iter().map(task_of).collect::<Vec<_>>(), vec![3]);
    // Workflows are not limited by the activity limit.
    let (k, j) = wf("w", "flow");
    assert!(l.admit(k, j).is_some());
}

#[test]
fn a_busy_name_does_not_block_other_names() {
    let mut l = Limits::new(&WorkflowConfig {
        max_concurrent_activity_invocations: Some(10),
        activity_concurrency_limits: vec![NameLimit {
            name: "charge".into(),
            max_concurrent: 1,
        }],
        ..Default::default()
    });
    // The name bucket is cluster-wide: give it its one lease.
    l.buckets.iter_mut().for_each(|b| {
        if b.is_cluster_wide() {
            b.leases = vec![0];
        }
    });
    let (k, j) = act("a", 1, "charge");
    assert!(l.admit(k, j).is_some());
    let (k, j) = act("a", 2, "charge");
    assert!(l.admit(k, j).is_none(), "second charge waits");
    for t in 3..8 {
        let (k, j) = act("a", t, "email");
        assert!(l.admit(k, j).is_some(), "other names run alongside");
    }
    let next = l.release(&act("a", 1, "charge").0);
    assert_eq!(next.iter().map(task_of).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn a_withdrawn_turn_keeps_its_place() {
    let mut l = Limits::new(&WorkflowConfig {
        max_concurrent_workflow_invocations: Some(1),
        ..Default::default()
    });
    let (k1, j1) = wf("w1", "f");
    let (k2, j2) = wf("w2", "f");
    let (k3, j3) = wf("w3", "f");
    assert!(l.admit(k1.clone(), j1).is_some());
    assert!(l.admit(k2.clone(), j2.clone()).is_none());
    assert!(l.admit(k3.clone(), j3).is_none());
    // w2 gets a new event: its parked turn is taken back and pushed again, keeping its place.
    let (parked, _) = l.withdraw(&k2, false);
    assert!(parked);
    assert!(!l.is_waiting("w2"));
    assert!(l.admit(k2.clone(), j2).is_none());
    let next = l.release(&k1);
    assert_eq!(next.len(), 1);
    assert!(matches!(&next[0], Job::Workflow(r) if r.instance_id == "w2"));
}

#[test]
fn forget_frees_slots_and_drops_waiting_work() {
    let mut l = Limits::new(&WorkflowConfig {
        max_concurrent_activity_invocations: Some(1),
        ..Default::default()
    });
    let (k, j) = act("a", 1, "x");
    assert!(l.admit(k, j).is_some());
    let (k, j) = act("a", 2, "x");
    assert!(l.admit(k, j).is_none());
    let (k, j) = act("b", 1, "x");
    assert!(l.admit(k, j).is_none());
    let next = l.forget("a");
    assert_eq!(next.len(), 1, "b's activity takes the freed slot");
    assert!(!l.is_waiting("a") && !l.is_waiting("b"));
}

#[test]
fn cluster_wide_capacity_is_the_leases_held() {
    let mut l = Limits::new(&WorkflowConfig {
        global_max_concurrent_activity_invocations: Some(4),
        ..Default::default()
    });
    assert!(l.has_cluster_wide());
    let (k, j) = act("a", 1, "x");
    assert!(l.admit(k, j).is_none(), "no lease yet");
    let b = l
        .buckets
        .iter()
        .position(|b| b.scope == Scope::Global)
        .unwrap();
    assert_eq!(l.buckets[b].lease_key(), "activity");
    l.buckets[b].leases = vec![0, 3];
    assert_eq!(l.admit_waiting().len(), 1);
    let (k, j) = act("a", 2, "x");
    assert!(l.admit(k, j).is_some());
    let (k, j) = act("a", 3, "x");
    assert!(l.admit(k, j).is_none(), "two leases, two in flight");
}

#[test]
fn lease_plan_asks_for_names_first_then_global() {
    let mut l = Limits::new(&WorkflowConfig {
        global_max_concurrent_activity_invocations: Some(4),
        activity_concurrency_limits: vec![NameLimit {
            name: "charge".into(),
            max_concurrent: 1,
        }],
        ..Default::default()
    });
    for t in 0..3 {
        let (k, j) = act("a", t, "charge");
        assert!(l.admit(k, j).is_none());
    }
    let (k, j) = act("a", 9, "email");
    assert!(l.admit(k, j).is_none());
    let names = l.lease_plan(true);
    let charge = names.iter().find(|n| n.key == "activity:charge").unwrap();
    assert_eq!(charge.want, 1);
    // No name slot in hand yet: the global bucket asks only for the email.
    let global = l.lease_plan(false);
    let g = global.iter().find(|n| n.key == "activity").unwrap();
    assert_eq!(g.want, 1);
    let b = charge.bucket;
    assert!(
        l.add_leases(b, vec![0]).is_empty(),
        "still needs a global slot"
    );
    let g = l
        .lease_plan(false)
        .into_iter()
        .find(|n| n.key == "activity")
        .unwrap();
    assert_eq!(g.want, 2, "the email and one charge");
    let gb = g.bucket;
    assert_eq!(l.add_leases(gb, vec![0, 1]).len(), 2);
    assert!(
        l.lease_plan(false)
            .iter()
            .all(|n| n.surplus == 0 && n.want == 0)
    );
    // The charge finishes with the others still waiting: its slots go to the next charge.
    let next = l.release(&act("a", 0, "charge").0);
    assert_eq!(next.iter().map(task_of).collect::<Vec<_>>(), vec![1]);
}

/// Issue 15 point 10: `forget` runs on every finished instance under the hub lock, so it looks
/// only at that instance's jobs, not at every job held, parked or keeping a place.
#[test]
fn forget_visits_only_the_instances_jobs() {
    let mut l = Limits::new(&WorkflowConfig {
        max_concurrent_activity_invocations: Some(500),
        ..Default::default()
    });
    for i in 0..1000 {
        let (k, j) = act(&format!("other-{i}"), 1, "x");
        l.admit(k, j); // 500 held, 500 parked
    }
    let (k, j) = wf("other-w", "w");
    l.admit(k.clone(), j);
    l.withdraw(&k, true); // keeps a place
    for t in 0..3 {
        let (k, j) = act("mine", t, "x");
        assert!(l.admit(k, j).is_none(), "parked behind the others");
    }
    let before = l.records();
    assert!(l.forget("mine").is_empty());
    assert_eq!(l.records(), before - 3);
    assert_eq!(l.forget_visits, 3, "visited other instances' jobs");
    // Forgetting a held job frees its slot for the oldest parked one.
    let next = l.forget("other-0");
    assert_eq!(next.len(), 1);
    assert_eq!(l.forget_visits, 4);
    assert!(l.forget("unknown").is_empty());
    assert_eq!(l.forget_visits, 4);
}
