//! An in-process sidecar for the port targets: the real engine over an in-memory SQLite store
//! on a current-thread runtime, reached through the same handlers the servers mount (no sockets).

use crate::FuzzError;
use prost::Message;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weft_sidecar::cluster::Registry;
use weft_sidecar::route::{Ownership, Router};
use weft_sidecar::{Engine, EngineConfig};
use weft_store::sqlite::SqliteStore;

/// A call that has not answered by then is a hang (every wait is bounded by the short
/// `grpc-timeout` the targets send).
const CALL_LIMIT: Duration = Duration::from_secs(10);

/// Calls before the sidecar is rebuilt, so the in-memory database and the actors in memory
/// stay small over a long run.
const CALLS_PER_SIDECAR: u64 = 4_000;

/// Payload limit of the fuzzed sidecar: small, so oversize inputs reach the limit checks.
pub const MAX_PAYLOAD: usize = 4 * 1024;

pub struct Sidecar {
    rt: tokio::runtime::Runtime,
    pub engine: Engine,
    pub router: Router,
    pub ownership: Arc<dyn Ownership>,
    pub shutdown: CancellationToken,
    calls: u64,
    /// Calls made on the sidecars this one replaced.
    earlier: u64,
}

impl Sidecar {
    pub fn new() -> Result<Self, FuzzError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| FuzzError::Setup(format!("runtime: {e}")))?;
        // The engine spawns its committers as it is built.
        let _guard = rt.enter();
        let store = SqliteStore::open_in_memory().map_err(|e| FuzzError::Setup(e.to_string()))?;
        let cfg = EngineConfig {
            app_id: "fuzz".into(),
            max_payload_bytes: MAX_PAYLOAD,
            ..Default::default()
        };
        let engine = Engine::with_registry(Arc::new(store), cfg, Registry::local_only("fuzz-1"));
        let shutdown = CancellationToken::new();
        rt.block_on(engine.start(shutdown.clone()))
            .map_err(|e| FuzzError::Setup(e.to_string()))?;
        let ownership: Arc<dyn Ownership> = Arc::new(engine.registry().clone());
        let router = Router::new(
            engine.clone(),
            ownership.clone(),
            4 * MAX_PAYLOAD,
            None,
            None,
        );
        Ok(Self {
            rt,
            engine,
            router,
            ownership,
            shutdown,
            calls: 0,
            earlier: 0,
        })
    }

    /// Runs one call to completion (with the engine's background tasks), failing on a hang.
    pub fn call<F: Future>(&mut self, fut: F) -> Result<F::Output, String> {
        self.calls += 1;
        self.rt
            .block_on(async { tokio::time::timeout(CALL_LIMIT, fut).await })
            .map_err(|_| format!("no answer within {CALL_LIMIT:?}"))
    }

    /// Runs `f` inside the runtime's context (for code that spawns tasks as it is built).
    pub fn in_runtime<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self.rt.enter();
        f()
    }

    /// Replaces this sidecar with a fresh one once it has served its share of calls.
    pub fn renew_if_worn(&mut self) -> Result<(), String> {
        if self.calls >= CALLS_PER_SIDECAR {
            let earlier = self.served();
            *self = Self::new().map_err(|e| e.to_string())?;
            self.earlier = earlier;
        }
        Ok(())
    }

    /// Calls made so far (on this sidecar and the ones it replaced).
    pub fn served(&self) -> u64 {
        self.earlier + self.calls
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A target whose inputs run against an in-process [`Sidecar`] through `run`.
pub struct SidecarTarget {
    name: &'static str,
    sidecar: Sidecar,
    run: fn(&mut Sidecar, &[u8]) -> Result<(), String>,
}

impl SidecarTarget {
    pub fn new(
        name: &'static str,
        run: fn(&mut Sidecar, &[u8]) -> Result<(), String>,
    ) -> Result<Self, FuzzError> {
        Ok(Self {
            name,
            sidecar: Sidecar::new()?,
            run,
        })
    }
}

impl crate::harness::Target for SidecarTarget {
    fn name(&self) -> &'static str {
        self.name
    }

    fn reached(&self) -> u64 {
        self.sidecar.served()
    }

    fn run(&mut self, data: &[u8]) -> Result<(), String> {
        self.sidecar.renew_if_worn()?;
        (self.run)(&mut self.sidecar, data)
    }
}

/// A request as tonic hands it to a handler, with a deadline short enough that waits (for a
/// first turn no worker will run) end at once.
pub fn request<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "grpc-timeout",
        tonic::metadata::MetadataValue::from_static("30m"),
    );
    req
}

/// Decodes a protobuf message and checks the round trip (`decode(encode(m)) == m`, the
/// invariant every message the servers receive must keep). `Ok(None)`: the decoder refused it.
pub fn decode_checked<M: Message + Default + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
) -> Result<Option<M>, String> {
    let Ok(msg) = M::decode(bytes) else {
        return Ok(None);
    };
    let again = M::decode(msg.encode_to_vec().as_slice()).map_err(|e| {
        format!(
            "re-encoded {} does not decode: {e}",
            std::any::type_name::<M>()
        )
    })?;
    if again != msg {
        return Err(format!(
            "{} changed in a round trip: {msg:?} became {again:?}",
            std::any::type_name::<M>()
        ));
    }
    Ok(Some(msg))
}

/// Every error a handler answers goes through the error table: `UNKNOWN` means one did not,
/// and `INTERNAL` that the engine hit a state it calls impossible.
pub fn check_status(status: Option<&tonic::Status>) -> Result<(), String> {
    match status {
        Some(s) if matches!(s.code(), tonic::Code::Unknown | tonic::Code::Internal) => {
            Err(format!("handler answered {:?}: {}", s.code(), s.message()))
        }
        _ => Ok(()),
    }
}

/// Decodes `$ty` from `$bytes`, runs handler `$method` of `$svc` on sidecar `$sc` and checks the
/// answer's status.
#[macro_export]
#[doc(hidden)]
macro_rules! call {
    ($sc:expr, $svc:expr, $method:ident, $ty:ty, $bytes:expr) => {{
        if let Some(m) = $crate::sidecar::decode_checked::<$ty>($bytes)? {
            let r = $sc.call($svc.$method($crate::sidecar::request(m)))?;
            $crate::sidecar::check_status(r.as_ref().err())?;
        }
    }};
}
