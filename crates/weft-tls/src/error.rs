//! The crate's one error type.

/// What can go wrong loading certificates, building TLS configurations or issuing certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable (or something malformed).
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    /// The flags do not make a usable configuration.
    #[error("{0}")]
    Config(String),
    /// rustls refused the certificates or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A SPIFFE ID or certificate identity is malformed.
    #[error("identity: {0}")]
    Identity(String),
    /// Certificate generation failed.
    #[error("issuing a certificate: {0}")]
    Issue(String),
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> Self {
        TlsError::Issue(e.to_string())
    }
}
