//! Target `http`: requests to the Dapr HTTP workflow API and Weft's own HTTP endpoints, through
//! the real axum router (path and query extraction, body checks) into the engine.

use crate::FuzzError;
use crate::input::Input;
use crate::sidecar::{MAX_PAYLOAD, Sidecar, SidecarTarget};
use axum::body::Body;
use tower::ServiceExt;

/// Path shapes the router serves; `{}` is filled with a string drawn from the input.
const PATHS: &[&str] = &[
    "/{}/workflows/dapr/{}/start",
    "/{}/workflows/dapr/{}",
    "/{}/workflows/dapr/{}/{}",
    "/{}/workflows/dapr/{}/raiseEvent/{}",
    "/weft/v1/instances",
    "/weft/v1/purge",
    "/weft/v1/instances/{}/history",
    "/v1.0/healthz",
    "/metrics",
];

/// Strings a path segment is drawn from (or raw input bytes, percent-encoded).
const SEGMENTS: &[&str] = &[
    "v1.0",
    "v1.0-beta1",
    "wf-1",
    "order",
    "terminate",
    "pause",
    "resume",
    "purge",
    "start",
    "",
];

/// Query strings drawn from (or raw input bytes).
const QUERIES: &[&str] = &[
    "instanceID=wf-1",
    "status=COMPLETED,FAILED",
    "status=RUNNING",
    "createdFrom=2026-01-31T12:00:00Z&createdTo=2026-02-01T00:00:00Z",
    "limit=5&after=wf-0",
    "recursive=false",
    "reason=because",
];

/// The target: each input is one HTTP request.
pub fn target() -> Result<SidecarTarget, FuzzError> {
    SidecarTarget::new("http", run)
}

/// Percent-encodes everything but unreserved characters, so any bytes make a valid URI.
fn encode(s: &[u8]) -> String {
    s.iter()
        .map(|&c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (c as char).to_string()
            }
            _ => format!("%{c:02X}"),
        })
        .collect()
}

/// A request drawn from the input: method, path, query and body.
fn build(data: &[u8]) -> Option<http::Request<Body>> {
    let mut i = Input::new(data);
    let method = ["GET", "POST", "PUT", "DELETE"][i.below(4)];
    let shape = PATHS[i.below(PATHS.len())];
    let mut path = String::new();
    for (n, part) in shape.split("{}").enumerate() {
        if n > 0 {
            let k = i.below(SEGMENTS.len() + 1);
            match SEGMENTS.get(k) {
                Some(s) => path.push_str(s),
                None => path.push_str(&encode(i.bytes())),
            }
        }
        path.push_str(part);
    }
    let query = match i.below(QUERIES.len() + 2) {
        k if k < QUERIES.len() => QUERIES[k].to_string(),
        k if k == QUERIES.len() => String::new(),
        // Raw bytes, only '&' and '=' kept, so the query parser sees odd pairs and encodings.
        _ => i
            .bytes()
            .split(|&c| c == b'&')
            .map(|pair| {
                pair.splitn(2, |&c| c == b'=')
                    .map(encode)
                    .collect::<Vec<_>>()
                    .join("=")
            })
            .collect::<Vec<_>>()
            .join("&"),
    };
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(i.rest().to_vec()))
        .ok()
}

/// Invariant: every answer of the workflow API is a success or an error in Dapr's JSON
/// shape (`errorCode` and `message`), never a bare 500 (405 aside: see below).
fn run(sc: &mut Sidecar, data: &[u8]) -> Result<(), String> {
    let Some(req) = build(data) else {
        return Ok(());
    };
    let path = req.uri().path().to_string();
    // Built per call on the current sidecar (cheap); the router installs the metrics
    // recorder, whose upkeep task needs the runtime.
    let app = sc.in_runtime(|| weft_sidecar::http::router(sc.router.clone(), None, MAX_PAYLOAD));
    let (status, body) = sc.call(async move {
        let resp = app.oneshot(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((status, body))
    })??;
    // 405 comes from the router's method match before any handler, with no body (as daprd's).
    if status.is_success()
        || path == "/v1.0/healthz"
        || status == http::StatusCode::METHOD_NOT_ALLOWED
    {
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
        format!(
            "{status} for {path} without a JSON error body: {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    if v.get("errorCode").and_then(|c| c.as_str()).is_none() || v.get("message").is_none() {
        return Err(format!(
            "{status} for {path}: error body not in Dapr's shape: {v}"
        ));
    }
    if status == http::StatusCode::INTERNAL_SERVER_ERROR {
        return Err(format!("500 for {path}: {v}"));
    }
    Ok(())
}
