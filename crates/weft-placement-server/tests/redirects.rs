//! Redirects: followed at once to a configured address, to another only after every configured
//! one redirected; a follower that lost its leader holds a registration until the new one is known.

mod common;

use common::*;
use std::time::Duration;
use weft_testkit::{ProxyMode, TcpProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_alone_still_leads_to_the_leader() {
    let cluster = start_cluster(3, Duration::from_millis(600)).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = cluster.addrs[(leader + 1) % 3].clone();
    let c = client(std::slice::from_ref(&follower), "host-f", &["wf"]);
    let t = c.wait_for_version(1, Duration::from_secs(10)).await;
    assert!(t.is_some(), "no table through a follower's redirect");
    let served_by = c.status().borrow().served_by.clone();
    assert_eq!(served_by.as_deref(), Some(cluster.addrs[leader].as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_proxies_the_client_stays_behind_them() {
    let cluster = start_cluster(3, Duration::from_millis(600)).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let rt = tokio::runtime::Handle::current();
    // The followers' proxies first: the client meets a redirect before it meets the leader.
    let mut order: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    order.push(leader);
    let proxies: Vec<TcpProxy> = order
        .iter()
        .map(|&i| TcpProxy::start(&rt, &cluster.addrs[i]).unwrap())
        .collect();
    let via: Vec<String> = proxies.iter().map(TcpProxy::addr).collect();
    let c = client(&via, "host-p", &["wf"]);
    assert!(
        c.wait_for_version(1, Duration::from_secs(10))
            .await
            .is_some()
    );
    let served_by = c.status().borrow().served_by.clone().unwrap();
    assert!(
        via.contains(&served_by),
        "the session bypassed the proxies: {served_by} (proxies {via:?})"
    );

    // Cut every proxy: the client loses placement (no direct path to fall back on), and the
    // leader removes the silent host.
    proxies.iter().for_each(|p| p.set_mode(ProxyMode::Refuse));
    let watcher = client(&cluster.addrs, "host-w", &["wf"]);
    eventually("the cut host removed", Duration::from_secs(10), || {
        watcher
            .current()
            .is_some_and(|t| t.members.iter().all(|m| m.host_id != "host-p"))
    })
    .await;
    assert!(!c.status().borrow().connected);
}

/// A follower that stopped hearing from its leader does not send sidecars to it: it holds the
/// registration until the election settles and then names the new leader (or serves, if it won).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_holds_a_registration_until_the_new_leader_is_known() {
    use tokio_stream::StreamExt;
    use weft_placement::proto::placement::{
        PlacementMessage, SidecarMessage, placement_client::PlacementClient as PbClient,
        placement_message, sidecar_message,
    };

    let mut cluster = start_cluster(3, Duration::from_secs(10)).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let dead = leader as u64 + 1;
    cluster.nodes.remove(leader).shutdown().await;
    cluster.addrs.remove(leader);
    let follower = &cluster.nodes[0];
    // Three heartbeats of silence: the follower now suspects its leader, which it still names.
    let heartbeat = follower.raft().tuning().heartbeat;
    eventually("the leader's silence", Duration::from_secs(5), || {
        !follower.raft().leader_contact().heard_within(heartbeat * 3)
    })
    .await;

    let mut c = PbClient::connect(format!("http://{}", cluster.addrs[0]))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(SidecarMessage {
        msg: Some(sidecar_message::Msg::Register(host("host-h", &["wf"]))),
    })
    .await
    .unwrap();
    let mut inbound = c
        .report_status(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), inbound.next())
        .await
        .expect("an answer within the hold")
        .expect("a message")
        .expect("not an error");
    match first {
        PlacementMessage {
            msg: Some(placement_message::Msg::Redirect(r)),
        } => {
            assert_ne!(r.leader_id, dead, "redirected to the dead leader");
            assert_ne!(r.leader_id, 0, "answered before a leader was elected");
        }
        PlacementMessage {
            msg: Some(placement_message::Msg::Table(_)),
        } => assert!(follower.raft().view().is_leader, "a table from a follower"),
        other => panic!("unexpected first answer {other:?}"),
    }
    drop(tx);
}
