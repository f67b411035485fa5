//! Dialling side: tonic channels to another Weft process, plaintext or over mutual TLS with the
//! identity of the other end checked (each new connection reads the current certificates).

use crate::context::{Expect, TlsContext};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::io;
use std::sync::Arc;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// How to reach a peer: the endpoint's address is always `http://host:port`; TLS, when on, is
/// done by our connector underneath.
#[derive(Clone, Debug)]
pub struct Dial {
    pub tls: Option<Arc<TlsContext>>,
    pub expect: Expect,
}

impl Dial {
    pub fn plain(expect: Expect) -> Self {
        Self { tls: None, expect }
    }

    pub fn new(tls: Option<Arc<TlsContext>>, expect: Expect) -> Self {
        Self { tls, expect }
    }

    /// An endpoint for `host:port` (an error names a malformed address).
    pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        Endpoint::from_shared(format!("http://{addr}"))
    }

    /// Connects now.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            None => endpoint.connect().await,
            Some(ctx) => {
                endpoint
                    .connect_with_connector(connector(ctx.clone(), self.expect))
                    .await
            }
        }
    }

    /// Connects on first use (and again after a connection broke).
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        match &self.tls {
            None => endpoint.connect_lazy(),
            Some(ctx) => endpoint.connect_with_connector_lazy(connector(ctx.clone(), self.expect)),
        }
    }
}

type ConnectFuture = std::pin::Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream>>> + Send>>;
type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A tower service from `Uri` to a TLS stream (tonic's custom connector).
fn connector(
    ctx: Arc<TlsContext>,
    expect: Expect,
) -> impl tower::Service<Uri, Response = TokioIo<TlsStream>, Error = io::Error, Future = ConnectFuture>
+ Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: Uri| -> ConnectFuture {
        let ctx = ctx.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in address"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(80);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            // The name is not what is verified (the SPIFFE ID is), but rustls needs one.
            let name = ServerName::try_from(host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = tokio_rustls::TlsConnector::from(ctx.client(expect))
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("TLS handshake with {host}:{port} failed: {e}"),
                    )
                })?;
            Ok(TokioIo::new(tls))
        })
    })
}
