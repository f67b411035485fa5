//! Conversions shared by the backends: protobuf events to and from bytes, payload strings to and
//! from raw bytes, status codes, and the wall clock in µs.

use prost::Message;
use weft_core::{Micros, RuntimeStatus};
use weft_proto::durabletask::HistoryEvent;

use crate::{Result, StoreError};

pub(crate) fn encode_event(event: &HistoryEvent) -> Vec<u8> {
    event.encode_to_vec()
}

pub(crate) fn decode_event(bytes: &[u8]) -> Result<HistoryEvent> {
    HistoryEvent::decode(bytes).map_err(|e| StoreError::Corrupt(format!("history event: {e}")))
}

/// Payloads are stored as the raw bytes of the string the engine handed us (no re-encoding), so
/// reading them back only has to check UTF-8.
pub(crate) fn text_from_bytes(bytes: Option<Vec<u8>>, what: &str) -> Result<Option<String>> {
    bytes
        .map(|b| {
            String::from_utf8(b)
                .map_err(|e| StoreError::Corrupt(format!("{what} is not UTF-8: {e}")))
        })
        .transpose()
}

pub(crate) fn status_from_code(code: i64) -> Result<RuntimeStatus> {
    i32::try_from(code)
        .ok()
        .and_then(RuntimeStatus::from_code)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown runtime status code {code}")))
}

/// Wall-clock now in µs since the epoch; used to decide whether a scheduled start is in the
/// future. A clock before 1970 counts as 0 rather than failing.
pub(crate) fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Where a new instance's start event goes: straight to the inbox, or a reminder due later.
pub(crate) fn start_due_at(scheduled: Option<Micros>, now: Micros) -> Option<Micros> {
    scheduled.filter(|at| *at > now)
}
