//! The table of client operations that run on an instance's owner: each row names the call's
//! message, the internal API method that forwards it, the key its owner is found by, and the
//! reply message; the `Call` enum, its accessors and the forwarding dispatch are generated from it.

use super::{Forwarded, Reply, Router, classify};
use std::time::Duration;
use tonic::transport::Channel;
use weft_proto::internal::{self as pb, internal_client::InternalClient};

/// A reply message of the internal API, converted to and from the engine's [`Reply`].
pub trait WireReply: Sized {
    fn into_reply(self) -> Reply;
    /// `None` if `r` is not this message's kind of answer (a bug: the table pairs them).
    fn from_reply(r: Reply) -> Option<Self>;
}

macro_rules! client_calls {
    ($( $variant:ident($msg:ident) via $method:ident -> $wire:ident, key |$c:ident| $key:expr; )*) => {
        /// A client operation that must run on the owner of its instance.
        #[derive(Debug, Clone)]
        pub enum Call {
            $( $variant(pb::$msg), )*
        }

        impl Call {
            /// The app the instance belongs to (empty: the receiving sidecar's own).
            pub fn app(&self) -> &str {
                match self {
                    $( Call::$variant(c) => &c.app_id, )*
                }
            }

            /// The app of the sidecar the client called (empty: the call's own app).
            pub fn caller(&self) -> &str {
                match self {
                    $( Call::$variant(c) => &c.caller_app_id, )*
                }
            }

            /// The instance whose owner runs the call (a rerun: the new instance).
            pub fn key(&self) -> &str {
                match self {
                    $( Call::$variant($c) => $key, )*
                }
            }
        }

        impl Router {
            /// Sends `call` to a peer over the internal API.
            pub(super) async fn send(
                &self,
                c: &mut InternalClient<Channel>,
                call: Call,
                timeout: Duration,
            ) -> Forwarded<Reply> {
                match call {
                    $( Call::$variant(m) => classify(c.$method(self.request(m, timeout)).await)
                        .map(|r| r.map(<pb::$wire as WireReply>::into_reply)), )*
                }
            }
        }
    };
}

client_calls! {
    Start(StartCall) via start -> StartReply, key |c| &c.instance_id;
    Raise(RaiseEventCall) via raise_event -> Ack, key |c| &c.instance_id;
    Terminate(TerminateCall) via terminate -> Changed, key |c| &c.instance_id;
    Suspend(SuspendCall) via suspend -> Changed, key |c| &c.instance_id;
    Resume(ResumeCall) via resume -> Changed, key |c| &c.instance_id;
    Purge(PurgeCall) via purge -> PurgeReply, key |c| &c.instance_id;
    Rerun(RerunCall) via rerun -> RerunReply, key |c| c
        .request
        .as_ref()
        .and_then(|r| r.new_instance_id.as_deref())
        .unwrap_or("");
}

impl WireReply for pb::StartReply {
    fn into_reply(self) -> Reply {
        Reply::Id(self.instance_id)
    }
    fn from_reply(r: Reply) -> Option<Self> {
        match r {
            Reply::Id(instance_id) => Some(Self { instance_id }),
            _ => None,
        }
    }
}

impl WireReply for pb::RerunReply {
    fn into_reply(self) -> Reply {
        Reply::Id(self.new_instance_id)
    }
    fn from_reply(r: Reply) -> Option<Self> {
        match r {
            Reply::Id(new_instance_id) => Some(Self { new_instance_id }),
            _ => None,
        }
    }
}

impl WireReply for pb::Ack {
    fn into_reply(self) -> Reply {
        Reply::Done
    }
    fn from_reply(r: Reply) -> Option<Self> {
        matches!(r, Reply::Done).then_some(Self {})
    }
}

impl WireReply for pb::Changed {
    fn into_reply(self) -> Reply {
        Reply::Changed(self.changed)
    }
    fn from_reply(r: Reply) -> Option<Self> {
        match r {
            Reply::Changed(changed) => Some(Self { changed }),
            _ => None,
        }
    }
}

impl WireReply for pb::PurgeReply {
    fn into_reply(self) -> Reply {
        Reply::Purged(self.deleted)
    }
    fn from_reply(r: Reply) -> Option<Self> {
        match r {
            Reply::Purged(deleted) => Some(Self { deleted }),
            _ => None,
        }
    }
}
