//! The one error type of the test kit (PostgreSQL server, cluster launcher, HAProxy).

#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error(
        "PostgreSQL binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin"
    )]
    NoPostgres,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("postgres: {0}")]
    Pg(#[from] tokio_postgres::Error),
    #[error("timed out after {secs:.1}s waiting for {what}{detail}")]
    Timeout {
        what: String,
        secs: f64,
        detail: String,
    },
    #[error("{0} is not running")]
    NotRunning(String),
    #[error("{0} is already running")]
    AlreadyRunning(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "haproxy not found on PATH (Debian: `apt-get install haproxy`; scripts/test.sh installs it)"
    )]
    NoHaproxy,
}
