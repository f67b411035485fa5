//! Authorisation of calls by the caller's identity: refusals are `UNAUTHENTICATED` (no usable
//! identity) or `PERMISSION_DENIED` (an identity not allowed this call), name the identity seen,
//! and are counted in `weft_auth_refused_total{port,code}`.

use crate::identity::{Peer, PeerInfo, SpiffeId};
use tonic::Status;

/// The caller of a request. A request without connect info never came through a socket (an
/// in-process call) and is treated like a plaintext one.
pub fn caller<T>(req: &tonic::Request<T>) -> Peer {
    caller_of(req.extensions())
}

/// [`caller`] from raw extensions (interceptors, HTTP handlers).
pub fn caller_of(ext: &http::Extensions) -> Peer {
    ext.get::<PeerInfo>()
        .map(|i| i.peer.clone())
        .unwrap_or(Peer::Plain)
}

/// Lets `peer` do `action` when `allow` says so. Plaintext peers are let through: without TLS
/// the cluster is unauthenticated by choice (and a warning at start says so).
pub fn authorize(
    peer: &Peer,
    port: &'static str,
    action: &str,
    allow: impl FnOnce(&SpiffeId) -> bool,
) -> Result<(), Status> {
    match peer {
        Peer::Plain => Ok(()),
        Peer::Verified(id) if allow(id) => Ok(()),
        Peer::Verified(id) => Err(refuse(
            port,
            Status::permission_denied(format!("{id} may not {action}")),
        )),
        other => Err(refuse(
            port,
            Status::unauthenticated(format!(
                "{action} needs a Weft workload identity; the peer is {}",
                other.describe()
            )),
        )),
    }
}

fn refuse(port: &'static str, status: Status) -> Status {
    let code = match status.code() {
        tonic::Code::PermissionDenied => "permission_denied",
        _ => "unauthenticated",
    };
    metrics::counter!("weft_auth_refused_total", "port" => port, "code" => code).increment(1);
    tracing::warn!(port, code, message = %status.message(), "call refused");
    status
}

/// An interceptor applying one rule to every call of a service.
#[derive(Clone, Copy)]
pub struct PeerCheck {
    pub port: &'static str,
    pub action: &'static str,
    pub allow: fn(&SpiffeId) -> bool,
}

impl tonic::service::Interceptor for PeerCheck {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        authorize(&caller(&req), self.port, self.action, self.allow)?;
        Ok(req)
    }
}

/// Rules used by more than one service.
pub mod rules {
    use crate::identity::SpiffeId;

    pub fn placement(id: &SpiffeId) -> bool {
        id.is_placement()
    }
    pub fn placement_or_admin(id: &SpiffeId) -> bool {
        id.is_placement() || id.is_admin()
    }
    pub fn sidecar(id: &SpiffeId) -> bool {
        id.app().is_some()
    }
    pub fn sidecar_or_admin(id: &SpiffeId) -> bool {
        id.app().is_some() || id.is_admin()
    }
    pub fn anyone(_: &SpiffeId) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_identity_seen() {
        let id = SpiffeId::parse("spiffe://td/ns/n/evil").unwrap();
        let peer = Peer::Verified(id);
        let s = authorize(
            &peer,
            "placement",
            "remove placement nodes",
            rules::placement_or_admin,
        )
        .unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(
            s.message().contains("spiffe://td/ns/n/evil"),
            "{}",
            s.message()
        );
        let s = authorize(
            &Peer::Anonymous,
            "internal",
            "call the internal API",
            rules::anyone,
        )
        .unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated);
        assert!(s.message().contains("without a client certificate"));
        assert!(authorize(&Peer::Plain, "p", "x", |_| false).is_ok());
        assert!(authorize(&peer, "p", "x", rules::sidecar).is_ok());
    }
}
