//! The sidecar's one error type and the one table that maps every error — engine, store, ID
//! validation, ownership and forwarding — to a gRPC code, an HTTP status and a Dapr error code.
//!
//! Every API edge (gRPC, HTTP, the internal node-to-node API) answers through this table; no other
//! module builds a `tonic::Status` or an HTTP status from an error. Errors also cross the internal
//! API unchanged: [`EngineError::to_status`] names the exact kind in the `weft-error` metadata
//! entry and [`EngineError::from_status`] rebuilds it on the forwarding side.

use http::StatusCode as Http;
use tonic::Code as Grpc;
use weft_core::ids::IdError;
use weft_store::StoreError;

/// Metadata key naming the exact error kind (a row of [`TABLE`]) on statuses we send.
pub const KIND_HEADER: &str = "weft-error";
/// Metadata key of a "not owner" answer: the answering sidecar's view of the owner as
/// `host_id@address` (empty when it knows none).
pub const NOT_OWNER_HEADER: &str = "weft-not-owner";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidInstanceId(String),
    #[error("{0}")]
    InstanceIdTooLong(String),
    /// A request body or parameter that cannot be parsed (HTTP).
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    EventNameMissing(String),
    /// The instance (or the work item a worker answers) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// No such HTTP route or API version.
    #[error("{0}")]
    NoSuchEndpoint(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// A cross-app call the target app's `WorkflowAccessPolicy` does not allow.
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unimplemented(String),
    /// The caller's deadline passed while waiting.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Retry later: the store is unreachable, the sidecar is shutting down, or the owner of the
    /// key could not be reached before the deadline.
    #[error("{0}")]
    Unavailable(String),
    /// The sidecar asked does not own the key (internal API only: the forwarding side retries
    /// at `hint` — `host_id@address` — or after the next placement table; clients never see it).
    #[error("this sidecar does not own the key (owner: {})", hint.as_deref().unwrap_or("unknown"))]
    NotOwner { hint: Option<String> },
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// One row of the table: what an error kind is on each wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// Stable name, sent in [`KIND_HEADER`].
    pub kind: &'static str,
    pub grpc: Grpc,
    pub http: Http,
    /// Dapr's error code for the HTTP body; `None`: the operation's own code
    /// (`ERR_START_WORKFLOW`, `ERR_GET_WORKFLOW`, …), as daprd answers.
    pub dapr: Option<&'static str>,
}

/// Declares [`ErrorKind`] and its wire mapping from one list, so a kind, its position and its
/// row can never drift apart (no hand-kept indices).
macro_rules! error_kinds {
    ($($kind:ident => $name:literal, $grpc:ident, $http:ident, $dapr:expr;)*) => {
        /// The kind of an [`EngineError`], one per variant: what [`TABLE`] is indexed by.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $($kind),*
        }

        impl ErrorKind {
            /// Every kind, in table order.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$kind),*];
        }

        /// The table, one row per [`ErrorKind`], in declaration order.
        pub const TABLE: &[Mapping] = &[$(Mapping {
            kind: $name,
            grpc: Grpc::$grpc,
            http: Http::$http,
            dapr: $dapr,
        }),*];
    };
}

