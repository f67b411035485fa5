//! With `DAPR_API_TOKEN` set, gRPC reflection needs the token like every other call.

use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use weft_sidecar::{EngineConfig, SidecarConfig};
use weft_store::SqliteStore;

async fn list_services(
    addr: std::net::SocketAddr,
    token: Option<&str>,
) -> Result<Vec<String>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut req = tonic::Request::new(tokio_stream::iter([ask]));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("dapr-api-token", t.parse().unwrap());
    }
    let mut answers = client.server_reflection_info(req).await?.into_inner();
    let first = answers.message().await?.expect("an answer");
    match first.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            Ok(l.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn reflection_needs_the_api_token() {
    let shutdown = CancellationToken::new();
    let running = weft_sidecar::serve(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        SidecarConfig {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            api_token: Some("secret".into()),
            engine: EngineConfig::default(),
            ..SidecarConfig::default()
        },
        shutdown.clone(),
    )
    .await
    .expect("serve");
    for bad in [None, Some("wrong"), Some("secre")] {
        let e = list_services(running.grpc_addr, bad).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{bad:?}: {e:?}");
    }
    let services = list_services(running.grpc_addr, Some("secret"))
        .await
        .expect("with the token");
    assert!(
        services.iter().any(|s| s == "TaskHubSidecarService"),
        "{services:?}"
    );
    shutdown.cancel();
}
