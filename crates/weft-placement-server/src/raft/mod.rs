//! Everything that touches openraft lives under this module (its alpha APIs change between
//! releases): type config, durable stores, gRPC transport and a small facade the service uses.

mod log_store;
mod network;
mod state_machine;

pub use log_store::SqliteLogStore;
pub use network::RaftRpcServer;
#[doc(hidden)]
pub use network::{RaftRpc, decode_request};
pub use state_machine::{StateMachine, TablePublisher};

use crate::error::ServerError;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use weft_placement::table::{Command, CommandResult, MemberTable};

openraft::declare_raft_types!(
    /// Placement's raft types: commands are member-table changes, responses the new version.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = BasicNode,
);

pub type NodeId = u64;
pub type PlacementRaft = openraft::Raft<TypeConfig, StateMachine>;
pub(crate) type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub(crate) type Vote = openraft::alias::VoteOf<TypeConfig>;
pub(crate) type Entry = openraft::alias::EntryOf<TypeConfig>;
pub(crate) type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub(crate) type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>;

/// Raft timing and log compaction knobs.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// Build a snapshot after this many applied entries.
    pub snapshot_every: u64,
    /// Log entries kept behind the snapshot (a follower lagging more gets the snapshot).
    pub keep_logs: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        // A follower starts an election only after openraft's leader lease (= election_max)
        // plus its own timeout (election_min..election_max) without a heartbeat: 400–500 ms
        // here, 8–10 heartbeats. Failover is that plus one vote round (docs/placement.md).
        Self {
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(250),
            snapshot_every: 500,
            keep_logs: 200,
        }
    }
}

/// When this node last heard from the leader it follows (an accepted `AppendEntries`,
/// heartbeats included); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LeaderContact(Arc<Mutex<Option<Instant>>>);

impl LeaderContact {
    pub(crate) fn touch(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether a leader's message arrived within `within` (never: false).
    pub fn heard_within(&self, within: Duration) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() <= within)
    }
}

/// A raft member as status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftMember {
    pub id: NodeId,
    pub address: String,
    pub voter: bool,
}

/// This node's raft view, copied out of openraft's metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftView {
    pub id: NodeId,
    pub state: String,
    pub is_leader: bool,
    pub term: u64,
    pub last_applied: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub leader: Option<(NodeId, String)>,
    pub members: Vec<RaftMember>,
    pub initialized: bool,
}

/// Who leads, as far as this node knows; changes far less often than [`RaftView`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    pub is_leader: bool,
    pub leader: Option<(NodeId, String)>,
}

/// Facade over the openraft node.
#[derive(Clone)]
pub struct RaftNode {
    raft: PlacementRaft,
    view: watch::Receiver<RaftView>,
    leadership: watch::Receiver<Leadership>,
    publisher: TablePublisher,
    sm: StateMachine,
    contact: LeaderContact,
    tuning: RaftTuning,
}

fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "Leader",
        ServerState::Follower => "Follower",
        ServerState::Candidate => "Candidate",
        ServerState::Learner => "Learner",
        ServerState::Shutdown => "Shutdown",
    }
}

fn view_of(m: &openraft::RaftMetrics<TypeConfig>) -> RaftView {
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let members: Vec<RaftMember> = membership
        .nodes()
        .map(|(id, n)| RaftMember {
            id: *id,
            address: n.addr.clone(),
            voter: voters.contains(id),
        })
        .collect();
    let leader = m.current_leader.map(|l| {
        let addr = membership
            .get_node(&l)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        (l, addr)
    });
    RaftView {
        id: m.id,
        state: state_name(m.state).to_string(),
        is_leader: m.state == ServerState::Leader,
        term: m.current_term,
        last_applied: m.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
        snapshot_index: m.snapshot.as_ref().map(|l| l.index).unwrap_or(0),
        purged_index: m.purged.as_ref().map(|l| l.index).unwrap_or(0),
        leader,
        initialized: !members.is_empty(),
        members,
    }
}

/// Why a write did not happen: [`ServerError::NotLeader`], [`ServerError::Retry`] or
/// [`ServerError::Raft`].
fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ServerError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ServerError::NotLeader {
            leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
        },
        RaftError::APIError(e @ ClientWriteError::LogEntryDiscarded(_))
        | RaftError::APIError(
            e @ ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_)),
        ) => ServerError::Retry(e.to_string()),
        other => ServerError::Raft(other.to_string()),
    }
}

