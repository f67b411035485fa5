//! Runtime status of a workflow instance and the instance metadata row every store keeps.

use serde::{Deserialize, Serialize};
use weft_proto::durabletask::OrchestrationStatus;

/// Microseconds since the Unix epoch, UTC. Stores keep this as a plain 64-bit integer so every
/// backend compares and orders times identically.
pub type Micros = i64;

/// Status of one instance, numbered exactly as the wire enum `OrchestrationStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuntimeStatus {
    Running = 0,
    Completed = 1,
    ContinuedAsNew = 2,
    Failed = 3,
    Canceled = 4,
    Terminated = 5,
    Pending = 6,
    Suspended = 7,
    Stalled = 8,
}

impl RuntimeStatus {
    pub const ALL: [RuntimeStatus; 9] = [
        Self::Running,
        Self::Completed,
        Self::ContinuedAsNew,
        Self::Failed,
        Self::Canceled,
        Self::Terminated,
        Self::Pending,
        Self::Suspended,
        Self::Stalled,
    ];

    /// Terminal statuses end an instance: no more turns, results are final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Terminated | Self::Canceled
        )
    }

    pub fn code(self) -> i32 {
        self as i32
    }

    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn to_wire(self) -> OrchestrationStatus {
        OrchestrationStatus::try_from(self.code()).unwrap_or(OrchestrationStatus::Running)
    }

    /// The upper-case name Dapr's HTTP API and our CLI use (`RUNNING`, `COMPLETED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::ContinuedAsNew => "CONTINUED_AS_NEW",
            Self::Failed => "FAILED",
            Self::Canceled => "CANCELED",
            Self::Terminated => "TERMINATED",
            Self::Pending => "PENDING",
            Self::Suspended => "SUSPENDED",
            Self::Stalled => "STALLED",
        }
    }

    /// Parses the names of [`RuntimeStatus::as_str`], case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The instance row: everything a status query needs without reading history.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceMeta {
    pub instance_id: String,
    pub name: String,
    pub status: RuntimeStatus,
    /// Changes with every new execution (start, continue-as-new, reuse of the ID).
    pub execution_id: String,
    /// Execution counter: bumped by continue-as-new and by re-creating a terminal instance.
    pub generation: i64,
    pub input: Option<String>,
    pub output: Option<String>,
    pub custom_status: Option<String>,
    /// Encoded `TaskFailureDetails` (protobuf bytes), kept opaque by stores.
    pub failure: Option<Vec<u8>>,
    pub parent_instance_id: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
    pub started_at: Option<Micros>,
    pub completed_at: Option<Micros>,
    pub scheduled_start_at: Option<Micros>,
    /// The app whose workers run this instance (only that app's sidecars own it); empty for
    /// rows written before instances recorded their app.
    pub app_id: String,
    /// Fencing value: stores bump it on every checkpoint; a writer must present the value it
    /// loaded, so a stale owner's write fails.
    pub version: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_the_wire_enum() {
        for s in RuntimeStatus::ALL {
            assert_eq!(RuntimeStatus::from_code(s.code()), Some(s));
            assert_eq!(s.to_wire() as i32, s.code());
            assert_eq!(RuntimeStatus::parse(&s.as_str().to_lowercase()), Some(s));
        }
        assert_eq!(RuntimeStatus::from_code(42), None);
    }

    #[test]
    fn only_final_statuses_are_terminal() {
        let terminal: Vec<_> = RuntimeStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            vec![
                RuntimeStatus::Completed,
                RuntimeStatus::Failed,
                RuntimeStatus::Canceled,
                RuntimeStatus::Terminated
            ]
        );
    }
}
