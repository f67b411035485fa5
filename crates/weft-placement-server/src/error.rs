//! The placement server's one error type and the one table that maps every kind of it to a gRPC
//! code: no other module of the server builds a `tonic::Status` from an error.
//!
//! A follower forwards admin calls to the leader and passes the leader's answer on:
//! [`ServerError::from_status`] reads it back by code, keeping the message, so the caller sees
//! the same code and message the leader sent.

use tonic::Code as Grpc;

/// Errors of a placement node: its API answers, its raft writes, and starting it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller has no Weft workload identity (mutual TLS on).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's identity may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// No such service (gRPC health).
    #[error("{0}")]
    NotFound(String),
    /// Retry later: no leader yet, leadership changed, or the leader could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// The leader refused the change (read back from a forwarded answer).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Internal(String),
    /// A raft write reached a node that does not lead; `leader` is the (raft id, address) it
    /// knows of.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<(u64, String)> },
    /// Transient: a membership change is still in progress or the entry was lost to a leader
    /// change; retrying later is safe (the table's commands are idempotent).
    #[error("retry later: {0}")]
    Retry(String),
    /// openraft refused or failed.
    #[error("raft: {0}")]
    Raft(String),
    /// The durable raft state could not be opened.
    #[error("storage: {0}")]
    Storage(String),
    /// Invalid raft configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// A port could not be bound.
    #[error("transport: {0}")]
    Transport(String),
}

/// One row of the table: a kind's stable name and its gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub kind: &'static str,
    pub grpc: Grpc,
}

/// Declares [`ErrorKind`] and [`TABLE`] from one list, so a kind and its row never drift apart.
macro_rules! error_kinds {
    ($($kind:ident => $name:literal, $grpc:ident;)*) => {
        /// The kind of a [`ServerError`], one per variant: what [`TABLE`] is indexed by.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $($kind),*
        }

        impl ErrorKind {
            /// Every kind, in table order.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$kind),*];
        }

        /// The table, one row per [`ErrorKind`], in declaration order.
        pub const TABLE: &[Mapping] = &[$(Mapping { kind: $name, grpc: Grpc::$grpc }),*];
    };
}

error_kinds! {
    InvalidArgument => "invalid-argument", InvalidArgument;
    Unauthenticated => "unauthenticated", Unauthenticated;
    PermissionDenied => "permission-denied", PermissionDenied;
    NotFound => "not-found", NotFound;
    Unavailable => "unavailable", Unavailable;
    FailedPrecondition => "failed-precondition", FailedPrecondition;
    Internal => "internal", Internal;
    NotLeader => "not-leader", Unavailable;
    Retry => "retry", Unavailable;
    Raft => "raft", FailedPrecondition;
    Storage => "storage", Internal;
    Config => "config", Internal;
    Transport => "transport", Unavailable;
}

impl ErrorKind {
    /// This kind's row of [`TABLE`].
    pub fn mapping(self) -> Mapping {
        TABLE[self as usize]
    }
}

impl ServerError {
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        match self {
            Self::InvalidArgument(_) => K::InvalidArgument,
            Self::Unauthenticated(_) => K::Unauthenticated,
            Self::PermissionDenied(_) => K::PermissionDenied,
            Self::NotFound(_) => K::NotFound,
            Self::Unavailable(_) => K::Unavailable,
            Self::FailedPrecondition(_) => K::FailedPrecondition,
            Self::Internal(_) => K::Internal,
            Self::NotLeader { .. } => K::NotLeader,
            Self::Retry(_) => K::Retry,
            Self::Raft(_) => K::Raft,
            Self::Storage(_) => K::Storage,
            Self::Config(_) => K::Config,
            Self::Transport(_) => K::Transport,
        }
    }

    pub fn grpc_code(&self) -> Grpc {
        self.kind().mapping().grpc
    }

    /// The gRPC status of this error: its row's code, its message.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.grpc_code(), self.to_string())
    }

    /// The error a status from another placement node (or the transport) stands for: the kind
    /// of its code, with its message as is. Codes placement never sends are transport failures
    /// (the other node could not be asked), so `Unavailable`: retry.
    pub fn from_status(st: &tonic::Status) -> Self {
        let msg = st.message().to_string();
        match st.code() {
            Grpc::InvalidArgument => Self::InvalidArgument(msg),
            Grpc::Unauthenticated => Self::Unauthenticated(msg),
            Grpc::PermissionDenied => Self::PermissionDenied(msg),
            Grpc::NotFound => Self::NotFound(msg),
            Grpc::FailedPrecondition => Self::FailedPrecondition(msg),
            Grpc::Internal => Self::Internal(msg),
            _ => Self::Unavailable(msg),
        }
    }
}

