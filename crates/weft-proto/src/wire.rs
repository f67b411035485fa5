//! `WorkItemFrame`: a `WorkItem` already encoded, which the sidecar's `GetWorkItems` stream
//! sends as it is, so a turn's history is encoded straight from the engine's shared copy
//! instead of being cloned into a `WorkItem` first (the clone and the second encoding were a
//! third of a long-history turn's CPU).

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};

/// The bytes of one encoded `WorkItem` message (without a length prefix). On the wire it is a
/// `WorkItem`; only the sidecar's server sends it, and nothing decodes into it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkItemFrame(pub Bytes);

impl WorkItemFrame {
    /// Encodes `item`: for work items whose parts are not already held encoded.
    pub fn of(item: &crate::durabletask::WorkItem) -> Self {
        Self(prost::Message::encode_to_vec(item).into())
    }

    /// Decodes the frame as the worker would read it.
    pub fn decode(&self) -> Result<crate::durabletask::WorkItem, prost::DecodeError> {
        prost::Message::decode(self.0.clone())
    }
}

impl prost::Message for WorkItemFrame {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        _tag: u32,
        _wire_type: WireType,
        _buf: &mut impl Buf,
        _ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only sent: a worker decodes a `WorkItem`.
        #[allow(deprecated)]
        Err(prost::DecodeError::new(
            "a WorkItemFrame is sent, never received",
        ))
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}
