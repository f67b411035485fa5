//! Binds the gRPC, HTTP and internal ports, joins placement (when clustered), and runs the
//! servers until the shutdown token fires; [`Running::shutdown`] is the ordered way out.

use crate::auth::TokenCheck;
use crate::cluster::{ClusterConfig, Membership, Registry};
use crate::engine::{Engine, EngineConfig};
use crate::grpc::Service;
use crate::internal::InternalService;
use crate::route::{Ownership, Router, token_suffix};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Interceptor;
use tonic::transport::Server;
use weft_proto::framed::task_hub_sidecar_service_server::TaskHubSidecarServiceServer;
use weft_proto::internal::internal_server::InternalServer;
use weft_store::Store;
use weft_tls::authz::rules;
use weft_tls::{Mode, PeerCheck, TlsContext};

#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The internal (sidecar-to-sidecar) gRPC API.
    pub internal_addr: SocketAddr,
    pub api_token: Option<String>,
    pub engine: EngineConfig,
    /// Placement to join; `None`: this sidecar owns every instance of its app (tests, bench).
    pub cluster: Option<ClusterConfig>,
    /// Mutual TLS on the internal port and to placement and peers (`None`: plaintext).
    pub tls: Option<Arc<TlsContext>>,
    /// Serve the public gRPC and HTTP ports with TLS too (server certificate only).
    pub public_tls: bool,
}

impl Default for SidecarConfig {
    /// Loopback, every port picked by the OS, no placement.
    fn default() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            grpc_addr: any,
            http_addr: any,
            internal_addr: any,
            api_token: None,
            engine: EngineConfig::default(),
            cluster: None,
            tls: None,
            public_tls: false,
        }
    }
}

/// A running sidecar: its bound addresses and a handle that completes at shutdown.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub internal_addr: SocketAddr,
    /// This sidecar's id in placement.
    pub host_id: String,
    pub engine: Engine,
    pub done: tokio::task::JoinHandle<Result<(), std::io::Error>>,
    membership: Option<Membership>,
    shutdown: CancellationToken,
}

