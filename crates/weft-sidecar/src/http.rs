//! The Dapr HTTP workflow API (`/v1.0/workflows/dapr/…`), health endpoints, and Weft's own
//! read endpoints for listing instances and reading history (`/weft/v1/…`).

use crate::engine::{Engine, StartRequest};
use crate::error::EngineError;
use crate::history_json::event_json;
use crate::route::Router;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use weft_core::RuntimeStatus;
use weft_core::time::rfc3339;
use weft_core::turn::decode_failure;
use weft_core::{InstanceMeta, ids};
use weft_store::ListFilter;

#[derive(Clone)]
struct AppState {
    engine: Engine,
    router: Router,
    token: Option<Arc<str>>,
    max_body: usize,
}

/// A JSON error in Dapr's shape; status and code come from the error table (`error.rs`), with
/// `op` naming the failed operation for errors that have no Dapr code of their own.
struct ApiError {
    op: &'static str,
    error: EngineError,
}

impl ApiError {
    fn new(op: &'static str, error: EngineError) -> Self {
        Self { op, error }
    }
}

impl From<EngineError> for ApiError {
    /// An error that carries its own Dapr code (the operation code is never used).
    fn from(error: EngineError) -> Self {
        Self::new("ERR_INTERNAL", error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "errorCode": self.error.dapr_code(self.op),
            "message": self.error.to_string(),
        });
        (self.error.http_status(), Json(body)).into_response()
    }
}

/// Maps an engine result's error for operation `op`.
trait OrApi<T> {
    fn or_api(self, op: &'static str) -> Result<T, ApiError>;
}

impl<T> OrApi<T> for Result<T, EngineError> {
    fn or_api(self, op: &'static str) -> Result<T, ApiError> {
        self.map_err(|e| ApiError::new(op, e))
    }
}

type ApiResult = Result<Response, ApiError>;

/// axum's `Path`, refusing a malformed path (bad percent-encoding, not UTF-8) with an error in
/// Dapr's JSON shape instead of axum's plain text, as every other error of this API.
struct ApiPath<T>(T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Self(v)),
            Err(e) => Err(EngineError::Malformed(e.body_text()).into()),
        }
    }
}

/// axum's `Query`, with the same JSON error for a malformed query string (found by the fuzzer:
/// `?limit=x` answered plain text).
struct ApiQuery<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Self(v)),
            Err(e) => Err(EngineError::Malformed(e.body_text()).into()),
        }
    }
}

pub fn router(router: Router, token: Option<String>, max_payload: usize) -> axum::Router {
    let state = AppState {
        engine: router.engine().clone(),
        router,
        token: token.map(Arc::from),
        max_body: max_payload,
    };
    let api = axum::Router::new()
        .route("/{ver}/workflows/{component}/{instance}", get(get_workflow))
        .route(
            "/{ver}/workflows/{component}/{target}/{op}",
            post(workflow_op),
        )
        .route(
            "/{ver}/workflows/{component}/{instance}/raiseEvent/{event}",
            post(raise_event),
        )
        .route("/weft/v1/instances", get(list_instances))
        .route("/weft/v1/purge", post(purge_by_filter))
        .route("/weft/v1/instances/{instance}/history", get(history));
    let dashboard = crate::ui::routes(state.router.clone(), state.token.clone(), api.clone());
    let api = api.layer(middleware::from_fn_with_state(state.clone(), auth));
    let metrics = crate::telemetry::metrics_handle();
    let census_of = state.engine.clone();
    axum::Router::new()
        .route(
            "/metrics",
            get(move || async move {
                // Counted at scrape time: cheaper than a gauge update per activation.
                census_of.memory_census().publish();
                census_of.publish_cross_app_backlog().await;
                metrics.map(|h| h.render()).unwrap_or_default()
            }),
        )
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz))
        .merge(api)
        .merge(dashboard)
        // Leave room above the payload limit so we can answer oversize bodies with our own 413.
        .layer(DefaultBodyLimit::max(max_payload.saturating_mul(2)))
        .fallback(|| async {
            ApiError::from(EngineError::NoSuchEndpoint("no such endpoint".into()))
        })
        .with_state(state)
}

/// Ready only while the store answers (a PostgreSQL outage makes the sidecar not-ready).
async fn healthz(State(st): State<AppState>) -> StatusCode {
    let check = st.engine.store().health();
    match tokio::time::timeout(std::time::Duration::from_secs(2), check).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &st.token {
        let given = req.headers().get("dapr-api-token");
        if !given.is_some_and(|v| crate::auth::token_matches(v.as_bytes(), token.as_bytes())) {
            return ApiError::from(EngineError::Unauthenticated("invalid api token".into()))
                .into_response();
        }
    }
    next.run(req).await
}

fn check_version(ver: &str) -> Result<(), ApiError> {
    match ver {
        "v1.0" | "v1.0-beta1" | "v1.0-alpha1" => Ok(()),
        _ => Err(EngineError::NoSuchEndpoint(format!("unknown API version '{ver}'")).into()),
    }
}

