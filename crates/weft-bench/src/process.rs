//! The sidecar as a separate process (`weft dev` with every port 0), as SDK apps run it, and readers of a
//! process's resident memory and CPU time from `/proc/PID/…`.
//!
//! The child gets its own temp data directory (the SQLite file lives there unless a PostgreSQL
//! URL is given), logs at `warn` to a file in it, and is stopped by its PID (SIGTERM, then SIGKILL
//! after five seconds) when dropped.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// A running `weft dev` child process.
pub struct SidecarProcess {
    child: Child,
    /// `http://127.0.0.1:PORT` of its gRPC API.
    pub grpc_url: String,
    /// `127.0.0.1:PORT` of its HTTP API (`/metrics`).
    pub http_addr: String,
    _dir: tempfile::TempDir,
}

impl SidecarProcess {
    /// Starts `weft_bin dev` (plus `extra_args`) on ephemeral ports and waits (up to 60 s) for
    /// its ready line.
    pub fn start(
        weft_bin: &Path,
        database_url: Option<&str>,
        extra_args: &[String],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("weft-bench-dev-")
            .tempdir()?;
        let log = std::fs::File::create(dir.path().join("weft-dev.log"))?;
        let mut cmd = Command::new(weft_bin);
        cmd.arg("dev")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--grpc-port",
                "0",
                "--http-port",
                "0",
                "--placement-port",
                "0",
                "--internal-port",
                "0",
            ])
            .env("RUST_LOG", "warn")
            .env_remove("DAPR_API_TOKEN")
            .env_remove("WEFT_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.args(extra_args);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} dev", weft_bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        // Reads the ready line, then keeps draining stdout so the child never blocks on it.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && line.starts_with("weft dev ready") {
                    let _ = tx.send(line);
                    sent = true;
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log =
                    std::fs::read_to_string(dir.path().join("weft-dev.log")).unwrap_or_default();
                bail!("weft dev did not print its ready line within 60 s; its log:\n{log}");
            }
        };
        let grpc = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("grpc="))
            .with_context(|| format!("no grpc= in {line:?}"))?;
        let http = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http="))
            .with_context(|| format!("no http= in {line:?}"))?;
        Ok(Self {
            child,
            grpc_url: format!("http://{grpc}"),
            http_addr: http.to_string(),
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid())
    }

    /// User + system CPU seconds so far.
    pub fn cpu_secs(&self) -> anyhow::Result<f64> {
        cpu_secs(self.pid())
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        // SIGTERM by PID (graceful), then SIGKILL if it is still there after 5 s.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one gauge (without labels) from the sidecar's `GET /metrics` (plain HTTP/1.1, so the
/// benchmark needs no HTTP client); `None` if the gauge is not rendered.
pub async fn scrape_gauge(http_addr: &str, name: &str) -> anyhow::Result<Option<f64>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(http_addr),
    )
    .await
    .context("connecting for /metrics timed out")??;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {http_addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut body))
        .await
        .context("reading /metrics timed out")??;
    Ok(gauge_value(&String::from_utf8_lossy(&body), name))
}

/// The value of `name` in a Prometheus text rendering.
fn gauge_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

/// `VmRSS` of a process in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// User + system CPU seconds of a process (fields 14 and 15 of `/proc/PID/stat`).
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after it start past the last ')'.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(f.get(i)
            .with_context(|| format!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    // rest starts at field 3 (state): utime is field 14 → index 11, stime 15 → 12.
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The 1-minute load average, recorded next to every figure (the machine is shared).
pub fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The `weft` binary next to this executable (same target directory), if there is one.
pub fn default_weft_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("weft");
    p.exists().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_gauge_in_prometheus_text() {
        let text = "# TYPE weft_actors_in_memory gauge\nweft_actors_in_memory 12\nweft_actors_in_memory_x 3\n";
        assert_eq!(gauge_value(text, "weft_actors_in_memory"), Some(12.0));
        assert_eq!(gauge_value(text, "weft_other"), None);
    }

    #[test]
    fn reads_own_rss_and_cpu() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(cpu_secs(pid).unwrap() >= 0.0);
        assert!(load_avg() >= 0.0);
    }
}