impl RaftNode {
    /// Opens (or creates) the node's durable state in `data_dir` and starts raft.
    pub async fn open(
        id: NodeId,
        data_dir: &Path,
        tuning: &RaftTuning,
        tls: Option<std::sync::Arc<weft_tls::TlsContext>>,
    ) -> Result<Self, ServerError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| ServerError::Storage(format!("create {}: {e}", data_dir.display())))?;
        let db = data_dir.join("placement-raft.db");
        let storage = |e: std::io::Error| ServerError::Storage(e.to_string());
        let log = SqliteLogStore::open(&db).map_err(storage)?;
        let publisher = TablePublisher::new();
        let sm = StateMachine::open(&db, publisher.clone()).map_err(storage)?;
        let config = openraft::Config {
            cluster_name: "weft-placement".into(),
            heartbeat_interval: tuning.heartbeat.as_millis() as u64,
            election_timeout_min: tuning.election_min.as_millis() as u64,
            election_timeout_max: tuning.election_max.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
            max_in_snapshot_log_to_keep: tuning.keep_logs,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ServerError::Config(e.to_string()))?;
        let raft = PlacementRaft::new(
            id,
            Arc::new(config),
            network::NetworkFactory(tls),
            log,
            sm.clone(),
        )
        .await
        .map_err(|e| ServerError::Raft(e.to_string()))?;
        let mut metrics = raft.metrics();
        let first = view_of(&metrics.borrow_watched());
        let lead = |v: &RaftView| Leadership {
            is_leader: v.is_leader,
            leader: v.leader.clone(),
        };
        let (lead_tx, leadership) = watch::channel(lead(&first));
        let (tx, view) = watch::channel(first);
        // Copy metrics into our own watch so callers never hold openraft's borrow across awaits.
        tokio::spawn(async move {
            while metrics.changed().await.is_ok() {
                let v = view_of(&metrics.borrow_watched());
                let l = lead(&v);
                lead_tx.send_if_modified(|old| {
                    let changed = *old != l;
                    *old = l;
                    changed
                });
                tx.send_if_modified(|old| {
                    let changed = *old != v;
                    *old = v;
                    changed
                });
            }
        });
        Ok(Self {
            raft,
            view,
            leadership,
            publisher,
            sm,
            contact: LeaderContact::default(),
            tuning: tuning.clone(),
        })
    }

    pub fn raft(&self) -> &PlacementRaft {
        &self.raft
    }

    /// The raft RPC service of this node (it records [`Self::leader_contact`]).
    pub fn rpc_service(
        &self,
    ) -> weft_placement::proto::raft::raft_server::RaftServer<RaftRpcServer> {
        RaftRpcServer::into_service(self.raft.clone(), self.contact.clone())
    }

    pub fn leader_contact(&self) -> &LeaderContact {
        &self.contact
    }

    pub fn tuning(&self) -> &RaftTuning {
        &self.tuning
    }

    pub fn view(&self) -> RaftView {
        self.view.borrow().clone()
    }

    pub fn watch_view(&self) -> watch::Receiver<RaftView> {
        self.view.clone()
    }

    pub fn watch_leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    pub fn publisher(&self) -> &TablePublisher {
        &self.publisher
    }

    pub fn table(&self) -> MemberTable {
        self.sm.table()
    }

    /// Whether the log/vote show the node was ever part of a cluster.
    pub async fn is_initialized(&self) -> Result<bool, ServerError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|e| ServerError::Raft(e.to_string()))
    }

    /// Initialises a fresh cluster with these voters. Callers must check `is_initialized` first.
    pub async fn initialize(&self, voters: BTreeMap<NodeId, String>) -> Result<(), ServerError> {
        let nodes: BTreeMap<NodeId, BasicNode> = voters
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        self.raft
            .initialize(nodes)
            .await
            .map_err(|e| ServerError::Raft(e.to_string()))
    }

    /// Proposes a table change; only succeeds on the leader.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, ServerError> {
        self.raft
            .client_write(cmd)
            .await
            .map(|r| r.data)
            .map_err(write_error)
    }

    /// Adds a placement node: learner first (catches up), then voter.
    pub async fn add_node(&self, id: NodeId, addr: String) -> Result<Vec<NodeId>, ServerError> {
        self.raft
            .add_learner(id, BasicNode { addr }, true)
            .await
            .map_err(write_error)?;
        let r = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        Ok(r.membership
            .map(|m| m.voter_ids().collect())
            .unwrap_or_default())
    }

    /// Removes a placement node from the voters and forgets it.
    pub async fn remove_node(&self, id: NodeId) -> Result<Vec<NodeId>, ServerError> {
        let r = self
            .raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        Ok(r.membership
            .map(|m| m.voter_ids().collect())
            .unwrap_or_default())
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
