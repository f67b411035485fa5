//! A real Weft cluster on loopback, as processes: N `weft placement` nodes (one raft group), M
//! `weft sidecar`s on a throwaway PostgreSQL, optionally HAProxy in front; each can be SIGKILLed,
//! paused, SIGTERMed and restarted, and (with `placement_proxies`) cut from placement alone
//! through per-sidecar TCP proxies. Pure process plumbing: it knows flags and ready lines only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::TestkitError;
use crate::haproxy::Haproxy;
use crate::postgres::PgServer;
use crate::process::Proc;
use crate::proxy::TcpProxy;

mod faults;

type Result<T, E = TestkitError> = std::result::Result<T, E>;

/// What to start. `ClusterConfig::new(weft_bin)` gives 3 placement nodes and 3 sidecars.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `weft` binary.
    pub weft_bin: PathBuf,
    pub placement_nodes: usize,
    pub sidecars: usize,
    /// Start HAProxy in front of the sidecars.
    pub haproxy: bool,
    /// Server slots per HAProxy backend: the most sidecars the cluster will ever have.
    pub haproxy_slots: usize,
    pub app_id: String,
    /// The app of each sidecar by index (multi-app clusters); a sidecar beyond the list runs
    /// `app_id`. With `tls`, every sidecar holds the certificate of `app_id`, so leave this
    /// empty there.
    pub sidecar_apps: Vec<String>,
    /// Use this database instead of starting a throwaway PostgreSQL.
    pub database_url: Option<String>,
    /// Where logs and placement data go (default: a temp dir removed on drop).
    pub dir: Option<PathBuf>,
    /// Extra flags for every `weft placement` / `weft sidecar`.
    pub placement_args: Vec<String>,
    pub sidecar_args: Vec<String>,
    /// Extra environment for every weft process (`RUST_LOG` defaults to `info`).
    pub env: Vec<(String, String)>,
    /// Deadline of every start (ready line, leader election, HAProxy serving).
    pub ready_timeout: Duration,
    /// Mutual TLS everywhere: `weft certs` makes a CA and the certificates under
    /// `DIR/certs/` (`ca`, `placement`, `sidecar`, `admin`) and every process gets its `--tls-*`.
    pub tls: bool,
    /// Extra flags for `weft cluster` commands (set by `tls`: the operator's certificate).
    pub admin_args: Vec<String>,
    /// Give each sidecar its own TCP proxy in front of every placement node (its `--placement`
    /// names the proxies), so that `cut_placement` can cut one sidecar from placement alone.
    pub placement_proxies: bool,
}

impl ClusterConfig {
    pub fn new(weft_bin: impl Into<PathBuf>) -> Self {
        Self {
            weft_bin: weft_bin.into(),
            placement_nodes: 3,
            sidecars: 3,
            haproxy: false,
            haproxy_slots: 5,
            app_id: "cluster-app".into(),
            sidecar_apps: Vec::new(),
            database_url: None,
            dir: None,
            placement_args: Vec::new(),
            sidecar_args: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            tls: false,
            admin_args: Vec::new(),
            placement_proxies: false,
        }
    }
}

/// Which process a command is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Placement(usize),
    Sidecar(usize),
    Haproxy,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Placement(i) => write!(f, "placement{i}"),
            Target::Sidecar(i) => write!(f, "sidecar{i}"),
            Target::Haproxy => write!(f, "haproxy"),
        }
    }
}

/// The addresses a sidecar printed in its ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarAddrs {
    pub grpc: String,
    pub http: String,
    pub internal: String,
}

/// Parses `weft sidecar ready grpc=ADDR http=ADDR internal=ADDR` (other keys are ignored).
pub fn parse_ready_line(line: &str) -> Option<SidecarAddrs> {
    let rest = line.trim().strip_prefix("weft sidecar ready ")?;
    let get = |key: &str| {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    Some(SidecarAddrs {
        grpc: get("grpc")?,
        http: get("http")?,
        internal: get("internal")?,
    })
}

fn port_of(addr: &str) -> Result<u16> {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| TestkitError::Invalid(format!("no port in address {addr:?}")))
}

