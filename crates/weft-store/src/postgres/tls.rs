//! TLS to PostgreSQL with rustls: the libpq URL parameters `sslmode` (`disable`, `allow`,
//! `prefer`, `require`, `verify-ca`, `verify-full`) and `sslrootcert`, which tokio-postgres does not
//! parse itself, are taken out of the URL and turned into the connector every connection uses.

use crate::StoreError;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;
use weft_tls::context::chain_verifier;

/// The connector of every connection of a store (never used when TLS is off).
pub type Connector = MakeRustlsConnect;

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// No TLS (`disable`, `allow`, `prefer` or no `sslmode`: plaintext, as libpq's `prefer` falls
    /// back to when the client offers no TLS).
    Off,
    /// Encrypted, the certificate not checked (`require` without `sslrootcert`).
    Encrypt,
    /// The chain must lead to `sslrootcert` (`verify-ca`; `require` with `sslrootcert`).
    Ca,
    /// Chain and host name (`verify-full`).
    Full,
}

/// A URL split into what tokio-postgres parses and what we handle.
#[derive(Debug)]
pub struct Prepared {
    pub url: String,
    pub verify: Verify,
    pub root_cert: Option<String>,
}

fn bad(msg: String) -> StoreError {
    StoreError::Unavailable(msg)
}

/// `%XX` decoding for a query value (a file path may be percent-encoded).
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Takes `sslmode`, `sslrootcert` (and refuses `sslcert`/`sslkey`, which we do not support) out
/// of a `postgres://` URL's query.
pub fn prepare(url: &str) -> Result<Prepared, StoreError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut mode: Option<String> = None;
    let mut root_cert = None;
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslmode" => mode = Some(decode(v)),
            "sslrootcert" => root_cert = Some(decode(v)),
            "sslcert" | "sslkey" => {
                return Err(bad(format!(
                    "the database URL's `{k}` (a client certificate for PostgreSQL) is not supported; use password or trust authentication over sslmode=verify-full"
                )));
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let verify = match (mode.as_deref(), &root_cert) {
        (None | Some("disable" | "allow" | "prefer"), _) => Verify::Off,
        (Some("require"), None) => Verify::Encrypt,
        (Some("require" | "verify-ca"), Some(_)) => Verify::Ca,
        (Some("verify-full"), Some(_)) => Verify::Full,
        (Some(m @ ("verify-ca" | "verify-full")), None) => {
            return Err(bad(format!(
                "sslmode={m} needs sslrootcert=FILE in the database URL (the CA that signed the server's certificate)"
            )));
        }
        (Some(other), _) => {
            return Err(bad(format!(
                "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    Ok(Prepared {
        url,
        verify,
        root_cert,
    })
}

impl Prepared {
    /// tokio-postgres's SSL mode for this verification.
    pub fn ssl_mode(&self) -> SslMode {
        match self.verify {
            Verify::Off => SslMode::Disable,
            _ => SslMode::Require,
        }
    }

    /// The connector; reads `sslrootcert` (errors name the file).
    pub fn connector(&self) -> Result<Connector, StoreError> {
        // ring, not aws-lc-rs: no C toolchain build (deprecated in rustls 0.23.48 only for its
        // lack of post-quantum key exchange).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match &self.root_cert {
            Some(path) if self.verify != Verify::Encrypt => Some(Arc::new(roots(path)?)),
            _ => None,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("TLS configuration: {e}")))?;
        let config = match (self.verify, roots) {
            (Verify::Full, Some(roots)) => {
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            (Verify::Ca, Some(roots)) => builder
                .dangerous()
                .with_custom_certificate_verifier(chain_verifier(roots, true))
                .with_no_client_auth(),
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(chain_verifier(
                    Arc::new(RootCertStore::empty()),
                    false,
                ))
                .with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

fn roots(path: &str) -> Result<RootCertStore, StoreError> {
    let bytes = std::fs::read(path).map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| bad(format!("sslrootcert {path}: not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("sslrootcert {path}: not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad(format!("sslrootcert {path} holds no certificate")));
    }
    Ok(roots)
}

/// Whether a connection error is a TLS failure (a wrong CA, a server without TLS): retrying
/// will not fix it, so the store fails at once with the reason.
pub fn is_tls_failure(e: &tokio_postgres::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        cur = err.source();
    }
    // tokio-postgres's own words when the server refuses TLS.
    e.to_string().contains("server does not support TLS")
}

/// The error with its causes (tokio-postgres's own text stops at "error performing TLS handshake").
pub fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(err) = cur {
        let part = err.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        cur = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_parameters_are_taken_out_of_the_url() {
        let p = prepare("postgres://u@h:5432/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.crt&application_name=x").unwrap();
        assert_eq!(p.verify, Verify::Full);
        assert_eq!(p.root_cert.as_deref(), Some("/tmp/ca.crt"));
        assert_eq!(p.url, "postgres://u@h:5432/db?application_name=x");
        assert_eq!(prepare("postgres://h/db").unwrap().verify, Verify::Off);
        assert_eq!(
            prepare("postgres://h/db?sslmode=require").unwrap().verify,
            Verify::Encrypt
        );
        assert_eq!(
            prepare("postgres://h/db?sslmode=require&sslrootcert=a")
                .unwrap()
                .verify,
            Verify::Ca
        );
        for (url, says) in [
            ("postgres://h/db?sslmode=verify-full", "needs sslrootcert"),
            ("postgres://h/db?sslmode=bogus", "is not one of"),
            ("postgres://h/db?sslcert=c", "not supported"),
        ] {
            let e = prepare(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
        let e = prepare("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca")
            .unwrap()
            .connector()
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent/ca"), "{e}");
    }
}
