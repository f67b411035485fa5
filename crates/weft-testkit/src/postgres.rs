//! Throwaway PostgreSQL: `initdb` + `pg_ctl` on a free port with a private socket directory, run as
//! the `postgres` user when we are root (PostgreSQL refuses to run as root).

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// A user's own server for tests (a URL whose role may create databases).
pub const TEST_DATABASE_URL_ENV: &str = "WEFT_TEST_DATABASE_URL";

pub use crate::error::TestkitError;

type Result<T, E = TestkitError> = std::result::Result<T, E>;

/// Overrides where the PostgreSQL binaries are looked for (a directory without them counts as
/// "PostgreSQL not installed", which is how the SKIP / CI-failure path is exercised).
pub const PG_BIN_DIR_ENV: &str = "WEFT_TEST_PG_BIN_DIR";

/// The directory holding `initdb` and `pg_ctl`: `WEFT_TEST_PG_BIN_DIR`, else PATH, else Debian's
/// versioned directories.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(PG_BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        return (dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()).then_some(dir);
    }
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p).find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|d| d.join("initdb").is_file())
            .collect();
        dirs.sort();
        dirs.pop()
    })
}

fn is_root() -> bool {
    // /proc/self belongs to the effective uid; no libc dependency needed for one check.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// How [`PgServer::launch`] sets a server up. The default is a test server: fast, not durable.
#[derive(Debug, Clone, Default)]
pub struct PgLaunch {
    /// Durable: `initdb` syncs its files and the server runs with `fsync` and `full_page_writes`
    /// on (PostgreSQL's defaults). Off by default: tests need speed, and a machine crash takes
    /// their throwaway data along anyway.
    pub fsync: bool,
    /// Further server settings (`-c name=value`); one the launcher sets itself is replaced.
    pub settings: Vec<(String, String)>,
    /// Serve TLS (`ssl=on`) with this certificate and key (PEM). Plaintext connections are still
    /// accepted: the client's `sslmode` decides.
    pub tls: Option<(String, String)>,
}

/// A running throwaway server. Dropping it stops the server and deletes its files; a watchdog
/// process does the same if the test binary dies without running destructors.
#[derive(Debug)]
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    watchdog: Option<Child>,
    launch: PgLaunch,
}

impl PgServer {
    /// Initialises and starts a new test server (≈ 1 s). Blocking.
    pub fn start() -> Result<Self> {
        Self::launch(PgLaunch::default())
    }

    /// Like [`PgServer::start`], with `ssl=on` and this certificate and key (PEM).
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Result<Self> {
        Self::launch(PgLaunch {
            tls: Some((cert_pem.into(), key_pem.into())),
            ..PgLaunch::default()
        })
    }

