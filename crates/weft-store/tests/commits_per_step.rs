//! Counts write transactions per activity step with the engine's storage traffic replayed
//! (load → checkpoint scheduling an activity → activity result → next turn), one-by-one and with
//! group commit. The printed table is the figure in docs/storage.md:
//! `cargo test -p weft-store --release --test commits_per_step -- --nocapture --test-threads 1`

use std::time::Instant;

use weft_core::RuntimeStatus;
use weft_proto::durabletask::{HistoryEvent, TaskCompletedEvent, history_event::EventType};
use weft_store::conformance::Fixture;
use weft_store::{
    ActivityCompletion, ActivityTask, Checkpoint, CreateInstance, ReusePolicy, Store,
};

const INSTANCES: usize = 50;
const STEPS: i32 = 10;

fn ev(event_id: i32) -> HistoryEvent {
    HistoryEvent {
        event_id,
        timestamp: None,
        router: None,
        event_type: Some(EventType::TaskCompleted(TaskCompletedEvent {
            task_scheduled_id: event_id,
            result: Some(format!("{{\"step\":{event_id}}}")),
            ..Default::default()
        })),
    }
}

/// One turn of instance `id`: consume its inbox, append two events, schedule activity `step` (or
/// complete the workflow after the last step).
async fn turn<S: Store>(s: &S, id: &str, step: i32) -> Checkpoint {
    let l = s.load(id).await.unwrap().unwrap();
    let mut meta = l.meta.clone();
    let last = step == STEPS;
    meta.status = if last {
        RuntimeStatus::Completed
    } else {
        RuntimeStatus::Running
    };
    Checkpoint {
        instance_id: id.to_string(),
        expected_version: l.meta.version,
        meta,
        reset_history: false,
        append: vec![ev(2 * step), ev(2 * step + 1)],
        consumed_inbox: l.inbox.iter().map(|e| e.seq).collect(),
        completed_activities: vec![],
        new_activities: if last {
            vec![]
        } else {
            vec![ActivityTask {
                app_id: String::new(),
                claim: 0,
                instance_id: id.to_string(),
                generation: l.meta.generation,
                task_id: step,
                request: vec![0; 64],
            }]
        },
        new_reminders: vec![],
        cancel_pending: last,
        outbound: vec![],
        fence: None,
    }
}

async fn drive<S: Store>(s: &S, commits: impl Fn() -> u64, batched: bool) -> (f64, f64) {
    let ids: Vec<String> = (0..INSTANCES).map(|i| format!("wf{i:03}")).collect();
    for id in &ids {
        let mut meta = weft_store::conformance::meta(id, "chain");
        meta.generation = 0;
        s.create_instance(CreateInstance {
            meta,
            start_event: ev(-1),
            policy: ReusePolicy::Error,
        })
        .await
        .unwrap();
    }
    let start_commits = commits();
    let started = Instant::now();
    for step in 0..=STEPS {
        let mut cps = Vec::new();
        for id in &ids {
            cps.push(turn(s, id, step).await);
        }
        if batched {
            for r in s.checkpoint_batch(cps).await {
                r.unwrap();
            }
        } else {
            for cp in cps {
                s.checkpoint(cp).await.unwrap();
            }
        }
        if step == STEPS {
            break;
        }
        let done: Vec<ActivityCompletion> = ids
            .iter()
            .map(|id| ActivityCompletion {
                claim: None,
                instance_id: id.clone(),
                task_id: step,
                generation: 0,
                event: ev(1000 + step),
            })
            .collect();
        if batched {
            for r in s.complete_activity_batch(done).await {
                assert!(r.unwrap());
            }
        } else {
            for d in done {
                assert!(
                    s.complete_activity(&d.instance_id, d.task_id, d.generation, d.event)
                        .await
                        .unwrap()
                );
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    for id in &ids {
        assert_eq!(
            s.get_instance(id).await.unwrap().unwrap().status,
            RuntimeStatus::Completed
        );
    }
    let steps = (INSTANCES as i32 * STEPS) as f64;
    let per_step = (commits() - start_commits) as f64 / steps;
    (per_step, steps / elapsed)
}

fn report(backend: &str, mode: &str, (per_step, rate): (f64, f64)) {
    println!(
        "{backend:<10} {mode:<28} {INSTANCES} instances x {STEPS} steps: \
         {per_step:.3} commits/step, {rate:.0} steps/s"
    );
}

struct Sqlite(tempfile::TempDir);

#[async_trait::async_trait]
impl Fixture for Sqlite {
    type Handle = weft_store::SqliteStore;
    async fn handle(&self) -> Self::Handle {
        weft_store::SqliteStore::open(&self.0.path().join("weft.db")).unwrap()
    }
}

#[tokio::test]
async fn sqlite_commits_per_activity_step() {
    for batched in [false, true] {
        let fx = Sqlite(tempfile::tempdir().unwrap());
        let s = fx.handle().await;
        let r = drive(&s, || s.commit_count(), batched).await;
        report(
            "sqlite",
            if batched {
                "group commit"
            } else {
                "one at a time"
            },
            r,
        );
        assert!(r.0 <= if batched { 1.0 } else { 2.1 }, "{r:?}");
    }
}

#[tokio::test]
async fn postgres_commits_per_activity_step() {
    for batched in [false, true] {
        let Some(db) = weft_testkit::test_database().await else {
            return;
        };
        let s = weft_store::PgStore::connect(&db.url).await.unwrap();
        let r = drive(&s, || s.commit_count(), batched).await;
        report(
            "postgres",
            if batched {
                "group commit"
            } else {
                "one at a time"
            },
            r,
        );
        assert!(r.0 <= if batched { 1.0 } else { 2.1 }, "{r:?}");
    }
}
