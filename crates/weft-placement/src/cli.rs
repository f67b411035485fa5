//! Command-line surface: `weft placement` (run a node) and `weft cluster status|add-node|
//! remove-node`. Every flag can also be given as a `WEFT_*` environment variable.

use crate::node::{NodeConfig, PlacementNode};
use crate::proto::placement::{
    AddNodeRequest, ClusterStatusRequest, ClusterStatusResponse, RemoveNodeRequest,
    placement_client::PlacementClient as PbClient,
};
use crate::raft::RaftTuning;
use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use weft_tls::{Dial, Expect, TlsArgs};

/// `weft placement`: run one placement node.
#[derive(Args, Debug, Clone)]
pub struct PlacementArgs {
    /// This node's raft id (> 0, never reused for another node).
    #[arg(long, env = "WEFT_PLACEMENT_ID")]
    pub id: u64,
    /// Address to serve the placement, admin and raft gRPC APIs on.
    #[arg(long, env = "WEFT_PLACEMENT_LISTEN", default_value = "0.0.0.0:50005")]
    pub listen: SocketAddr,
    /// Address peers and sidecars reach this node at (default: its --initial-cluster entry,
    /// else the listen address).
    #[arg(long, env = "WEFT_PLACEMENT_ADVERTISE")]
    pub advertise: Option<String>,
    /// Directory of the durable raft log, vote and snapshot.
    #[arg(long, env = "WEFT_PLACEMENT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Voters of a new cluster, `1=host:port,2=host:port,3=host:port`. The lowest id
    /// initialises it once; restarts never re-initialise. Omit for a single-node cluster.
    #[arg(long, env = "WEFT_PLACEMENT_INITIAL_CLUSTER", value_parser = parse_initial_cluster)]
    pub initial_cluster: Option<InitialCluster>,
    /// Join an existing cluster: never initialise, wait for `weft cluster add-node`.
    #[arg(long, env = "WEFT_PLACEMENT_JOIN")]
    pub join: bool,
    /// Silence (no heartbeat) after which the leader removes a sidecar host.
    #[arg(
        long,
        env = "WEFT_PLACEMENT_LIVENESS_TIMEOUT_MS",
        default_value_t = 3000
    )]
    pub liveness_timeout_ms: u64,
    /// Raft heartbeat interval.
    #[arg(long, env = "WEFT_PLACEMENT_HEARTBEAT_MS", default_value_t = 75)]
    pub heartbeat_ms: u64,
    /// Raft election timeout, lower bound.
    #[arg(long, env = "WEFT_PLACEMENT_ELECTION_MIN_MS", default_value_t = 250)]
    pub election_min_ms: u64,
    /// Raft election timeout, upper bound (also openraft's leader lease: followers refuse
    /// to vote for this long after the last heartbeat, so it bounds failover time).
    #[arg(long, env = "WEFT_PLACEMENT_ELECTION_MAX_MS", default_value_t = 500)]
    pub election_max_ms: u64,
    /// Take a snapshot after this many applied log entries.
    #[arg(long, env = "WEFT_PLACEMENT_SNAPSHOT_EVERY", default_value_t = 500)]
    pub snapshot_every: u64,
    /// Log entries kept behind the snapshot for lagging followers.
    #[arg(long, env = "WEFT_PLACEMENT_KEEP_LOGS", default_value_t = 200)]
    pub keep_logs: u64,
    /// Virtual nodes per host on the ring (sent to every sidecar with the table).
    #[arg(long, env = "WEFT_PLACEMENT_VNODES", default_value_t = weft_ring::DEFAULT_VNODES)]
    pub vnodes: u32,
    /// Also serve `grpc.health.v1` alone, plaintext, on this address: a Kubernetes `grpc`
    /// probe has no client certificate for the placement port once TLS is on.
    #[arg(long, env = "WEFT_PLACEMENT_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Mutual TLS for sidecars, operators and raft peers (the certificate must name
    /// spiffe://TD/ns/NS/weft-placement).
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Parsed `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialCluster(pub BTreeMap<u64, String>);

fn parse_initial_cluster(s: &str) -> Result<InitialCluster, String> {
    let mut map = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("`{id}`: node id must be a positive integer"))?;
        if id == 0 {
            return Err("node id 0 is reserved".into());
        }
        if map.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("node id {id} listed twice"));
        }
    }
    if map.is_empty() {
        return Err("empty cluster".into());
    }
    Ok(InitialCluster(map))
}

impl PlacementArgs {
    pub fn node_config(&self) -> anyhow::Result<NodeConfig> {
        if self.id == 0 {
            bail!("--id must be > 0");
        }
        let mut cfg = NodeConfig::new(self.id, self.listen, self.data_dir.clone());
        cfg.advertise = self.advertise.clone();
        cfg.initial_cluster = self
            .initial_cluster
            .clone()
            .map(|c| c.0)
            .unwrap_or_default();
        cfg.join = self.join;
        cfg.liveness_timeout = Duration::from_millis(self.liveness_timeout_ms);
        if self.vnodes > weft_ring::MAX_VNODES {
            bail!("--vnodes must be at most {}", weft_ring::MAX_VNODES);
        }
        cfg.vnodes_per_host = self.vnodes.max(1);
        cfg.health_listen = self.health_listen;
        cfg.tls = self.tls.load()?;
        if let Some(t) = &cfg.tls
            && !t.identity().is_placement()
        {
            bail!(
                "{}: a placement node's certificate must name spiffe://{}/ns/NAMESPACE/{}; it names {}",
                self.tls
                    .tls_cert
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display(),
                t.trust_domain(),
                weft_tls::PLACEMENT,
                t.identity()
            );
        }
        cfg.tuning = RaftTuning {
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            election_min: Duration::from_millis(self.election_min_ms),
            election_max: Duration::from_millis(self.election_max_ms),
            snapshot_every: self.snapshot_every.max(1),
            keep_logs: self.keep_logs,
        };
        Ok(cfg)
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    // Logs go to stderr (stdout carries the ready line); a subscriber installed earlier wins.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs a placement node until SIGINT/SIGTERM.
pub async fn run_placement(args: PlacementArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before the node starts (and prints its line), so an early signal is handled.
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        trigger.cancel();
    });
    run_placement_until(args, shutdown).await
}

/// Runs a placement node until `shutdown` is cancelled (for embedding, e.g. `weft dev`).
pub async fn run_placement_until(
    args: PlacementArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let config = args.node_config()?;
    if config.tls.is_none() {
        weft_tls::args::warn_unauthenticated("weft placement");
    }
    let node = PlacementNode::start(config)
        .await
        .context("starting placement node")?;
    println!(
        "placement node {} listening on {}",
        args.id,
        node.local_addr()
    );
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = node.stopped() => {}
    }
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `weft cluster`: inspect and change the placement cluster.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ClusterCommand {
    /// Leader, raft members, table version and sidecar hosts.
    Status(StatusArgs),
    /// Add a placement node (start it first with `weft placement --join`), as learner, then
    /// voter once it caught up.
    AddNode(AddNodeArgs),
    /// Remove a placement node from the raft voters.
    RemoveNode(RemoveNodeArgs),
}

/// Where the placement cluster is.
#[derive(Args, Debug, Clone)]
pub struct PlacementAddrs {
    /// Placement node addresses, comma-separated (`host:port`).
    #[arg(
        long,
        env = "WEFT_PLACEMENT_ADDRESSES",
        value_delimiter = ',',
        default_value = "127.0.0.1:50005"
    )]
    pub placement: Vec<String>,
    /// add-node/remove-node: give up retrying (no leader, unreachable) after this long.
    #[arg(long, env = "WEFT_CLUSTER_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// An operator's certificate (spiffe://TD/ns/NS/weft-admin) when placement runs with TLS.
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl PlacementAddrs {
    fn dial(&self) -> anyhow::Result<Dial> {
        Ok(Dial::new(self.tls.load()?, Expect::Placement))
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub addrs: PlacementAddrs,
    #[arg(long, env = "WEFT_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Args, Debug, Clone)]
pub struct AddNodeArgs {
    #[command(flatten)]
    pub addrs: PlacementAddrs,
    /// Raft id of the new node (never reuse a removed node's id).
    #[arg(long, env = "WEFT_CLUSTER_NODE_ID")]
    pub id: u64,
    /// Advertised address of the new node.
    #[arg(long, env = "WEFT_CLUSTER_NODE_ADDRESS")]
    pub address: String,
}

#[derive(Args, Debug, Clone)]
pub struct RemoveNodeArgs {
    #[command(flatten)]
    pub addrs: PlacementAddrs,
    #[arg(long, env = "WEFT_CLUSTER_NODE_ID")]
    pub id: u64,
}

pub async fn run_cluster(args: ClusterArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ClusterCommand::Status(a) => {
            let status = cluster_status_with(&a.addrs.placement, &a.addrs.dial()?).await?;
            match a.output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
                OutputFormat::Text => print_status(&status),
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::AddNode(a) => {
            let req = AddNodeRequest {
                id: a.id,
                address: a.address.clone(),
            };
            let voters = admin_retry(&a.addrs, |mut c| {
                let req = req.clone();
                async move { c.add_node(req).await }
            })
            .await?;
            println!("node {} added; voters: {voters:?}", a.id);
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::RemoveNode(a) => {
            let req = RemoveNodeRequest { id: a.id };
            let voters =
                admin_retry(&a.addrs, |mut c| async move { c.remove_node(req).await }).await?;
            println!("node {} removed; voters: {voters:?}", a.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Tries every address until one accepts (any node forwards to the leader), retrying while
/// there is no leader.
async fn admin_retry<F, Fut>(addrs: &PlacementAddrs, call: F) -> anyhow::Result<Vec<u64>>
where
    F: Fn(PbClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<
            Output = Result<
                tonic::Response<crate::proto::placement::MembershipResponse>,
                tonic::Status,
            >,
        >,
{
    let dial = addrs.dial()?;
    let deadline = Instant::now() + Duration::from_millis(addrs.timeout_ms);
    let mut last = String::from("no address given");
    loop {
        for addr in &addrs.placement {
            match connect(addr, &dial).await {
                Ok(c) => match call(c).await {
                    Ok(r) => return Ok(r.into_inner().voters),
                    Err(s) if s.code() == tonic::Code::Unavailable => last = s.message().into(),
                    Err(s) => bail!("{addr}: {:?}: {}", s.code(), s.message()),
                },
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        if Instant::now() >= deadline {
            bail!("gave up: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn connect(addr: &str, dial: &Dial) -> anyhow::Result<PbClient<tonic::transport::Channel>> {
    let endpoint = Dial::endpoint(addr)?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(30));
    let ch = dial.connect(endpoint).await.map_err(|e| {
        // tonic's Display stops at "transport error"; the TLS reason is in the source chain.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = s.source();
        }
        anyhow::anyhow!(msg)
    })?;
    Ok(PbClient::new(ch))
}

/// One node's status, or why it could not be had.
async fn query(addr: String, dial: Dial) -> (String, Result<ClusterStatusResponse, String>) {
    let fut = async {
        let mut c = connect(&addr, &dial).await.map_err(|e| e.to_string())?;
        c.cluster_status(ClusterStatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    };
    let r = match tokio::time::timeout(Duration::from_secs(2), fut).await {
        Ok(r) => r,
        Err(_) => Err("timed out".into()),
    };
    (addr, r)
}

/// Queries the given nodes (plaintext) and the raft members they report, and merges their views.
pub async fn cluster_status(addrs: &[String]) -> anyhow::Result<serde_json::Value> {
    cluster_status_with(addrs, &Dial::plain(Expect::Placement)).await
}

/// [`cluster_status`] over `dial` (mutual TLS with an operator's certificate).
pub async fn cluster_status_with(
    addrs: &[String],
    dial: &Dial,
) -> anyhow::Result<serde_json::Value> {
    let ask = |a: String| query(a, dial.clone());
    let mut errors: Vec<String> = Vec::new();
    let mut keep = |all: Vec<(String, Result<ClusterStatusResponse, String>)>| {
        all.into_iter()
            .map(|(a, r)| {
                let r = r.map_err(|e| errors.push(format!("{a}: {e}"))).ok();
                (a, r)
            })
            .collect::<Vec<_>>()
    };
    let mut replies: BTreeMap<String, Option<ClusterStatusResponse>> = BTreeMap::new();
    let first = futures::future::join_all(addrs.iter().cloned().map(ask)).await;
    replies.extend(keep(first));
    let discovered: BTreeSet<String> = replies
        .values()
        .flatten()
        .flat_map(|r| r.members.iter().map(|m| m.address.clone()))
        .filter(|a| !replies.contains_key(a))
        .collect();
    replies.extend(keep(
        futures::future::join_all(discovered.into_iter().map(ask)).await,
    ));
    let ok: Vec<&ClusterStatusResponse> = replies.values().flatten().collect();
    if ok.is_empty() {
        let hint = if dial.tls.is_none() {
            "; if placement runs with TLS, pass an operator's --tls-cert, --tls-key and --tls-ca"
        } else {
            ""
        };
        bail!(
            "no placement node reachable at {} ({}){hint}",
            addrs.join(","),
            errors.join("; ")
        );
    }
    // A node's claim to lead counts most; otherwise the most common leader id.
    let leader = ok
        .iter()
        .find(|r| r.leader_id != 0 && r.leader_id == r.node_id)
        .or_else(|| ok.iter().find(|r| r.leader_id != 0))
        .map(|r| (r.leader_id, r.leader_address.clone()));
    let best = leader
        .as_ref()
        .and_then(|(id, _)| ok.iter().find(|r| r.node_id == *id))
        .or_else(|| ok.iter().max_by_key(|r| r.table_version))
        .copied()
        .expect("non-empty");
    let by_id: BTreeMap<u64, &ClusterStatusResponse> = ok.iter().map(|r| (r.node_id, *r)).collect();
    let placement_nodes: Vec<serde_json::Value> = best
        .members
        .iter()
        .map(|m| {
            let own = by_id.get(&m.id).and_then(|r| r.self_status.clone());
            json!({
                "id": m.id,
                "address": m.address,
                "role": m.role,
                "state": own.as_ref().map(|s| s.state.clone()).unwrap_or_else(|| "unreachable".into()),
                "term": own.as_ref().map(|s| s.term),
                "last_applied": own.as_ref().map(|s| s.last_applied),
                "snapshot_index": own.as_ref().map(|s| s.snapshot_index),
                "reachable": own.is_some(),
            })
        })
        .collect();
    let hosts: Vec<serde_json::Value> = best
        .hosts
        .iter()
        .filter_map(|h| {
            let i = h.host.as_ref()?;
            Some(json!({
                "host_id": i.host_id,
                "address": i.address,
                "app_id": i.app_id,
                "actor_types": i.actor_types,
                "weight": i.weight,
                "zone": i.zone,
                "acked_version": h.acked_version,
                "connected": h.connected,
            }))
        })
        .collect();
    Ok(json!({
        "leader": leader.map(|(id, address)| json!({"id": id, "address": address})),
        "placement_nodes": placement_nodes,
        "table_version": best.table_version,
        "cluster_id": best.cluster_id,
        "hosts": hosts,
    }))
}

fn print_status(s: &serde_json::Value) {
    // serde_json values ignore width in Display; render to plain strings before padding.
    let txt = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    match s["leader"].as_object() {
        Some(l) => println!(
            "leader:        node {} ({})",
            txt(&l["id"]),
            txt(&l["address"])
        ),
        None => println!("leader:        none (election in progress?)"),
    }
    println!("table version: {}", txt(&s["table_version"]));
    println!("cluster id:    {}", txt(&s["cluster_id"]));
    println!("placement nodes:");
    println!(
        "  {:<4} {:<24} {:<8} {:<12} {:<6} APPLIED",
        "ID", "ADDRESS", "ROLE", "STATE", "TERM"
    );
    for n in s["placement_nodes"].as_array().into_iter().flatten() {
        println!(
            "  {:<4} {:<24} {:<8} {:<12} {:<6} {}",
            txt(&n["id"]),
            txt(&n["address"]),
            txt(&n["role"]),
            txt(&n["state"]),
            txt(&n["term"]),
            txt(&n["last_applied"]),
        );
    }
    let hosts = s["hosts"].as_array().cloned().unwrap_or_default();
    println!("hosts: {}", hosts.len());
    for h in hosts {
        let types: Vec<String> = h["actor_types"]
            .as_array()
            .into_iter()
            .flatten()
            .map(txt)
            .collect();
        println!(
            "  {:<24} {:<24} app={} acked={} types=[{}]",
            txt(&h["host_id"]),
            txt(&h["address"]),
            txt(&h["app_id"]),
            txt(&h["acked_version"]),
            types.join(", "),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(flatten)]
        p: PlacementArgs,
    }

    #[test]
    fn parses_initial_cluster() {
        let c = parse_initial_cluster("1=a:1, 2=b:2,3=c:3").unwrap();
        assert_eq!(c.0.len(), 3);
        assert_eq!(c.0[&2], "b:2");
        assert!(parse_initial_cluster("1=a,1=b").is_err());
        assert!(parse_initial_cluster("x=a").is_err());
        assert!(parse_initial_cluster("0=a").is_err());
    }

    #[test]
    fn flags_and_defaults() {
        let t = T::try_parse_from(["t", "--id", "2", "--data-dir", "/tmp/x"]).unwrap();
        assert_eq!(t.p.listen.port(), crate::DEFAULT_PORT);
        assert_eq!(t.p.liveness_timeout_ms, 3000);
        assert!(t.p.initial_cluster.is_none());
        // --id is required unless the environment provides it.
        if std::env::var_os("WEFT_PLACEMENT_ID").is_none() {
            assert!(T::try_parse_from(["t", "--data-dir", "/tmp/x"]).is_err());
        }
    }
}
