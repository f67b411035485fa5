//! Target `placement`: the placement API's messages on both ends (a sidecar's stream messages
//! into the replicated member table; a pushed table into a sidecar's rings) and the raft RPC
//! payloads placement nodes exchange. The first byte picks which.

use crate::harness::Target;
use crate::input::Input;
use crate::sidecar::decode_checked;
use weft_placement::proto::placement::{self as pb, placement_message, sidecar_message};
use weft_placement::proto::raft::RaftPayload;
use weft_placement::{Command, Member, MemberTable, PlacementTable};
use weft_placement_server::raft::{RaftRpc, decode_request};

/// The inputs, in selector order.
pub const MESSAGES: &[&str] = &[
    "SidecarMessage (leader side: the member table)",
    "PlacementMessage (sidecar side: tables and rings)",
    "AddNodeRequest",
    "RemoveNodeRequest",
    "raft AppendEntries payload",
    "raft Vote payload",
    "raft PreVote payload",
    "raft InstallSnapshot payload",
];

#[derive(Default)]
pub struct Placement {
    /// The leader's table, kept across inputs so commands meet earlier members.
    table: MemberTable,
}

impl Placement {
    /// The leader's session handling: a register or heartbeat upserts the host, a leave removes
    /// it. Invariants: the version grows by one exactly when the table changed, the same
    /// command applied again changes nothing, and a member survives the wire unchanged.
    fn sidecar_message(&mut self, b: &[u8]) -> Result<(), String> {
        let Some(msg) = decode_checked::<pb::SidecarMessage>(b)? else {
            return Ok(());
        };
        let cmd = match msg.msg {
            Some(sidecar_message::Msg::Register(h) | sidecar_message::Msg::Heartbeat(h)) => {
                let m = Member::from_proto(h);
                if Member::from_proto(m.to_proto()) != m {
                    return Err(format!("member changed on the wire: {m:?}"));
                }
                Command::Upsert(m)
            }
            Some(sidecar_message::Msg::Leave(_)) => Command::Remove {
                host_ids: self.table.members.keys().take(1).cloned().collect(),
            },
            Some(sidecar_message::Msg::Ack(a)) => Command::SetClusterId(a.version.to_string()),
            None => return Ok(()),
        };
        let before = self.table.version;
        let r = self.table.apply(&cmd);
        let bump = u64::from(r.changed && !matches!(cmd, Command::SetClusterId(_)));
        if r.version != before + bump || self.table.version != r.version {
            return Err(format!("version {before} → {} after {cmd}", r.version));
        }
        let again = self.table.apply(&cmd);
        if again.changed || again.version != r.version {
            return Err(format!("{cmd} applied twice changed the table again"));
        }
        if self.table.members.len() > 64 {
            self.table = MemberTable::default();
        }
        Ok(())
    }
}

/// A sidecar receiving a table: accepted tables build their rings, and every lookup names a
/// member that registered the actor type.
fn placement_message(b: &[u8]) -> Result<(), String> {
    let Some(msg) = decode_checked::<pb::PlacementMessage>(b)? else {
        return Ok(());
    };
    let Some(placement_message::Msg::Table(t)) = msg.msg else {
        return Ok(());
    };
    let types: Vec<String> = t
        .hosts
        .iter()
        .flat_map(|h| h.actor_types.iter().cloned())
        .collect();
    let Ok(table) = PlacementTable::from_proto(t) else {
        return Ok(());
    };
    let mut keys = Input::new(b);
    for ty in types.iter().take(4) {
        let key = keys.string(&["wf-1", "", "order-42"]);
        if let Some(m) = table.lookup(ty, &key)
            && !m.actor_types.contains(ty)
        {
            return Err(format!(
                "{ty}/{key} placed on {}, which has no such type",
                m.host_id
            ));
        }
    }
    Ok(())
}

fn raft(rpc: RaftRpc, b: &[u8]) -> Result<(), String> {
    // A refusal is an INVALID_ARGUMENT status; only a panic would be a crash.
    if let Some(p) = decode_checked::<RaftPayload>(b)? {
        let _ = decode_request(rpc, &p);
    }
    // The JSON alone too: mutations of the seeds' JSON reach serde without protobuf framing.
    let _ = decode_request(rpc, &RaftPayload { json: b.to_vec() });
    Ok(())
}

impl Target for Placement {
    fn name(&self) -> &'static str {
        "placement"
    }

    fn run(&mut self, data: &[u8]) -> Result<(), String> {
        let Some((&sel, b)) = data.split_first() else {
            return Ok(());
        };
        match usize::from(sel) % MESSAGES.len() {
            0 => self.sidecar_message(b)?,
            1 => placement_message(b)?,
            2 => drop(decode_checked::<pb::AddNodeRequest>(b)?),
            3 => drop(decode_checked::<pb::RemoveNodeRequest>(b)?),
            4 => raft(RaftRpc::AppendEntries, b)?,
            5 => raft(RaftRpc::Vote, b)?,
            6 => raft(RaftRpc::PreVote, b)?,
            _ => raft(RaftRpc::InstallSnapshot, b)?,
        }
        Ok(())
    }
}
