//! The `weft.placement.v1.Placement` gRPC service: sidecar sessions (register, heartbeat, ack,
//! table push), leader-side liveness, cluster status and placement-node admin.

use crate::error::ServerError;
use crate::raft::{RaftNode, RaftView};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use weft_placement::proto::placement::{
    self as pb, placement_client::PlacementClient as PbClient, placement_message,
    placement_server::Placement, sidecar_message,
};
use weft_placement::table::{Command, Member, MemberTable};
use weft_tls::authz::{authorize, rules};
use weft_tls::{Dial, Expect, Peer, TlsContext};

/// The port name in refusal counters.
const PORT: &str = "placement";

/// What the leader knows about one sidecar's session.
#[derive(Debug, Clone)]
struct Session {
    last_seen: Instant,
    acked_version: u64,
    connected: bool,
    /// Distinguishes a reconnected stream from the one it replaced.
    stream_id: u64,
    /// The raft term this leader served the session in: sessions of an earlier term of this
    /// node's leadership are stale and dropped when a new term starts.
    term: u64,
}

/// An admin request to forward to the leader.
enum AdminForward {
    Add(pb::AddNodeRequest),
    Remove(pb::RemoveNodeRequest),
}

/// Shared state of the service on one placement node.
pub struct PlacementService {
    raft: RaftNode,
    vnodes_per_host: u32,
    liveness_timeout: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    /// Upserts proposed but not yet applied, so heartbeats do not repeat the same write.
    pending: Mutex<HashMap<String, Member>>,
    next_stream: std::sync::atomic::AtomicU64,
    /// For forwarding admin calls to the leader.
    tls: Option<Arc<TlsContext>>,
}

type PbStream = Pin<Box<dyn Stream<Item = Result<pb::PlacementMessage, Status>> + Send>>;

fn table_msg(t: &MemberTable, vnodes: u32) -> pb::PlacementMessage {
    pb::PlacementMessage {
        msg: Some(placement_message::Msg::Table(t.to_proto(vnodes))),
    }
}

fn redirect_msg(view: &RaftView) -> pb::PlacementMessage {
    let (leader_id, leader_address) = match &view.leader {
        Some((id, addr)) if !view.is_leader => (*id, addr.clone()),
        _ => (0, String::new()),
    };
    pb::PlacementMessage {
        msg: Some(placement_message::Msg::Redirect(pb::Redirect {
            leader_id,
            leader_address,
        })),
    }
}

