//! `grpc.health.v1.Health` on the placement port: SERVING once this node knows a raft leader,
//! so a Kubernetes `grpc` readiness probe holds a node back until the cluster has elected one.

use crate::error::ServerError;
use crate::raft::{Leadership, RaftNode};
use std::pin::Pin;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt, wrappers::WatchStream};
use tonic::{Request, Response, Status};
use weft_placement::proto::health::health_check_response::ServingStatus;
use weft_placement::proto::health::health_server::{Health, HealthServer};
use weft_placement::proto::health::{HealthCheckRequest, HealthCheckResponse};

/// Service names this node answers for; "" is the whole server (what probes ask by default).
const KNOWN: [&str; 2] = ["", "weft.placement.v1.Placement"];

/// Health answers derived from the node's view of who leads.
pub struct LeaderHealth {
    leadership: watch::Receiver<Leadership>,
}

impl LeaderHealth {
    pub fn server(raft: &RaftNode) -> HealthServer<Self> {
        HealthServer::new(Self {
            leadership: raft.watch_leadership(),
        })
    }
}

fn status_of(l: &Leadership) -> HealthCheckResponse {
    let status = if l.leader.is_some() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    HealthCheckResponse {
        status: status as i32,
    }
}

fn check_name(req: &HealthCheckRequest) -> Result<(), ServerError> {
    if KNOWN.contains(&req.service.as_str()) {
        Ok(())
    } else {
        Err(ServerError::NotFound(format!(
            "unknown service `{}`",
            req.service
        )))
    }
}

type WatchResponses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for LeaderHealth {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        check_name(req.get_ref())?;
        Ok(Response::new(status_of(&self.leadership.borrow())))
    }

    type WatchStream = WatchResponses;

    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        check_name(req.get_ref())?;
        // WatchStream yields the current value first, then every change (as the protocol asks).
        let stream = WatchStream::new(self.leadership.clone())
            .map(|l| status_of(&l))
            .map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }
}
