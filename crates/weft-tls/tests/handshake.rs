//! Real TLS handshakes over loopback between the server side (`incoming`) and the client
//! configurations: who is let in, what identity the server sees, and rotation of the files.

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use weft_tls::certs::{Pem, issue, make_ca, write_leaf};
use weft_tls::context::TlsFiles;
use weft_tls::{Expect, Mode, Peer, SpiffeId, TlsContext, incoming};

fn leaf(dir: &Path, ca: &Pem, name: &str) -> Arc<TlsContext> {
    let id = SpiffeId::new("cluster.local", "default", name).unwrap();
    write_leaf(dir, &issue(ca, &id, &[], 1).unwrap(), &ca.cert).unwrap();
    TlsContext::load(files(dir), "cluster.local", "default").unwrap()
}

fn files(dir: &Path) -> TlsFiles {
    TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        ca: dir.join("ca.crt"),
    }
}

/// Serves `server` mutually; returns the address and the stream of accepted connections.
async fn serve(server: Arc<TlsContext>) -> (std::net::SocketAddr, weft_tls::Incoming) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (addr, incoming(l, Mode::Mutual(server), "test"))
}

async fn dial(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?;
    // TLS 1.3: the server checks the client certificate after the client's handshake ended;
    // a refusal shows on the first read.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"x").await?;
    let mut b = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(300), s.read(&mut b)).await {
        Ok(Err(e)) => Err(e),
        _ => Ok(s),
    }
}

#[tokio::test]
async fn the_server_sees_the_clients_identity_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca("cluster.local", 1).unwrap();
    let server = leaf(&dir.path().join("s"), &ca, "accapp");
    let client = leaf(&dir.path().join("c"), &ca, "weft-admin");
    let (addr, mut conns) = serve(server.clone()).await;

    let _ok = dial(addr, client.client(Expect::Sidecar)).await.unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(5), conns.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        conn.info().peer,
        Peer::Verified(SpiffeId::parse("spiffe://cluster.local/ns/default/weft-admin").unwrap())
    );

    // The client expects a placement node, the server is a sidecar: the client refuses.
    let e = dial(addr, client.client(Expect::Placement))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is not a placement node"), "{e}");

    // Another CA's certificate: the server refuses the handshake.
    let other = make_ca("cluster.local", 1).unwrap();
    let stranger = leaf(&dir.path().join("x"), &other, "accapp");
    let mut trusting = (*stranger.client(Expect::Sidecar)).clone();
    trusting
        .dangerous()
        .set_certificate_verifier(server_trusting_verifier(&ca));
    assert!(dial(addr, Arc::new(trusting)).await.is_err());

    // No client certificate at all: refused too.
    let bare = rustls::ClientConfig::builder_with_provider(Arc::new(
        #[allow(deprecated)]
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(server_trusting_verifier(&ca))
    .with_no_client_auth();
    assert!(dial(addr, Arc::new(bare)).await.is_err());
}

/// A verifier that trusts servers of `ca` (so only the server's refusal is under test).
fn server_trusting_verifier(ca: &Pem) -> Arc<dyn rustls::client::danger::ServerCertVerifier> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.cert.as_bytes()).unwrap())
        .unwrap();
    #[derive(Debug)]
    struct NoName(Arc<rustls::client::WebPkiServerVerifier>);
    impl rustls::client::danger::ServerCertVerifier for NoName {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(m, c, d)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(m, c, d)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
    #[allow(deprecated)]
    let p = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(NoName(
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), p)
            .build()
            .unwrap(),
    ))
}

#[tokio::test]
async fn rotated_files_are_presented_on_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca("cluster.local", 1).unwrap();
    let sdir = dir.path().join("s");
    let server = leaf(&sdir, &ca, "accapp");
    let client = leaf(&dir.path().join("c"), &ca, "weft-admin");
    let (addr, _conns) = serve(server.clone()).await;

    let served = |s: &tokio_rustls::client::TlsStream<TcpStream>| {
        s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    let before = served(&dial(addr, client.client(Expect::Sidecar)).await.unwrap());
    let on_disk = |p: &Path| {
        rustls::pki_types::CertificateDer::from_pem_file(p.join("tls.crt"))
            .unwrap()
            .to_vec()
    };
    assert_eq!(before, on_disk(&sdir));

    // Replace the files as cert-manager would: a new key and certificate for the same identity.
    let id = SpiffeId::new("cluster.local", "default", "accapp").unwrap();
    write_leaf(&sdir, &issue(&ca, &id, &[], 2).unwrap(), &ca.cert).unwrap();
    let after = served(&dial(addr, client.client(Expect::Sidecar)).await.unwrap());
    assert_ne!(
        before, after,
        "the new connection still got the old certificate"
    );
    assert_eq!(after, on_disk(&sdir));

    // A half-written rotation (garbage key) keeps the last good files in use.
    std::fs::write(sdir.join("tls.key"), "not a key").unwrap();
    let still = served(&dial(addr, client.client(Expect::Sidecar)).await.unwrap());
    assert_eq!(still, after);
}
