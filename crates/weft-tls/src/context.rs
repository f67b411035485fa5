//! The TLS context of one process: its certificate, key and CA bundle read from files, the rustls
//! server and client configurations built from them, and rebuilt when the files change (so
//! cert-manager's rotation takes effect on the next connection without a restart).

use crate::error::TlsError;
use crate::identity::{SpiffeId, identity_in};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Which identity a client expects the server it dials to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A placement node (`…/weft-placement`).
    Placement,
    /// A sidecar of any app (the internal API).
    Sidecar,
}

/// The three PEM files of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The trust anchor(s): certificates of peers must chain to one of these.
    pub ca: PathBuf,
}

/// Modification stamp of the files, to notice a rotation (size too: mtime granularity).
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(files: &TlsFiles) -> Stamp {
    [&files.cert, &files.key, &files.ca]
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

struct Loaded {
    stamp: Stamp,
    identity: SpiffeId,
    mutual: Arc<ServerConfig>,
    public: Arc<ServerConfig>,
    to_placement: Arc<ClientConfig>,
    to_sidecar: Arc<ClientConfig>,
}

/// Shared by every server and client of a process; cheap to clone behind an `Arc`.
pub struct TlsContext {
    files: TlsFiles,
    trust_domain: String,
    namespace: String,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<Arc<Loaded>>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("files", &self.files)
            .field("trust_domain", &self.trust_domain)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Every certificate in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let pem_err = |reason: String| TlsError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err("holds no certificate".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.display().to_string(),
        reason: format!("no usable private key: {e}"),
    })
}

impl TlsContext {
    /// Reads the files and builds every configuration; errors name the file and the problem.
    pub fn load(
        files: TlsFiles,
        trust_domain: &str,
        namespace: &str,
    ) -> Result<Arc<Self>, TlsError> {
        // ring, not aws-lc-rs: no C toolchain build. Its provider lacks post-quantum key
        // exchange (hence deprecated in 0.23.48); the classical suites are what we offer.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ctx = Self {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            loaded: Mutex::new(Arc::new(build(&files, trust_domain, &provider)?)),
            files,
            provider,
        };
        Ok(Arc::new(ctx))
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The identity this process's own certificate names.
    pub fn identity(&self) -> SpiffeId {
        self.current().identity.clone()
    }

    /// The configurations for the files as they are now: rebuilt if a file changed since the
    /// last call; if the new files do not load (a rotation half written), the previous ones
    /// stay in use and the problem is logged.
    fn current(&self) -> Arc<Loaded> {
        let mut guard = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.files);
        if now != guard.stamp {
            match build(&self.files, &self.trust_domain, &self.provider) {
                Ok(fresh) => {
                    tracing::info!(identity = %fresh.identity, cert = %self.files.cert.display(), "TLS certificate files changed; new connections use them");
                    *guard = Arc::new(fresh);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate files changed but do not load; keeping the previous ones");
                    // Do not retry on every connection until the files change again.
                    let mut kept = Loaded::clone_of(&guard);
                    kept.stamp = now;
                    *guard = Arc::new(kept);
                }
            }
        }
        guard.clone()
    }

    /// Server side requiring a client certificate of the CA (internal, placement, raft ports).
    pub fn mutual_server(&self) -> Arc<ServerConfig> {
        self.current().mutual.clone()
    }

    /// Server side without client certificates (public ports with `--public-tls`).
    pub fn public_server(&self) -> Arc<ServerConfig> {
        self.current().public.clone()
    }

    /// Client side presenting this process's certificate and expecting `expect` at the other end.
    pub fn client(&self, expect: Expect) -> Arc<ClientConfig> {
        let l = self.current();
        match expect {
            Expect::Placement => l.to_placement.clone(),
            Expect::Sidecar => l.to_sidecar.clone(),
        }
    }
}

impl Loaded {
    fn clone_of(l: &Loaded) -> Loaded {
        Loaded {
            stamp: l.stamp.clone(),
            identity: l.identity.clone(),
            mutual: l.mutual.clone(),
            public: l.public.clone(),
            to_placement: l.to_placement.clone(),
            to_sidecar: l.to_sidecar.clone(),
        }
    }
}

fn build(
    files: &TlsFiles,
    trust_domain: &str,
    provider: &Arc<CryptoProvider>,
) -> Result<Loaded, TlsError> {
    // Stamp first: a change while we read is then seen again on the next call.
    let stamp = stamp(files);
    let chain = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&files.ca)? {
        roots.add(ca).map_err(|e| TlsError::Pem {
            path: files.ca.display().to_string(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let roots = Arc::new(roots);
    let identity = identity_in(&chain[0], trust_domain).map_err(|seen| {
        TlsError::Config(format!(
            "{}: this process's certificate must carry a SPIFFE ID of trust domain {trust_domain}; it is {seen}",
            files.cert.display()
        ))
    })?;

    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let mut mutual = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())?;
    mutual.alpn_protocols = vec![b"h2".to_vec()];
    let mut public = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())?;
    public.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let client = |expect: Expect| -> Result<Arc<ClientConfig>, TlsError> {
        let verifier = Arc::new(ServerVerifier {
            roots: roots.clone(),
            algs: provider.signature_verification_algorithms,
            check_chain: true,
            identity: Some((trust_domain.to_string(), expect)),
        });
        let mut c = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain.clone(), key.clone_key())?;
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(c))
    };
    Ok(Loaded {
        stamp,
        identity,
        mutual: Arc::new(mutual),
        public: Arc::new(public),
        to_placement: client(Expect::Placement)?,
        to_sidecar: client(Expect::Sidecar)?,
    })
}

/// A server verifier that checks the chain to `roots` but no host name (`check_chain: false`:
/// nothing at all, as libpq's `sslmode=require`). For PostgreSQL's `verify-ca`.
pub fn chain_verifier(roots: Arc<RootCertStore>, check_chain: bool) -> Arc<dyn ServerCertVerifier> {
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(ServerVerifier {
        roots,
        algs: provider.signature_verification_algorithms,
        check_chain,
        identity: None,
    })
}

/// Verifies a server the SPIFFE way: the chain must lead to our CA, and the certificate must
/// name the expected identity in our trust domain. Host names are not checked: Weft's processes
/// are addressed by IP or by changing pod names; the identity is what matters.
#[derive(Debug)]
struct ServerVerifier {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
    check_chain: bool,
    /// Trust domain and expected role; `None`: any certificate of the chain.
    identity: Option<(String, Expect)>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.check_chain {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        let Some((trust_domain, expect)) = &self.identity else {
            return Ok(ServerCertVerified::assertion());
        };
        let id = identity_in(end_entity, trust_domain)
            .map_err(|seen| rustls::Error::General(format!("the server presented {seen}")))?;
        let ok = match expect {
            Expect::Placement => id.is_placement(),
            Expect::Sidecar => id.app().is_some(),
        };
        if !ok {
            return Err(rustls::Error::General(format!(
                "the server's identity {id} is not a {}",
                match expect {
                    Expect::Placement => "placement node",
                    Expect::Sidecar => "sidecar",
                }
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
