//! Helpers for in-process placement clusters: port-0 listeners, leader polling, sidecar clients.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use weft_placement::proto::placement::HostInfo;
use weft_placement::{ClientConfig, PlacementClient};
use weft_placement_server::raft::RaftTuning;
use weft_placement_server::{NodeConfig, PlacementNode};

pub struct Cluster {
    pub nodes: Vec<PlacementNode>,
    pub addrs: Vec<String>,
    pub dir: tempfile::TempDir,
}

/// Polls `cond` until it holds or `deadline` passes; panics with `what` on timeout.
pub async fn eventually<F: FnMut() -> bool>(what: &str, within: Duration, mut cond: F) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

pub async fn start_cluster(n: usize, liveness: Duration) -> Cluster {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let initial: BTreeMap<u64, String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, a.clone()))
        .collect();
    let mut nodes = Vec::new();
    // Highest id first: the initialising node (lowest id) then finds its peers serving.
    for (i, l) in listeners.into_iter().enumerate().rev() {
        let id = i as u64 + 1;
        let mut cfg = NodeConfig::new(
            id,
            l.local_addr().unwrap(),
            dir.path().join(format!("n{id}")),
        );
        cfg.initial_cluster = initial.clone();
        cfg.liveness_timeout = liveness;
        cfg.tuning = RaftTuning::default();
        nodes.push(PlacementNode::start_with_listener(cfg, l).await.unwrap());
    }
    nodes.reverse();
    let c = Cluster { nodes, addrs, dir };
    c.wait_leader(Duration::from_secs(10)).await;
    c
}

impl Cluster {
    /// Index of the node all others agree is leader.
    pub async fn wait_leader(&self, within: Duration) -> usize {
        let mut found = None;
        eventually("a leader all nodes agree on", within, || {
            let views: Vec<_> = self.nodes.iter().map(|n| n.raft().view()).collect();
            let leader = views.iter().position(|v| v.is_leader);
            found = leader.filter(|l| {
                views
                    .iter()
                    .all(|v| v.leader.as_ref().map(|x| x.0) == Some(*l as u64 + 1))
            });
            found.is_some()
        })
        .await;
        found.unwrap()
    }
}

pub fn host(id: &str, types: &[&str]) -> HostInfo {
    HostInfo {
        host_id: id.into(),
        address: format!("{id}.sidecars:50002"),
        app_id: "app".into(),
        actor_types: types.iter().map(|s| s.to_string()).collect(),
        weight: 1,
        zone: String::new(),
    }
}

pub fn client(addrs: &[String], id: &str, types: &[&str]) -> PlacementClient {
    let mut cfg = ClientConfig::new(addrs.to_vec(), host(id, types));
    cfg.heartbeat_interval = Duration::from_millis(100);
    PlacementClient::start(cfg)
}