#[derive(Debug)]
struct PlacementNode {
    id: u64,
    addr: String,
    data: PathBuf,
    proc: Option<Proc>,
}

#[derive(Debug)]
struct SidecarNode {
    addrs: Option<SidecarAddrs>,
    proc: Option<Proc>,
    starts: u32,
    /// Its proxies in front of the placement nodes, in node order (kept across restarts).
    proxies: Vec<TcpProxy>,
}

impl SidecarNode {
    fn new() -> Self {
        Self {
            addrs: None,
            proc: None,
            starts: 0,
            proxies: Vec::new(),
        }
    }
}

/// Where the logs and data live: our temp dir or the caller's directory.
#[derive(Debug)]
enum Dir {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Given(p) => p,
        }
    }
}

/// A running cluster. Dropping it SIGKILLs every process it started (by PID) and stops the
/// throwaway PostgreSQL.
#[derive(Debug)]
pub struct Cluster {
    cfg: ClusterConfig,
    placement: Vec<PlacementNode>,
    sidecars: Vec<SidecarNode>,
    haproxy: Option<Haproxy>,
    /// Runs the placement proxies (one worker thread), when configured.
    proxy_rt: Option<tokio::runtime::Runtime>,
    database_url: String,
    // Declared last: dropped after every process that uses them.
    pg: Option<PgServer>,
    dir: Dir,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    /// Starts PostgreSQL (unless a URL is given), the placement nodes (and waits for a leader),
    /// the sidecars (and waits for every ready line), then HAProxy with every sidecar in it.
    pub fn start(cfg: ClusterConfig) -> Result<Self> {
        if cfg.placement_nodes == 0 {
            return Err(TestkitError::Invalid(
                "a cluster needs a placement node".into(),
            ));
        }
        if !cfg.weft_bin.is_file() {
            return Err(TestkitError::Invalid(format!(
                "weft binary not found at {} (cargo build -p weft)",
                cfg.weft_bin.display()
            )));
        }
        if cfg.haproxy && cfg.sidecars > cfg.haproxy_slots {
            return Err(TestkitError::Invalid(format!(
                "{} sidecars but only {} haproxy slots",
                cfg.sidecars, cfg.haproxy_slots
            )));
        }
        if cfg.haproxy && crate::haproxy::haproxy_bin().is_none() {
            return Err(TestkitError::NoHaproxy);
        }
        let dir = match &cfg.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                Dir::Given(d.clone())
            }
            None => Dir::Temp(tempfile::Builder::new().prefix("weft-cluster-").tempdir()?),
        };
        let (pg, database_url) = match &cfg.database_url {
            Some(url) => (None, url.clone()),
            None => {
                let pg = PgServer::start()?;
                let url = block_on(pg.create_database())??;
                (Some(pg), url)
            }
        };
        let mut c = Self {
            cfg,
            placement: Vec::new(),
            sidecars: Vec::new(),
            haproxy: None,
            proxy_rt: None,
            database_url,
            pg,
            dir,
        };
        if c.cfg.tls {
            c.make_certs()?;
        }
        c.start_placement()?;
        let n = c.cfg.sidecars;
        c.sidecars = (0..n).map(|_| SidecarNode::new()).collect();
        // Spawn all, then wait: the sidecars start in parallel.
        for i in 0..n {
            c.spawn_sidecar(i, false)?;
        }
        for i in 0..n {
            c.await_sidecar(i)?;
        }
        if c.cfg.haproxy {
            let h = Haproxy::start(c.dir.path(), c.cfg.haproxy_slots, c.cfg.ready_timeout)?;
            c.haproxy = Some(h);
            for i in 0..n {
                c.publish(i)?;
            }
        }
        Ok(c)
    }

    /// Where `tls` put the certificates (`ca/` holds the CA's key, for issuing more).
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Runs `weft certs …` (e.g. to issue a certificate for a test's own identity).
    pub fn certs(&self, args: &[&str]) -> Result<()> {
        let out = self
            .weft()
            .arg("certs")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(TestkitError::Command {
                what: format!("weft certs {}", args.join(" ")),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }

    /// The `--tls-*` flags of the identity in `DIR/certs/NAME`.
    pub fn tls_flags(&self, name: &str) -> Vec<String> {
        let d = self.certs_dir().join(name);
        let f = |file: &str| d.join(file).display().to_string();
        vec![
            "--tls-cert".into(),
            f("tls.crt"),
            "--tls-key".into(),
            f("tls.key"),
            "--tls-ca".into(),
            f("ca.crt"),
        ]
    }

    fn make_certs(&mut self) -> Result<()> {
        let base = self.certs_dir();
        let ca = base.join("ca").display().to_string();
        let out = |n: &str| base.join(n).display().to_string();
        self.certs(&["ca", "--out", &ca])?;
        self.certs(&["placement", "--ca", &ca, "--out", &out("placement")])?;
        let app = self.cfg.app_id.clone();
        self.certs(&[
            "sidecar",
            "--app-id",
            &app,
            "--ca",
            &ca,
            "--out",
            &out("sidecar"),
        ])?;
        self.certs(&["admin", "--ca", &ca, "--out", &out("admin")])?;
        let placement = self.tls_flags("placement");
        self.cfg.placement_args.extend(placement);
        let sidecar = self.tls_flags("sidecar");
        self.cfg.sidecar_args.extend(sidecar);
        self.cfg.admin_args = self.tls_flags("admin");
        Ok(())
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.cfg.ready_timeout
    }

    fn weft(&self) -> Command {
        let mut cmd = Command::new(&self.cfg.weft_bin);
        // Our flags must decide: no WEFT_* setting of the caller's shell leaks in.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("WEFT_") {
                cmd.env_remove(k);
            }
        }
        cmd.env_remove("DAPR_API_TOKEN");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.envs(self.cfg.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    // ------------------------------------------------------------------------- placement

    fn start_placement(&mut self) -> Result<()> {
        let mut last = None;
        // A port taken between our probe and the node's bind fails that node: start the whole
        // group again on new ports (the initial cluster names every address).
        for _ in 0..3 {
            for n in &mut self.placement {
                if let Some(p) = n.proc.as_mut() {
                    let _ = p.kill();
                }
            }
            let base = self
                .dir
                .path()
                .join(format!("placement-{}", uuid::Uuid::new_v4().simple()));
            self.placement = (1..=self.cfg.placement_nodes as u64)
                .map(|id| {
                    Ok(PlacementNode {
                        id,
                        addr: format!("127.0.0.1:{}", free_port()?),
                        data: base.join(format!("node{id}")),
                        proc: None,
                    })
                })
                .collect::<Result<_>>()?;
            let started = (0..self.placement.len())
                .rev()
                .try_for_each(|i| self.spawn_placement(i))
                .and_then(|()| (0..self.placement.len()).try_for_each(|i| self.await_placement(i)));
            match started {
                Ok(()) => {
                    self.leader(self.cfg.ready_timeout)?;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three attempts"))
    }

    fn initial_cluster(&self) -> String {
        self.placement
            .iter()
            .map(|n| format!("{}={}", n.id, n.addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn_placement(&mut self, i: usize) -> Result<()> {
        let initial = self.initial_cluster();
        let mut cmd = self.weft();
        let n = &self.placement[i];
        cmd.args(["placement", "--id", &n.id.to_string(), "--listen", &n.addr])
            .arg("--data-dir")
            .arg(&n.data);
        if self.placement.len() > 1 {
            cmd.args(["--initial-cluster", &initial]);
        }
        cmd.args(&self.cfg.placement_args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info,openraft=warn");
        }
        let name = Target::Placement(i).to_string();
        let proc = Proc::spawn(&name, cmd, &self.dir.path().join(&name))?;
        self.placement[i].proc = Some(proc);
        Ok(())
    }

    fn await_placement(&mut self, i: usize) -> Result<()> {
        let deadline = self.deadline();
        let proc = self.placement[i].proc.as_mut().expect("spawned");
        proc.wait_line("placement node listening", deadline, |l| {
            l.starts_with("placement node ") && l.contains(" listening on ")
        })?;
        Ok(())
    }

    /// Placement addresses, comma-separated (every node, running or not: a sidecar tries each).
    pub fn placement_addrs(&self) -> String {
        self.placement
            .iter()
            .map(|n| n.addr.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn running_placement_addrs(&mut self) -> Vec<String> {
        self.placement
            .iter_mut()
            .filter_map(|n| {
                let up = n.proc.as_mut().is_some_and(|p| p.running() && !p.paused());
                up.then(|| n.addr.clone())
            })
            .collect()
    }

    /// `weft cluster status --output json` against the running placement nodes.
    pub fn cluster_status(&mut self) -> Result<Value> {
        let addrs = self.running_placement_addrs();
        if addrs.is_empty() {
            return Err(TestkitError::NotRunning("every placement node".into()));
        }
        let out = self
            .weft()
            .args(["cluster", "status", "--output", "json", "--placement"])
            .arg(addrs.join(","))
            .args(["--timeout-ms", "2000"])
            .args(&self.cfg.admin_args)
            .stdin(std::process::Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(TestkitError::Command {
                what: "weft cluster status".into(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        serde_json::from_slice(&out.stdout).map_err(|e| TestkitError::Command {
            what: "weft cluster status (JSON)".into(),
            detail: e.to_string(),
        })
    }

    /// Index of the placement leader, once a running node leads and reports itself as leader.
    pub fn leader(&mut self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.cluster_status() {
                Ok(s) => {
                    let addr = s["leader"]["address"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let running = self.running_placement_addrs();
                    let leads = s["placement_nodes"].as_array().is_some_and(|ns| {
                        ns.iter().any(|n| {
                            n["address"] == addr.as_str()
                                && n["reachable"] == true
                                && n["state"].as_str().is_some_and(|st| st.contains("Leader"))
                        })
                    });
                    if leads && running.contains(&addr) {
                        return Ok(self
                            .placement
                            .iter()
                            .position(|n| n.addr == addr)
                            .expect("running address is a node"));
                    }
                    s.to_string()
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(TestkitError::Timeout {
                    what: "a placement leader".into(),
                    secs: timeout.as_secs_f64(),
                    detail: format!(" (last status: {last})"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // ------------------------------------------------------------------------- sidecars

    fn spawn_sidecar(&mut self, i: usize, same_ports: bool) -> Result<()> {
        let (grpc, http, internal) = match (&self.sidecars[i].addrs, same_ports) {
            (Some(a), true) => (port_of(&a.grpc)?, port_of(&a.http)?, port_of(&a.internal)?),
            _ => (0, 0, 0),
        };
        let placement = self.sidecar_placement_addrs(i)?;
        let mut cmd = self.weft();
        cmd.args(["sidecar", "--database-url", &self.database_url])
            .args(["--placement", &placement])
            .args(["--app-id", &self.app_of(i)])
            .args(["--grpc-port", &grpc.to_string()])
            .args(["--http-port", &http.to_string()])
            .args(["--internal-port", &internal.to_string()])
            .args(["--listen-address", "127.0.0.1"])
            .args(["--advertise-address", "127.0.0.1"])
            .args(&self.cfg.sidecar_args);
        let name = Target::Sidecar(i).to_string();
        let proc = Proc::spawn(&name, cmd, &self.dir.path().join(&name))?;
        self.sidecars[i].proc = Some(proc);
        self.sidecars[i].starts += 1;
        Ok(())
    }

    /// The `--placement` list of sidecar `i`: the nodes themselves, or its own proxies in front
    /// of them (created on its first start).
    fn sidecar_placement_addrs(&mut self, i: usize) -> Result<String> {
        if !self.cfg.placement_proxies {
            return Ok(self.placement_addrs());
        }
        if self.sidecars[i].proxies.is_empty() {
            if self.proxy_rt.is_none() {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("placement-proxy")
                    .enable_all()
                    .build()?;
                self.proxy_rt = Some(rt);
            }
            let rt = self.proxy_rt.as_ref().expect("just set").handle().clone();
            self.sidecars[i].proxies = self
                .placement
                .iter()
                .map(|n| TcpProxy::start(&rt, &n.addr))
                .collect::<Result<_>>()?;
        }
        Ok(self.sidecars[i]
            .proxies
            .iter()
            .map(TcpProxy::addr)
            .collect::<Vec<_>>()
            .join(","))
    }

    fn await_sidecar(&mut self, i: usize) -> Result<()> {
        let deadline = self.deadline();
        let proc = self.sidecars[i].proc.as_mut().expect("spawned");
        let line = proc.wait_line(
            "`weft sidecar ready grpc=… http=… internal=…`",
            deadline,
            |l| parse_ready_line(l).is_some(),
        )?;
        self.sidecars[i].addrs = parse_ready_line(&line);
        Ok(())
    }

    /// Puts sidecar `i` into HAProxy's rotation (no-op without HAProxy).
    fn publish(&mut self, i: usize) -> Result<()> {
        let (Some(h), Some(a)) = (&self.haproxy, &self.sidecars[i].addrs) else {
            return Ok(());
        };
        h.set_slot(i, port_of(&a.grpc)?, port_of(&a.http)?)
    }

    /// Starts one more sidecar (scale up); returns its index.
    /// The app sidecar `i` runs.
    pub fn app_of(&self, i: usize) -> String {
        self.cfg
            .sidecar_apps
            .get(i)
            .cloned()
            .unwrap_or_else(|| self.cfg.app_id.clone())
    }

    /// Starts one more sidecar, of `app` (default: the cluster's `app_id`).
    pub fn add_sidecar_of(&mut self, app: Option<&str>) -> Result<usize> {
        if let Some(a) = app {
            let i = self.sidecars.len();
            while self.cfg.sidecar_apps.len() < i {
                let d = self.cfg.app_id.clone();
                self.cfg.sidecar_apps.push(d);
            }
            self.cfg.sidecar_apps.truncate(i);
            self.cfg.sidecar_apps.push(a.to_string());
        }
        self.add_sidecar()
    }

    pub fn add_sidecar(&mut self) -> Result<usize> {
        let i = self.sidecars.len();
        if self.haproxy.is_some() && i >= self.cfg.haproxy_slots {
            return Err(TestkitError::Invalid(format!(
                "haproxy has {} slots, all used",
                self.cfg.haproxy_slots
            )));
        }
        self.sidecars.push(SidecarNode::new());
        self.spawn_sidecar(i, false)?;
        self.await_sidecar(i)?;
        self.publish(i)?;
        Ok(i)
    }

    pub fn sidecar_count(&self) -> usize {
        self.sidecars.len()
    }

    /// The addresses sidecar `i` printed when it last became ready.
    pub fn sidecar(&self, i: usize) -> Option<&SidecarAddrs> {
        self.sidecars.get(i)?.addrs.as_ref()
    }

    /// HAProxy's gRPC and HTTP frontends (`127.0.0.1:port`).
    pub fn balancer(&self) -> Option<(String, String)> {
        self.haproxy.as_ref().map(|h| {
            (
                format!("127.0.0.1:{}", h.grpc_port),
                format!("127.0.0.1:{}", h.http_port),
            )
        })
    }

    pub fn haproxy(&self) -> Option<&Haproxy> {
        self.haproxy.as_ref()
    }

    /// The throwaway PostgreSQL (None when the config named a database), e.g. to crash-restart it.
    pub fn postgres(&self) -> Option<&PgServer> {
        self.pg.as_ref()
    }

    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    // ------------------------------------------------------------------------- reporting

    /// Everything a test needs to know, as JSON (the `weft-cluster` driver's `status` reply).
    pub fn describe(&mut self) -> Value {
        let mut placement = Vec::new();
        for i in 0..self.placement.len() {
            let t = Target::Placement(i);
            let (running, paused, pid) = self.proc_state(t);
            let n = &self.placement[i];
            placement.push(json!({
                "index": i, "id": n.id, "addr": n.addr, "running": running, "paused": paused,
                "pid": pid,
                "log": self.dir.path().join(format!("{t}.stderr.log")),
            }));
        }
        let mut sidecars = Vec::new();
        for i in 0..self.sidecars.len() {
            let t = Target::Sidecar(i);
            let (running, paused, pid) = self.proc_state(t);
            let app = self.app_of(i);
            let n = &self.sidecars[i];
            sidecars.push(json!({
                "index": i, "app_id": app, "running": running, "paused": paused, "pid": pid,
                "starts": n.starts,
                "grpc": n.addrs.as_ref().map(|a| a.grpc.clone()),
                "http": n.addrs.as_ref().map(|a| a.http.clone()),
                "internal": n.addrs.as_ref().map(|a| a.internal.clone()),
                "placement_proxies": n.proxies.iter().map(TcpProxy::describe).collect::<Vec<_>>(),
                "log": self.dir.path().join(format!("{t}.stderr.log")),
            }));
        }
        let haproxy = if self.haproxy.is_some() {
            let (running, _, pid) = self.proc_state(Target::Haproxy);
            let (grpc, http) = self.balancer().expect("haproxy");
            json!({"grpc": grpc, "http": http, "running": running, "pid": pid,
                   "log": self.dir.path().join("haproxy.stderr.log")})
        } else {
            Value::Null
        };
        json!({
            "database_url": self.database_url,
            "placement_addrs": self.placement_addrs(),
            "dir": self.dir.path(),
            "placement": placement,
            "sidecars": sidecars,
            "haproxy": haproxy,
            "app_id": self.cfg.app_id,
            "certs_dir": self.cfg.tls.then(|| self.certs_dir()),
        })
    }

    fn proc_state(&mut self, t: Target) -> (bool, bool, Option<u32>) {
        match self.proc_mut(t) {
            Ok(p) => {
                let running = p.running();
                (
                    running,
                    running && p.paused(),
                    running.then(|| p.pid()).flatten(),
                )
            }
            Err(_) => (false, false, None),
        }
    }

    /// Stderr tails of every process (for a failing test's report).
    pub fn logs(&self, per_process: usize) -> String {
        let mut out = String::new();
        let mut names: Vec<String> = (0..self.placement.len())
            .map(|i| Target::Placement(i).to_string())
            .chain((0..self.sidecars.len()).map(|i| Target::Sidecar(i).to_string()))
            .collect();
        if self.haproxy.is_some() {
            names.push("haproxy".into());
        }
        for name in names {
            let p = self.dir.path().join(format!("{name}.stderr.log"));
            let s = std::fs::read_to_string(&p).unwrap_or_default();
            let start = s.len().saturating_sub(per_process);
            let start = (start..s.len())
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(s.len());
            out.push_str(&format!(
                "--- {name} ({}) ---\n{}\n",
                p.display(),
                &s[start..]
            ));
        }
        out
    }

    /// SIGKILLs every process now (also done on drop).
    pub fn shutdown(&mut self) {
        if let Some(h) = self.haproxy.as_mut() {
            let _ = h.proc().kill();
        }
        for n in &mut self.sidecars {
            if let Some(p) = n.proc.as_mut() {
                let _ = p.kill();
            }
        }
        for n in &mut self.placement {
            if let Some(p) = n.proc.as_mut() {
                let _ = p.kill();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(rt) = self.proxy_rt.take() {
            rt.shutdown_background(); // may be dropped inside another runtime
        }
    }
}

/// A retried start is not an error worth a panic; leave a trace on stderr for the log reader.
fn note_retry(e: &TestkitError) {
    eprintln!("weft-testkit: start failed, retrying: {e}");
}

/// Runs one future on a private current-thread runtime (the launcher is synchronous).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_is_parsed_with_every_address() {
        let a = parse_ready_line(
            "weft sidecar ready grpc=127.0.0.1:1 http=127.0.0.1:2 internal=127.0.0.1:3",
        )
        .unwrap();
        assert_eq!(a.grpc, "127.0.0.1:1");
        assert_eq!(a.http, "127.0.0.1:2");
        assert_eq!(a.internal, "127.0.0.1:3");
        assert!(parse_ready_line("weft sidecar ready grpc=127.0.0.1:1 http=127.0.0.1:2").is_none());
        assert!(parse_ready_line("weft dev ready grpc=a http=b internal=c").is_none());
        assert_eq!(port_of("127.0.0.1:4242").unwrap(), 4242);
        assert!(port_of("nohost").is_err());
    }
}