error_kinds! {
    InvalidArgument => "invalid-argument", InvalidArgument, BAD_REQUEST, Some("ERR_BAD_REQUEST");
    InvalidInstanceId => "invalid-instance-id", InvalidArgument, BAD_REQUEST,
        Some("ERR_INSTANCE_ID_INVALID");
    InstanceIdTooLong => "instance-id-too-long", InvalidArgument, BAD_REQUEST,
        Some("ERR_INSTANCE_ID_TOO_LONG");
    Malformed => "malformed", InvalidArgument, BAD_REQUEST, Some("ERR_MALFORMED_REQUEST");
    EventNameMissing => "event-name-missing", InvalidArgument, BAD_REQUEST,
        Some("ERR_WORKFLOW_EVENT_NAME_MISSING");
    NotFound => "not-found", NotFound, NOT_FOUND, Some("ERR_INSTANCE_ID_NOT_FOUND");
    NoSuchEndpoint => "no-such-endpoint", Unimplemented, NOT_FOUND, Some("ERR_NOT_FOUND");
    AlreadyExists => "already-exists", AlreadyExists, CONFLICT, None;
    FailedPrecondition => "failed-precondition", FailedPrecondition, CONFLICT, None;
    PayloadTooLarge => "payload-too-large", ResourceExhausted, PAYLOAD_TOO_LARGE,
        Some("ERR_PAYLOAD_TOO_LARGE");
    Unauthenticated => "unauthenticated", Unauthenticated, UNAUTHORIZED, Some("ERR_UNAUTHORIZED");
    PermissionDenied => "permission-denied", PermissionDenied, FORBIDDEN, Some("ERR_PERMISSION_DENIED");
    Unimplemented => "unimplemented", Unimplemented, NOT_IMPLEMENTED, Some("ERR_NOT_IMPLEMENTED");
    DeadlineExceeded => "deadline-exceeded", DeadlineExceeded, GATEWAY_TIMEOUT, None;
    Unavailable => "unavailable", Unavailable, SERVICE_UNAVAILABLE, None;
    NotOwner => "not-owner", Unavailable, SERVICE_UNAVAILABLE, Some("ERR_NOT_OWNER");
    Internal => "internal", Internal, INTERNAL_SERVER_ERROR, None;
}

impl ErrorKind {
    /// This kind's row of [`TABLE`].
    pub fn mapping(self) -> Mapping {
        TABLE[self as usize]
    }
}