fn body_string(st: &AppState, body: &Bytes, what: &str) -> Result<String, ApiError> {
    if body.len() > st.max_body {
        return Err(EngineError::PayloadTooLarge(format!(
            "{what} is {} bytes; the limit is {} bytes",
            body.len(),
            st.max_body
        ))
        .into());
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| EngineError::Malformed(format!("{what} is not valid UTF-8")).into())
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

fn bad_request(msg: String) -> ApiError {
    ApiError::new("ERR_BAD_REQUEST", EngineError::InvalidArgument(msg))
}

fn not_found(id: &str) -> ApiError {
    EngineError::NotFound(format!(
        "unable to find workflow with the provided instance ID: {id}"
    ))
    .into()
}

/// The Dapr HTTP API's view of an instance.
pub fn instance_json(m: &InstanceMeta) -> Value {
    let mut props = Map::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            props.insert(k.to_string(), Value::String(v.to_string()));
        }
    };
    put("dapr.workflow.input", m.input.as_deref());
    put("dapr.workflow.output", m.output.as_deref());
    put("dapr.workflow.custom_status", m.custom_status.as_deref());
    if let Some(f) = decode_failure(m.failure.as_deref()) {
        put("dapr.workflow.failure.error_type", Some(&f.error_type));
        put(
            "dapr.workflow.failure.error_message",
            Some(&f.error_message),
        );
        put(
            "dapr.workflow.failure.stack_trace",
            f.stack_trace.as_deref(),
        );
    }
    // Dapr prints STALLED as UNKNOWN; we keep its names for everything else.
    let status = match m.status {
        RuntimeStatus::Stalled => "UNKNOWN",
        s => s.as_str(),
    };
    json!({
        "instanceID": m.instance_id,
        "workflowName": m.name,
        "createdAt": rfc3339(m.created_at),
        "lastUpdatedAt": rfc3339(m.updated_at),
        "runtimeStatus": status,
        "properties": props,
    })
}

/// The app a call is for (`?appID=`): another app's instance is reached through its owner.
#[derive(Deserialize)]
struct AppQuery {
    #[serde(rename = "appID", alias = "appId", alias = "appid")]
    app_id: Option<String>,
}

async fn get_workflow(
    State(st): State<AppState>,
    ApiPath((ver, _c, id)): ApiPath<(String, String, String)>,
    ApiQuery(q): ApiQuery<AppQuery>,
) -> ApiResult {
    check_version(&ver)?;
    match st.router.at(q.app_id.as_deref()).get_instance(&id).await {
        Ok(Some(m)) => Ok(Json(instance_json(&m)).into_response()),
        Ok(None) => Err(not_found(&id)),
        Err(e) => Err(ApiError::new("ERR_GET_WORKFLOW", e)),
    }
}

#[derive(Deserialize)]
struct OpQuery {
    #[serde(rename = "instanceID")]
    instance_id: Option<String>,
    /// Not in Dapr's API; Weft's CLI sends it for suspend/resume.
    reason: Option<String>,
    /// The app the instance belongs to (a cross-app call), or the app to start it in.
    #[serde(rename = "appID", alias = "appId", alias = "appid")]
    app_id: Option<String>,
}

