//! The placement client's one error type, and what a status placement answers with means to it.

/// Errors of the placement client.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// Placement could not be reached, or the stream to it broke.
    #[error("transport: {0}")]
    Transport(String),
    /// Placement refused this sidecar (PERMISSION_DENIED or UNAUTHENTICATED): retrying cannot
    /// help until the certificate or the app id changes.
    #[error("{0}")]
    Refused(String),
    /// A received table that rings cannot be built from.
    #[error("invalid table: {0}")]
    Table(#[from] weft_ring::RingError),
}

impl PlacementError {
    /// The error a status from placement (or the transport) stands for.
    pub fn from_status(s: &tonic::Status) -> Self {
        match s.code() {
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                Self::Refused(format!("{:?}: {}", s.code(), s.message()))
            }
            _ => Self::Transport(s.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_identity_refusals_count_as_refused() {
        let denied = tonic::Status::permission_denied("app `b` may not");
        assert!(matches!(
            PlacementError::from_status(&denied),
            PlacementError::Refused(why) if why == "PermissionDenied: app `b` may not"
        ));
        let unauth = tonic::Status::unauthenticated("no identity");
        assert!(matches!(
            PlacementError::from_status(&unauth),
            PlacementError::Refused(_)
        ));
        for s in [
            tonic::Status::unavailable("down"),
            tonic::Status::invalid_argument("bad"),
            tonic::Status::internal("oops"),
        ] {
            assert!(
                matches!(
                    PlacementError::from_status(&s),
                    PlacementError::Transport(_)
                ),
                "{s:?}"
            );
        }
    }
}
