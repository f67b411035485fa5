//! A running placement node: raft, one gRPC port for sidecars, admins and peers, the one-time
//! cluster bootstrap, and the leader's liveness loop.

use crate::error::ServerError;
use crate::health::LeaderHealth;
use crate::raft::{NodeId, RaftNode, RaftTuning};
use crate::service::{PlacementApi, PlacementService};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weft_placement::proto::placement::placement_server::PlacementServer;
use weft_placement::proto::placement::{
    ClusterStatusRequest, placement_client::PlacementClient as PbClient,
};
use weft_tls::authz::rules;
use weft_tls::{Dial, Expect, Mode, PeerCheck, TlsContext};

/// Everything needed to run one placement node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    /// Address peers and sidecars use to reach this node; defaults to the `initial_cluster`
    /// entry for `id`, else the bound address.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Voters of a new cluster. Empty: a single-node cluster of this node (`weft dev`).
    /// A node whose id is absent waits to be added with `weft cluster add-node`.
    pub initial_cluster: BTreeMap<NodeId, String>,
    /// Never initialise; wait to be added to an existing cluster.
    pub join: bool,
    pub tuning: RaftTuning,
    /// Silence after which the leader removes a sidecar host.
    pub liveness_timeout: Duration,
    pub vnodes_per_host: u32,
    /// Mutual TLS for every connection in and out (`None`: plaintext, unauthenticated).
    pub tls: Option<Arc<TlsContext>>,
    /// A plaintext port serving only `grpc.health.v1`: with TLS on, a kubelet's `grpc` probe
    /// (which has no client certificate) cannot ask the placement port.
    pub health_listen: Option<SocketAddr>,
}

impl NodeConfig {
    pub fn new(id: NodeId, listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            id,
            listen,
            advertise: None,
            data_dir,
            initial_cluster: BTreeMap::new(),
            join: false,
            tuning: RaftTuning::default(),
            liveness_timeout: Duration::from_secs(3),
            vnodes_per_host: weft_ring::DEFAULT_VNODES,
            tls: None,
            health_listen: None,
        }
    }
}

/// A started node; dropping it does not stop it, call [`PlacementNode::shutdown`].
pub struct PlacementNode {
    local_addr: SocketAddr,
    health_addr: Option<SocketAddr>,
    advertise: String,
    raft: RaftNode,
    service: Arc<PlacementService>,
    cancel: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    background: Vec<JoinHandle<()>>,
}

impl PlacementNode {
    /// Binds `config.listen` and starts the node.
    pub async fn start(config: NodeConfig) -> Result<Self, ServerError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServerError::Transport(format!("bind {}: {e}", config.listen)))?;
        Self::start_with_listener(config, listener).await
    }

    /// Starts the node on an already bound listener (tests bind port 0 first).
    pub async fn start_with_listener(
        config: NodeConfig,
        listener: TcpListener,
    ) -> Result<Self, ServerError> {
        let local_addr = listener
            .local_addr()
            .map_err(|e| ServerError::Transport(e.to_string()))?;
        let advertise = config
            .advertise
            .clone()
            .or_else(|| config.initial_cluster.get(&config.id).cloned())
            .unwrap_or_else(|| local_addr.to_string());
        let raft = RaftNode::open(
            config.id,
            &config.data_dir,
            &config.tuning,
            config.tls.clone(),
        )
        .await?;
        let service = PlacementService::new(
            raft.clone(),
            config.vnodes_per_host,
            config.liveness_timeout,
            config.tls.clone(),
        );
        let cancel = CancellationToken::new();
        let mode = match &config.tls {
            Some(ctx) => Mode::Mutual(ctx.clone()),
            None => Mode::Plain,
        };
        let incoming = weft_tls::incoming(listener, mode, "placement");
        // Raft messages (votes, entries, snapshots that install a whole table) only from peers.
        let raft_check = PeerCheck {
            port: "placement",
            action: "send raft messages",
            allow: rules::placement,
        };
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(PlacementServer::new(PlacementApi(service.clone())))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                raft.rpc_service(),
                raft_check,
            ))
            .add_service(LeaderHealth::server(&raft))
            .serve_with_incoming_shutdown(incoming, cancel.clone().cancelled_owned());
        let server = tokio::spawn(server);
        let health_addr = match config.health_listen {
            Some(addr) => Some(serve_health(addr, &raft, &cancel).await?),
            None => None,
        };

        bootstrap(&raft, &config, &advertise).await?;

        let background = vec![tokio::spawn(liveness_loop(
            service.clone(),
            raft.clone(),
            config.liveness_timeout,
            cancel.clone(),
        ))];
        tracing::info!(id = config.id, %local_addr, %advertise, "placement node started");
        Ok(Self {
            local_addr,
            health_addr,
            advertise,
            raft,
            service,
            cancel,
            server,
            background,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the plaintext health port is bound (with `health_listen`).
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    pub fn raft(&self) -> &RaftNode {
        &self.raft
    }

    pub fn service(&self) -> &Arc<PlacementService> {
        &self.service
    }

    /// Resolves when the node is asked to stop or its server fails.
    pub async fn stopped(&self) {
        self.cancel.cancelled().await
    }

    /// Token that stops the node when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops serving, then shuts raft down (state stays on disk).
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for t in self.background {
            t.abort();
        }
        // Graceful shutdown waits for open sidecar streams; give them a moment, then cut.
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_millis(500), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        self.raft.shutdown().await;
    }
}

