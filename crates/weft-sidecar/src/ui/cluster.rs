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
use weft_core::bucket::BUCKETS;

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
        "bucketsTotal": BUCKETS,
        "sidecars": sidecars,
        "workersConnected": *engine.workers_connected().borrow(),
        "limits": limits,
        "rate": st.rate.samples(),
    }))
}
