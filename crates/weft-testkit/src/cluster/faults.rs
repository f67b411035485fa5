//! Faults of a running [`Cluster`]: signals to its processes (SIGKILL, SIGSTOP/SIGCONT,
//! SIGTERM), restarts, a placement node losing its data, and cutting one sidecar from placement
//! through its proxies.

use std::time::{Duration, Instant};

use super::{Cluster, Result, Target, note_retry};
use crate::error::TestkitError;
use crate::haproxy::Haproxy;
use crate::process::{Proc, Signal};
use crate::proxy::ProxyMode;

impl Cluster {
    pub(super) fn proc_mut(&mut self, t: Target) -> Result<&mut Proc> {
        let slot = match t {
            Target::Placement(i) => self.placement.get_mut(i).map(|n| &mut n.proc),
            Target::Sidecar(i) => self.sidecars.get_mut(i).map(|n| &mut n.proc),
            Target::Haproxy => {
                return self
                    .haproxy
                    .as_mut()
                    .map(Haproxy::proc)
                    .ok_or_else(|| TestkitError::Invalid("no haproxy in this cluster".into()));
            }
        };
        slot.ok_or_else(|| TestkitError::Invalid(format!("no {t}")))?
            .as_mut()
            .ok_or_else(|| TestkitError::NotRunning(t.to_string()))
    }

    pub fn pid(&mut self, t: Target) -> Result<u32> {
        let p = self.proc_mut(t)?;
        p.pid()
            .ok_or_else(|| TestkitError::NotRunning(t.to_string()))
    }

    pub fn running(&mut self, t: Target) -> bool {
        self.proc_mut(t).is_ok_and(|p| p.running())
    }

    /// SIGKILL (a crash) and reap.
    pub fn kill(&mut self, t: Target) -> Result<()> {
        let p = self.proc_mut(t)?;
        if !p.running() {
            return Err(TestkitError::NotRunning(t.to_string()));
        }
        p.kill()
    }

    /// SIGSTOP: the process keeps its sockets but does nothing.
    pub fn pause(&mut self, t: Target) -> Result<()> {
        self.proc_mut(t)?.signal(Signal::Stop)
    }

    /// SIGCONT after `pause`.
    pub fn resume(&mut self, t: Target) -> Result<()> {
        self.proc_mut(t)?.signal(Signal::Cont)
    }

    /// Deletes the data directory of a stopped placement node (a node that lost its disk); the
    /// next `restart` starts it empty. A lone node then initialises a brand-new cluster.
    pub fn wipe_placement(&mut self, i: usize) -> Result<()> {
        let t = Target::Placement(i);
        if self.running(t) {
            return Err(TestkitError::AlreadyRunning(t.to_string()));
        }
        let n = self
            .placement
            .get(i)
            .ok_or_else(|| TestkitError::Invalid(format!("no {t}")))?;
        match std::fs::remove_dir_all(&n.data) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Cuts sidecar `i` from every placement node (PostgreSQL, its peers and its workers stay
    /// reachable): `Refuse` resets its placement connections and refuses new ones, `Blackhole`
    /// stalls them. Needs `placement_proxies`.
    pub fn cut_placement(&mut self, i: usize, mode: ProxyMode) -> Result<()> {
        self.set_placement_proxies(i, mode)
    }

    /// Undoes `cut_placement`.
    pub fn heal_placement(&mut self, i: usize) -> Result<()> {
        self.set_placement_proxies(i, ProxyMode::Open)
    }

    fn set_placement_proxies(&mut self, i: usize, mode: ProxyMode) -> Result<()> {
        let node = self
            .sidecars
            .get(i)
            .ok_or_else(|| TestkitError::Invalid(format!("no sidecar{i}")))?;
        if node.proxies.is_empty() {
            return Err(TestkitError::Invalid(
                "sidecars reach placement directly (start with placement_proxies)".into(),
            ));
        }
        node.proxies.iter().for_each(|p| p.set_mode(mode));
        Ok(())
    }

    /// SIGTERM and wait up to `timeout` for the exit; returns the exit code (None = by signal).
    /// On timeout the process is SIGKILLed and this fails.
    pub fn terminate(&mut self, t: Target, timeout: Duration) -> Result<Option<i32>> {
        Ok(self.proc_mut(t)?.terminate(timeout)?.code())
    }

    /// Starts a stopped placement node or sidecar again, on the same addresses (a sidecar on the
    /// same ports, so its direct workers reconnect; `fresh_ports` picks new ones). A port still
    /// held by the dying process is retried until the ready deadline.
    pub fn restart(&mut self, t: Target, fresh_ports: bool) -> Result<()> {
        if self.running(t) {
            return Err(TestkitError::AlreadyRunning(t.to_string()));
        }
        let deadline = self.deadline();
        loop {
            let attempt = match t {
                Target::Placement(i) if i < self.placement.len() => self
                    .spawn_placement(i)
                    .and_then(|()| self.await_placement(i)),
                Target::Sidecar(i) if i < self.sidecars.len() => self
                    .spawn_sidecar(i, !fresh_ports)
                    .and_then(|()| self.await_sidecar(i))
                    .and_then(|()| self.publish(i)),
                Target::Haproxy => {
                    return Err(TestkitError::Invalid(
                        "haproxy is not restarted (its ports would change)".into(),
                    ));
                }
                _ => return Err(TestkitError::Invalid(format!("no {t}"))),
            };
            match attempt {
                Ok(()) => return Ok(()),
                Err(e @ TestkitError::Command { .. }) if Instant::now() < deadline => {
                    // exited before its ready line (e.g. address in use): try again shortly
                    let _ = self.proc_mut(t).map(|p| p.kill());
                    note_retry(&e);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
