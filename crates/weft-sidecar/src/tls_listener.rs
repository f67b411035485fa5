//! The HTTP port over TLS (`--public-tls`): an axum listener fed by weft-tls's accept loop.

use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use weft_tls::{Conn, Incoming, Mode};

pub struct TlsListener {
    conns: Incoming,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, mode: Mode) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            conns: weft_tls::incoming(listener, mode, "http"),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            match self.conns.next().await {
                Some(Ok(c)) => {
                    let addr = c.info().remote.unwrap_or(self.local);
                    return (c, addr);
                }
                // Refused handshakes never get here; an accept error was logged already.
                Some(Err(_)) => continue,
                // The accept loop ends only when this listener is dropped.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
