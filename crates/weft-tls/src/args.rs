//! The `--tls-*` flags (and `WEFT_TLS_*` variables) shared by `weft placement`, `weft sidecar`
//! and `weft cluster`, and turning them into a [`TlsContext`].

use crate::context::{TlsContext, TlsFiles};
use crate::error::TlsError;
use crate::{DEFAULT_NAMESPACE, DEFAULT_TRUST_DOMAIN};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct TlsArgs {
    /// This process's certificate (PEM, leaf first), carrying its SPIFFE ID. With --tls-key and
    /// --tls-ca it turns on mutual TLS; the files are re-read when they change.
    #[arg(long, env = "WEFT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "WEFT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM): the trust anchor peers' certificates must chain to.
    #[arg(long, env = "WEFT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// SPIFFE trust domain of the cluster's identities.
    #[arg(long, env = "WEFT_TLS_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Namespace in the SPIFFE IDs (spiffe://TD/ns/NAMESPACE/NAME).
    #[arg(long, env = "WEFT_TLS_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
}

impl Default for TlsArgs {
    fn default() -> Self {
        Self {
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
            namespace: DEFAULT_NAMESPACE.into(),
        }
    }
}

impl TlsArgs {
    /// `None` without `--tls-*` (plaintext, as before); an error if only some are given or the
    /// files do not load.
    pub fn load(&self) -> Result<Option<Arc<TlsContext>>, TlsError> {
        let (cert, key, ca) = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => return Ok(None),
            (Some(c), Some(k), Some(a)) => (c, k, a),
            (c, k, a) => {
                let missing: Vec<&str> = [
                    ("--tls-cert", c.is_none()),
                    ("--tls-key", k.is_none()),
                    ("--tls-ca", a.is_none()),
                ]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(n, _)| *n)
                .collect();
                return Err(TlsError::Config(format!(
                    "--tls-cert, --tls-key and --tls-ca go together; missing {}",
                    missing.join(", ")
                )));
            }
        };
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        };
        TlsContext::load(files, &self.trust_domain, &self.namespace).map(Some)
    }
}

/// The one warning a process without TLS logs at start.
pub fn warn_unauthenticated(role: &str) {
    tracing::warn!(
        "{role} runs without --tls-cert/--tls-key/--tls-ca: the cluster's ports are plaintext and unauthenticated (see docs/security.md)"
    );
}