impl Running {
    /// The ordered shutdown: stop handing out work and wait (up to `drain_timeout`) for the
    /// answers to what workers hold — so no activity whose result is on its way runs again
    /// elsewhere — then leave placement (the keys move to the other sidecars at once), stop the
    /// servers and background loops, and wait for them (bounded). The ownership lease ends
    /// right after leaving, so the next owners take the buckets over without waiting it out.
    pub async fn shutdown(mut self, drain_timeout: Duration) -> Result<(), std::io::Error> {
        let left_out = self.engine.drain(drain_timeout).await;
        if left_out > 0 {
            tracing::warn!(
                in_flight = left_out,
                "drain deadline passed; the new owners dispatch these again"
            );
        }
        if let Some(m) = self.membership.take() {
            m.leave().await;
        }
        // Frees every bucket lease at once, so the next owners need not wait it out.
        self.engine.end_lease().await;
        self.shutdown.cancel();
        // Streams and long polls end at cancellation; don't hang on a stuck client.
        match tokio::time::timeout(Duration::from_secs(10), self.done).await {
            Ok(r) => r.map_err(std::io::Error::other)?,
            Err(_) => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("recovering unfinished work failed: {0}")]
    Recover(#[from] crate::error::EngineError),
    #[error("shut down before placement sent a table")]
    Stopped,
}

pub async fn serve(
    store: Arc<dyn Store>,
    cfg: SidecarConfig,
    shutdown: CancellationToken,
) -> Result<Running, ServeError> {
    serve_inner(store, cfg, None, None, shutdown).await
}

/// Serves a sidecar without a placement client whose engine follows `registry`, a
/// [`Registry::placed`] the caller feeds tables to with [`Registry::apply`] (the simulation's
/// scripted ownership moves). Leases are on, as with placement; owner writes are fenced.
pub async fn serve_placed(
    store: Arc<dyn Store>,
    cfg: SidecarConfig,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<Running, ServeError> {
    serve_inner(store, cfg, None, Some(registry), shutdown).await
}

/// Serves a sidecar without placement whose API edge takes ownership answers from `edge`
/// instead (tests of routing between sidecars; its engine owns every instance it is asked about).
pub async fn serve_with(
    store: Arc<dyn Store>,
    cfg: SidecarConfig,
    edge: Arc<dyn Ownership>,
    shutdown: CancellationToken,
) -> Result<Running, ServeError> {
    serve_inner(store, cfg, Some(edge), None, shutdown).await
}

/// Where a sidecar's ownership answers come from.
enum Owners {
    /// `weft dev` and single sidecars: everything of the app is ours.
    Local,
    /// Tests of routing between sidecars: the API edge asks `edge`.
    Edge(Arc<dyn Ownership>),
    /// The simulation: a registry the caller feeds tables to.
    Placed(Registry),
}

async fn serve_inner(
    store: Arc<dyn Store>,
    cfg: SidecarConfig,
    edge: Option<Arc<dyn Ownership>>,
    placed: Option<Registry>,
    shutdown: CancellationToken,
) -> Result<Running, ServeError> {
    let owners = match (edge, placed) {
        (_, Some(r)) => Owners::Placed(r),
        (Some(e), None) => Owners::Edge(e),
        (None, None) => Owners::Local,
    };
    let (grpc, grpc_addr) = bind(cfg.grpc_addr).await?;
    let (http, http_addr) = bind(cfg.http_addr).await?;
    let (internal, internal_addr) = bind(cfg.internal_addr).await?;
    let host_id = host_id(&cfg, &owners);
    let internal_advertised = match &cfg.cluster {
        Some(cluster) => advertised(cluster, internal_addr),
        None => internal_addr.to_string(),
    };
    let max_payload = cfg.engine.max_payload_bytes;
    let (engine, membership, edge) =
        build_engine(store, &cfg, owners, &host_id, internal_addr, &shutdown).await?;
    // Completion tokens name this sidecar, so an answer that reaches another one comes back.
    engine
        .inner
        .hub
        .set_origin(token_suffix(&host_id, &internal_advertised));
    engine.start(shutdown.clone()).await?;

    // Accept messages well above the payload limit so oversize payloads get our own clear
    // RESOURCE_EXHAUSTED instead of a transport error. The internal API carries the same
    // messages (tonic's 4 MiB default would refuse a forwarded maximal payload).
    let max_msg = max_payload.saturating_mul(4).max(16 * 1024 * 1024);
    let ownership: Arc<dyn Ownership> = edge.unwrap_or_else(|| Arc::new(engine.registry().clone()));
    let router = Router::new(
        engine.clone(),
        ownership.clone(),
        max_msg,
        cfg.api_token.as_deref(),
        cfg.tls.clone(),
    );
    let token = TokenCheck(cfg.api_token.clone().map(Arc::from));
    let public_mode = match (&cfg.tls, cfg.public_tls) {
        (Some(ctx), true) => Mode::Public(ctx.clone()),
        _ => Mode::Plain,
    };
    let grpc_task = spawn_grpc(
        grpc,
        public_mode.clone(),
        &router,
        token.clone(),
        max_msg,
        &shutdown,
    );
    let app = crate::http::router(router, cfg.api_token.clone(), max_payload);
    let http_task = spawn_http(http, public_mode, app, &shutdown);
    let internal_task = spawn_internal(
        internal,
        &cfg,
        InternalService::new(engine.clone(), ownership),
        token,
        max_msg,
        &shutdown,
    );
    let done = tokio::spawn(async move {
        let g = grpc_task.await.map_err(std::io::Error::other)?;
        let h = http_task.await.map_err(std::io::Error::other)?;
        let i = internal_task.await.map_err(std::io::Error::other)?;
        g.map_err(std::io::Error::other)?;
        i.map_err(std::io::Error::other)?;
        h
    });
    Ok(Running {
        grpc_addr,
        http_addr,
        internal_addr,
        host_id,
        engine,
        done,
        membership,
        shutdown,
    })
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let err = |source| ServeError::Bind { addr, source };
    let l = TcpListener::bind(addr).await.map_err(err)?;
    let bound = l.local_addr().map_err(err)?;
    Ok((l, bound))
}

/// This sidecar's name in placement: the registry's or edge's in tests, the configured one, or
/// the app ID with a random suffix.
fn host_id(cfg: &SidecarConfig, owners: &Owners) -> String {
    match (owners, cfg.cluster.as_ref().map(|c| c.host_id.as_str())) {
        (Owners::Placed(r), _) => r.host_id().to_string(),
        (_, Some(id)) if !id.is_empty() => id.to_string(),
        (Owners::Edge(e), _) => e.host_id().to_string(),
        _ => format!(
            "{}-{}",
            cfg.engine.app_id,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ),
    }
}

type Built = (Engine, Option<Membership>, Option<Arc<dyn Ownership>>);

/// The engine over the registry its ownership comes from; with placement, joins it and waits
/// for the first table (so nothing is served before this sidecar knows what it owns).
async fn build_engine(
    store: Arc<dyn Store>,
    cfg: &SidecarConfig,
    owners: Owners,
    host_id: &str,
    internal_addr: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<Built, ServeError> {
    let ecfg = cfg.engine.clone();
    let (edge, placed) = match owners {
        Owners::Placed(registry) => (None, Some(registry)),
        Owners::Edge(e) => (Some(e), None),
        Owners::Local => (None, None),
    };
    if let Some(registry) = placed {
        return Ok((Engine::with_registry(store, ecfg, registry), None, None));
    }
    let Some(cluster) = &cfg.cluster else {
        let engine = Engine::with_registry(store, ecfg, Registry::local_only(host_id));
        return Ok((engine, None, edge));
    };
    let registry = Registry::placed(host_id);
    let engine = Engine::with_registry(store, ecfg, registry.clone());
    let address = advertised(cluster, internal_addr);
    tracing::info!(host_id = %host_id, %address, placement = ?cluster.placement, "joining placement");
    let cluster = ClusterConfig {
        tls: cfg.tls.clone(),
        ..cluster.clone()
    };
    let m = Membership::start(
        &cluster,
        host_id,
        address,
        &cfg.engine.app_id,
        registry,
        engine.workers_connected(),
    );
    if !m.first_table(shutdown).await {
        return Err(ServeError::Stopped);
    }
    Ok((engine, Some(m), edge))
}

type ServerTask<E> = tokio::task::JoinHandle<Result<(), E>>;

/// The public durabletask gRPC port: the API behind the token check, and reflection.
fn spawn_grpc(
    listener: TcpListener,
    mode: Mode,
    router: &Router,
    token: TokenCheck,
    max_msg: usize,
    shutdown: &CancellationToken,
) -> ServerTask<tonic::transport::Error> {
    let svc = TaskHubSidecarServiceServer::new(Service::new(router.clone(), shutdown.clone()))
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(weft_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .ok();
    let incoming = weft_tls::incoming(listener, mode, "grpc");
    let sd = shutdown.clone();
    tokio::spawn(async move {
        Server::builder()
            // The SDKs ping every 30 s even without calls; keepalive keeps dead peers visible.
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                svc,
                token.clone(),
            ))
            // Reflection describes the API, so it needs the token like every other call.
            .add_optional_service(
                reflection.map(|r| {
                    tonic::service::interceptor::InterceptedService::new(r, token.clone())
                }),
            )
            .serve_with_incoming_shutdown(incoming, sd.cancelled_owned())
            .await
    })
}

/// The public Dapr HTTP port.
fn spawn_http(
    listener: TcpListener,
    mode: Mode,
    app: axum::Router,
    shutdown: &CancellationToken,
) -> ServerTask<std::io::Error> {
    let sd = shutdown.clone();
    tokio::spawn(async move {
        match mode {
            Mode::Plain => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(sd.cancelled_owned())
                    .await
            }
            tls => {
                let listener = crate::tls_listener::TlsListener::new(listener, tls)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(sd.cancelled_owned())
                    .await
            }
        }
    })
}

/// The internal (sidecar-to-sidecar) port: mutual TLS when configured, a sidecar identity and
/// the API token on every call.
fn spawn_internal(
    listener: TcpListener,
    cfg: &SidecarConfig,
    svc: InternalService,
    token: TokenCheck,
    max_msg: usize,
    shutdown: &CancellationToken,
) -> ServerTask<tonic::transport::Error> {
    let check = InternalCheck {
        token,
        peer: PeerCheck {
            port: "internal",
            action: "call the internal API",
            allow: rules::sidecar,
        },
    };
    let mode = match &cfg.tls {
        Some(ctx) => Mode::Mutual(ctx.clone()),
        None => Mode::Plain,
    };
    let svc = InternalServer::new(svc)
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let routes = internal_routes(check.clone()).add_service(
        tonic::service::interceptor::InterceptedService::new(svc, check),
    );
    let incoming = weft_tls::incoming(listener, mode, "internal");
    let sd = shutdown.clone();
    tokio::spawn(async move {
        Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, sd.cancelled_owned())
            .await
    })
}

/// The internal port's checks: the API token (when set) and a sidecar identity (with TLS).
#[derive(Clone)]
struct InternalCheck {
    token: TokenCheck,
    peer: PeerCheck,
}

impl Interceptor for InternalCheck {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let req = self.peer.call(req)?;
        self.token.call(req)
    }
}

/// Reflection on the internal port, behind the same checks as the API it describes (the
/// `Internal` service itself is added by `serve_inner`).
fn internal_routes(check: InternalCheck) -> tonic::service::Routes {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(weft_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .ok();
    let mut routes = tonic::service::Routes::default();
    if let Some(r) = reflection {
        routes = routes.add_service(tonic::service::interceptor::InterceptedService::new(
            r, check,
        ));
    }
    routes
}

/// The internal address other sidecars use: the advertised host (or the listen address,
/// loopback when listening on every interface) with the bound internal port.
fn advertised(cluster: &ClusterConfig, bound: SocketAddr) -> String {
    if !cluster.advertise_host.is_empty() {
        let host = &cluster.advertise_host;
        return if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", bound.port())
        } else {
            format!("{host}:{}", bound.port())
        };
    }
    let ip = if bound.ip().is_unspecified() {
        match bound.ip() {
            std::net::IpAddr::V4(_) => std::net::IpAddr::from([127, 0, 0, 1]),
            std::net::IpAddr::V6(_) => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        }
    } else {
        bound.ip()
    };
    SocketAddr::new(ip, bound.port()).to_string()
}
