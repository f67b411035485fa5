//! Serving side: turns a bound listener into the stream of connections tonic serves, plaintext
//! or TLS, each carrying a [`PeerInfo`] (the client certificate's identity) into every request.

use crate::context::TlsContext;
use crate::identity::{Peer, PeerInfo, identity_in};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

/// A slow or silent client may not hold a handshake slot longer than this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes run concurrently; at most this many accepted connections wait for the server.
const ACCEPT_BACKLOG: usize = 128;

/// How a port uses TLS.
#[derive(Clone)]
pub enum Mode {
    Plain,
    /// Client certificates of the CA required (Weft's own ports).
    Mutual(Arc<TlsContext>),
    /// Server certificate only (public ports with `--public-tls`).
    Public(Arc<TlsContext>),
}

/// One accepted connection.
pub enum Conn {
    Plain(TcpStream, PeerInfo),
    Tls(Box<TlsStream<TcpStream>>, PeerInfo),
}

impl Conn {
    pub fn info(&self) -> &PeerInfo {
        match self {
            Conn::Plain(_, i) | Conn::Tls(_, i) => i,
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info().clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }
}

/// The connections of one port, for `serve_with_incoming*`.
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>>;

/// Accepts on `listener` until the returned stream is dropped (the server stopped). `port`
/// names the port in logs and in `weft_tls_handshakes_refused_total{port}`.
pub fn incoming(listener: TcpListener, mode: Mode, port: &'static str) -> Incoming {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(ACCEPT_BACKLOG);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                _ = tx.closed() => return,
                r = listener.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors and the like: back off a moment, keep serving.
                        tracing::warn!(port, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            keepalive(&tcp);
            match &mode {
                Mode::Plain => {
                    let info = PeerInfo {
                        remote: Some(remote),
                        peer: Peer::Plain,
                    };
                    if tx.send(Ok(Conn::Plain(tcp, info))).await.is_err() {
                        return;
                    }
                }
                Mode::Mutual(ctx) | Mode::Public(ctx) => {
                    let (cfg, mutual) = match &mode {
                        Mode::Mutual(_) => (ctx.mutual_server(), true),
                        _ => (ctx.public_server(), false),
                    };
                    let td = ctx.trust_domain().to_string();
                    let tx = tx.clone();
                    // Each handshake in its own task: one slow client never stalls accepting.
                    tokio::spawn(async move {
                        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                        let shake =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                        let tls = match shake {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                let why = e.to_string();
                                let why = if why.contains("InvalidContentType") {
                                    "the client does not speak TLS (a plaintext client?)".into()
                                } else {
                                    why
                                };
                                return refused(port, remote, &why);
                            }
                            Err(_) => return refused(port, remote, "handshake timed out"),
                        };
                        let peer = peer_of(&tls, mutual, &td);
                        let info = PeerInfo {
                            remote: Some(remote),
                            peer,
                        };
                        let _ = tx.send(Ok(Conn::Tls(Box::new(tls), info))).await;
                    });
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

fn keepalive(tcp: &TcpStream) {
    // Dead peers (a killed pod) must not hold streams open for hours.
    let ka = socket2::TcpKeepalive::new().with_time(Duration::from_secs(10));
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka);
}

fn refused(port: &'static str, remote: SocketAddr, why: &str) {
    metrics::counter!("weft_tls_handshakes_refused_total", "port" => port).increment(1);
    tracing::warn!(port, %remote, reason = %why, "TLS handshake refused");
}

fn peer_of(tls: &TlsStream<TcpStream>, mutual: bool, trust_domain: &str) -> Peer {
    let (_, conn) = tls.get_ref();
    match conn.peer_certificates().and_then(|c| c.first()) {
        None if mutual => Peer::Unrecognised("a peer without a client certificate".into()),
        None => Peer::Anonymous,
        Some(cert) => match identity_in(cert, trust_domain) {
            Ok(id) => Peer::Verified(id),
            Err(seen) => Peer::Unrecognised(seen),
        },
    }
}
