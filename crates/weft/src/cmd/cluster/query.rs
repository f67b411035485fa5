//! Talking to placement nodes for `weft cluster`: connecting, asking each node for its status,
//! and merging the answers into one view (JSON, or text for people).

use anyhow::bail;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use weft_placement::proto::placement::{
    ClusterStatusRequest, ClusterStatusResponse, placement_client::PlacementClient as PbClient,
};
use weft_tls::{Dial, Expect};

pub(super) async fn connect(
    addr: &str,
    dial: &Dial,
) -> anyhow::Result<PbClient<tonic::transport::Channel>> {
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

pub(super) fn print_status(s: &serde_json::Value) {
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
