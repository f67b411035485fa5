//! HAProxy (Debian package `haproxy`) as the L4 load balancer in front of the sidecars: one TCP
//! frontend for gRPC and one for HTTP, round robin over a fixed number of server slots that are
//! filled and emptied at run time through the admin socket (so scaling never restarts it).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::TestkitError;
use crate::process::Proc;

type Result<T, E = TestkitError> = std::result::Result<T, E>;

/// The two balanced protocols; each is a frontend and a backend named after it.
pub const BACKENDS: [&str; 2] = ["grpc", "http"];

/// `haproxy` on PATH.
pub fn haproxy_bin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file())
}

/// The configuration file. Slots start in maintenance on a placeholder address; `set_slot`
/// points one at a sidecar. Health checks every 300 ms take a dead sidecar out within about a
/// second; `redispatch` + `retries` send a refused connection to another server.
pub fn render_config(socket: &Path, grpc_port: u16, http_port: u16, slots: usize) -> String {
    let mut s = format!(
        "global\n\
         \x20 maxconn 4096\n\
         \x20 stats socket {sock} mode 600 level admin\n\
         \x20 log stderr format raw local0 info\n\
         defaults\n\
         \x20 mode tcp\n\
         \x20 log global\n\
         \x20 option tcplog\n\
         \x20 option redispatch\n\
         \x20 retries 3\n\
         \x20 timeout connect 2s\n\
         \x20 timeout client 10m\n\
         \x20 timeout server 10m\n\
         \x20 default-server inter 300ms fastinter 200ms fall 2 rise 1\n\
         frontend grpc_in\n\
         \x20 bind 127.0.0.1:{grpc_port}\n\
         \x20 default_backend grpc\n\
         frontend http_in\n\
         \x20 bind 127.0.0.1:{http_port}\n\
         \x20 default_backend http\n",
        sock = socket.display()
    );
    for backend in BACKENDS {
        s.push_str(&format!("backend {backend}\n  balance roundrobin\n"));
        for i in 0..slots {
            s.push_str(&format!("  server s{i} 127.0.0.1:9 check disabled\n"));
        }
    }
    s
}

/// A running HAProxy.
#[derive(Debug)]
pub struct Haproxy {
    pub grpc_port: u16,
    pub http_port: u16,
    pub slots: usize,
    socket: PathBuf,
    config: PathBuf,
    proc: Proc,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Haproxy {
    /// Starts `haproxy -db -f <file>` in `dir` with `slots` empty server slots per backend.
    /// HAProxy needs concrete ports: take free ones, and if another process binds one first
    /// (haproxy exits), try again with new ones.
    pub fn start(dir: &Path, slots: usize, timeout: Duration) -> Result<Self> {
        let bin = haproxy_bin().ok_or(TestkitError::NoHaproxy)?;
        let socket = dir.join("haproxy.sock");
        let config = dir.join("haproxy.cfg");
        let mut last = None;
        for _attempt in 0..5 {
            let (grpc_port, http_port) = (free_port()?, free_port()?);
            if grpc_port == http_port {
                continue;
            }
            std::fs::write(&config, render_config(&socket, grpc_port, http_port, slots))?;
            let _ = std::fs::remove_file(&socket);
            let mut cmd = Command::new(&bin);
            cmd.arg("-db").arg("-f").arg(&config);
            let proc = Proc::spawn("haproxy", cmd, &dir.join("haproxy"))?;
            let mut h = Self {
                grpc_port,
                http_port,
                slots,
                socket: socket.clone(),
                config: config.clone(),
                proc,
            };
            match h.wait_ready(timeout) {
                Ok(()) => return Ok(h),
                Err(e) => {
                    let _ = h.proc.kill();
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::Invalid("no free port pair".into())))
    }

    /// Ready = alive, both frontends accept and the admin socket answers.
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.proc.running() {
                return Err(TestkitError::Command {
                    what: "haproxy".into(),
                    detail: format!("exited before serving\n{}", self.proc.stderr_tail(3000)),
                });
            }
            let accepts = |port| {
                TcpStream::connect_timeout(
                    &([127, 0, 0, 1], port).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
            };
            if accepts(self.grpc_port)
                && accepts(self.http_port)
                && self.admin("show info").is_ok_and(|r| r.contains("Pid:"))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::Timeout {
                    what: "haproxy to serve".into(),
                    secs: timeout.as_secs_f64(),
                    detail: format!("\n{}", self.proc.stderr_tail(3000)),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One command on the admin socket; returns HAProxy's answer.
    pub fn admin(&self, command: &str) -> Result<String> {
        let mut s = UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    fn admin_ok(&self, command: &str) -> Result<()> {
        let reply = self.admin(command)?;
        let bad = [
            "Unknown",
            "No such",
            "Require",
            "not found",
            "invalid",
            "error",
        ];
        if bad
            .iter()
            .any(|b| reply.to_lowercase().contains(&b.to_lowercase()))
        {
            return Err(TestkitError::Command {
                what: format!("haproxy admin `{command}`"),
                detail: reply,
            });
        }
        Ok(())
    }

    /// Points slot `i` of both backends at a sidecar's gRPC and HTTP ports and enables it.
    pub fn set_slot(&self, i: usize, grpc_port: u16, http_port: u16) -> Result<()> {
        if i >= self.slots {
            return Err(TestkitError::Invalid(format!(
                "haproxy has {} server slots; sidecar {i} does not fit (raise `haproxy_slots`)",
                self.slots
            )));
        }
        for (backend, port) in BACKENDS.iter().zip([grpc_port, http_port]) {
            self.admin_ok(&format!(
                "set server {backend}/s{i} addr 127.0.0.1 port {port}"
            ))?;
            self.admin_ok(&format!("set server {backend}/s{i} state ready"))?;
        }
        Ok(())
    }

    /// Takes slot `i` out of rotation (used when a sidecar is removed for good).
    pub fn clear_slot(&self, i: usize) -> Result<()> {
        for backend in BACKENDS {
            self.admin_ok(&format!("set server {backend}/s{i} state maint"))?;
        }
        Ok(())
    }

    /// `show servers state` lines of one backend, for diagnostics.
    pub fn servers_state(&self) -> Result<String> {
        self.admin("show servers state")
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_both_frontends_and_every_slot_disabled() {
        let c = render_config(Path::new("/tmp/x.sock"), 1234, 5678, 3);
        assert!(c.contains("bind 127.0.0.1:1234\n  default_backend grpc"));
        assert!(c.contains("bind 127.0.0.1:5678\n  default_backend http"));
        assert!(c.contains("mode tcp"));
        assert_eq!(c.matches("balance roundrobin").count(), 2);
        assert_eq!(c.matches("check disabled").count(), 6);
        assert!(c.contains("stats socket /tmp/x.sock mode 600 level admin"));
    }
}
