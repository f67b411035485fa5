//! Raft RPCs over gRPC: the client side (`RaftNetworkV2`) and the server side (`Raft` service).
//! openraft's messages travel as JSON inside `weft.raft.v1.RaftPayload`.

use super::{LeaderContact, NodeId, PlacementRaft, Snapshot, TypeConfig, Vote};
use crate::error::ServerError;
use openraft::BasicNode;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::{Serialize, de::DeserializeOwned};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use weft_placement::proto::raft::{
    RaftPayload,
    raft_client::RaftClient,
    raft_server::{Raft as RaftService, RaftServer},
};
use weft_tls::{Dial, Expect, TlsContext};

/// Raft messages carry whole snapshots; the member table is small but allow generous room.
pub(crate) const MAX_RAFT_MESSAGE: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct WireError(String);

fn encode<T: Serialize>(v: &T) -> Result<RaftPayload, ServerError> {
    serde_json::to_vec(v)
        .map(|json| RaftPayload { json })
        .map_err(|e| ServerError::Internal(format!("encode raft message: {e}")))
}

fn decode<T: DeserializeOwned>(p: &RaftPayload) -> Result<T, ServerError> {
    serde_json::from_slice(&p.json)
        .map_err(|e| ServerError::InvalidArgument(format!("decode raft message: {e}")))
}

/// The raft RPCs a placement node serves.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftRpc {
    AppendEntries,
    Vote,
    PreVote,
    InstallSnapshot,
}

/// Decodes an RPC's payload exactly as the server does before handing it to raft (the fuzz
/// targets call this; nothing runs behind it).
#[doc(hidden)]
pub fn decode_request(rpc: RaftRpc, p: &RaftPayload) -> Result<(), ServerError> {
    match rpc {
        RaftRpc::AppendEntries => decode::<AppendEntriesRequest<TypeConfig>>(p).map(drop),
        RaftRpc::Vote | RaftRpc::PreVote => decode::<VoteRequest<TypeConfig>>(p).map(drop),
        RaftRpc::InstallSnapshot => decode::<SnapshotRequest>(p).map(drop),
    }
}

/// `InstallSnapshot`'s payload: the leader's vote, the snapshot's meta and its data.
type SnapshotRequest = (Vote, super::SnapshotMeta, Vec<u8>);

/// Creates one lazily connected client per peer (over mutual TLS when the node has a context).
#[derive(Clone, Default)]
pub struct NetworkFactory(pub Option<Arc<TlsContext>>);

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient::new(
            target,
            &node.addr,
            &Dial::new(self.0.clone(), Expect::Placement),
        )
    }
}

/// A channel to one peer. Connection errors surface as `Unreachable` so openraft backs off.
pub struct PeerClient {
    target: NodeId,
    channel: Option<Channel>,
    addr: String,
}

impl PeerClient {
    fn new(target: NodeId, addr: &str, dial: &Dial) -> Self {
        let channel = Dial::endpoint(addr).ok().map(|e| {
            dial.connect_lazy(
                e.connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true),
            )
        });
        Self {
            target,
            channel,
            addr: addr.to_string(),
        }
    }

    fn client(&self) -> Result<RaftClient<Channel>, Unreachable<TypeConfig>> {
        let ch = self.channel.clone().ok_or_else(|| {
            Unreachable::new(&WireError(format!("bad peer address {}", self.addr)))
        })?;
        Ok(RaftClient::new(ch)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE))
    }

    async fn call<Req, Resp, F, Fut>(
        &self,
        req: &Req,
        ttl: Duration,
        f: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, Request<RaftPayload>) -> Fut,
        Fut: Future<Output = Result<Response<RaftPayload>, Status>>,
    {
        let payload = encode(req).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        let mut request = Request::new(payload);
        request.set_timeout(ttl);
        let client = self.client()?;
        let reply = match tokio::time::timeout(ttl, f(client, request)).await {
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::new(&WireError(
                    format!("raft rpc to node {} timed out", self.target),
                ))));
            }
            Ok(Err(s)) => return Err(status_to_rpc(s)),
            Ok(Ok(r)) => r.into_inner(),
        };
        // The server sends `Result<Resp, String>`: a remote raft error is reported as a network
        // error, which makes openraft retry later (our RPCs have no typed remote errors).
        let res: Result<Resp, String> =
            decode(&reply).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        res.map_err(|e| RPCError::Network(NetworkError::new(&WireError(e))))
    }
}

fn status_to_rpc(s: Status) -> RPCError<TypeConfig> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&s))
        }
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, option.hard_ttl(), |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, option.hard_ttl(), |mut c, r| async move {
            c.vote(r).await
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, option.hard_ttl(), |mut c, r| async move {
            c.pre_vote(r).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = (vote, snapshot.meta, snapshot.snapshot);
        let call = self.call(&req, option.hard_ttl(), |mut c, r| async move {
            c.install_snapshot(r).await
        });
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = call => res.map_err(|e| match e {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::Network(n) => StreamingError::Network(n),
                RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&r)),
            }),
        }
    }
}

/// Server side: hands incoming RPCs to the local raft node.
pub struct RaftRpcServer {
    raft: PlacementRaft,
    contact: LeaderContact,
}

impl RaftRpcServer {
    /// `contact` records every `AppendEntries` (heartbeats too) raft accepted from a leader.
    pub fn into_service(raft: PlacementRaft, contact: LeaderContact) -> RaftServer<Self> {
        RaftServer::new(Self { raft, contact })
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE)
    }
}

fn reply<T: Serialize, E: std::fmt::Display>(
    r: Result<T, E>,
) -> Result<Response<RaftPayload>, Status> {
    Ok(Response::new(encode(&r.map_err(|e| e.to_string()))?))
}

#[tonic::async_trait]
impl RaftService for RaftRpcServer {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req.get_ref())?;
        let res = self.raft.append_entries(rpc).await;
        // Anything but "your vote is stale" came from the leader this node follows.
        if matches!(&res, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.contact.touch();
        }
        reply(res)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<TypeConfig> = decode(req.get_ref())?;
        reply(self.raft.vote(rpc).await)
    }

    async fn pre_vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<TypeConfig> = decode(req.get_ref())?;
        reply(self.raft.pre_vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let (vote, meta, data): SnapshotRequest = decode(req.get_ref())?;
        let snapshot = Snapshot {
            meta,
            snapshot: data,
        };
        reply(self.raft.install_full_snapshot(vote, snapshot).await)
    }
}