async fn workflow_op(
    State(st): State<AppState>,
    ApiPath((ver, _c, target, op)): ApiPath<(String, String, String, String)>,
    ApiQuery(q): ApiQuery<OpQuery>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> ApiResult {
    check_version(&ver)?;
    let e = &st.router.at(q.app_id.as_deref());
    match op.as_str() {
        "start" => {
            let id = q
                .instance_id
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            ids::validate_instance_id(&id).map_err(EngineError::from)?;
            let input = body_string(&st, &body, "input")?;
            let req = StartRequest {
                instance_id: id,
                name: target,
                input: Some(input),
                parent_trace: crate::telemetry::spans::on()
                    .then(|| {
                        let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
                        crate::telemetry::trace_context::from_headers(
                            get("traceparent")?,
                            get("tracestate"),
                        )
                    })
                    .flatten(),
                ..Default::default()
            };
            let id = e
                .start_instance(req, None)
                .await
                .or_api("ERR_START_WORKFLOW")?;
            Ok((StatusCode::ACCEPTED, Json(json!({"instanceID": id}))).into_response())
        }
        "terminate" => {
            // daprd parses an optional protojson body here; a malformed one is the caller's error.
            if !body.iter().all(u8::is_ascii_whitespace)
                && serde_json::from_slice::<Map<String, Value>>(&body).is_err()
            {
                return Err(EngineError::Malformed(
                    "the terminate request body must be a JSON object".into(),
                )
                .into());
            }
            e.terminate(&target, None, true, None)
                .await
                .or_api("ERR_TERMINATE_WORKFLOW")?;
            Ok(accepted())
        }
        "pause" => {
            e.suspend(&target, q.reason.clone(), None)
                .await
                .or_api("ERR_PAUSE_WORKFLOW")?;
            Ok(accepted())
        }
        "resume" => {
            e.resume(&target, q.reason.clone(), None)
                .await
                .or_api("ERR_RESUME_WORKFLOW")?;
            Ok(accepted())
        }
        "purge" => {
            e.purge(&target, true, false, None)
                .await
                .or_api("ERR_PURGE_WORKFLOW")?;
            Ok(accepted())
        }
        other => {
            Err(EngineError::NoSuchEndpoint(format!("unknown workflow operation '{other}'")).into())
        }
    }
}

async fn raise_event(
    State(st): State<AppState>,
    ApiPath((ver, _c, id, event)): ApiPath<(String, String, String, String)>,
    ApiQuery(q): ApiQuery<AppQuery>,
    body: Bytes,
) -> ApiResult {
    check_version(&ver)?;
    if event.is_empty() {
        return Err(EngineError::EventNameMissing("event name is missing".into()).into());
    }
    let data = body_string(&st, &body, "event data")?;
    st.router
        .at(q.app_id.as_deref())
        .raise_event(&id, &event, Some(data), None)
        .await
        .or_api("ERR_RAISE_EVENT_WORKFLOW")?;
    Ok(accepted())
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

async fn list_instances(State(st): State<AppState>, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult {
    let mut statuses = Vec::new();
    for s in q
        .status
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        statuses.push(
            RuntimeStatus::parse(s)
                .ok_or_else(|| EngineError::InvalidArgument(format!("unknown status '{s}'")))?,
        );
    }
    let filter = ListFilter {
        statuses,
        name: q.name,
        after: q.after.filter(|s| !s.is_empty()),
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
        ..Default::default()
    };
    let page = st.engine.list(filter).await.or_api("ERR_LIST_WORKFLOWS")?;
    let waiting = st.engine.waiting_for_slot();
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|m| {
            let mut v = instance_json(m);
            if waiting.contains(&m.instance_id) {
                v["waitingForSlot"] = Value::Bool(true);
            }
            v
        })
        .collect();
    let mut body = json!({ "instances": items });
    if let Some(next) = page.next {
        body["next"] = Value::String(next);
    }
    Ok(Json(body).into_response())
}

async fn history(State(st): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult {
    match st.engine.history(&id).await {
        Ok(Some(events)) => {
            let events: Vec<Value> = events.iter().map(event_json).collect();
            Ok(Json(json!({"instanceID": id, "events": events})).into_response())
        }
        Ok(None) => Err(not_found(&id)),
        Err(e) => Err(ApiError::new("ERR_GET_HISTORY", e)),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PurgeQuery {
    /// RFC 3339 bounds on the creation time (inclusive).
    created_from: Option<String>,
    created_to: Option<String>,
    /// Comma-separated terminal statuses; empty means every terminal status.
    status: Option<String>,
    recursive: Option<bool>,
}

fn parse_time(what: &str, v: Option<&str>) -> Result<Option<weft_core::Micros>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let ts: prost_types::Timestamp = v.parse().map_err(|_| {
        bad_request(format!(
            "{what} '{v}' is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)"
        ))
    })?;
    Ok(Some(weft_core::time::to_micros(&ts)))
}

/// `POST /weft/v1/purge`: purges every finished instance matching the query (a Weft
/// extension; Dapr's HTTP API purges one instance at a time). Answers the number deleted.
async fn purge_by_filter(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<PurgeQuery>,
) -> ApiResult {
    let mut statuses = Vec::new();
    for s in q
        .status
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        let status =
            RuntimeStatus::parse(s).ok_or_else(|| bad_request(format!("unknown status '{s}'")))?;
        if !status.is_terminal() {
            return Err(bad_request(format!(
                "status '{s}' is not a finished status; only finished instances are purged"
            )));
        }
        statuses.push(status);
    }
    let filter = crate::PurgeFilter {
        created_from: parse_time("createdFrom", q.created_from.as_deref())?,
        created_to: parse_time("createdTo", q.created_to.as_deref())?,
        statuses,
        completed_to: None,
    };
    let n = st
        .engine
        .purge_by_filter(filter, q.recursive.unwrap_or(true))
        .await
        .or_api("ERR_PURGE_WORKFLOW")?;
    Ok(Json(json!({ "deletedInstanceCount": n })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// Found by the fuzzer (`crates/weft-fuzz`, target `http`): a malformed query string or path
    /// was refused by axum in plain text, not in Dapr's JSON error shape.
    #[tokio::test]
    async fn malformed_queries_and_paths_get_json_errors() {
        let app = router(crate::testing::local_router(), None, 1 << 20);
        for uri in [
            "/weft/v1/instances?limit=x",
            "/weft/v1/purge?recursive=maybe",
            "/v1.0/workflows/dapr/wf-1/terminate?instanceID=a&instanceID=b",
            "/v1.0/workflows/dapr/%FF%FE",
            "/weft/v1/instances/%C3%28/history",
        ] {
            let method = if uri.contains("purge") || uri.contains("terminate") {
                "POST"
            } else {
                "GET"
            };
            let req = axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{uri}");
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| panic!("{uri}: {}", String::from_utf8_lossy(&body)));
            assert_eq!(v["errorCode"], "ERR_MALFORMED_REQUEST", "{uri}: {v}");
        }
    }
}
