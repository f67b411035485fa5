//! The system under test: either an in-process sidecar started with `weft_sidecar::serve` on
//! ephemeral ports over a store (SQLite file or PostgreSQL) with its commit counter, wrapped in a
//! [`Probed`] store that counts the engine's calls; or a `weft dev` child process
//! ([`SidecarProcess`]) that the benchmark reaches only over gRPC, as an SDK app would.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use weft_proto::durabletask::CreateInstanceRequest;
use weft_proto::durabletask::task_hub_sidecar_service_client::TaskHubSidecarServiceClient as Client;
use weft_sidecar::{EngineConfig, SidecarConfig};
use weft_store::{PgStore, SqliteStore, Store};

use crate::probe::{Probe, Probed};
use crate::process::SidecarProcess;

/// A store the benchmark can read the commit counter of.
#[derive(Clone, Debug)]
pub enum BenchStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl BenchStore {
    /// A SQLite database file (WAL, `synchronous=FULL`) at `path`.
    pub fn sqlite(path: &Path) -> anyhow::Result<Self> {
        let s = SqliteStore::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Self::Sqlite(s))
    }

    /// A PostgreSQL database (migrated on connect).
    pub async fn postgres(url: &str) -> anyhow::Result<Self> {
        let s = PgStore::connect(url)
            .await
            .with_context(|| format!("connecting to {}", weft_store::redact_url(url)))?;
        Ok(Self::Postgres(s))
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Write transactions committed through this handle so far.
    pub fn commit_count(&self) -> u64 {
        match self {
            Self::Sqlite(s) => s.commit_count(),
            Self::Postgres(s) => s.commit_count(),
        }
    }

    fn dyn_store(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::Postgres(s) => Arc::new(s.clone()),
        }
    }
}

/// Where the sidecar under test runs.
#[derive(Debug, Clone)]
pub enum Target {
    /// In this process, on this store.
    InProcess(BenchStore),
    /// A `weft dev` child process: this binary, on SQLite in a temp dir or on this database URL.
    Process {
        weft_bin: std::path::PathBuf,
        database_url: Option<String>,
        /// More arguments for `weft dev` (e.g. `--idle-timeout 5s`).
        extra_args: Vec<String>,
    },
}

/// A running sidecar (in this process or a child) and a client connection to it. Dropping it
/// shuts the sidecar down; [`Sidecar::stop`] also waits (boundedly) for the servers to finish.
pub struct Sidecar {
    /// The in-process sidecar's store (`None` when the sidecar is a child process).
    pub store: Option<BenchStore>,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The engine's store calls so far (stays empty for a child process).
    pub probe: Arc<Probe>,
    /// The child process, when the sidecar runs in one.
    pub process: Option<SidecarProcess>,
    /// For starting and querying instances.
    pub client: Client<Channel>,
    /// Where the gRPC API listens (for extra connections, e.g. the worker's).
    pub grpc_url: String,
    shutdown: CancellationToken,
    done: Option<tokio::task::JoinHandle<Result<(), std::io::Error>>>,
}

impl From<BenchStore> for Target {
    fn from(s: BenchStore) -> Self {
        Target::InProcess(s)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Sidecar {
    /// Starts the sidecar where `target` says.
    pub async fn launch(target: Target) -> anyhow::Result<Self> {
        match target {
            Target::InProcess(store) => Self::start(store).await,
            Target::Process {
                weft_bin,
                database_url,
                extra_args,
            } => {
                let backend = if database_url.is_some() {
                    "postgres"
                } else {
                    "sqlite"
                };
                let p = tokio::task::spawn_blocking(move || {
                    SidecarProcess::start(&weft_bin, database_url.as_deref(), &extra_args)
                })
                .await??;
                let grpc_url = p.grpc_url.clone();
                let client = Self::connect_to(&grpc_url).await?;
                Ok(Self {
                    store: None,
                    backend,
                    probe: Arc::new(Probe::default()),
                    process: Some(p),
                    client,
                    grpc_url,
                    shutdown: CancellationToken::new(),
                    done: None,
                })
            }
        }
    }

    /// Write transactions the in-process store committed so far (`None` for a child process).
    pub fn commit_count(&self) -> Option<u64> {
        self.store.as_ref().map(BenchStore::commit_count)
    }

    pub async fn start(store: BenchStore) -> anyhow::Result<Self> {
        let cfg = SidecarConfig {
            grpc_addr: "127.0.0.1:0".parse()?,
            http_addr: "127.0.0.1:0".parse()?,
            engine: EngineConfig::default(),
            ..SidecarConfig::default()
        };
        let shutdown = CancellationToken::new();
        let probe = Arc::new(Probe::default());
        let probed = Arc::new(Probed::new(store.dyn_store(), probe.clone()));
        let running = weft_sidecar::serve(probed, cfg, shutdown.clone())
            .await
            .context("starting the sidecar")?;
        let grpc_url = format!("http://{}", running.grpc_addr);
        let client = Self::connect_to(&grpc_url).await?;
        Ok(Self {
            backend: store.backend(),
            store: Some(store),
            probe,
            process: None,
            client,
            grpc_url,
            shutdown,
            done: Some(running.done),
        })
    }

    /// A new HTTP/2 connection to the sidecar.
    pub async fn connect(&self) -> anyhow::Result<Client<Channel>> {
        Self::connect_to(&self.grpc_url).await
    }

    pub(crate) async fn connect_to(url: &str) -> anyhow::Result<Client<Channel>> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(Client::new(channel))
    }

    /// Shuts the sidecar down and waits up to five seconds for its servers to stop.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        }
        if let Some(p) = self.process.take() {
            let _ = tokio::task::spawn_blocking(move || drop(p)).await;
        }
    }
}

/// A short random tag so several runs (or a reused database) never share instance IDs.
pub fn run_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// `StartInstance` of workflow `name` (a shape the worker knows) with `input`.
pub fn start_request(id: &str, name: &str, input: &str) -> CreateInstanceRequest {
    CreateInstanceRequest {
        instance_id: id.to_string(),
        name: name.into(),
        input: Some(input.into()),
        // A (past) scheduled start makes StartInstance return once the instance is durable.
        scheduled_start_timestamp: Some(prost_types::Timestamp::default()),
        ..Default::default()
    }
}
