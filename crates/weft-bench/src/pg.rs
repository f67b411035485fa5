//! A throwaway PostgreSQL server for `--postgres`, with durable settings.
//!
//! `weft-testkit`'s launcher runs with `fsync=off` (right for tests, wrong for a benchmark whose
//! targets are stated "with fsync on"), so this one starts its own from the same binaries
//! (found with [`weft_testkit::postgres_bin_dir`]): `initdb` into a temp directory, `pg_ctl start`
//! on a free port taken by binding `127.0.0.1:0`, running as the `postgres` user when we are root.
//! Dropping the server stops it (`-m immediate`) and deletes its files; a small watchdog shell
//! does the same if this process dies without running destructors.

use std::net::TcpListener;
use std::os::unix::fs::chown;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};

/// Server settings the benchmark uses; printed with the results and stated in the docs.
pub fn settings(fsync: bool) -> Vec<(&'static str, &'static str)> {
    let on = if fsync { "on" } else { "off" };
    vec![
        ("fsync", on),
        ("synchronous_commit", on),
        ("full_page_writes", on),
        ("wal_sync_method", "fdatasync"),
        ("shared_buffers", "256MB"),
        ("max_connections", "100"),
    ]
}

/// A running throwaway server.
#[derive(Debug)]
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    watchdog: Option<Child>,
}

impl PgServer {
    /// `initdb` + `pg_ctl start` (a few seconds). Blocking.
    pub fn start(fsync: bool) -> anyhow::Result<Self> {
        let bin = weft_testkit::postgres_bin_dir()
            .context("PostgreSQL binaries (initdb, pg_ctl) not found on PATH")?;
        let dir = tempfile::Builder::new()
            .prefix("weft-bench-pg-")
            .tempdir()?
            .keep();
        let as_postgres = is_root();
        let mut s = Self {
            dir,
            bin,
            port: 0,
            as_postgres,
            watchdog: None,
        };
        if as_postgres {
            let uid = id_of("-u")?;
            let gid = id_of("-g")?;
            chown(&s.dir, Some(uid), Some(gid))?;
        }
        let data = s.data_dir();
        s.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ],
        )?;
        s.watchdog = Some(s.spawn_watchdog()?);
        let mut opts = String::new();
        for (k, v) in settings(fsync) {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        // The port is free when we look; another process could take it first, so retry.
        let mut last = None;
        for _ in 0..5 {
            s.port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let o = format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}{opts}",
                s.port,
                s.dir.display()
            );
            let log = s.dir.join("server.log").display().to_string();
            match s.run(
                "pg_ctl",
                &["-D", &data, "-l", &log, "-w", "-t", "60", "-o", &o, "start"],
            ) {
                Ok(()) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("pg_ctl start failed")))
    }

    /// Connection URL of the `postgres` database as the superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = self
            .command(tool)
            .args(args)
            .stdin(Stdio::null())
            .current_dir(&self.dir)
            .output()
            .with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!(
                "{tool} {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Stops the server and removes its files once this process is gone, even after SIGKILL.
    fn spawn_watchdog(&self) -> anyhow::Result<Child> {
        Ok(weft_testkit::spawn_watchdog(
            &self.bin.join("pg_ctl"),
            &self.data_dir(),
            &self.dir,
            self.as_postgres,
        )?)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn id_of(flag: &str) -> anyhow::Result<u32> {
    let out = Command::new("id").args([flag, "postgres"]).output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("no OS user `postgres`; create it to run PostgreSQL as root")
}
