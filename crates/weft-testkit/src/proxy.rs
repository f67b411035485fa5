//! A TCP proxy for network faults between two processes on loopback: it listens on
//! `127.0.0.1:0`, forwards every connection to one upstream address, and can be told at any time
//! to **cut** the path and later to **heal** it.
//!
//! Two ways to cut (`ProxyMode`):
//! - `Refuse`: every open connection is reset (RST to both ends) and every new one is accepted and
//!   reset at once, so the client sees its connection fail immediately, as with a refused port.
//! - `Blackhole`: nothing is forwarded any more, in either direction, and new connections are
//!   accepted but go nowhere: both ends see silence, as in a partition that drops packets. On heal
//!   the stalled connections carry on (what was buffered is delivered, as TCP retransmission
//!   would), unless an end gave up meanwhile (e.g. an HTTP/2 keepalive timeout).
//!
//! The cluster launcher puts one proxy in front of each placement node for each sidecar (config
//! `placement_proxies`), so one sidecar can be cut from placement while PostgreSQL, its peers and
//! its worker stay reachable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::TestkitError;

/// What a proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward both ways.
    Open,
    /// Reset open connections; accept and reset new ones.
    Refuse,
    /// Forward nothing; hold open and new connections until healed.
    Blackhole,
}

impl ProxyMode {
    pub fn parse(s: &str) -> Result<Self, TestkitError> {
        match s {
            "open" => Ok(Self::Open),
            "refuse" => Ok(Self::Refuse),
            "blackhole" => Ok(Self::Blackhole),
            other => Err(TestkitError::Invalid(format!(
                "proxy mode must be open|refuse|blackhole, got {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Refuse => "refuse",
            Self::Blackhole => "blackhole",
        }
    }
}

/// Counters of one proxy, for a test's report.
#[derive(Debug, Default)]
struct Stats {
    accepted: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    stalled: AtomicU64,
    bytes: AtomicU64,
}

/// One listening proxy. Dropping it stops accepting and closes every connection it holds.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: String,
    mode: watch::Sender<ProxyMode>,
    stats: Arc<Stats>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Binds `127.0.0.1:0` and starts forwarding to `upstream` (`host:port`) on `rt`.
    pub fn start(rt: &Handle, upstream: &str) -> Result<Self, TestkitError> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(std_listener)?
        };
        let (mode, mode_rx) = watch::channel(ProxyMode::Open);
        let stats = Arc::new(Stats::default());
        let accept = rt.spawn(accept_loop(
            listener,
            upstream.to_string(),
            mode_rx,
            stats.clone(),
        ));
        Ok(Self {
            addr,
            upstream: upstream.to_string(),
            mode,
            stats,
            accept,
        })
    }

    /// Where clients connect: `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn mode(&self) -> ProxyMode {
        *self.mode.borrow()
    }

    /// Switches the mode; takes effect on every connection at once.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    /// Mode, addresses and counters as JSON.
    pub fn describe(&self) -> Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "addr": self.addr(), "upstream": self.upstream, "mode": self.mode().as_str(),
            "accepted": n(&self.stats.accepted), "refused": n(&self.stats.refused),
            "reset": n(&self.stats.reset), "stalled": n(&self.stats.stalled),
            "bytes": n(&self.stats.bytes),
        })
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Connection tasks end when they see the mode sender gone.
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    mode: watch::Receiver<ProxyMode>,
    stats: Arc<Stats>,
) {
    loop {
        let sock = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // e.g. EMFILE: back off instead of spinning
                eprintln!("weft-testkit proxy: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if *mode.borrow() == ProxyMode::Refuse {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            reset(&sock);
            continue;
        }
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(
            sock,
            upstream.clone(),
            mode.clone(),
            stats.clone(),
        ));
    }
}

/// Makes the coming drop of `s` send RST instead of FIN.
fn reset(s: &TcpStream) {
    let _ = s.set_zero_linger();
}

/// Waits while the mode is `Blackhole`; true once `Open`, false on `Refuse` or when the proxy is
/// gone.
async fn wait_open(mode: &mut watch::Receiver<ProxyMode>) -> bool {
    loop {
        match *mode.borrow_and_update() {
            ProxyMode::Open => return true,
            ProxyMode::Refuse => return false,
            ProxyMode::Blackhole => {}
        }
        if mode.changed().await.is_err() {
            return false;
        }
    }
}

