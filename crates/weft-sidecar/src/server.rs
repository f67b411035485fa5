//! Binds the gRPC, HTTP and internal ports and runs the servers until the shutdown token fires.

use crate::cluster::Registry;
use crate::engine::{Engine, EngineConfig};
use crate::error::EngineError;
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
use weft_proto::durabletask::task_hub_sidecar_service_server::TaskHubSidecarServiceServer;
use weft_proto::internal::internal_server::InternalServer;
use weft_store::Store;

#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The internal node-to-node API (forwarded calls, routed completions).
    pub internal_addr: SocketAddr,
    /// Host name or IP other sidecars reach this one at; the bound IP when unset.
    pub advertise_host: Option<String>,
    pub api_token: Option<String>,
    pub engine: EngineConfig,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            grpc_addr: local(50001),
            http_addr: local(3500),
            internal_addr: local(50002),
            advertise_host: None,
            api_token: None,
            engine: EngineConfig::default(),
        }
    }
}

/// A running sidecar: its bound addresses and a handle that completes at shutdown.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub internal_addr: SocketAddr,
    /// The internal address as other sidecars reach it (`host:port`).
    pub internal_advertised: String,
    pub engine: Engine,
    pub done: tokio::task::JoinHandle<Result<(), std::io::Error>>,
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
}

/// Checks `dapr-api-token` on every gRPC call, unary and streaming, as daprd does.
#[derive(Clone)]
struct TokenCheck(Option<Arc<str>>);

impl Interceptor for TokenCheck {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(want) = &self.0 else { return Ok(req) };
        match req.metadata().get("dapr-api-token") {
            None => Err(EngineError::Unauthenticated(
                "missing api token in request metadata".into(),
            )
            .into()),
            Some(v) if v.as_bytes() == want.as_bytes() => Ok(req),
            Some(_) => Err(EngineError::Unauthenticated(
                "authentication error: api token mismatch".into(),
            )
            .into()),
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = l
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok((l, bound))
}

/// Serves a sidecar that owns every key (one node, no placement).
pub async fn serve(
    store: Arc<dyn Store>,
    cfg: SidecarConfig,
    shutdown: CancellationToken,
) -> Result<Running, ServeError> {
    let host_id = format!("weft-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    serve_with(
        store,
        cfg,
        Arc::new(Registry::local_only(&host_id)),
        shutdown,
    )
    .await
}

/// Serves a sidecar whose ownership answers come from `ownership` (the cluster registry).
pub async fn serve_with(
    store: Arc<dyn Store>,
    cfg: SidecarConfig,
    ownership: Arc<dyn Ownership>,
    shutdown: CancellationToken,
) -> Result<Running, ServeError> {
    let (grpc, grpc_addr) = bind(cfg.grpc_addr).await?;
    let (http, http_addr) = bind(cfg.http_addr).await?;
    let (internal, internal_addr) = bind(cfg.internal_addr).await?;
    let internal_advertised = match &cfg.advertise_host {
        Some(h) => format!("{h}:{}", internal_addr.port()),
        None => internal_addr.to_string(),
    };

    let max_payload = cfg.engine.max_payload_bytes;
    let engine = Engine::new(store, cfg.engine);
    // Completion tokens name this sidecar, so an answer that reaches another one comes back.
    engine
        .inner
        .hub
        .set_origin(token_suffix(ownership.host_id(), &internal_advertised));
    engine.start(shutdown.clone()).await?;

    // Accept messages well above the payload limit so oversize payloads get our own clear
    // RESOURCE_EXHAUSTED instead of a transport error. The internal API carries the same
    // messages (tonic's 4 MiB default would refuse a forwarded maximal payload).
    let max_msg = max_payload.saturating_mul(4).max(16 * 1024 * 1024);
    let router = Router::new(
        engine.clone(),
        ownership.clone(),
        max_msg,
        cfg.api_token.as_deref(),
    );
    let svc = TaskHubSidecarServiceServer::new(Service::new(router.clone(), shutdown.clone()))
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let token = TokenCheck(cfg.api_token.clone().map(Arc::from));
    let internal_svc = InternalServer::new(InternalService::new(engine.clone(), ownership))
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let internal_incoming =
        tonic::transport::server::TcpIncoming::from(internal).with_nodelay(Some(true));
    let sd = shutdown.clone();
    let internal_token = token.clone();
    let internal_task = tokio::spawn(async move {
        Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                internal_svc,
                internal_token,
            ))
            .serve_with_incoming_shutdown(internal_incoming, sd.cancelled_owned())
            .await
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(weft_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .ok();
    let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
    let sd = shutdown.clone();
    let grpc_task = tokio::spawn(async move {
        Server::builder()
            // The SDKs ping every 30 s even without calls; keepalive keeps dead peers visible.
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                svc, token,
            ))
            .add_optional_service(reflection)
            .serve_with_incoming_shutdown(incoming, sd.cancelled_owned())
            .await
    });
    let app = crate::http::router(router, cfg.api_token, max_payload);
    let sd = shutdown.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(http, app)
            .with_graceful_shutdown(sd.cancelled_owned())
            .await
    });
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
        internal_advertised,
        engine,
        done,
    })
}
