//! API-token checks shared by the gRPC interceptor and the HTTP middleware: daprd's
//! `dapr-api-token`, compared in constant time.

use crate::error::EngineError;
use std::sync::Arc;
use tonic::service::Interceptor;

/// Checks `dapr-api-token` on every gRPC call, unary and streaming, as daprd does.
#[derive(Clone)]
pub(crate) struct TokenCheck(pub(crate) Option<Arc<str>>);

impl Interceptor for TokenCheck {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(want) = &self.0 else { return Ok(req) };
        match req.metadata().get("dapr-api-token") {
            None => Err(EngineError::Unauthenticated(
                "missing api token in request metadata".into(),
            )
            .into()),
            Some(v) if token_matches(v.as_bytes(), want.as_bytes()) => Ok(req),
            Some(_) => Err(EngineError::Unauthenticated(
                "authentication error: api token mismatch".into(),
            )
            .into()),
        }
    }
}

/// Compares a presented API token with the configured one in time that depends only on the
/// configured token's length, not on where the two differ (no timing oracle for guessing it).
pub(crate) fn token_matches(given: &[u8], want: &[u8]) -> bool {
    let mut diff = given.len() ^ want.len();
    for (i, w) in want.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!w);
        diff = std::hint::black_box(diff | usize::from(g ^ w));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches(b"secret", b"secret"));
        assert!(token_matches(b"", b""));
        for other in [
            &b""[..],
            b"secre",
            b"secret!",
            b"Secret",
            b"xxxxxx",
            b"\0ecret",
        ] {
            assert!(!token_matches(other, b"secret"), "{other:?}");
        }
        assert!(!token_matches(b"a", b""));
    }
}
