//! In-process placement cluster: registration, actor-type changes, liveness removal, graceful
//! leave, and dissemination to 50 simulated sidecars.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_update_and_liveness() {
    let cluster = start_cluster(3, Duration::from_millis(600)).await;
    let a = client(&cluster.addrs, "host-a", &["wf"]);
    let t = a
        .wait_for_version(1, Duration::from_secs(5))
        .await
        .expect("first table");
    assert_eq!(t.members.len(), 1);
    assert_eq!(t.lookup("wf", "instance-1").unwrap().host_id, "host-a");

    let b = client(&cluster.addrs, "host-b", &["wf"]);
    let v = b
        .wait_for_version(2, Duration::from_secs(5))
        .await
        .unwrap()
        .version;
    assert!(
        a.wait_for_version(v, Duration::from_secs(5))
            .await
            .is_some()
    );

    // Actor types change (a worker connects): one write, pushed to everybody.
    a.set_actor_types(vec!["wf".into(), "act".into()]);
    let t = b
        .wait_for_version(v + 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(t.lookup("act", "x").unwrap().host_id, "host-a");

    // Graceful leave removes at once; a crash (drop) is removed after the liveness timeout.
    let before = b.current().unwrap().version;
    a.shutdown().await;
    let t = b
        .wait_for_version(before + 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(t.members.iter().all(|m| m.host_id != "host-a"));

    let c = client(&cluster.addrs, "host-c", &["wf"]);
    let v = c
        .wait_for_version(before + 2, Duration::from_secs(5))
        .await
        .unwrap()
        .version;
    let started = Instant::now();
    drop(b);
    let t = c
        .wait_for_version(v + 1, Duration::from_secs(5))
        .await
        .expect("host-b removed");
    assert!(t.members.iter().all(|m| m.host_id != "host-b"));
    println!(
        "silent host removed after {:?} (liveness timeout 600 ms)",
        started.elapsed()
    );
    for n in cluster.nodes {
        n.shutdown().await;
    }
}

/// Resolves to the instant the leader published `version`.
fn published_at(
    cluster: &Cluster,
    leader: usize,
    version: u64,
) -> tokio::task::JoinHandle<Instant> {
    let mut rx = cluster.nodes[leader].raft().publisher().changes.subscribe();
    tokio::spawn(async move {
        loop {
            if let Ok(t) = rx.recv().await
                && t.version >= version
            {
                return Instant::now();
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sidecars_receive_every_version() {
    const N: usize = 50;
    let cluster = start_cluster(3, Duration::from_secs(3)).await;
    let first_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let term0 = cluster.nodes[first_leader].raft().view().term;
    let clients: Vec<_> = (0..N)
        .map(|i| client(&cluster.addrs, &format!("sidecar-{i:02}"), &["wf", "act"]))
        .collect();
    // Every registration is a version; all clients converge on version N.
    let started = Instant::now();
    for c in &clients {
        assert!(
            c.wait_for_version(N as u64, Duration::from_secs(20))
                .await
                .is_some()
        );
    }
    println!(
        "{N} sidecars registered and converged in {:?}",
        started.elapsed()
    );

    // One membership change: a new sidecar joins. Measured twice: from the join request, and
    // from the moment the leader applied (published) the new version, until all 50 hold it.
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let published = published_at(&cluster, leader, N as u64 + 1);
    let started = Instant::now();
    let newcomer = client(&cluster.addrs, "sidecar-new", &["wf"]);
    for c in &clients {
        let t = c
            .wait_for_version(N as u64 + 1, Duration::from_secs(10))
            .await
            .expect("join seen");
        assert!(t.members.iter().any(|m| m.host_id == "sidecar-new"));
    }
    let (join, join_applied) = (started.elapsed(), published.await.unwrap().elapsed());

    // And a removal (graceful leave).
    let published = published_at(&cluster, leader, N as u64 + 2);
    let started = Instant::now();
    newcomer.shutdown().await;
    for c in &clients {
        let t = c
            .wait_for_version(N as u64 + 2, Duration::from_secs(10))
            .await
            .expect("leave seen");
        assert!(t.members.iter().all(|m| m.host_id != "sidecar-new"));
    }
    let (leave, leave_applied) = (started.elapsed(), published.await.unwrap().elapsed());
    println!(
        "membership change reached all {N} sidecars: join {join:?} after the request \
         ({join_applied:?} after the leader applied it), leave {leave:?} ({leave_applied:?})"
    );

    // No client skipped a version: from its first table on, each step is +1 (or a resend) —
    // unless leadership changed meanwhile (an election on a loaded machine): a sidecar that
    // reconnects to the new leader gets its latest table, which is complete, so versions may
    // then jump (the client ignores a stale one, see client.rs).
    let term_end = cluster
        .nodes
        .iter()
        .map(|n| n.raft().view().term)
        .max()
        .unwrap_or(term0);
    let stable = term_end == term0;
    if !stable {
        println!("leadership changed during the test (term {term0} → {term_end}): jumps allowed");
    }
    for (i, c) in clients.iter().enumerate() {
        let seen = c.versions_seen();
        assert_eq!(*seen.last().unwrap(), N as u64 + 2, "client {i}: {seen:?}");
        for w in seen.windows(2) {
            assert!(
                !stable || w[1] <= w[0] + 1,
                "client {i} went from {} to {} (term {term0} → {term_end}): {seen:?}",
                w[0],
                w[1]
            );
        }
    }
    // The leader recorded every client's acknowledgement of the last version.
    let svc = cluster.nodes[leader].service().clone();
    eventually("all acks", Duration::from_secs(5), || {
        svc.min_acked_version() >= N as u64 + 2
    })
    .await;
    drop(clients);
    for n in cluster.nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_a_placement_node() {
    use weft_placement::proto::placement::{
        AddNodeRequest, RemoveNodeRequest, placement_client::PlacementClient as PbClient,
    };
    let cluster = start_cluster(3, Duration::from_secs(3)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = weft_placement_server::NodeConfig::new(4, addr, cluster.dir.path().join("n4"));
    cfg.join = true;
    let fourth = weft_placement_server::PlacementNode::start_with_listener(cfg, listener)
        .await
        .unwrap();
    assert!(
        !fourth.raft().view().initialized,
        "a --join node must not initialise"
    );

    // Ask a follower: it forwards to the leader.
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let follower = &cluster.addrs[(leader + 1) % 3];
    let mut admin = PbClient::connect(format!("http://{follower}"))
        .await
        .unwrap();
    let voters = admin
        .add_node(AddNodeRequest {
            id: 4,
            address: addr.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .voters;
    assert_eq!(voters, vec![1, 2, 3, 4]);
    eventually(
        "node 4 sees itself as voter",
        Duration::from_secs(5),
        || {
            fourth
                .raft()
                .view()
                .members
                .iter()
                .any(|m| m.id == 4 && m.voter)
        },
    )
    .await;
    // The new node replicates the table like any other.
    let c = client(&cluster.addrs, "host-z", &["wf"]);
    assert!(
        c.wait_for_version(1, Duration::from_secs(5))
            .await
            .is_some()
    );
    eventually("node 4 applied the table", Duration::from_secs(5), || {
        fourth.raft().table().version >= 1
    })
    .await;

    let voters = admin
        .remove_node(RemoveNodeRequest { id: 4 })
        .await
        .unwrap()
        .into_inner()
        .voters;
    assert_eq!(voters, vec![1, 2, 3]);
    drop(c);
    fourth.shutdown().await;
    for n in cluster.nodes {
        n.shutdown().await;
    }
}
