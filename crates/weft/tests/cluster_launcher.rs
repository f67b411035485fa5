//! The test kit's cluster launcher against real processes: three `weft placement` nodes, HAProxy
//! and PostgreSQL started, faults injected (SIGKILL of the leader, SIGSTOP/SIGCONT, SIGTERM,
//! restart) and every process gone after drop. Sidecars join in tests/python/cluster.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use weft_testkit::{Cluster, ClusterConfig, Target, haproxy::haproxy_bin, postgres_bin_dir};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Missing HAProxy or PostgreSQL: fail under CI, skip loudly otherwise.
fn prerequisites() -> bool {
    let missing: Vec<&str> = [
        (haproxy_bin().is_none(), "haproxy"),
        (postgres_bin_dir().is_none(), "PostgreSQL server binaries"),
    ]
    .into_iter()
    .filter_map(|(m, what)| m.then_some(what))
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(!in_ci(), "CI=true and {missing:?} not installed");
    eprintln!(
        "\n!!!!! SKIP: {missing:?} not installed; the cluster launcher test is NOT being run !!!!!\n"
    );
    false
}

fn gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Accepts one connection through HAProxy on `listener` and echoes a byte back.
fn round_trip(front: &str, listener: &TcpListener) -> bool {
    let Ok(mut c) = TcpStream::connect_timeout(&front.parse().unwrap(), Duration::from_secs(2))
    else {
        return false;
    };
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    listener.set_nonblocking(true).unwrap();
    if c.write_all(b"x").is_err() {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut server = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return false,
        }
    };
    server.set_nonblocking(false).unwrap();
    let mut b = [0u8; 1];
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    server.read_exact(&mut b).is_ok()
        && server.write_all(b"y").is_ok()
        && c.read_exact(&mut b).is_ok()
        && &b == b"y"
}

#[test]
fn launcher_starts_placement_and_haproxy_and_injects_faults() {
    if !prerequisites() {
        return;
    }
    let mut cfg = ClusterConfig::new(env!("CARGO_BIN_EXE_weft"));
    cfg.sidecars = 0;
    cfg.haproxy = true;
    cfg.haproxy_slots = 2;
    let mut c = Cluster::start(cfg).expect("cluster starts");
    let mut pids: Vec<u32> = (0..3)
        .map(|i| c.pid(Target::Placement(i)).unwrap())
        .collect();
    pids.push(c.pid(Target::Haproxy).unwrap());

    // SIGKILL the leader: another node leads; the old one restarts on its address and data.
    let leader = c.leader(Duration::from_secs(20)).unwrap();
    c.kill(Target::Placement(leader)).unwrap();
    assert!(!c.running(Target::Placement(leader)));
    assert!(
        c.kill(Target::Placement(leader)).is_err(),
        "killing a dead process is refused"
    );
    let next = c.leader(Duration::from_secs(20)).unwrap();
    assert_ne!(next, leader);
    c.restart(Target::Placement(leader), false).unwrap();
    pids.push(c.pid(Target::Placement(leader)).unwrap());
    let s = c.cluster_status().unwrap();
    assert_eq!(s["placement_nodes"].as_array().unwrap().len(), 3, "{s}");

    // SIGSTOP keeps the process (paused), SIGCONT resumes it; the cluster keeps a leader.
    let follower = (0..3).find(|&i| i != next).unwrap();
    c.pause(Target::Placement(follower)).unwrap();
    let d = c.describe();
    assert_eq!(d["placement"][follower]["paused"], true, "{d}");
    c.leader(Duration::from_secs(20)).unwrap();
    c.resume(Target::Placement(follower)).unwrap();
    assert_eq!(c.describe()["placement"][follower]["paused"], false);

    // SIGTERM: a graceful exit with code 0.
    assert_eq!(
        c.terminate(Target::Placement(follower), Duration::from_secs(20))
            .unwrap(),
        Some(0)
    );
    c.restart(Target::Placement(follower), false).unwrap();
    pids.push(c.pid(Target::Placement(follower)).unwrap());

    // HAProxy balances round robin over the slots it is given at run time.
    let (grpc, http) = c.balancer().unwrap();
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let h = c.haproxy().unwrap();
    h.set_slot(
        0,
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
    .unwrap();
    assert!(
        round_trip(&grpc, &a),
        "grpc frontend reaches slot 0\n{}",
        c.logs(2000)
    );
    assert!(
        round_trip(&http, &b),
        "http frontend reaches slot 0\n{}",
        c.logs(2000)
    );
    assert!(h.set_slot(2, 1, 1).is_err(), "only two slots");

    drop(c);
    for pid in pids {
        assert!(gone(pid), "process {pid} outlived the cluster");
    }
}