impl From<ServerError> for tonic::Status {
    fn from(e: ServerError) -> Self {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One value per kind; the exhaustive match makes a new kind need a sample here.
    fn sample(kind: ErrorKind) -> ServerError {
        use ErrorKind as K;
        let m = || "m".to_string();
        match kind {
            K::InvalidArgument => ServerError::InvalidArgument(m()),
            K::Unauthenticated => ServerError::Unauthenticated(m()),
            K::PermissionDenied => ServerError::PermissionDenied(m()),
            K::NotFound => ServerError::NotFound(m()),
            K::Unavailable => ServerError::Unavailable(m()),
            K::FailedPrecondition => ServerError::FailedPrecondition(m()),
            K::Internal => ServerError::Internal(m()),
            K::NotLeader => ServerError::NotLeader {
                leader: Some((2, "b:1".into())),
            },
            K::Retry => ServerError::Retry(m()),
            K::Raft => ServerError::Raft(m()),
            K::Storage => ServerError::Storage(m()),
            K::Config => ServerError::Config(m()),
            K::Transport => ServerError::Transport(m()),
        }
    }

    #[test]
    fn every_kind_has_its_own_row_and_keeps_code_and_message_through_a_forward() {
        assert_eq!(ErrorKind::ALL.len(), TABLE.len());
        let mut names: Vec<_> = TABLE.iter().map(|r| r.kind).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TABLE.len(), "kind names are unique");
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            let e = sample(*k);
            assert_eq!(e.kind(), *k, "{e:?} round-trips its kind");
            assert_eq!(*k as usize, i, "{k:?} sits at its row");
            let st = e.to_status();
            assert_eq!(
                st.code(),
                TABLE[i].grpc,
                "{e:?} answers with its row's code"
            );
            assert_eq!(st.message(), e.to_string());
            // What a follower passes on from the leader is what the leader said.
            let back = ServerError::from_status(&st).to_status();
            assert_eq!(
                (back.code(), back.message()),
                (st.code(), st.message()),
                "forward of {e:?}"
            );
        }
    }

    /// The codes clients act on: `weft cluster` retries UNAVAILABLE only, and a sidecar waits
    /// for a new identity on PERMISSION_DENIED / UNAUTHENTICATED.
    #[test]
    fn the_codes_clients_rely_on() {
        let not_leader = ServerError::NotLeader { leader: None };
        assert_eq!(not_leader.grpc_code(), Grpc::Unavailable);
        assert_eq!(
            ServerError::Retry("x".into()).grpc_code(),
            Grpc::Unavailable
        );
        let raft = ServerError::Raft("learner missing".into());
        assert_eq!(raft.grpc_code(), Grpc::FailedPrecondition);
        assert_eq!(raft.to_status().message(), "raft: learner missing");
        assert_eq!(
            ServerError::PermissionDenied("no".into()).grpc_code(),
            Grpc::PermissionDenied
        );
        let transport = ServerError::from_status(&tonic::Status::unknown("h2 reset"));
        assert_eq!(transport, ServerError::Unavailable("h2 reset".into()));
    }
}