async fn connection(
    client: TcpStream,
    upstream: String,
    mut mode: watch::Receiver<ProxyMode>,
    stats: Arc<Stats>,
) {
    // A connection accepted while blackholed reaches the upstream only once healed.
    if *mode.borrow() == ProxyMode::Blackhole {
        stats.stalled.fetch_add(1, Ordering::Relaxed);
    }
    if !wait_open(&mut mode).await {
        stats.reset.fetch_add(1, Ordering::Relaxed);
        reset(&client);
        return;
    }
    let up = match TcpStream::connect(&upstream).await {
        Ok(s) => s,
        Err(_) => {
            reset(&client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let mut client = client;
    let mut up = up;
    if !pump(&mut client, &mut up, &mut mode, &stats).await {
        stats.reset.fetch_add(1, Ordering::Relaxed);
        reset(&client);
        reset(&up);
    }
}

/// Copies both ways while the mode is `Open` (half-closes are passed on). Returns false when the
/// connection must be reset (a cut in `Refuse` mode, an I/O error, the proxy dropped).
async fn pump(
    a: &mut TcpStream,
    b: &mut TcpStream,
    mode: &mut watch::Receiver<ProxyMode>,
    stats: &Stats,
) -> bool {
    let (mut ar, mut aw) = a.split();
    let (mut br, mut bw) = b.split();
    let mut abuf = vec![0u8; 16 * 1024];
    let mut bbuf = vec![0u8; 16 * 1024];
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        if *mode.borrow() == ProxyMode::Blackhole {
            stats.stalled.fetch_add(1, Ordering::Relaxed);
        }
        if !wait_open(mode).await {
            return false;
        }
        let (read, from_a) = tokio::select! {
            changed = mode.changed() => {
                if changed.is_err() {
                    return false;
                }
                continue;
            }
            r = ar.read(&mut abuf), if a_open => (r, true),
            r = br.read(&mut bbuf), if b_open => (r, false),
        };
        let (buf, to, open) = if from_a {
            (&abuf, &mut bw, &mut a_open)
        } else {
            (&bbuf, &mut aw, &mut b_open)
        };
        match read {
            Ok(0) => {
                *open = false;
                let _ = to.shutdown().await;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return false;
                }
                stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    /// An echo server on a plain thread: echoes every connection until EOF.
    fn echo_server() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(addr: &str) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    }

    /// Sends `msg` and reads the echo; Err if nothing (or an error) comes back in time.
    fn echo(s: &mut std::net::TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < msg.len() {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok(got)
    }

    /// Waits (up to 5 s) until the proxy's counter `key` reaches `n`.
    fn wait_for(p: &TcpProxy, key: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while p.describe()[key].as_u64().unwrap() < n {
            assert!(Instant::now() < deadline, "{key} < {n}: {}", p.describe());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A proxy in front of an echo server, and one connection through it that works.
    fn proxied() -> (tokio::runtime::Runtime, TcpProxy, std::net::TcpStream) {
        let rt = rt();
        let p = TcpProxy::start(rt.handle(), &echo_server()).unwrap();
        let mut s = connect(&p.addr());
        assert_eq!(echo(&mut s, b"hello").unwrap(), b"hello");
        (rt, p, s)
    }

    #[test]
    fn refuse_resets_open_and_new_connections_until_healed() {
        let (_rt, p, mut s) = proxied();

        p.set_mode(ProxyMode::Refuse);
        wait_for(&p, "reset", 1);
        // the open connection is reset (read fails or hits EOF), without waiting for a timeout
        let t0 = Instant::now();
        assert!(echo(&mut s, b"x").is_err());
        assert!(
            t0.elapsed() < Duration::from_millis(300),
            "reset, not a timeout"
        );
        // a new one is accepted and reset at once
        let mut s2 = connect(&p.addr());
        assert!(echo(&mut s2, b"y").is_err());

        p.set_mode(ProxyMode::Open);
        let mut s3 = connect(&p.addr());
        assert_eq!(echo(&mut s3, b"again").unwrap(), b"again");
        let d = p.describe();
        assert!(d["refused"].as_u64().unwrap() >= 1, "{d}");
        assert!(d["reset"].as_u64().unwrap() >= 1, "{d}");
    }

    #[test]
    fn blackhole_stalls_and_heal_delivers() {
        let (_rt, p, mut s) = proxied();

        p.set_mode(ProxyMode::Blackhole);
        wait_for(&p, "stalled", 1);
        s.write_all(b"two").unwrap();
        let mut buf = [0u8; 8];
        let e = s.read(&mut buf).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "silence, not a reset: {e}"
        );
        let mut fresh = connect(&p.addr());
        fresh.write_all(b"new").unwrap();
        assert!(
            fresh.read(&mut buf).is_err(),
            "a new connection goes nowhere"
        );

        p.set_mode(ProxyMode::Open);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        fresh
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = [0u8; 3];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"two", "what was sent during the blackhole arrives");
        fresh.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"new");
    }
}
