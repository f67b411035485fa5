//! The engine "process": each incarnation is a real `weft_sidecar::serve` (gRPC on port 0) over a
//! fresh store handle, on a tokio runtime of its own. A crash kills that runtime — every actor,
//! loop, stream and connection of the incarnation is gone at once, as with SIGKILL — and the
//! supervisor starts a new incarnation on the same database, as a restart would.

use crate::faults::{FaultStore, Faults};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use weft_sidecar::{EngineConfig, SidecarConfig};
use weft_store::{PgOptions, PgStore, SqliteStore, Store};

/// Where the durable state lives; every incarnation opens it anew.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub async fn open(&self) -> Result<Arc<dyn Store>, String> {
        match self {
            Backend::Sqlite(p) => SqliteStore::open(p)
                .map(|s| Arc::new(s) as Arc<dyn Store>)
                .map_err(|e| e.to_string()),
            Backend::Postgres(url) => {
                let mut o = PgOptions::new(url.clone());
                o.pool_size = 4;
                o.retry_for = Duration::from_secs(2);
                PgStore::connect_with(o)
                    .await
                    .map(|s| Arc::new(s) as Arc<dyn Store>)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// A picture of an instance straight from the database (status, history, pending inbox), for
/// reports on an instance that did not finish.
pub async fn diagnose(backend: &Backend, id: &str) -> String {
    let store = match backend.open().await {
        Ok(s) => s,
        Err(e) => return format!("(cannot open the store: {e})"),
    };
    match store.load(id).await {
        Ok(Some(l)) => format!(
            "status {} generation {} version {}; history: {}; inbox: {}",
            l.meta.status,
            l.meta.generation,
            l.meta.version,
            crate::invariants::describe(&l.history),
            crate::invariants::describe(&l.inbox.into_iter().map(|e| e.event).collect::<Vec<_>>())
        ),
        Ok(None) => "not in the store".into(),
        Err(e) => format!("(load failed: {e})"),
    }
}

/// The supervisor's figures.
#[derive(Debug, Default, Clone)]
pub struct NodeStats {
    pub incarnations: u64,
    pub failed_starts: u64,
}

/// Runs incarnations of an engine configured as `engine` until `stop`; publishes the live gRPC
/// URL (None while down) on `addr`.
pub async fn supervise(
    backend: Backend,
    engine: EngineConfig,
    faults: Arc<Faults>,
    addr: watch::Sender<Option<String>>,
    stop: CancellationToken,
) -> Result<NodeStats, String> {
    let mut stats = NodeStats::default();
    let mut consecutive_failures = 0u32;
    loop {
        let epoch = faults.epoch();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weft-sim-engine")
            .enable_all()
            .build()
            .map_err(|e| format!("building a runtime: {e}"))?;
        let token = CancellationToken::new();
        let (b, f, t, e) = (
            backend.clone(),
            faults.clone(),
            token.clone(),
            engine.clone(),
        );
        let started = rt.spawn(async move {
            let store = b.open().await?;
            let store: Arc<dyn Store> = Arc::new(FaultStore::new(store, f, epoch));
            // Loopback, ports picked by the OS, no placement: this engine owns everything.
            let cfg = SidecarConfig {
                engine: e,
                ..SidecarConfig::default()
            };
            weft_sidecar::serve(store, cfg, t)
                .await
                .map(|r| format!("http://{}", r.grpc_addr))
                .map_err(|e| e.to_string())
        });
        stats.incarnations += 1;
        let outcome = match started.await {
            Ok(r) => r,
            Err(e) => Err(format!("start task: {e}")),
        };
        match outcome {
            Ok(url) if faults.epoch() == epoch => {
                consecutive_failures = 0;
                addr.send_replace(Some(url));
            }
            Ok(_) => {} // crashed while starting
            Err(e) if faults.epoch() == epoch => {
                // A start that failed without an injected crash: count it and try again.
                stats.failed_starts += 1;
                consecutive_failures += 1;
                if consecutive_failures > 20 {
                    rt.shutdown_background();
                    return Err(format!("the engine failed to start 20 times in a row: {e}"));
                }
                faults.crash(epoch);
            }
            Err(_) => {} // crashed while starting
        }
        tokio::select! {
            _ = faults.crashed(epoch) => {}
            _ = stop.cancelled() => {}
        }
        addr.send_replace(None);
        token.cancel();
        rt.shutdown_background();
        if stop.is_cancelled() {
            return Ok(stats);
        }
    }
}