impl PlacementService {
    pub fn new(
        raft: RaftNode,
        vnodes_per_host: u32,
        liveness_timeout: Duration,
        tls: Option<Arc<TlsContext>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            raft,
            vnodes_per_host,
            liveness_timeout,
            sessions: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_stream: Default::default(),
            tls,
        })
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a sign of life on a stream; (re)creates the session if a leadership change
    /// cleared it meanwhile. `acked` is what this stream has acknowledged so far, so a recreated
    /// session shows it at once instead of 0 until the next table.
    fn touch(&self, host_id: &str, stream_id: u64, term: u64, acked: u64) {
        let mut sessions = self.sessions();
        let s = sessions.entry(host_id.to_string()).or_insert(Session {
            last_seen: Instant::now(),
            acked_version: 0,
            connected: true,
            stream_id,
            term,
        });
        s.last_seen = Instant::now();
        s.connected = true;
        s.stream_id = stream_id;
        s.term = s.term.max(term);
        s.acked_version = s.acked_version.max(acked);
    }

    /// Proposes an upsert when the table's entry differs from what the sidecar reports.
    fn upsert_if_changed(self: &Arc<Self>, member: Member) {
        let current = self
            .raft
            .publisher()
            .latest
            .borrow()
            .members
            .get(&member.host_id)
            .cloned();
        if current.as_ref() == Some(&member) {
            return;
        }
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.get(&member.host_id) == Some(&member) {
                return;
            }
            pending.insert(member.host_id.clone(), member.clone());
        }
        let this = self.clone();
        tokio::spawn(async move {
            let host_id = member.host_id.clone();
            // A brand-new cluster is named before its first member, so no sidecar that knew
            // an earlier cluster ignores its first tables for their low versions.
            this.ensure_cluster_id().await;
            let res = this.raft.write(Command::Upsert(member.clone())).await;
            {
                let mut pending = this.pending.lock().unwrap_or_else(|p| p.into_inner());
                if pending.get(&host_id) == Some(&member) {
                    pending.remove(&host_id);
                }
            }
            if let Err(e) = res {
                // The stream notices the lost leadership through the view watch and redirects;
                // the next heartbeat retries otherwise.
                tracing::debug!(error = %e, "upsert failed");
            }
        });
    }

    /// Whether this node leads, once leadership is settled. A follower that knows no leader, or
    /// has not heard from its leader for three heartbeats (it may be dead), holds the
    /// registration until a live or newly elected leader is known or it leads itself (at most
    /// 3 × the maximum election timeout): a sidecar parked here during an election is answered
    /// the moment the new leader exists, instead of polling followers that still point at the
    /// dead one.
    async fn settle_leadership(&self) -> bool {
        let tuning = self.raft.tuning();
        let silent = tuning.heartbeat * 3;
        let deadline = tokio::time::Instant::now() + tuning.election_max * 3;
        let mut leadership = self.raft.watch_leadership();
        let suspect = leadership.borrow().leader.clone();
        loop {
            let now = leadership.borrow_and_update().clone();
            if now.is_leader {
                return true;
            }
            // A leader other than the one held suspect was elected since: it is news enough
            // (its first message may still be on its way through this node's log).
            let live = now.leader.is_some()
                && (now.leader != suspect || self.raft.leader_contact().heard_within(silent));
            if live || tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::select! {
                changed = leadership.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                }
                // Heartbeats of the same leader may resume: no leadership change announces that.
                _ = tokio::time::sleep(tuning.heartbeat / 2) => {}
            }
        }
    }

    /// Drives one sidecar stream on the leader until it ends or leadership is lost.
    async fn run_session(
        self: Arc<Self>,
        first: Member,
        mut inbound: Streaming<pb::SidecarMessage>,
        out: mpsc::Sender<Result<pb::PlacementMessage, Status>>,
    ) {
        let host_id = first.host_id.clone();
        let app_id = first.app_id.clone();
        let stream_id = self
            .next_stream
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let term = self.raft.view().term;
        let mut acked = 0u64;
        self.sessions().insert(
            host_id.clone(),
            Session {
                last_seen: Instant::now(),
                acked_version: 0,
                connected: true,
                stream_id,
                term,
            },
        );
        // Subscribe before reading the latest table so no version falls in between.
        let mut changes = self.raft.publisher().changes.subscribe();
        let latest = self.raft.publisher().latest.borrow().clone();
        let mut last_sent = latest.version;
        if out
            .send(Ok(table_msg(&latest, self.vnodes_per_host)))
            .await
            .is_err()
        {
            return;
        }
        self.upsert_if_changed(first);
        let mut leadership = self.raft.watch_leadership();
        let mut left = false;
        loop {
            tokio::select! {
                msg = inbound.next() => {
                    let Some(Ok(msg)) = msg else { break };
                    match msg.msg {
                        Some(sidecar_message::Msg::Register(h)) | Some(sidecar_message::Msg::Heartbeat(h)) => {
                            self.touch(&host_id, stream_id, term, acked);
                            // A session speaks for one host of one app (the one it was
                            // authorised to register) for its whole life.
                            if h.host_id == host_id && h.app_id == app_id {
                                self.upsert_if_changed(Member::from_proto(h));
                            }
                        }
                        Some(sidecar_message::Msg::Ack(a)) => {
                            acked = acked.max(a.version);
                            self.touch(&host_id, stream_id, term, acked);
                        }
                        Some(sidecar_message::Msg::Leave(_)) => {
                            left = true;
                            break;
                        }
                        None => {}
                    }
                }
                t = changes.recv() => {
                    let table = match t {
                        Ok(t) => t,
                        // Fell behind the broadcast buffer: the full latest table supersedes.
                        Err(broadcast::error::RecvError::Lagged(_)) => self.raft.publisher().latest.borrow().clone(),
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    if table.version > last_sent {
                        last_sent = table.version;
                        if out.send(Ok(table_msg(&table, self.vnodes_per_host))).await.is_err() {
                            break;
                        }
                    }
                }
                changed = leadership.changed() => {
                    let lost = changed.is_err() || !leadership.borrow_and_update().is_leader;
                    if lost {
                        let _ = out.send(Ok(redirect_msg(&self.raft.view()))).await;
                        break;
                    }
                }
            }
        }
        {
            let mut sessions = self.sessions();
            if let Some(s) = sessions.get_mut(&host_id)
                && s.stream_id == stream_id
            {
                // Liveness keeps judging by last_seen: a brief disconnect is not a removal.
                s.connected = false;
            }
        }
        if left {
            let _ = self
                .raft
                .write(Command::Remove {
                    host_ids: vec![host_id.clone()],
                })
                .await;
            self.sessions().remove(&host_id);
        }
    }

    /// On the leader: names the cluster if its table has no identity yet (a new cluster, or one
    /// whose table was stored before identities existed). The first applied name wins, so a
    /// second proposal by a leader that had not applied the first changes nothing.
    pub async fn ensure_cluster_id(&self) {
        if !self.raft.view().is_leader
            || !self.raft.publisher().latest.borrow().cluster_id.is_empty()
        {
            return;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        match self.raft.write(Command::SetClusterId(id.clone())).await {
            Ok(r) if r.changed => tracing::info!(cluster_id = %id, "placement cluster named"),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "naming the cluster failed"),
        }
    }

    /// One liveness pass on the leader: grants newly seen table members a grace period and
    /// removes members silent for longer than the timeout. Returns the removed host ids.
    pub async fn check_liveness(&self) -> Vec<String> {
        if !self.raft.view().is_leader {
            return Vec::new();
        }
        let table = self.raft.publisher().latest.borrow().clone();
        let now = Instant::now();
        let dead: Vec<String> = {
            let mut sessions = self.sessions();
            // A connected stream whose registration is not applied yet keeps its session (and
            // the acks it already sent).
            sessions.retain(|h, s| table.members.contains_key(h) || s.connected);
            for h in table.members.keys() {
                // A member this leader never heard from (e.g. right after a failover) gets a
                // full timeout to reconnect before it is judged.
                sessions.entry(h.clone()).or_insert(Session {
                    last_seen: now,
                    acked_version: 0,
                    connected: false,
                    stream_id: u64::MAX,
                    term: 0,
                });
            }
            sessions
                .iter()
                .filter(|(_, s)| now.duration_since(s.last_seen) > self.liveness_timeout)
                .map(|(h, _)| h.clone())
                .collect()
        };
        if dead.is_empty() {
            return dead;
        }
        match self
            .raft
            .write(Command::Remove {
                host_ids: dead.clone(),
            })
            .await
        {
            Ok(_) => {
                tracing::info!(hosts = ?dead, "removed silent hosts");
                dead
            }
            Err(e) => {
                tracing::debug!(error = %e, "liveness removal failed");
                Vec::new()
            }
        }
    }

    /// Lowest table version acknowledged by the connected hosts (u64::MAX when none).
    pub fn min_acked_version(&self) -> u64 {
        self.sessions()
            .values()
            .filter(|s| s.connected)
            .map(|s| s.acked_version)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Forgets all sessions (called when this node loses leadership).
    pub fn reset_sessions(&self) {
        self.sessions().clear();
    }

    /// Called when this node starts leading in `term`: drops sessions left from an earlier
    /// leadership of this node (their clocks and acks are stale), but keeps the ones streams
    /// opened in this term — sidecars may connect before the liveness loop notices the new term,
    /// and wiping them showed `acked_version` 0 until the next table change.
    pub fn start_term(&self, term: u64) {
        self.sessions().retain(|_, s| s.term >= term);
    }

    fn status(&self) -> pb::ClusterStatusResponse {
        let view = self.raft.view();
        let table = self.raft.publisher().latest.borrow().clone();
        let sessions = self.sessions().clone();
        let node = |id: u64, address: String, voter: bool| {
            let me = id == view.id;
            pb::PlacementNodeStatus {
                id,
                address,
                role: if voter { "voter" } else { "learner" }.into(),
                state: if me {
                    view.state.clone()
                } else {
                    String::new()
                },
                term: if me { view.term } else { 0 },
                last_applied: if me { view.last_applied } else { 0 },
                snapshot_index: if me { view.snapshot_index } else { 0 },
                purged_index: if me { view.purged_index } else { 0 },
            }
        };
        let members: Vec<pb::PlacementNodeStatus> = view
            .members
            .iter()
            .map(|m| node(m.id, m.address.clone(), m.voter))
            .collect();
        let self_status = members
            .iter()
            .find(|m| m.id == view.id)
            .cloned()
            .unwrap_or_else(|| pb::PlacementNodeStatus {
                id: view.id,
                state: view.state.clone(),
                term: view.term,
                last_applied: view.last_applied,
                snapshot_index: view.snapshot_index,
                purged_index: view.purged_index,
                ..Default::default()
            });
        let (leader_id, leader_address) = view.leader.clone().unwrap_or((0, String::new()));
        pb::ClusterStatusResponse {
            node_id: view.id,
            leader_id,
            leader_address,
            self_status: Some(self_status),
            members,
            table_version: table.version,
            cluster_id: table.cluster_id.clone(),
            hosts: table
                .members
                .values()
                .map(|m| {
                    let s = sessions.get(&m.host_id);
                    pb::HostStatus {
                        host: Some(m.to_proto()),
                        acked_version: s.map(|s| s.acked_version).unwrap_or(0),
                        connected: s.map(|s| s.connected).unwrap_or(false),
                    }
                })
                .collect(),
            initialized: view.initialized,
        }
    }

    /// A sidecar registers only as the app its certificate names, and never under the host id
    /// of another app's sidecar (which would take over that host's place on the rings).
    fn authorize_registration(&self, peer: &Peer, first: &pb::HostInfo) -> Result<(), ServerError> {
        let app = first.app_id.as_str();
        authorize(
            peer,
            PORT,
            &format!("register a sidecar of app `{app}`"),
            |id| id.app() == Some(app),
        )
        .map_err(|s| ServerError::from_status(&s))?;
        if matches!(peer, Peer::Plain) {
            return Ok(());
        }
        let holder = self
            .raft
            .publisher()
            .latest
            .borrow()
            .members
            .get(&first.host_id)
            .map(|m| m.app_id.clone());
        match holder {
            Some(other) if other != app => {
                metrics::counter!("weft_auth_refused_total", "port" => PORT, "code" => "permission_denied").increment(1);
                Err(ServerError::PermissionDenied(format!(
                    "{}: host id `{}` belongs to a sidecar of app `{other}`",
                    peer.describe(),
                    first.host_id
                )))
            }
            _ => Ok(()),
        }
    }

    /// Runs an admin call on the leader: locally if we lead, else forwarded one hop (the
    /// leader's answer is passed on as it came).
    async fn on_leader<F, Fut>(
        &self,
        local: F,
        forward: AdminForward,
    ) -> Result<pb::MembershipResponse, ServerError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u64>, ServerError>>,
    {
        let view = self.raft.view();
        if view.is_leader {
            return match local().await {
                Ok(voters) => Ok(pb::MembershipResponse { voters }),
                Err(ServerError::NotLeader { .. }) => {
                    Err(ServerError::Unavailable("leadership changed; retry".into()))
                }
                Err(ServerError::Retry(e)) => Err(ServerError::Unavailable(e)),
                Err(e) => Err(e),
            };
        }
        let Some((_, addr)) = view.leader else {
            return Err(ServerError::Unavailable(
                "no placement leader yet; retry".into(),
            ));
        };
        let unreachable =
            |e: String| ServerError::Unavailable(format!("leader {addr} unreachable: {e}"));
        let endpoint = Dial::endpoint(&addr).map_err(|e| unreachable(e.to_string()))?;
        let channel = Dial::new(self.tls.clone(), Expect::Placement)
            .connect(endpoint)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut client = PbClient::new(channel);
        let resp = match forward {
            AdminForward::Add(r) => client.add_node(r).await,
            AdminForward::Remove(r) => client.remove_node(r).await,
        };
        resp.map(|r| r.into_inner())
            .map_err(|s| ServerError::from_status(&s))
    }
}

/// Handle wrapping the shared service so tonic can own it.
#[derive(Clone)]
pub struct PlacementApi(pub Arc<PlacementService>);

#[tonic::async_trait]
impl Placement for PlacementApi {
    type ReportStatusStream = PbStream;

    async fn report_status(
        &self,
        request: Request<Streaming<pb::SidecarMessage>>,
    ) -> Result<Response<Self::ReportStatusStream>, Status> {
        let peer = weft_tls::caller(&request);
        let mut inbound = request.into_inner();
        let first = match inbound.next().await {
            Some(Ok(pb::SidecarMessage {
                msg: Some(sidecar_message::Msg::Register(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(ServerError::InvalidArgument(
                    "first message must be `register`".into(),
                )
                .into());
            }
        };
        if first.host_id.is_empty() {
            return Err(ServerError::InvalidArgument("host_id must not be empty".into()).into());
        }
        self.0.authorize_registration(&peer, &first)?;
        let (tx, rx) = mpsc::channel(64);
        let svc = self.0.clone();
        let member = Member::from_proto(first);
        tokio::spawn(async move {
            if svc.settle_leadership().await {
                svc.run_session(member, inbound, tx).await;
            } else {
                // Followers never serve tables: the sidecar reconnects to the leader (or retries).
                let _ = tx.send(Ok(redirect_msg(&svc.raft.view()))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        authorize(
            &weft_tls::caller(&request),
            PORT,
            "read the cluster status",
            rules::anyone,
        )?;
        Ok(Response::new(self.0.status()))
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        authorize(
            &weft_tls::caller(&request),
            PORT,
            "add placement nodes",
            rules::placement_or_admin,
        )?;
        let r = request.into_inner();
        if r.id == 0 || r.address.is_empty() {
            return Err(
                ServerError::InvalidArgument("id (> 0) and address are required".into()).into(),
            );
        }
        let raft = self.0.raft.clone();
        let (id, addr) = (r.id, r.address.clone());
        self.0
            .on_leader(
                move || async move { raft.add_node(id, addr).await },
                AdminForward::Add(r),
            )
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        authorize(
            &weft_tls::caller(&request),
            PORT,
            "remove placement nodes",
            rules::placement_or_admin,
        )?;
        let r = request.into_inner();
        let raft = self.0.raft.clone();
        let id = r.id;
        self.0
            .on_leader(
                move || async move { raft.remove_node(id).await },
                AdminForward::Remove(r),
            )
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}
