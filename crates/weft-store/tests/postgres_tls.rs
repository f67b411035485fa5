//! PostgreSQL over TLS against a real server started with `ssl=on` (a throwaway from the local
//! binaries, its certificate for `localhost` from a CA made here): `sslmode=verify-full` connects
//! and the session is encrypted; a wrong CA or a wrong host name is refused at once, naming why.

use std::time::{Duration, Instant};
use weft_store::PgStore;
use weft_store::postgres::tls::prepare;
use weft_testkit::{PgServer, postgres_bin_dir};
use weft_tls::SpiffeId;
use weft_tls::certs::{issue, make_ca};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

#[test]
fn sslmode_is_honoured_with_rustls() {
    if postgres_bin_dir().is_none() {
        assert!(
            !in_ci(),
            "CI=true and the PostgreSQL server binaries are not installed"
        );
        eprintln!(
            "\n!!!!! SKIP: PostgreSQL binaries not installed; PostgreSQL TLS NOT tested !!!!!\n"
        );
        return;
    }
    let ca = make_ca("cluster.local", 1).unwrap();
    let id = SpiffeId::new("cluster.local", "default", "postgres").unwrap();
    let leaf = issue(&ca, &id, &["localhost".into()], 1).unwrap();
    let server = PgServer::start_with_tls(&leaf.cert, &leaf.key).expect("PostgreSQL with ssl=on");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.cert).unwrap();
    let wrong_file = dir.path().join("wrong-ca.crt");
    std::fs::write(&wrong_file, make_ca("cluster.local", 1).unwrap().cert).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let plain = server.create_database().await.unwrap();
        let by_name = plain.replace("127.0.0.1", "localhost");
        let with = |url: &str, mode: &str, root: &std::path::Path| {
            format!("{url}?sslmode={mode}&sslrootcert={}", root.display())
        };

        // verify-full: connects, and the session really is TLS.
        let url = with(&by_name, "verify-full", &ca_file);
        let store = PgStore::connect(&url).await.expect("verify-full connects");
        drop(store);
        let p = prepare(&url).unwrap();
        let mut cfg: tokio_postgres::Config = p.url.parse().unwrap();
        cfg.ssl_mode(p.ssl_mode());
        let (client, conn) = cfg.connect(p.connector().unwrap()).await.unwrap();
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        assert!(row.get::<_, bool>(0), "the session is not encrypted");

        // verify-ca checks the chain only: an IP address works.
        PgStore::connect(&with(&plain, "verify-ca", &ca_file))
            .await
            .expect("verify-ca connects by IP");

        // A wrong CA, or verify-full to a name the certificate does not carry: refused at once
        // (no retrying for the 10 s a database outage gets) with the reason.
        for (url, says) in [
            (
                with(&by_name, "verify-full", &wrong_file),
                "invalid peer certificate",
            ),
            (with(&plain, "verify-full", &ca_file), "not valid for name"),
        ] {
            let t = Instant::now();
            let Err(e) = PgStore::connect(&url).await else {
                panic!("{url} connected");
            };
            let e = e.to_string();
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "retried a TLS failure: {e}"
            );
            assert!(e.contains(says) && e.contains("sslrootcert"), "{e}");
        }
    });
}
