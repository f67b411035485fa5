//! The engine stamps what it writes with its injected clock, not the machine's.

use crate::engine::StartRequest;
use crate::{Engine, EngineConfig};
use std::sync::Arc;
use weft_core::clock::ManualClock;
use weft_store::SqliteStore;

#[tokio::test]
async fn the_injected_clock_stamps_instances_and_events() {
    let t0 = 1_000_000_000_000; // 1970-01-12: far from any real clock reading
    let clock = Arc::new(ManualClock::at(t0));
    let cfg = EngineConfig {
        clock: clock.clone(),
        ..Default::default()
    };
    let engine = Engine::new(Arc::new(SqliteStore::open_in_memory().unwrap()), cfg);
    let start = |id: &str| StartRequest {
        instance_id: id.into(),
        name: "wf".into(),
        ..Default::default()
    };
    engine.start_instance(start("a")).await.unwrap();
    let a = engine.get_instance("a").await.unwrap().unwrap();
    assert_eq!(a.created_at, t0);

    clock.advance(std::time::Duration::from_secs(5));
    engine.raise_event("a", "go", None).await.unwrap();
    let inbox = engine.store().read_inbox("a").await.unwrap();
    let stamp = inbox.last().and_then(|e| e.event.timestamp).unwrap();
    assert_eq!(weft_core::time::to_micros(&stamp), t0 + 5_000_000);
}
