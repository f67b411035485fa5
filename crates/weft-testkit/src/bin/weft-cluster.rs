//! `weft-cluster`: the cluster launcher driven by JSON lines on stdin, one JSON reply line per
//! command on stdout (for tests in other languages: tests/python/cluster/cluster_harness.py).
//!
//! Commands (`{"cmd": ...}`): `start` (first; fields of `ClusterConfig`), `status`,
//! `cluster_status`, `leader`, `kill` / `pause` / `resume` / `terminate` / `restart` / `pid`
//! (with `target`: placement|sidecar|haproxy and `index`), `wipe` (a stopped placement node's
//! data directory), `add_sidecar`, `logs`, `shutdown`;
//! with `"placement_proxies": true` at start, `cut_placement` (`index`, `mode`: refuse|blackhole,
//! default refuse) and `heal_placement` (`index`) cut one sidecar from placement and heal it.
//! Replies: `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`. End of input, like
//! `shutdown`, SIGKILLs every process the launcher started.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use weft_testkit::{Cluster, ClusterConfig, ProxyMode, Target, TestkitError};

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut cluster: Option<Cluster> = None;
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let (reply, stop) = match serde_json::from_str::<Value>(&line) {
            Ok(req) => {
                let stop = req["cmd"] == "shutdown";
                (handle(&mut cluster, &req), stop)
            }
            Err(e) => (Err(format!("not JSON: {e}")), false),
        };
        let reply = match reply {
            Ok(result) => json!({"ok": true, "result": result}),
            Err(error) => json!({"ok": false, "error": error}),
        };
        if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() || stop {
            break;
        }
    }
    if let Some(mut c) = cluster.take() {
        c.shutdown();
    }
}

fn handle(cluster: &mut Option<Cluster>, req: &Value) -> Result<Value, String> {
    let cmd = req["cmd"].as_str().ok_or("missing \"cmd\"")?;
    if cmd == "start" {
        if cluster.is_some() {
            return Err("already started".into());
        }
        let c = Cluster::start(config(req)?).map_err(|e| e.to_string())?;
        let c = cluster.insert(c);
        return Ok(c.describe());
    }
    if cmd == "shutdown" {
        if let Some(mut c) = cluster.take() {
            c.shutdown();
        }
        return Ok(Value::Null);
    }
    let c = cluster.as_mut().ok_or("send `start` first")?;
    let e = |e: TestkitError| e.to_string();
    let timeout =
        |default_ms: u64| Duration::from_millis(req["timeout_ms"].as_u64().unwrap_or(default_ms));
    match cmd {
        "status" => Ok(c.describe()),
        "cluster_status" => c.cluster_status().map_err(e),
        "leader" => c.leader(timeout(30_000)).map(|i| json!(i)).map_err(e),
        "add_sidecar" => {
            let i = c.add_sidecar_of(req["app_id"].as_str()).map_err(e)?;
            Ok(json!({"index": i, "status": c.describe()}))
        }
        "cut_placement" | "heal_placement" => {
            let i = req["index"].as_u64().ok_or("missing \"index\"")? as usize;
            let r = if cmd == "cut_placement" {
                let mode = ProxyMode::parse(req["mode"].as_str().unwrap_or("refuse")).map_err(e)?;
                c.cut_placement(i, mode)
            } else {
                c.heal_placement(i)
            };
            r.map_err(e)?;
            Ok(json!({"index": i, "status": c.describe()}))
        }
        "logs" => Ok(json!(
            c.logs(req["bytes"].as_u64().unwrap_or(6000) as usize)
        )),
        "kill" | "pause" | "resume" | "terminate" | "restart" | "pid" | "wipe" => {
            let t = target(req)?;
            let r = match cmd {
                "kill" => c.kill(t).map(|()| Value::Null),
                "pause" => c.pause(t).map(|()| Value::Null),
                "resume" => c.resume(t).map(|()| Value::Null),
                "terminate" => c
                    .terminate(t, timeout(60_000))
                    .map(|code| json!({"code": code})),
                "restart" => c
                    .restart(t, req["fresh_ports"].as_bool().unwrap_or(false))
                    .map(|()| Value::Null),
                "wipe" => match t {
                    Target::Placement(i) => c.wipe_placement(i).map(|()| Value::Null),
                    _ => return Err("only a placement node's data can be wiped".into()),
                },
                _ => c.pid(t).map(|p| json!(p)),
            };
            let r = r.map_err(e)?;
            Ok(json!({"target": t.to_string(), "value": r, "status": c.describe()}))
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

fn target(req: &Value) -> Result<Target, String> {
    let index = req["index"].as_u64().unwrap_or(0) as usize;
    match req["target"].as_str() {
        Some("placement") => Ok(Target::Placement(index)),
        Some("sidecar") => Ok(Target::Sidecar(index)),
        Some("haproxy") => Ok(Target::Haproxy),
        other => Err(format!(
            "target must be placement|sidecar|haproxy, got {other:?}"
        )),
    }
}

fn strings(v: &Value, key: &str) -> Result<Vec<String>, String> {
    match &v[key] {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or(format!("{key}: strings only"))
            })
            .collect(),
        _ => Err(format!("{key} must be a list of strings")),
    }
}

fn config(req: &Value) -> Result<ClusterConfig, String> {
    // Default binary: `weft` next to this one (both are built into the same target directory).
    let weft_bin = match req["weft_bin"].as_str() {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("weft"),
    };
    let mut cfg = ClusterConfig::new(weft_bin);
    let count = |key: &str, default: usize| req[key].as_u64().map_or(default, |n| n as usize);
    cfg.placement_nodes = count("placement", cfg.placement_nodes);
    cfg.sidecars = count("sidecars", cfg.sidecars);
    cfg.haproxy = req["haproxy"].as_bool().unwrap_or(false);
    cfg.tls = req["tls"].as_bool().unwrap_or(false);
    cfg.haproxy_slots = count("haproxy_slots", cfg.haproxy_slots);
    cfg.placement_proxies = req["placement_proxies"].as_bool().unwrap_or(false);
    if let Some(a) = req["app_id"].as_str() {
        cfg.app_id = a.to_string();
    }
    cfg.sidecar_apps = strings(req, "sidecar_apps")?;
    cfg.database_url = req["database_url"].as_str().map(str::to_string);
    cfg.dir = req["dir"].as_str().map(PathBuf::from);
    cfg.placement_args = strings(req, "placement_args")?;
    cfg.sidecar_args = strings(req, "sidecar_args")?;
    if let Some(env) = req["env"].as_object() {
        for (k, v) in env {
            let v = v.as_str().ok_or(format!("env.{k} must be a string"))?;
            cfg.env.push((k.clone(), v.to_string()));
        }
    }
    if let Some(ms) = req["ready_timeout_ms"].as_u64() {
        cfg.ready_timeout = Duration::from_millis(ms);
    }
    Ok(cfg)
}
