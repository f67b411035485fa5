//! `grpc.health.v1` on the placement port (the chart's readiness probe): NOT_SERVING while no
//! leader is known, SERVING once one is; with TLS, on the plaintext `health_listen` port.

mod common;

use common::start_cluster;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::net::TcpListener;
use weft_placement::proto::health::health_check_response::ServingStatus;
use weft_placement::proto::health::{HealthCheckRequest, health_client::HealthClient};
use weft_placement_server::{NodeConfig, PlacementNode};

async fn check(addr: &str, service: &str) -> Result<ServingStatus, tonic::Status> {
    let mut c = HealthClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let r = c
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(r.into_inner().status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_without_a_leader() {
    let dir = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    // Node 1 of a three-node cluster whose peers never start: it can never elect a leader.
    let mut cfg = NodeConfig::new(1, l.local_addr().unwrap(), dir.path().join("n1"));
    cfg.initial_cluster = BTreeMap::from([
        (1, addr.clone()),
        (2, "127.0.0.1:1".into()),
        (3, "127.0.0.1:2".into()),
    ]);
    let node = PlacementNode::start_with_listener(cfg, l).await.unwrap();
    assert_eq!(check(&addr, "").await.unwrap(), ServingStatus::NotServing);
    let err = check(&addr, "no.such.Service").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_once_a_leader_is_known() {
    let cluster = start_cluster(3, Duration::from_secs(3)).await;
    // start_cluster returns once every node agrees on the leader.
    for addr in &cluster.addrs {
        assert_eq!(
            check(addr, "").await.unwrap(),
            ServingStatus::Serving,
            "{addr}"
        );
        assert_eq!(
            check(addr, "weft.placement.v1.Placement").await.unwrap(),
            ServingStatus::Serving
        );
    }
    // Watch answers the current status first.
    let mut c = HealthClient::connect(format!("http://{}", cluster.addrs[0]))
        .await
        .unwrap();
    let mut stream = c
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    for n in cluster.nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_the_health_port_answers_plaintext_probes() {
    use weft_tls::certs::{issue, make_ca, write_leaf};
    use weft_tls::context::TlsFiles;
    use weft_tls::{SpiffeId, TlsContext};
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca("cluster.local", 1).unwrap();
    let id = SpiffeId::new("cluster.local", "default", weft_tls::PLACEMENT).unwrap();
    let certs = dir.path().join("certs");
    write_leaf(&certs, &issue(&ca, &id, &[], 1).unwrap(), &ca.cert).unwrap();
    let files = TlsFiles {
        cert: certs.join("tls.crt"),
        key: certs.join("tls.key"),
        ca: certs.join("ca.crt"),
    };
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    // A single-node cluster: it elects itself.
    let mut cfg = NodeConfig::new(1, l.local_addr().unwrap(), dir.path().join("n1"));
    cfg.tls = Some(TlsContext::load(files, "cluster.local", "default").unwrap());
    cfg.health_listen = Some("127.0.0.1:0".parse().unwrap());
    let node = PlacementNode::start_with_listener(cfg, l).await.unwrap();
    let health = node.health_addr().expect("health port bound").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if check(&health, "").await.unwrap() == ServingStatus::Serving {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The placement port itself refuses a plaintext probe: that is why the health port exists.
    let plain = tokio::time::timeout(Duration::from_secs(5), async {
        match HealthClient::connect(format!("http://{addr}")).await {
            Ok(mut c) => c.check(HealthCheckRequest::default()).await.is_ok(),
            Err(_) => false,
        }
    })
    .await
    .unwrap_or(false);
    assert!(
        !plain,
        "a plaintext probe got an answer from the mTLS placement port"
    );
    node.shutdown().await;
}
