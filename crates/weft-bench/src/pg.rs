//! The throwaway PostgreSQL server of `--postgres`: weft-testkit's launcher with durable settings
//! (`fsync` on unless `--pg-no-fsync`), since the benchmark's targets are stated "with fsync on".

use anyhow::Context as _;
use weft_testkit::PgLaunch;

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

/// A running throwaway server; dropping it stops the server and deletes its files.
#[derive(Debug)]
pub struct PgServer(weft_testkit::PgServer);

impl PgServer {
    /// `initdb` + `pg_ctl start` with [`settings`] (a few seconds). Blocking.
    pub fn start(fsync: bool) -> anyhow::Result<Self> {
        let settings = settings(fsync)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let launch = PgLaunch {
            fsync,
            settings,
            tls: None,
        };
        let server = weft_testkit::PgServer::launch(launch).context("throwaway PostgreSQL")?;
        Ok(Self(server))
    }

    /// Connection URL of the `postgres` database as the superuser.
    pub fn url(&self) -> String {
        self.0.url("postgres")
    }
}
