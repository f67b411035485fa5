//! The Dapr HTTP workflow API (`/v1.0/workflows/dapr/…`), health endpoints, and Weft's own
//! read endpoints for listing instances and reading history (`/weft/v1/…`).

use crate::engine::{Engine, StartRequest};
use crate::error::EngineError;
use crate::history_json::event_json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
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
    token: Option<Arc<str>>,
    max_body: usize,
}

/// A JSON error in Dapr's shape, with the status chosen once from the error kind.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    fn from_engine(code: &'static str, e: EngineError) -> Self {
        let code = match e {
            EngineError::NotFound(_) => "ERR_INSTANCE_ID_NOT_FOUND",
            EngineError::PayloadTooLarge(_) => "ERR_PAYLOAD_TOO_LARGE",
            EngineError::InvalidArgument(_) => "ERR_BAD_REQUEST",
            _ => code,
        };
        Self::new(e.http_status(), code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"errorCode": self.code, "message": self.message})),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

pub fn router(engine: Engine, token: Option<String>, max_payload: usize) -> Router {
    let state = AppState {
        engine,
        token: token.map(Arc::from),
        max_body: max_payload,
    };
    let api = Router::new()
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
        .route("/weft/v1/instances/{instance}/history", get(history))
        .layer(middleware::from_fn_with_state(state.clone(), auth));
    let metrics = crate::telemetry::metrics_handle();
    Router::new()
        .route(
            "/metrics",
            get(move || async move { metrics.map(|h| h.render()).unwrap_or_default() }),
        )
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz))
        .merge(api)
        // Leave room above the payload limit so we can answer oversize bodies with our own 413.
        .layer(DefaultBodyLimit::max(max_payload.saturating_mul(2)))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "ERR_NOT_FOUND", "no such endpoint")
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
        if !given.is_some_and(|v| crate::server::token_matches(v.as_bytes(), token.as_bytes())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "ERR_UNAUTHORIZED",
                "invalid api token",
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn check_version(ver: &str) -> Result<(), ApiError> {
    match ver {
        "v1.0" | "v1.0-beta1" | "v1.0-alpha1" => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ERR_NOT_FOUND",
            format!("unknown API version '{ver}'"),
        )),
    }
}

fn body_string(st: &AppState, body: &Bytes, what: &str) -> Result<String, ApiError> {
    if body.len() > st.max_body {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ERR_PAYLOAD_TOO_LARGE",
            format!(
                "{what} is {} bytes; the limit is {} bytes",
                body.len(),
                st.max_body
            ),
        ));
    }
    String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "ERR_MALFORMED_REQUEST",
            format!("{what} is not valid UTF-8"),
        )
    })
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ERR_INSTANCE_ID_NOT_FOUND",
        format!("unable to find workflow with the provided instance ID: {id}"),
    )
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

async fn get_workflow(
    State(st): State<AppState>,
    Path((ver, _c, id)): Path<(String, String, String)>,
) -> ApiResult {
    check_version(&ver)?;
    match st.engine.get_instance(&id).await {
        Ok(Some(m)) => Ok(Json(instance_json(&m)).into_response()),
        Ok(None) => Err(not_found(&id)),
        Err(e) => Err(ApiError::from_engine("ERR_GET_WORKFLOW", e)),
    }
}

#[derive(Deserialize)]
struct OpQuery {
    #[serde(rename = "instanceID")]
    instance_id: Option<String>,
    /// Not in Dapr's API; Weft's CLI sends it for suspend/resume.
    reason: Option<String>,
}

