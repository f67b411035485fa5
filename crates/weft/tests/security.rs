//! Issue 16 with real processes: 3 `weft placement` nodes and 2 `weft sidecar`s on PostgreSQL,
//! all on mutual TLS with certificates from `weft certs`. Shows who is let in and who is refused
//! on the placement, raft and internal ports, that a sidecar cannot register as another app, that
//! RemoveNode needs an operator or placement identity, and that a completion token naming an
//! address outside the placement table is never dialled.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_placement::proto::raft::{RaftPayload, raft_client::RaftClient};
use weft_proto::durabletask::ActivityResponse;
use weft_proto::durabletask::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use weft_proto::internal::{WakeHint, internal_client::InternalClient};
use weft_testkit::{Cluster, ClusterConfig, postgres_bin_dir};
use weft_tls::context::TlsFiles;
use weft_tls::{Dial, Expect, TlsContext};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const APP: &str = "accapp";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Missing PostgreSQL: fail under CI, skip loudly otherwise.
fn prerequisites() -> bool {
    if postgres_bin_dir().is_some() {
        return true;
    }
    assert!(
        !in_ci(),
        "CI=true and the PostgreSQL server binaries are not installed"
    );
    eprintln!(
        "\n!!!!! SKIP: PostgreSQL binaries not installed; the mTLS test is NOT being run !!!!!\n"
    );
    false
}

fn weft(args: &[&str]) -> std::process::Output {
    Command::new(WEFT)
        .args(args)
        .env_remove("DAPR_API_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run weft")
}

fn weft_ok(args: &[&str]) {
    let o = weft(args);
    assert!(
        o.status.success(),
        "weft {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn flags(dir: &Path) -> Vec<String> {
    let f = |n: &str| dir.join(n).display().to_string();
    [
        "--tls-cert",
        &f("tls.crt"),
        "--tls-key",
        &f("tls.key"),
        "--tls-ca",
        &f("ca.crt"),
    ]
    .map(String::from)
    .to_vec()
}

fn context(dir: &Path) -> Arc<TlsContext> {
    let files = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        ca: dir.join("ca.crt"),
    };
    TlsContext::load(files, "cluster.local", "default").expect("tls context")
}

/// The whole error text of a failed call, transport causes included.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s = format!("{s}: {c}");
        src = c.source();
    }
    s
}

/// A `weft sidecar` this test started itself; SIGKILLed (by PID) on drop.
struct Stray(Child);

impl Drop for Stray {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mtls_cluster_admits_identities_and_refuses_everyone_else() {
    if !prerequisites() {
        return;
    }
    let mut cfg = ClusterConfig::new(WEFT);
    cfg.sidecars = 2;
    cfg.app_id = APP.into();
    cfg.tls = true;
    let mut c = Cluster::start(cfg).expect("mTLS cluster starts");
    let certs = c.certs_dir();
    let placement = c.placement_addrs();
    let first_placement = placement.split(',').next().unwrap().to_string();
    let internal0 = c.sidecar(0).unwrap().internal.clone();
    let grpc0 = c.sidecar(0).unwrap().grpc.clone();
    let http0 = c.sidecar(0).unwrap().http.clone();

    // 1. `weft cluster status` with the operator's certificate lists both sidecars.
    wait_for(
        "both sidecars in the table",
        Duration::from_secs(20),
        || {
            c.cluster_status()
                .is_ok_and(|s| s["hosts"].as_array().is_some_and(|h| h.len() == 2))
        },
    );

