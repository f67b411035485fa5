//! Membership: the sidecar's placement session. Registers this host, feeds every table to the
//! registry, and offers the app's actor types only while a worker of the app is connected.

use crate::cluster::{ActorKind, Registry, registry::actor_type};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use weft_placement::{ClientConfig, HostInfo, PlacementClient};

/// How this sidecar joins placement.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Placement node addresses (`host:port`); any of them, followers redirect to the leader.
    pub placement: Vec<String>,
    /// Host other sidecars reach this one's internal API on (its port is the bound internal
    /// port). Empty: the listen address (loopback when listening on every interface).
    pub advertise_host: String,
    /// Unique id in placement; generated when empty (never reused across restarts).
    pub host_id: String,
    /// After the last worker disconnects, keep the actor types this long before withdrawing
    /// them (a quick reconnect then moves nothing).
    pub withdraw_delay: Duration,
    /// Mutual TLS to placement (`None`: plaintext).
    pub tls: Option<std::sync::Arc<weft_tls::TlsContext>>,
}

impl ClusterConfig {
    pub fn new(placement: Vec<String>) -> Self {
        Self {
            placement,
            advertise_host: String::new(),
            host_id: String::new(),
            withdraw_delay: Duration::from_secs(2),
            tls: None,
        }
    }
}

/// A running placement session.
pub struct Membership {
    client: PlacementClient,
    stop: CancellationToken,
}

impl Membership {
    /// Starts the session (returns at once) and the tasks that follow it.
    pub fn start(
        cfg: &ClusterConfig,
        host_id: &str,
        address: String,
        app_id: &str,
        registry: Registry,
        workers: watch::Receiver<usize>,
    ) -> Self {
        let host = HostInfo {
            host_id: host_id.to_string(),
            address,
            app_id: app_id.to_string(),
            actor_types: vec![],
            weight: 1,
            zone: String::new(),
        };
        let mut config = ClientConfig::new(cfg.placement.clone(), host);
        config.tls = cfg.tls.clone();
        let client = PlacementClient::start(config);
        registry.set_placement_dial(weft_tls::Dial::new(
            cfg.tls.clone(),
            weft_tls::Expect::Placement,
        ));
        let stop = CancellationToken::new();
        tokio::spawn(follow_leader(
            client.status(),
            registry.clone(),
            stop.clone(),
        ));
        tokio::spawn(follow_tables(client.table(), registry, stop.clone()));
        let types: Vec<String> = ActorKind::ALL
            .iter()
            .map(|k| actor_type(app_id, *k))
            .collect();
        let offer = client.host_sender();
        tokio::spawn(offer_types(
            workers,
            types,
            cfg.withdraw_delay,
            offer,
            stop.clone(),
        ));
        Self { client, stop }
    }

    /// Waits for the first table (the sidecar serves only once it knows the ring).
    pub async fn first_table(&self, shutdown: &CancellationToken) -> bool {
        let mut rx = self.client.table();
        tokio::select! {
            _ = shutdown.cancelled() => false,
            r = rx.wait_for(|t| t.is_some()) => r.is_ok(),
        }
    }

    /// Leaves placement gracefully: this host is removed at once, so its keys move now.
    pub async fn leave(self) {
        self.stop.cancel();
        self.client.shutdown().await;
    }
}

async fn follow_tables(
    mut rx: watch::Receiver<Option<std::sync::Arc<weft_placement::PlacementTable>>>,
    registry: Registry,
    stop: CancellationToken,
) {
    loop {
        let table = rx.borrow_and_update().clone();
        if let Some(t) = table {
            registry.apply(t);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}

/// Keeps the registry's note of the placement leader current (shown by the dashboard).
async fn follow_leader(
    mut rx: watch::Receiver<weft_placement::client::ClientStatus>,
    registry: Registry,
    stop: CancellationToken,
) {
    loop {
        let served_by = rx.borrow_and_update().served_by.clone();
        registry.set_placement_leader(served_by);
        tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}

/// Offers the actor types while at least one worker is connected; withdraws them
/// `withdraw_delay` after the last one left (unless one came back).
async fn offer_types(
    mut workers: watch::Receiver<usize>,
    types: Vec<String>,
    withdraw_delay: Duration,
    offer: weft_placement::client::ActorTypes,
    stop: CancellationToken,
) {
    let mut offered = false;
    loop {
        let n = *workers.borrow_and_update();
        if n > 0 && !offered {
            offer.set(types.clone());
            offered = true;
            tracing::info!("worker connected: offering actor types to placement");
        } else if n == 0 && offered {
            let back = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(withdraw_delay) => false,
                r = workers.wait_for(|n| *n > 0) => r.is_ok(),
            };
            if !back {
                offer.set(vec![]);
                offered = false;
                tracing::info!("no worker connected: withdrawing actor types from placement");
            }
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = workers.changed() => if r.is_err() { return },
        }
    }
}
