//! Binds the gRPC and HTTP ports and runs both servers until the shutdown token fires.

use crate::engine::{Engine, EngineConfig};
use crate::grpc::Service;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Interceptor;
use tonic::transport::Server;
use weft_proto::durabletask::task_hub_sidecar_service_server::TaskHubSidecarServiceServer;
use weft_store::Store;

#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub api_token: Option<String>,
    pub engine: EngineConfig,
}

/// A running sidecar: its bound addresses and a handle that completes at shutdown.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
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
            None => Err(tonic::Status::unauthenticated(
                "missing api token in request metadata",
            )),
            Some(v) if token_matches(v.as_bytes(), want.as_bytes()) => Ok(req),
            Some(_) => Err(tonic::Status::unauthenticated(
                "authentication error: api token mismatch",
            )),
        }
    }
}

/// Compares a presented API token with the configured one in time that depends only on the
/// configured token's length, not on where the two differ (no timing oracle for guessing it).
pub(crate) fn token_matches(given: &[u8], want: &[u8]) -> bool {
    let mut diff = given.len() ^ want.len();
    for (i, w) in want.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!w);
        diff = std::hint::black_box(diff | usize::from(g ^ w));
    }
    diff == 0
}

pub async fn serve(
    store: Arc<dyn Store>,
    cfg: SidecarConfig,
    shutdown: CancellationToken,
) -> Result<Running, ServeError> {
    let grpc = TcpListener::bind(cfg.grpc_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.grpc_addr,
            source,
        })?;
    let http = TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.http_addr,
            source,
        })?;
    let grpc_addr = grpc.local_addr().map_err(|source| ServeError::Bind {
        addr: cfg.grpc_addr,
        source,
    })?;
    let http_addr = http.local_addr().map_err(|source| ServeError::Bind {
        addr: cfg.http_addr,
        source,
    })?;

    let max_payload = cfg.engine.max_payload_bytes;
    let engine = Engine::new(store, cfg.engine);
    engine.start(shutdown.clone()).await?;

    // Accept messages well above the payload limit so oversize payloads get our own clear
    // RESOURCE_EXHAUSTED instead of a transport error.
    let max_msg = max_payload.saturating_mul(4).max(16 * 1024 * 1024);
    let svc = TaskHubSidecarServiceServer::new(Service::new(engine.clone(), shutdown.clone()))
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let token = TokenCheck(cfg.api_token.clone().map(Arc::from));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(weft_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .ok();
    let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
    let sd = shutdown.clone();
    let grpc_task =
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
                .add_optional_service(reflection.map(|r| {
                    tonic::service::interceptor::InterceptedService::new(r, token.clone())
                }))
                .serve_with_incoming_shutdown(incoming, sd.cancelled_owned())
                .await
        });
    let app = crate::http::router(engine.clone(), cfg.api_token, max_payload);
    let sd = shutdown.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(http, app)
            .with_graceful_shutdown(sd.cancelled_owned())
            .await
    });
    let done = tokio::spawn(async move {
        let g = grpc_task.await.map_err(std::io::Error::other)?;
        let h = http_task.await.map_err(std::io::Error::other)?;
        g.map_err(std::io::Error::other)?;
        h
    });
    Ok(Running {
        grpc_addr,
        http_addr,
        engine,
        done,
    })
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches(b"secret", b"secret"));
        assert!(token_matches(b"", b""));
        for other in [
            &b""[..],
            b"secre",
            b"secret!",
            b"Secret",
            b"xxxxxx",
            b"\0ecret",
        ] {
            assert!(!token_matches(other, b"secret"), "{other:?}");
        }
        assert!(!token_matches(b"a", b""));
    }
}
