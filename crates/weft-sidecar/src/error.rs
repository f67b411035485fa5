//! The engine's one error type and its single mapping to gRPC statuses and HTTP codes.

use weft_store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub fn no_such_instance(id: &str) -> Self {
        Self::NotFound(format!("no such instance exists: '{id}'"))
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Self::InvalidArgument(_) => tonic::Code::InvalidArgument,
            Self::NotFound(_) => tonic::Code::NotFound,
            Self::AlreadyExists(_) => tonic::Code::AlreadyExists,
            Self::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Self::PayloadTooLarge(_) => tonic::Code::ResourceExhausted,
            Self::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Self::Unavailable(_) => tonic::Code::Unavailable,
            Self::Internal(_) => tonic::Code::Internal,
        }
    }

    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::InvalidArgument(_) => S::BAD_REQUEST,
            Self::NotFound(_) => S::NOT_FOUND,
            Self::AlreadyExists(_) | Self::FailedPrecondition(_) => S::CONFLICT,
            Self::PayloadTooLarge(_) => S::PAYLOAD_TOO_LARGE,
            Self::Unauthenticated(_) => S::UNAUTHORIZED,
            Self::Unavailable(_) => S::SERVICE_UNAVAILABLE,
            Self::Internal(_) => S::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<EngineError> for tonic::Status {
    fn from(e: EngineError) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(_) => Self::AlreadyExists(e.to_string()),
            StoreError::NotFound(id) => Self::no_such_instance(&id),
            StoreError::NotTerminal(_) => Self::FailedPrecondition(e.to_string()),
            StoreError::Conflict { .. } => Self::Unavailable(e.to_string()),
            StoreError::Unavailable(_) | StoreError::OutcomeUnknown(_) => {
                Self::Unavailable(e.to_string())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<weft_core::ids::IdError> for EngineError {
    fn from(e: weft_core::ids::IdError) -> Self {
        Self::InvalidArgument(e.to_string())
    }
}

impl From<weft_core::ids::TextError> for EngineError {
    fn from(e: weft_core::ids::TextError) -> Self {
        Self::InvalidArgument(e.to_string())
    }
}