    /// Initialises and starts a new server as `launch` says. Blocking.
    pub fn launch(launch: PgLaunch) -> Result<Self> {
        let bin = postgres_bin_dir().ok_or(TestkitError::NoPostgres)?;
        let tmp = tempfile::Builder::new().prefix("weft-pg-").tempdir()?;
        let dir = tmp.keep();
        let as_postgres = is_root();
        let mut server = Self {
            dir,
            bin,
            port: 0,
            as_postgres,
            watchdog: None,
            launch,
        };
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            chown(&server.dir, Some(uid), Some(gid))?;
        }
        let data = server.data_dir();
        let mut initdb = vec![
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
        ];
        if !server.launch.fsync {
            initdb.push("--no-sync");
        }
        server.run("initdb", &initdb)?;
        if let Some((cert, key)) = &server.launch.tls {
            server.write_tls_files(cert, key)?;
        }
        server.watchdog = Some(server.spawn_watchdog()?);
        // The port is free when we look but another process may take it before PostgreSQL binds:
        // retry with a new one.
        let mut last = None;
        for _ in 0..5 {
            server.port = free_port()?;
            match server.start_again() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(TestkitError::NoPostgres))
    }

    /// PostgreSQL refuses a key file others can read, or one not owned by its user.
    fn write_tls_files(&self, cert: &str, key: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = self.dir.join("data");
        for (name, text, mode) in [("server.crt", cert, 0o644), ("server.key", key, 0o600)] {
            let path = data.join(name);
            std::fs::write(&path, text)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            if self.as_postgres {
                let (uid, gid) = postgres_ids()?;
                chown(&path, Some(uid), Some(gid))?;
            }
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection URL for database `db` as the superuser `postgres` (trust auth, no password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server abruptly (`pg_ctl -m immediate stop`, like a crash): open connections
    /// break, committed data stays.
    pub fn stop(&self) -> Result<()> {
        self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"],
        )
    }

    /// Starts the (stopped) server again on the same port and data directory.
    pub fn start_again(&self) -> Result<()> {
        let mut opts = format!("-p {}", self.port);
        for (k, v) in server_settings(&self.dir, &self.launch) {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        let log = self.dir.join("server.log");
        let r = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        );
        r.map_err(|e| TestkitError::Command {
            what: "pg_ctl start".into(),
            detail: format!("{e}\n--- server log ---\n{}", tail(&log)),
        })
    }

    /// Crash-restart: immediate stop, then start (crash recovery replays the WAL).
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Creates a fresh database and returns its URL.
    pub async fn create_database(&self) -> Result<String> {
        let name = fresh_db_name();
        create_database_at(&self.url("postgres"), &name).await?;
        Ok(self.url(&name))
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

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let out = self
            .command(tool)
            .args(args)
            .stdin(Stdio::null())
            .current_dir(&self.dir)
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(TestkitError::Command {
                what: format!("{tool} {}", args.join(" ")),
                detail: format!(
                    "{}\n{}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }

    fn spawn_watchdog(&self) -> Result<Child> {
        Ok(spawn_watchdog(
            &self.bin.join("pg_ctl"),
            &self.data_dir(),
            &self.dir,
            self.as_postgres,
        )?)
    }
}

/// The settings of a server in `dir`: the launcher's, then [`PgLaunch::settings`] (replacing
/// same names).
fn server_settings(dir: &Path, launch: &PgLaunch) -> Vec<(String, String)> {
    let mut own = vec![
        ("listen_addresses", "127.0.0.1".to_string()),
        ("unix_socket_directories", dir.display().to_string()),
        ("max_connections", "400".into()),
    ];
    if !launch.fsync {
        own.extend([("fsync", "off".into()), ("full_page_writes", "off".into())]);
    }
    if launch.tls.is_some() {
        own.extend([
            ("ssl", "on".into()),
            ("ssl_cert_file", "server.crt".into()),
            ("ssl_key_file", "server.key".into()),
        ]);
    }
    let mut all: Vec<(String, String)> = own.into_iter().map(|(k, v)| (k.into(), v)).collect();
    for (k, v) in &launch.settings {
        match all.iter_mut().find(|(name, _)| name == k) {
            Some(same) => same.1.clone_from(v),
            None => all.push((k.clone(), v.clone())),
        }
    }
    all
}

/// A shell loop that outlives this process by at most half a second: once it is gone (even by
/// SIGKILL) it stops the server in `data_dir` with `pg_ctl` and removes `dir`.
fn spawn_watchdog(
    pg_ctl: &Path,
    data_dir: &str,
    dir: &Path,
    as_postgres: bool,
) -> std::io::Result<Child> {
    let stop = format!(
        "{}{} -D {data_dir} -m immediate stop",
        if as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        },
        pg_ctl.display(),
    );
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        dir = dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.stop();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn postgres_ids() -> Result<(u32, u32)> {
    let out = Command::new("id").args(["-u", "postgres"]).output()?;
    let uid = parse_id(&out.stdout, "uid")?;
    let out = Command::new("id").args(["-g", "postgres"]).output()?;
    let gid = parse_id(&out.stdout, "gid")?;
    Ok((uid, gid))
}

fn parse_id(raw: &[u8], what: &str) -> Result<u32> {
    String::from_utf8_lossy(raw)
        .trim()
        .parse()
        .map_err(|_| TestkitError::Command {
            what: format!("id ({what} of user postgres)"),
            detail: "no OS user `postgres`; create it to run PostgreSQL as root".into(),
        })
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn fresh_db_name() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

async fn create_database_at(admin_url: &str, name: &str) -> Result<()> {
    let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(conn);
    // The name is generated by us (t_ + hex), so interpolating it is safe.
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// Replaces the database name in a `postgres://` URL or a key=value connection string.
fn with_database(url: &str, db: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let query_at = rest.find('?').map(|i| scheme_end + 3 + i);
        let (head, query) = match query_at {
            Some(q) => (&url[..q], &url[q..]),
            None => (url, ""),
        };
        let authority_end = head[scheme_end + 3..]
            .find('/')
            .map(|i| scheme_end + 3 + i)
            .unwrap_or(head.len());
        format!("{}/{db}{query}", &head[..authority_end])
    } else {
        format!("{url} dbname={db}")
    }
}

/// A fresh, empty database for one test. On a user's server (`WEFT_TEST_DATABASE_URL`) it is
/// dropped again when this value is dropped; a throwaway server just disappears at exit.
#[derive(Debug)]
pub struct TestDb {
    /// Where the database lives; pass it to the store.
    pub url: String,
    /// The server, when it is our throwaway one (None with `WEFT_TEST_DATABASE_URL`).
    pub server: Option<&'static PgServer>,
    /// (admin URL, database name) to drop on a user's server.
    cleanup: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.cleanup.take() else {
            return;
        };
        // Drop may run inside a runtime, so use a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

static SHARED: OnceLock<std::result::Result<PgServer, String>> = OnceLock::new();

/// The throwaway server of this test binary, started on first use.
pub fn shared_server() -> Result<&'static PgServer, String> {
    SHARED
        .get_or_init(|| PgServer::start().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

/// A fresh database on `WEFT_TEST_DATABASE_URL` if set, else on this binary's throwaway server.
///
/// When PostgreSQL is not installed: under `CI=true` this panics (the run must fail); otherwise it
/// prints a loud SKIP line straight to stderr (past the test harness's capture) and returns `None`.
pub async fn test_database() -> Option<TestDb> {
    if let Ok(admin) = std::env::var(TEST_DATABASE_URL_ENV) {
        let name = fresh_db_name();
        if let Err(e) = create_database_at(&admin, &name).await {
            panic!("{TEST_DATABASE_URL_ENV} is set but creating a test database failed: {e}");
        }
        return Some(TestDb {
            url: with_database(&admin, &name),
            server: None,
            cleanup: Some((admin, name)),
        });
    }
    if postgres_bin_dir().is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        if ci {
            panic!(
                "CI=true and PostgreSQL is not installed: {}",
                TestkitError::NoPostgres
            );
        }
        let _ = writeln!(
            std::io::stderr().lock(),
            "\n!!!!! SKIP: PostgreSQL binaries not found and {TEST_DATABASE_URL_ENV} unset; \
             PostgreSQL tests are NOT being run (install postgresql or set the URL) !!!!!\n"
        );
        return None;
    }
    let server = tokio::task::spawn_blocking(shared_server)
        .await
        .expect("starting PostgreSQL panicked");
    let server = match server {
        Ok(s) => s,
        Err(e) => panic!("starting the throwaway PostgreSQL failed: {e}"),
    };
    match server.create_database().await {
        Ok(url) => Some(TestDb {
            url,
            server: Some(server),
            cleanup: None,
        }),
        Err(e) => panic!("creating a test database failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced_in_both_url_forms() {
        assert_eq!(
            with_database("postgres://u:p@h:5/old?sslmode=disable", "t_1"),
            "postgres://u:p@h:5/t_1?sslmode=disable"
        );
        assert_eq!(with_database("postgresql://h", "t_1"), "postgresql://h/t_1");
        assert_eq!(
            with_database("host=h user=u", "t_1"),
            "host=h user=u dbname=t_1"
        );
    }

    #[test]
    fn launch_settings_replace_the_launchers_own() {
        fn get<'a>(s: &'a [(String, String)], k: &str) -> Vec<&'a str> {
            let v = s
                .iter()
                .filter(|(name, _)| name == k)
                .map(|(_, v)| v.as_str());
            v.collect()
        }
        let test = server_settings(Path::new("/d"), &PgLaunch::default());
        assert_eq!(get(&test, "fsync"), ["off"]);
        assert_eq!(get(&test, "unix_socket_directories"), ["/d"]);
        let durable = PgLaunch {
            fsync: true,
            settings: vec![
                ("max_connections".into(), "100".into()),
                ("shared_buffers".into(), "256MB".into()),
            ],
            tls: None,
        };
        let s = server_settings(Path::new("/d"), &durable);
        assert!(get(&s, "fsync").is_empty() && get(&s, "full_page_writes").is_empty());
        assert_eq!(get(&s, "max_connections"), ["100"]);
        assert_eq!(get(&s, "shared_buffers"), ["256MB"]);
    }

    #[tokio::test]
    async fn throwaway_server_serves_and_survives_a_crash_restart() {
        if postgres_bin_dir().is_none() {
            let _ = test_database().await; // fails under CI, prints SKIP otherwise
            return;
        }
        let server = tokio::task::spawn_blocking(PgServer::start)
            .await
            .unwrap()
            .unwrap();
        let url = server.create_database().await.unwrap();
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
            .await
            .unwrap();
        let server = tokio::task::spawn_blocking(move || server.restart().map(|()| server))
            .await
            .unwrap()
            .unwrap();
        assert!(
            c.simple_query("SELECT 1").await.is_err(),
            "old connection broke"
        );
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let x: i32 = c.query_one("SELECT x FROM t", &[]).await.unwrap().get(0);
        assert_eq!(x, 7, "committed data survives an immediate stop");
        drop(server);
    }

    #[tokio::test]
    async fn fresh_databases_per_test() {
        let Some(a) = test_database().await else {
            return;
        };
        let b = test_database().await.unwrap();
        assert_ne!(a.url, b.url);
    }
}