impl EngineError {
    pub fn no_such_instance(id: &str) -> Self {
        Self::NotFound(format!("no such instance exists: '{id}'"))
    }

    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        match self {
            Self::InvalidArgument(_) => K::InvalidArgument,
            Self::InvalidInstanceId(_) => K::InvalidInstanceId,
            Self::InstanceIdTooLong(_) => K::InstanceIdTooLong,
            Self::Malformed(_) => K::Malformed,
            Self::EventNameMissing(_) => K::EventNameMissing,
            Self::NotFound(_) => K::NotFound,
            Self::NoSuchEndpoint(_) => K::NoSuchEndpoint,
            Self::AlreadyExists(_) => K::AlreadyExists,
            Self::FailedPrecondition(_) => K::FailedPrecondition,
            Self::PayloadTooLarge(_) => K::PayloadTooLarge,
            Self::Unauthenticated(_) => K::Unauthenticated,
            Self::PermissionDenied(_) => K::PermissionDenied,
            Self::Unimplemented(_) => K::Unimplemented,
            Self::DeadlineExceeded(_) => K::DeadlineExceeded,
            Self::Unavailable(_) => K::Unavailable,
            Self::NotOwner { .. } => K::NotOwner,
            Self::Internal(_) => K::Internal,
        }
    }

    /// Rebuilds an error from its kind and message (inverse of [`EngineError::kind`]).
    pub fn of_kind(kind: ErrorKind, msg: String) -> Self {
        use ErrorKind as K;
        match kind {
            K::InvalidArgument => Self::InvalidArgument(msg),
            K::InvalidInstanceId => Self::InvalidInstanceId(msg),
            K::InstanceIdTooLong => Self::InstanceIdTooLong(msg),
            K::Malformed => Self::Malformed(msg),
            K::EventNameMissing => Self::EventNameMissing(msg),
            K::NotFound => Self::NotFound(msg),
            K::NoSuchEndpoint => Self::NoSuchEndpoint(msg),
            K::AlreadyExists => Self::AlreadyExists(msg),
            K::FailedPrecondition => Self::FailedPrecondition(msg),
            K::PayloadTooLarge => Self::PayloadTooLarge(msg),
            K::Unauthenticated => Self::Unauthenticated(msg),
            K::PermissionDenied => Self::PermissionDenied(msg),
            K::Unimplemented => Self::Unimplemented(msg),
            K::DeadlineExceeded => Self::DeadlineExceeded(msg),
            K::Unavailable => Self::Unavailable(msg),
            K::NotOwner => Self::NotOwner { hint: None },
            K::Internal => Self::Internal(msg),
        }
    }

    /// This error's row of [`TABLE`].
    pub fn mapping(&self) -> Mapping {
        self.kind().mapping()
    }

    pub fn grpc_code(&self) -> Grpc {
        self.mapping().grpc
    }

    pub fn http_status(&self) -> Http {
        self.mapping().http
    }

    /// The Dapr error code of the HTTP body; `op_code` names the failed operation
    /// (`ERR_START_WORKFLOW`…) for errors that have no code of their own.
    pub fn dapr_code(&self, op_code: &'static str) -> &'static str {
        self.mapping().dapr.unwrap_or(op_code)
    }

    /// The gRPC status of this error, with its kind (and a not-owner hint) in the metadata.
    pub fn to_status(&self) -> tonic::Status {
        let m = self.mapping();
        let mut st = tonic::Status::new(m.grpc, self.to_string());
        let md = st.metadata_mut();
        md.insert(
            KIND_HEADER,
            tonic::metadata::MetadataValue::from_static(m.kind),
        );
        if let Self::NotOwner { hint } = self {
            let v = hint.as_deref().unwrap_or("");
            if let Ok(v) = v.parse() {
                md.insert(NOT_OWNER_HEADER, v);
            } else {
                md.insert(
                    NOT_OWNER_HEADER,
                    tonic::metadata::MetadataValue::from_static(""),
                );
            }
        }
        st
    }

    /// The error a status from another sidecar (or the transport) stands for. A status without
    /// our kind header is a transport failure or a peer's generic error: mapped by its code, with
    /// everything that may have failed before the peer acted as `Unavailable`.
    pub fn from_status(st: &tonic::Status) -> Self {
        let md = st.metadata();
        if let Some(v) = md.get(NOT_OWNER_HEADER) {
            let hint = v
                .to_str()
                .ok()
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            return Self::NotOwner { hint };
        }
        let msg = st.message().to_string();
        if let Some(kind) = md.get(KIND_HEADER).and_then(|v| v.to_str().ok())
            && let Some(k) = ErrorKind::ALL.iter().find(|k| k.mapping().kind == kind)
        {
            return Self::of_kind(*k, msg);
        }
        match st.code() {
            Grpc::InvalidArgument | Grpc::OutOfRange => Self::InvalidArgument(msg),
            Grpc::NotFound => Self::NotFound(msg),
            Grpc::AlreadyExists => Self::AlreadyExists(msg),
            Grpc::FailedPrecondition | Grpc::Aborted => Self::FailedPrecondition(msg),
            Grpc::ResourceExhausted => Self::PayloadTooLarge(msg),
            Grpc::Unauthenticated => Self::Unauthenticated(msg),
            Grpc::PermissionDenied => Self::PermissionDenied(msg),
            Grpc::Unimplemented => Self::Unimplemented(msg),
            Grpc::DeadlineExceeded => Self::DeadlineExceeded(msg),
            Grpc::Internal | Grpc::DataLoss => Self::Internal(msg),
            Grpc::Ok | Grpc::Cancelled | Grpc::Unknown | Grpc::Unavailable => {
                Self::Unavailable(msg)
            }
        }
    }

    /// Whether the operation may simply be tried again (at the owner or later).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::NotOwner { .. })
    }
}

impl From<EngineError> for tonic::Status {
    fn from(e: EngineError) -> Self {
        e.to_status()
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(_) => Self::AlreadyExists(e.to_string()),
            StoreError::NotFound(id) => Self::no_such_instance(&id),
            StoreError::NotTerminal(_) => Self::FailedPrecondition(e.to_string()),
            // Another sidecar owns the instance now: the caller retries there.
            StoreError::Conflict { .. } | StoreError::Fenced { .. } => {
                Self::Unavailable(e.to_string())
            }
            StoreError::Unavailable(_) | StoreError::OutcomeUnknown(_) => {
                Self::Unavailable(e.to_string())
            }
            StoreError::Corrupt(_) => Self::Internal(e.to_string()),
            // The worker's result came too late: another dispatch of the task completes it.
            StoreError::Reclaimed { .. } => Self::NotFound(e.to_string()),
        }
    }
}

impl From<IdError> for EngineError {
    fn from(e: IdError) -> Self {
        match e {
            IdError::TooLong(_) => Self::InstanceIdTooLong(e.to_string()),
            IdError::Empty | IdError::Invalid(_) => Self::InvalidInstanceId(e.to_string()),
        }
    }
}

