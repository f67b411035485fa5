//! `GET /ui/api/cluster`: this sidecar's view of the cluster (placement leader, the table's
//! sidecars with their apps, actor types and owned buckets), its concurrency limits and its
//! recent step rate, all from what it already holds: no call to another node.

use super::UiState;
use super::rate::{Limit, limits_from};
use crate::cluster::ActorKind;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use weft_core::bucket::BUCKETS;
use weft_placement::proto::placement::ClusterStatusRequest;
use weft_placement::proto::placement::placement_client::PlacementClient;

/// Owned buckets per host for every app in the table, per actor kind.
fn owned(st: &UiState, apps: &BTreeSet<String>) -> BTreeMap<(String, &'static str), usize> {
    let registry = st.router.engine().registry();
    let mut out = BTreeMap::new();
    for app in apps {
        for (kind, label) in [
            (ActorKind::Workflow, "workflow"),
            (ActorKind::Activity, "activity"),
            (ActorKind::Executor, "executor"),
        ] {
            for host in registry.bucket_owners(app, kind).1.into_iter().flatten() {
                *out.entry((host, label)).or_default() += 1;
            }
        }
    }
    out
}

/// One placement node's status (its own view), with a deadline.
async fn node_status(
    addr: String,
    dial: weft_tls::Dial,
) -> Result<weft_placement::proto::placement::ClusterStatusResponse, String> {
    let ask = async {
        let endpoint = weft_tls::Dial::endpoint(&addr)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(1));
        let channel = dial.connect(endpoint).await.map_err(|e| e.to_string())?;
        PlacementClient::new(channel)
            .cluster_status(ClusterStatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    };
    match tokio::time::timeout(Duration::from_secs(2), ask).await {
        Ok(r) => r,
        Err(_) => Err(format!("{addr} did not answer within 2 s")),
    }
}

/// The placement cluster's raft members as its leader lists them, each with the state it reports
/// itself (the same calls as `weft cluster status`), or why they could not be had.
async fn placement_members(st: &UiState) -> Value {
    let registry = st.router.engine().registry();
    let (Some(leader), Some(dial)) = (registry.placement_leader(), registry.placement_dial())
    else {
        return Value::Null;
    };
    let status = match node_status(leader, dial.clone()).await {
        Ok(s) => s,
        Err(e) => return json!({"error": e}),
    };
    let own = futures::future::join_all(
        status
            .members
            .iter()
            .map(|m| node_status(m.address.clone(), dial.clone())),
    )
    .await;
    let members: Vec<Value> = status
        .members
        .iter()
        .zip(own)
        .map(|(m, own)| {
            let me = own.ok().and_then(|r| r.self_status);
            json!({
                "id": m.id,
                "address": m.address,
                "role": m.role,
                "state": me.as_ref().map(|s| s.state.clone()),
                "term": me.as_ref().map(|s| s.term),
                "lastApplied": me.as_ref().map(|s| s.last_applied),
                "leader": m.id == status.leader_id,
            })
        })
        .collect();
    json!({"leaderID": status.leader_id, "members": members})
}

pub(super) async fn cluster(State(st): State<UiState>) -> Json<Value> {
    let engine = st.router.engine();
    let registry = engine.registry();
    let table = registry.table();
    let apps: BTreeSet<String> = table
        .iter()
        .flat_map(|t| t.members.iter().map(|m| m.app_id.clone()))
        .collect();
    let owned = owned(&st, &apps);
    let count =
        |host: &str, kind: &'static str| owned.get(&(host.to_string(), kind)).copied().unwrap_or(0);
    let sidecars: Vec<Value> = match &table {
        Some(t) => t
            .members
            .iter()
            .map(|m| {
                json!({
                    "hostID": m.host_id,
                    "address": m.address,
                    "appID": m.app_id,
                    "actorTypes": m.actor_types,
                    "zone": m.zone,
                    "ownedBuckets": {
                        "workflow": count(&m.host_id, "workflow"),
                        "activity": count(&m.host_id, "activity"),
                        "executor": count(&m.host_id, "executor"),
                    },
                    "self": m.host_id == registry.host_id(),
                })
            })
            .collect(),
        // A sidecar without placement owns everything of its app.
        None => vec![json!({
            "hostID": registry.host_id(),
            "appID": engine.app_id(),
            "actorTypes": [],
            "ownedBuckets": {"workflow": BUCKETS, "activity": BUCKETS, "executor": BUCKETS},
            "self": true,
        })],
    };
    let rendered = crate::telemetry::metrics_handle()
        .map(|h| h.render())
        .unwrap_or_default();
    let limits: Vec<Limit> = limits_from(&rendered);
    Json(json!({
        "hostID": registry.host_id(),
        "appID": engine.app_id(),
        "placed": !registry.is_local_only() && table.is_some(),
        "tableVersion": registry.version(),
        "clusterID": table.as_ref().map(|t| t.cluster_id.clone()),
        "placementLeader": registry.placement_leader(),
        "placement": placement_members(&st).await,
        "bucketsTotal": BUCKETS,
        "sidecars": sidecars,
        "workersConnected": *engine.workers_connected().borrow(),
        "limits": limits,
        "rate": st.rate.samples(),
    }))
}