    // 2a. No client certificate (plaintext): refused, with a hint.
    let status = |tls: &[String]| {
        let mut args = vec!["cluster", "status", "--placement", &placement];
        args.extend(["--timeout-ms", "2000"]);
        args.extend(tls.iter().map(String::as_str));
        weft(&args)
    };
    let o = status(&[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pass an operator's --tls-cert"), "{err}");

    // 2b. A certificate of another CA (which itself trusts our CA): the handshake is refused.
    let other = certs.join("other");
    let other_ca = other.join("ca");
    let stranger = other.join("admin");
    weft_ok(&["certs", "ca", "--out", other_ca.to_str().unwrap()]);
    let (ca_arg, out_arg) = (other_ca.to_str().unwrap(), stranger.to_str().unwrap());
    weft_ok(&["certs", "admin", "--ca", ca_arg, "--out", out_arg]);
    std::fs::copy(certs.join("ca/ca.crt"), stranger.join("ca.crt")).unwrap();
    let o = status(&flags(&stranger));
    assert!(!o.status.success(), "another CA's certificate was let in");

    // 2c. RemoveNode with a sidecar's certificate: PERMISSION_DENIED naming the identity.
    let sidecar_flags = flags(&certs.join("sidecar"));
    let mut args = vec![
        "cluster",
        "remove-node",
        "--id",
        "3",
        "--placement",
        &placement,
    ];
    args.extend(["--timeout-ms", "3000"]);
    args.extend(sidecar_flags.iter().map(String::as_str));
    let o = weft(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "RemoveNode with a sidecar certificate succeeded"
    );
    assert!(
        err.contains("PermissionDenied")
            && err.contains(
                "spiffe://cluster.local/ns/default/accapp may not remove placement nodes"
            ),
        "{err}"
    );
    let s = c.cluster_status().unwrap();
    assert_eq!(s["placement_nodes"].as_array().unwrap().len(), 3, "{s}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // 2d. Raft: a sidecar's or an operator's certificate may not send raft messages.
        for who in ["sidecar", "admin"] {
            let dial = Dial::new(Some(context(&certs.join(who))), Expect::Placement);
            let ch = dial
                .connect(Dial::endpoint(&first_placement).unwrap())
                .await
                .expect("mTLS to placement");
            let e = RaftClient::new(ch)
                .vote(RaftPayload {
                    json: b"{}".to_vec(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{who}: {e:?}");
            assert!(e.message().contains("may not send raft messages"), "{e:?}");
        }
        // Raft from a stranger or in plaintext never gets past the handshake.
        for dial in [
            Dial::new(Some(context(&stranger)), Expect::Placement),
            Dial::plain(Expect::Placement),
        ] {
            let r = async {
                let ch = dial.connect(Dial::endpoint(&first_placement)?).await?;
                Ok::<_, Box<dyn std::error::Error>>(
                    RaftClient::new(ch)
                        .vote(RaftPayload { json: vec![] })
                        .await?,
                )
            }
            .await;
            assert!(r.is_err(), "raft call let in");
        }

        // 2e. The internal port: plaintext and another CA refused; an operator is no sidecar.
        let wake = || WakeHint {
            app_id: APP.into(),
            instance_ids: vec!["x".into()],
        };
        for dial in [
            Dial::new(Some(context(&stranger)), Expect::Sidecar),
            Dial::plain(Expect::Sidecar),
        ] {
            let r = async {
                let ch = dial.connect(Dial::endpoint(&internal0)?).await?;
                Ok::<_, Box<dyn std::error::Error>>(InternalClient::new(ch).wake(wake()).await?)
            }
            .await;
            let e = r.expect_err("internal port let a stranger in");
            eprintln!("internal port refused: {}", chain(e.as_ref()));
        }
        let dial = Dial::new(Some(context(&certs.join("admin"))), Expect::Sidecar);
        let ch = dial
            .connect(Dial::endpoint(&internal0).unwrap())
            .await
            .unwrap();
        let e = InternalClient::new(ch).wake(wake()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains(
                "spiffe://cluster.local/ns/default/weft-admin may not call the internal API"
            ),
            "{e:?}"
        );

        // 4. A completion token naming an address outside the table is never dialled.
        let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        trap.set_nonblocking(true).unwrap();
        let trap_addr = trap.local_addr().unwrap();
        let mut client = TaskHubSidecarServiceClient::connect(format!("http://{grpc0}"))
            .await
            .unwrap();
        // An unknown host, and sidecar 1's real host id with the trap's address.
        let other = c_hosts(&placement, &certs)
            .await
            .into_iter()
            .find(|(_, addr)| *addr != internal0)
            .map(|(host, _)| host)
            .unwrap();
        for host in ["not-a-host".to_string(), other] {
            let e = client
                .complete_activity_task(ActivityResponse {
                    instance_id: "forged".into(),
                    task_id: 1,
                    completion_token: format!("t-1@{host}@{trap_addr}"),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
            assert!(
                e.message().contains("not a sidecar of the placement table"),
                "{e:?}"
            );
        }
        match trap.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the forged token's address was dialled: {other:?}"),
        }
    });

    // Refusals are counted on the sidecar's /metrics.
    let metrics = http_get(&http0, "/metrics");
    for name in [
        "weft_auth_refused_total",
        "weft_tls_handshakes_refused_total",
        "weft_completion_tokens_refused_total",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }

    // 2f. A sidecar with a certificate for app `evil` cannot register as `accapp`: it never
    // becomes ready and says why.
    let evil = certs.join("evil");
    weft_ok(&[
        "certs",
        "sidecar",
        "--app-id",
        "evil",
        "--ca",
        certs.join("ca").to_str().unwrap(),
        "--out",
        evil.to_str().unwrap(),
    ]);
    let log = certs.join("evil.stderr.log");
    let mut cmd = Command::new(WEFT);
    // Every port picked by the OS.
    let ports = "--grpc-port 0 --http-port 0 --internal-port 0";
    cmd.args(["sidecar", "--app-id", APP, "--placement", &placement])
        .args(["--database-url", c.database_url()])
        .args(ports.split(' '))
        .args(flags(&evil))
        .env_remove("DAPR_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut stray = Stray(cmd.spawn().unwrap());
    let out = stray.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let said = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    wait_for(
        "the evil sidecar to report placement's refusal",
        Duration::from_secs(20),
        || said(&log).contains("placement refused this sidecar"),
    );
    let text = said(&log);
    assert!(
        text.contains(
            "spiffe://cluster.local/ns/default/evil may not register a sidecar of app `accapp`"
        ),
        "{text}"
    );
    assert!(
        rx.try_recv().is_err(),
        "the evil sidecar printed a ready line"
    );
    assert!(
        stray.0.try_wait().unwrap().is_none(),
        "the evil sidecar exited instead of waiting"
    );
    let hosts = c.cluster_status().unwrap()["hosts"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(hosts, 2, "the evil sidecar got into the table");
}

/// (host id, internal address) of every sidecar in the table, read as an operator.
async fn c_hosts(placement: &str, certs: &Path) -> Vec<(String, String)> {
    let dial = Dial::new(Some(context(&certs.join("admin"))), Expect::Placement);
    let addrs: Vec<String> = placement.split(',').map(String::from).collect();
    let s = weft::cmd::cluster::cluster_status_with(&addrs, &dial)
        .await
        .unwrap();
    let field = |h: &serde_json::Value, k: &str| h[k].as_str().unwrap().to_string();
    s["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (field(h, "host_id"), field(h, "address")))
        .collect()
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}
