//! `weft placement`: run one placement node of the raft cluster until SIGINT/SIGTERM. Every flag
//! can also be given as a `WEFT_*` environment variable.

use anyhow::{Context, bail};
use clap::Args;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weft_placement_server::raft::RaftTuning;
use weft_placement_server::{NodeConfig, PlacementNode};
use weft_tls::TlsArgs;

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
    #[arg(long, env = "WEFT_PLACEMENT_HEARTBEAT_MS", default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Raft election timeout, lower bound.
    #[arg(long, env = "WEFT_PLACEMENT_ELECTION_MIN_MS", default_value_t = 150)]
    pub election_min_ms: u64,
    /// Raft election timeout, upper bound (also openraft's leader lease: followers refuse
    /// to vote for this long after the last heartbeat, then wait their own timeout, so a
    /// leader loss is noticed election_max + election_min..election_max after it).
    #[arg(long, env = "WEFT_PLACEMENT_ELECTION_MAX_MS", default_value_t = 250)]
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

/// Runs a placement node until SIGINT/SIGTERM.
pub async fn run_placement(args: PlacementArgs) -> anyhow::Result<ExitCode> {
    super::init_logging();
    // Installed before the node starts (and prints its line), so an early signal is handled.
    let mut signals = super::Signals::install().context("installing signal handlers")?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        signals.recv().await;
        trigger.cancel();
    });
    run_placement_until(args, shutdown).await
}

/// Runs a placement node until `shutdown` is cancelled (for embedding).
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
        assert_eq!(t.p.listen.port(), weft_placement::DEFAULT_PORT);
        assert_eq!(t.p.liveness_timeout_ms, 3000);
        // The flags' defaults are the library's (docs/placement.md argues them).
        let d = RaftTuning::default();
        assert_eq!(t.p.heartbeat_ms, d.heartbeat.as_millis() as u64);
        assert_eq!(t.p.election_min_ms, d.election_min.as_millis() as u64);
        assert_eq!(t.p.election_max_ms, d.election_max.as_millis() as u64);
        assert!(t.p.initial_cluster.is_none());
        // --id is required unless the environment provides it.
        if std::env::var_os("WEFT_PLACEMENT_ID").is_none() {
            assert!(T::try_parse_from(["t", "--data-dir", "/tmp/x"]).is_err());
        }
    }
}