/// Binds the health-only port and serves [`LeaderHealth`] on it until `cancel`. It tells no more
/// than whether this node knows a leader, so it needs no authentication.
async fn serve_health(
    addr: SocketAddr,
    raft: &RaftNode,
    cancel: &CancellationToken,
) -> Result<SocketAddr, ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Transport(format!("bind health port {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| ServerError::Transport(e.to_string()))?;
    let server = tonic::transport::Server::builder()
        .add_service(LeaderHealth::server(raft))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            cancel.clone().cancelled_owned(),
        );
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "placement health port stopped");
        }
    });
    Ok(bound)
}

/// Initialises a brand-new cluster exactly once: only on the lowest id of the initial cluster,
/// only if its own log is empty, and only if no peer already belongs to a cluster (so a node
/// whose data directory was wiped cannot fork a second cluster).
async fn bootstrap(
    raft: &RaftNode,
    config: &NodeConfig,
    advertise: &str,
) -> Result<(), ServerError> {
    if config.join || raft.is_initialized().await? {
        return Ok(());
    }
    let members = if config.initial_cluster.is_empty() {
        BTreeMap::from([(config.id, advertise.to_string())])
    } else {
        config.initial_cluster.clone()
    };
    if members.keys().next() != Some(&config.id) {
        return Ok(());
    }
    for (id, addr) in &members {
        if *id != config.id && peer_initialized(addr, &config.tls).await {
            tracing::warn!(peer = id, "peer already in a cluster; not initialising");
            return Ok(());
        }
    }
    tracing::info!(voters = ?members, "initialising placement cluster");
    raft.initialize(members).await
}

async fn peer_initialized(addr: &str, tls: &Option<Arc<TlsContext>>) -> bool {
    let probe = async {
        let ch = Dial::new(tls.clone(), Expect::Placement)
            .connect(Dial::endpoint(addr).ok()?)
            .await
            .ok()?;
        let mut c = PbClient::new(ch);
        let r = c.cluster_status(ClusterStatusRequest {}).await.ok()?;
        Some(r.into_inner().initialized)
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), probe).await,
        Ok(Some(true))
    )
}

/// Runs liveness passes while leader; a change of leadership starts every host's clock afresh.
async fn liveness_loop(
    service: Arc<PlacementService>,
    raft: RaftNode,
    timeout: Duration,
    cancel: CancellationToken,
) {
    let period = (timeout / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The term this node last led in (None while following).
    let mut led: Option<u64> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let view = raft.view();
        let now = view.is_leader.then_some(view.term);
        if now != led {
            match now {
                Some(term) => service.start_term(term),
                None => service.reset_sessions(),
            }
            led = now;
        }
        if now.is_some() {
            service.ensure_cluster_id().await;
            service.check_liveness().await;
        }
    }
}
