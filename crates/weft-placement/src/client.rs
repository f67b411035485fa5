//! Sidecar-side placement client: keeps one stream to the placement leader, registers and
//! heartbeats, acknowledges tables and exposes the live table (with its rings) on a watch.

use crate::error::PlacementError;
use crate::proto::placement::{
    self as pb, placement_client::PlacementClient as PbClient, placement_message, sidecar_message,
};
use crate::table::PlacementTable;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use weft_tls::{Dial, Expect, TlsContext};

/// How a sidecar reaches placement and describes itself.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Placement node addresses (`host:port`); any of them. A follower redirects to the leader:
    /// followed at once to an address in this list, to another one only after every address in
    /// the list redirected in a row.
    pub placement_addrs: Vec<String>,
    pub host: pb::HostInfo,
    pub heartbeat_interval: Duration,
    /// Pause before retrying when no leader is reachable.
    pub retry_backoff: Duration,
    /// Mutual TLS to placement (`None`: plaintext).
    pub tls: Option<Arc<TlsContext>>,
}

impl ClientConfig {
    pub fn new(placement_addrs: Vec<String>, host: pb::HostInfo) -> Self {
        Self {
            placement_addrs,
            host,
            heartbeat_interval: Duration::from_millis(500),
            retry_backoff: Duration::from_millis(50),
            tls: None,
        }
    }
}

/// Observable connection state, for readiness probes and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStatus {
    /// Placement node that served the latest table.
    pub served_by: Option<String>,
    pub tables_received: u64,
    pub version: u64,
    pub connected: bool,
    /// Why placement refused this sidecar, while it does (identity checks).
    pub refused: Option<String>,
}

struct Shared {
    /// Every table version received, in order (bounded; for tests and diagnostics).
    versions: Mutex<Vec<u64>>,
}

/// How long a new session waits for the node's first answer (a table or a redirect).
const FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const VERSION_LOG_LIMIT: usize = 100_000;

/// Changes the actor types a [`PlacementClient`] offers; cheap to clone, usable from any task.
#[derive(Clone)]
pub struct ActorTypes(watch::Sender<pb::HostInfo>);

impl ActorTypes {
    /// Same as [`PlacementClient::set_actor_types`].
    pub fn set(&self, mut types: Vec<String>) {
        types.sort();
        types.dedup();
        self.0.send_modify(|h| h.actor_types = types);
    }
}

/// A live connection to the placement service. Dropping it without
/// [`PlacementClient::shutdown`] stops the stream without a graceful leave (like a crash).
pub struct PlacementClient {
    table: watch::Receiver<Option<Arc<PlacementTable>>>,
    status: watch::Receiver<ClientStatus>,
    host: watch::Sender<pb::HostInfo>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    leave: CancellationToken,
    task: Option<JoinHandle<()>>,
}

#[derive(Debug)]
enum SessionEnd {
    Redirect(Option<String>),
    Failed(String),
    /// PERMISSION_DENIED or UNAUTHENTICATED: the identity checks said no.
    Refused(String),
    Left,
}

/// Pause between registrations placement refused.
const REFUSED_BACKOFF: Duration = Duration::from_secs(1);

impl PlacementClient {
    /// Starts the background session; returns at once (the table arrives on [`Self::table`]).
    pub fn start(config: ClientConfig) -> Self {
        let (table_tx, table) = watch::channel(None);
        let (status_tx, status) = watch::channel(ClientStatus::default());
        let (host, host_rx) = watch::channel(config.host.clone());
        let shared = Arc::new(Shared {
            versions: Mutex::new(Vec::new()),
        });
        let cancel = CancellationToken::new();
        let leave = CancellationToken::new();
        let worker = Worker {
            config,
            table_tx,
            status_tx,
            host_rx,
            shared: shared.clone(),
            cancel: cancel.clone(),
            leave: leave.clone(),
        };
        let task = tokio::spawn(worker.run());
        Self {
            table,
            status,
            host,
            shared,
            cancel,
            leave,
            task: Some(task),
        }
    }

    /// The live table; `None` until the first table arrives.
    pub fn table(&self) -> watch::Receiver<Option<Arc<PlacementTable>>> {
        self.table.clone()
    }

    pub fn current(&self) -> Option<Arc<PlacementTable>> {
        self.table.borrow().clone()
    }

    pub fn status(&self) -> watch::Receiver<ClientStatus> {
        self.status.clone()
    }