async fn workflow_op(
    State(st): State<AppState>,
    Path((ver, _c, target, op)): Path<(String, String, String, String)>,
    Query(q): Query<OpQuery>,
    body: Bytes,
) -> ApiResult {
    check_version(&ver)?;
    let e = &st.engine;
    match op.as_str() {
        "start" => {
            let id = q
                .instance_id
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            if let Err(err) = ids::validate_instance_id(&id) {
                let code = match err {
                    ids::IdError::TooLong(_) => "ERR_INSTANCE_ID_TOO_LONG",
                    _ => "ERR_INSTANCE_ID_INVALID",
                };
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    code,
                    err.to_string(),
                ));
            }
            let input = body_string(&st, &body, "input")?;
            let req = StartRequest {
                instance_id: id,
                name: target,
                input: Some(input),
                ..Default::default()
            };
            let id = e
                .start_instance(req)
                .await
                .map_err(|err| ApiError::from_engine("ERR_START_WORKFLOW", err))?;
            Ok((StatusCode::ACCEPTED, Json(json!({"instanceID": id}))).into_response())
        }
        "terminate" => {
            // daprd parses an optional protojson body here; a malformed one is the caller's error.
            if !body.iter().all(u8::is_ascii_whitespace)
                && serde_json::from_slice::<Map<String, Value>>(&body).is_err()
            {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "ERR_MALFORMED_REQUEST",
                    "the terminate request body must be a JSON object",
                ));
            }
            e.terminate(&target, None, true)
                .await
                .map_err(|err| ApiError::from_engine("ERR_TERMINATE_WORKFLOW", err))?;
            Ok(accepted())
        }
        "pause" => {
            e.suspend(&target, q.reason.clone())
                .await
                .map_err(|err| ApiError::from_engine("ERR_PAUSE_WORKFLOW", err))?;
            Ok(accepted())
        }
        "resume" => {
            e.resume(&target, q.reason.clone())
                .await
                .map_err(|err| ApiError::from_engine("ERR_RESUME_WORKFLOW", err))?;
            Ok(accepted())
        }
        "purge" => {
            e.purge(&target, true, false)
                .await
                .map_err(|err| ApiError::from_engine("ERR_PURGE_WORKFLOW", err))?;
            Ok(accepted())
        }
        other => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ERR_NOT_FOUND",
            format!("unknown workflow operation '{other}'"),
        )),
    }
}

async fn raise_event(
    State(st): State<AppState>,
    Path((ver, _c, id, event)): Path<(String, String, String, String)>,
    body: Bytes,
) -> ApiResult {
    check_version(&ver)?;
    if event.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ERR_WORKFLOW_EVENT_NAME_MISSING",
            "event name is missing",
        ));
    }
    let data = body_string(&st, &body, "event data")?;
    st.engine
        .raise_event(&id, &event, Some(data))
        .await
        .map_err(|err| ApiError::from_engine("ERR_RAISE_EVENT_WORKFLOW", err))?;
    Ok(accepted())
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

async fn list_instances(State(st): State<AppState>, Query(q): Query<ListQuery>) -> ApiResult {
    let mut statuses = Vec::new();
    for s in q
        .status
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        statuses.push(RuntimeStatus::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "ERR_BAD_REQUEST",
                format!("unknown status '{s}'"),
            )
        })?);
    }
    let filter = ListFilter {
        statuses,
        name: q.name,
        after: q.after.filter(|s| !s.is_empty()),
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
        ..Default::default()
    };
    let page = st
        .engine
        .list(filter)
        .await
        .map_err(|e| ApiError::from_engine("ERR_LIST_WORKFLOWS", e))?;
    let mut body = json!({"instances": page.items.iter().map(instance_json).collect::<Vec<_>>()});
    if let Some(next) = page.next {
        body["next"] = Value::String(next);
    }
    Ok(Json(body).into_response())
}

async fn history(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    match st.engine.history(&id).await {
        Ok(Some(events)) => {
            let events: Vec<Value> = events.iter().map(event_json).collect();
            Ok(Json(json!({"instanceID": id, "events": events})).into_response())
        }
        Ok(None) => Err(not_found(&id)),
        Err(e) => Err(ApiError::from_engine("ERR_GET_HISTORY", e)),
    }
}
