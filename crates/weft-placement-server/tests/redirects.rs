//! Which redirects the sidecar's placement client follows: one to a configured address at once;
//! one to another address only after every configured address redirected in a row, so a sidecar
//! that reaches placement through proxies stays behind them, and one given a follower alone
//! still reaches the leader.

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