    /// Table versions received so far, in arrival order.
    pub fn versions_seen(&self) -> Vec<u64> {
        self.shared
            .versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the actor types this host offers (workers connected or gone); sent at once.
    pub fn set_actor_types(&self, mut types: Vec<String>) {
        types.sort();
        types.dedup();
        self.host.send_modify(|h| h.actor_types = types);
    }

    /// A handle that changes the offered actor types from another task.
    pub fn host_sender(&self) -> ActorTypes {
        ActorTypes(self.host.clone())
    }

    /// Waits until a table with at least `version` arrives.
    pub async fn wait_for_version(
        &self,
        version: u64,
        timeout: Duration,
    ) -> Option<Arc<PlacementTable>> {
        let mut rx = self.table.clone();
        let wait = rx.wait_for(|t| t.as_ref().is_some_and(|t| t.version >= version));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(t)) => t.clone(),
            _ => None,
        }
    }

    /// Leaves gracefully: placement removes this host at once instead of after the timeout.
    pub async fn shutdown(mut self) {
        self.leave.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        self.cancel.cancel();
    }
}

impl Drop for PlacementClient {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

struct Worker {
    config: ClientConfig,
    table_tx: watch::Sender<Option<Arc<PlacementTable>>>,
    status_tx: watch::Sender<ClientStatus>,
    host_rx: watch::Receiver<pb::HostInfo>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    leave: CancellationToken,
}

impl SessionEnd {
    /// A session ended by a status: a refusal waits for a new identity, anything else retries.
    fn from_status(s: &tonic::Status) -> Self {
        match PlacementError::from_status(s) {
            PlacementError::Refused(why) => Self::Refused(why),
            other => Self::Failed(other.to_string()),
        }
    }
}

impl Worker {
    async fn run(mut self) {
        let addrs = self.config.placement_addrs.clone();
        if addrs.is_empty() {
            tracing::error!("placement client has no addresses");
            return;
        }
        let mut next = 0usize;
        let mut redirect: Option<String> = None;
        // Redirects in a row to a leader address that is not configured.
        let mut unlisted = 0usize;
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            let addr = redirect.take().unwrap_or_else(|| {
                let a = addrs[next % addrs.len()].clone();
                next = next.wrapping_add(1);
                a
            });
            let cancel = self.cancel.clone();
            let tables_before = self.status_tx.borrow().tables_received;
            let end = tokio::select! {
                _ = cancel.cancelled() => return,
                end = self.session(&addr) => end,
            };
            self.status_tx.send_modify(|s| s.connected = false);
            let was_up = self.status_tx.borrow().tables_received > tables_before;
            if was_up {
                unlisted = 0; // this address led to the leader
                // Only sessions that were up are logged at info: a cut-off sidecar retries every
                // `retry_backoff`, and those attempts stay at debug.
                tracing::info!(%addr, end = ?end, "placement session lost");
            }
            match end {
                SessionEnd::Left => return,
                // A redirect to a configured address is followed at once. One to another address
                // only after every configured address redirected in a row: a sidecar that reaches
                // placement through addresses that are not the nodes' own (a proxy, NAT, port
                // forwarding) finds the leader behind its own addresses, and does not bypass the
                // path it was given; one configured with some nodes only still gets there.
                SessionEnd::Redirect(Some(leader)) if leader != addr => {
                    unlisted = if addrs.contains(&leader) {
                        0
                    } else {
                        unlisted + 1
                    };
                    if unlisted == 0 || unlisted >= addrs.len() {
                        unlisted = 0;
                        redirect = Some(leader);
                        continue;
                    }
                }
                SessionEnd::Redirect(_) => {}
                SessionEnd::Failed(e) => {
                    unlisted = 0;
                    tracing::debug!(%addr, error = %e, "placement session ended")
                }
                SessionEnd::Refused(why) => {
                    unlisted = 0;
                    // Retrying cannot help until the certificate or the app id changes: say
                    // so once per distinct reason, and retry slowly.
                    if self.status_tx.borrow().refused.as_deref() != Some(why.as_str()) {
                        tracing::error!(%addr, reason = %why, "placement refused this sidecar");
                        self.status_tx.send_modify(|s| s.refused = Some(why));
                    }
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = tokio::time::sleep(REFUSED_BACKOFF) => {}
                    }
                }
            }
            // A session that served tables and broke (a killed leader resets the connection)
            // is retried at once on the next address: a follower there holds the registration
            // until the election is settled. Only attempts that got nowhere wait.
            if was_up {
                continue;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(self.config.retry_backoff) => {}
            }
        }
    }

    async fn session(&mut self, addr: &str) -> SessionEnd {
        let endpoint = match Dial::endpoint(addr) {
            Ok(e) => e
                .connect_timeout(Duration::from_millis(300))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5)),
            Err(e) => return SessionEnd::Failed(e.to_string()),
        };
        let dial = Dial::new(self.config.tls.clone(), Expect::Placement);
        let channel = match dial.connect(endpoint).await {
            Ok(c) => c,
            Err(e) => return SessionEnd::Failed(e.to_string()),
        };
        let mut client = PbClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        let (out, out_rx) = mpsc::channel(16);
        let host = self.host_rx.borrow_and_update().clone();
        let send = |m: sidecar_message::Msg| pb::SidecarMessage { msg: Some(m) };
        if out
            .send(send(sidecar_message::Msg::Register(host)))
            .await
            .is_err()
        {
            return SessionEnd::Failed("outbound closed".into());
        }
        // A node answers a registration at once (a table, or a redirect), or, while an election
        // settles, within 3 × its maximum election timeout (750 ms by default). A session that hears
        // nothing is abandoned and dialled again: a connection made through a path that was cut
        // and healed can stay open without ever reaching a node (seen once in the partition
        // fault test: the healed sidecar never came back), and waiting on it would be forever.
        let first_by = tokio::time::Instant::now() + FIRST_ANSWER_TIMEOUT;
        let opened =
            tokio::time::timeout_at(first_by, client.report_status(ReceiverStream::new(out_rx)));
        let mut inbound = match opened.await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(e)) => return SessionEnd::from_status(&e),
            Err(_) => {
                return SessionEnd::Failed("placement did not answer the registration".into());
            }
        };
        let mut answered = false;
        let mut heartbeat = tokio::time::interval(self.config.heartbeat_interval);
        heartbeat.reset();
        // A killed leader resets the connection (stream error at once); a hung one is caught by
        // the HTTP/2 keepalive configured above.
        loop {
            tokio::select! {
                _ = self.leave.cancelled() => {
                    let _ = out.send(send(sidecar_message::Msg::Leave(pb::Leave {}))).await;
                    // Wait for the server to close the stream so the leave is processed.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(Ok(_)) = inbound.next().await {}
                    }).await;
                    return SessionEnd::Left;
                }
                _ = heartbeat.tick() => {
                    let host = self.host_rx.borrow().clone();
                    if out.send(send(sidecar_message::Msg::Heartbeat(host))).await.is_err() {
                        return SessionEnd::Failed("stream closed".into());
                    }
                }
                changed = self.host_rx.changed() => {
                    if changed.is_ok() {
                        let host = self.host_rx.borrow_and_update().clone();
                        if out.send(send(sidecar_message::Msg::Heartbeat(host))).await.is_err() {
                            return SessionEnd::Failed("stream closed".into());
                        }
                    }
                }
                _ = tokio::time::sleep_until(first_by), if !answered => {
                    return SessionEnd::Failed("placement did not answer the registration".into());
                }
                msg = inbound.next() => {
                    answered = true;
                    let msg = match msg {
                        None => return SessionEnd::Failed("stream ended".into()),
                        Some(Err(e)) => return SessionEnd::from_status(&e),
                        Some(Ok(m)) => m,
                    };
                    match msg.msg {
                        Some(placement_message::Msg::Table(t)) => {
                            let version = t.version;
                            self.on_table(t, addr);
                            let ack = sidecar_message::Msg::Ack(pb::TableAck { version });
                            if out.send(send(ack)).await.is_err() {
                                return SessionEnd::Failed("stream closed".into());
                            }
                        }
                        Some(placement_message::Msg::Redirect(r)) => {
                            let to = (!r.leader_address.is_empty()).then_some(r.leader_address);
                            return SessionEnd::Redirect(to);
                        }
                        None => {}
                    }
                }
            }
        }
    }

    fn on_table(&self, t: pb::Table, addr: &str) {
        let version = t.version;
        let table = match PlacementTable::from_proto(t) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(version, error = %e, "placement sent an inconsistent table");
                return;
            }
        };
        {
            let mut v = self
                .shared
                .versions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if v.len() < VERSION_LOG_LIMIT {
                v.push(version);
            }
        }
        // Versions only grow within a cluster (committed entries survive leader changes): ignore
        // stale resends, but take any table of another cluster (placement lost its data).
        self.table_tx.send_if_modified(|cur| {
            if cur
                .as_ref()
                .is_none_or(|c| c.version == version || table.replaces(c))
            {
                *cur = Some(table);
                true
            } else {
                false
            }
        });
        if !self.status_tx.borrow().connected {
            tracing::info!(%addr, version, "placement session up");
        }
        self.status_tx.send_modify(|s| {
            s.served_by = Some(addr.to_string());
            s.tables_received += 1;
            s.version = s.version.max(version);
            s.connected = true;
            s.refused = None;
        });
    }
}