impl From<weft_core::ids::TextError> for EngineError {
    fn from(e: weft_core::ids::TextError) -> Self {
        Self::InvalidArgument(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<EngineError> {
        ErrorKind::ALL
            .iter()
            .map(|k| EngineError::of_kind(*k, "m".into()))
            .collect()
    }

    #[test]
    fn every_variant_has_its_own_row_and_round_trips_through_a_status() {
        let all = every_variant();
        assert_eq!(all.len(), TABLE.len(), "one test value per variant");
        let mut kinds: Vec<_> = TABLE.iter().map(|r| r.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), TABLE.len(), "kind names are unique");
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.kind(), ErrorKind::ALL[i], "{e:?} round-trips its kind");
            assert_eq!(e.kind() as usize, i, "{e:?} sits at its row");
            assert_eq!(
                EngineError::from_status(&e.to_status()),
                *e,
                "round trip of {e:?}"
            );
        }
    }

    #[test]
    fn the_wire_values_the_sdks_and_daprd_clients_rely_on() {
        let nf = EngineError::no_such_instance("x");
        assert_eq!(nf.grpc_code(), Grpc::NotFound);
        assert_eq!(nf.http_status(), Http::NOT_FOUND);
        assert_eq!(
            nf.dapr_code("ERR_GET_WORKFLOW"),
            "ERR_INSTANCE_ID_NOT_FOUND"
        );
        let big = EngineError::PayloadTooLarge("big".into());
        assert_eq!(big.grpc_code(), Grpc::ResourceExhausted);
        assert_eq!(big.http_status(), Http::PAYLOAD_TOO_LARGE);
        let exists = EngineError::AlreadyExists("x".into());
        assert_eq!(exists.http_status(), Http::CONFLICT);
        assert_eq!(exists.dapr_code("ERR_START_WORKFLOW"), "ERR_START_WORKFLOW");
        let long = EngineError::from(IdError::TooLong("x".into()));
        assert_eq!(long.grpc_code(), Grpc::InvalidArgument);
        assert_eq!(
            long.dapr_code("ERR_START_WORKFLOW"),
            "ERR_INSTANCE_ID_TOO_LONG"
        );
        let bad = EngineError::from(IdError::Invalid("x y".into()));
        assert_eq!(
            bad.dapr_code("ERR_START_WORKFLOW"),
            "ERR_INSTANCE_ID_INVALID"
        );
        assert_eq!(
            EngineError::Unauthenticated("t".into()).http_status(),
            Http::UNAUTHORIZED
        );
    }

    #[test]
    fn store_errors_map() {
        let cases = [
            (StoreError::AlreadyExists("a".into()), Grpc::AlreadyExists),
            (StoreError::NotFound("a".into()), Grpc::NotFound),
            (
                StoreError::Conflict {
                    instance_id: "a".into(),
                    expected: 1,
                },
                Grpc::Unavailable,
            ),
            (StoreError::Unavailable("down".into()), Grpc::Unavailable),
            (StoreError::Corrupt("bad".into()), Grpc::Internal),
        ];
        for (s, code) in cases {
            assert_eq!(EngineError::from(s).grpc_code(), code);
        }
    }

    #[test]
    fn not_owner_carries_its_hint_and_foreign_statuses_map_by_code() {
        let e = EngineError::NotOwner {
            hint: Some("h2@127.0.0.1:5".into()),
        };
        let st = e.to_status();
        assert_eq!(st.code(), Grpc::Unavailable);
        assert_eq!(EngineError::from_status(&st), e);
        assert!(e.is_retryable());
        // A transport failure (no kind header) is retryable, never a NOT_FOUND.
        let t = EngineError::from_status(&tonic::Status::unavailable("connection refused"));
        assert!(matches!(t, EngineError::Unavailable(_)));
        let c = EngineError::from_status(&tonic::Status::cancelled("gone"));
        assert!(c.is_retryable());
        assert!(matches!(
            EngineError::from_status(&tonic::Status::not_found("x")),
            EngineError::NotFound(_)
        ));
    }
}
