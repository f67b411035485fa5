//! Workload identities: SPIFFE IDs `spiffe://TD/ns/NS/NAME` as they appear in a certificate's URI
//! SAN, the role each name stands for, and what a server knows about the peer of a connection.

use crate::error::TlsError;
use std::fmt;
use std::net::SocketAddr;

/// The name in a placement node's SPIFFE ID.
pub const PLACEMENT: &str = "weft-placement";
/// The name in an operator's (admin's) SPIFFE ID.
pub const ADMIN: &str = "weft-admin";

/// Longest accepted SPIFFE ID (the SPIFFE spec's limit for a whole ID).
const MAX_ID_LEN: usize = 2048;

/// A parsed `spiffe://TRUST_DOMAIN/ns/NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    /// An app id, [`PLACEMENT`] or [`ADMIN`].
    pub name: String,
}

/// What an identity may act as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Placement,
    Admin,
    /// A sidecar of this app id.
    Sidecar(String),
}

/// Trust domains are lowercase DNS-like names (SPIFFE: `[a-z0-9.-_]`).
fn valid_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

/// Path segments (namespace, app id): SPIFFE's `[a-zA-Z0-9.-_]`, not `.` or `..`.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl SpiffeId {
    /// Builds an ID, checking every part (so a bad `--app-id` is named before a cert is made).
    pub fn new(trust_domain: &str, namespace: &str, name: &str) -> Result<Self, TlsError> {
        if !valid_trust_domain(trust_domain) {
            return Err(TlsError::Identity(format!(
                "`{trust_domain}` is not a trust domain (lowercase letters, digits, `.`, `-`, `_`)"
            )));
        }
        for (what, s) in [("namespace", namespace), ("name", name)] {
            if !valid_segment(s) {
                return Err(TlsError::Identity(format!(
                    "`{s}` is not a valid {what} (letters, digits, `.`, `-`, `_`)"
                )));
            }
        }
        Ok(Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    /// Parses `spiffe://TD/ns/NS/NAME`; anything else is an error that quotes the input.
    pub fn parse(uri: &str) -> Result<Self, TlsError> {
        let bad = |why: &str| {
            let shown: String = uri.chars().take(200).collect();
            TlsError::Identity(format!("`{shown}` is not a Weft SPIFFE ID: {why}"))
        };
        if uri.len() > MAX_ID_LEN {
            return Err(bad("too long"));
        }
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| bad("expected spiffe://TRUST_DOMAIN/ns/NAMESPACE/NAME"))?;
        let mut parts = rest.split('/');
        let (Some(td), Some("ns"), Some(ns), Some(name), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad("expected spiffe://TRUST_DOMAIN/ns/NAMESPACE/NAME"));
        };
        Self::new(td, ns, name).map_err(|e| bad(&e.to_string()))
    }

    pub fn role(&self) -> Role {
        match self.name.as_str() {
            PLACEMENT => Role::Placement,
            ADMIN => Role::Admin,
            app => Role::Sidecar(app.to_string()),
        }
    }

    /// The app id if this is a sidecar's identity.
    pub fn app(&self) -> Option<&str> {
        match self.name.as_str() {
            PLACEMENT | ADMIN => None,
            app => Some(app),
        }
    }

    pub fn is_placement(&self) -> bool {
        self.name == PLACEMENT
    }

    pub fn is_admin(&self) -> bool {
        self.name == ADMIN
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/{}",
            self.trust_domain, self.namespace, self.name
        )
    }
}

/// Every URI SAN of a DER certificate (empty when it has none).
pub fn uri_sans(der: &[u8]) -> Result<Vec<String>, TlsError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::Identity(format!("unreadable certificate: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::Identity(format!("unreadable subjectAltName: {e}")))?;
    Ok(san
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The one SPIFFE ID of `trust_domain` a certificate carries. The error describes what the
/// certificate names instead, for the refusal message.
pub fn identity_in(der: &[u8], trust_domain: &str) -> Result<SpiffeId, String> {
    let uris = uri_sans(der).map_err(|e| e.to_string())?;
    let spiffe: Vec<&String> = uris.iter().filter(|u| u.starts_with("spiffe://")).collect();
    match spiffe.as_slice() {
        [] => Err("a certificate without a SPIFFE ID".into()),
        [one] => {
            let id = SpiffeId::parse(one).map_err(|e| e.to_string())?;
            if id.trust_domain == trust_domain {
                Ok(id)
            } else {
                Err(format!("{id} (trust domain is not {trust_domain})"))
            }
        }
        many => Err(format!(
            "a certificate with {} SPIFFE IDs (exactly one is allowed)",
            many.len()
        )),
    }
}

/// What a server knows about the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A plaintext connection: the cluster runs without TLS.
    Plain,
    /// A client certificate of our CA with a SPIFFE ID of our trust domain.
    Verified(SpiffeId),
    /// A client certificate of our CA that names no usable identity (the description says what).
    Unrecognised(String),
    /// TLS without a client certificate (public ports with `--public-tls`).
    Anonymous,
}

impl Peer {
    /// How a refusal names the peer.
    pub fn describe(&self) -> String {
        match self {
            Peer::Plain => "a plaintext peer".into(),
            Peer::Verified(id) => id.to_string(),
            Peer::Unrecognised(what) => what.clone(),
            Peer::Anonymous => "a peer without a client certificate".into(),
        }
    }
}

/// The connect info tonic puts into every request's extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    pub peer: Peer,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_name_their_role() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/orders").unwrap();
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/orders");
        assert_eq!(id.role(), Role::Sidecar("orders".into()));
        assert_eq!(id.app(), Some("orders"));
        let p = SpiffeId::parse("spiffe://td/ns/prod/weft-placement").unwrap();
        assert_eq!(p.role(), Role::Placement);
        assert_eq!(p.app(), None);
        assert!(
            SpiffeId::parse("spiffe://td/ns/prod/weft-admin")
                .unwrap()
                .is_admin()
        );
    }

    #[test]
    fn malformed_ids_are_refused_with_the_input_quoted() {
        for bad in [
            "",
            "http://td/ns/a/b",
            "spiffe://td/a/b",
            "spiffe://td/ns/a",
            "spiffe://td/ns/a/b/c",
            "spiffe://TD/ns/a/b",
            "spiffe:///ns/a/b",
            "spiffe://td/ns/../b",
            "spiffe://td/ns/a/b c",
            "spiffe://td/ns/a/",
        ] {
            let e = SpiffeId::parse(bad).unwrap_err().to_string();
            assert!(e.contains("not a Weft SPIFFE ID"), "{bad}: {e}");
        }
        let long = format!("spiffe://td/ns/a/{}", "x".repeat(5000));
        assert!(SpiffeId::parse(&long).is_err());
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(uri_sans(b"not der").is_err());
        assert!(identity_in(&[0x30, 0x03, 0x02, 0x01, 0x01], "td").is_err());
    }
}
