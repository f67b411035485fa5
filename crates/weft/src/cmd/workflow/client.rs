//! HTTP client for a sidecar's workflow API: Dapr's `/v1.0/workflows/dapr/…` endpoints
//! (protocol.md §5) and Weft's `/weft/v1/instances…` extensions (list, history).
//!
//! It only moves JSON: it returns the server's JSON bodies untouched so `--output json` can print
//! exactly what the server said, and turns every failure into an [`ApiError`] whose kind decides
//! the exit code.

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// Header carrying the API token, as daprd and the Dapr SDKs name it.
pub const API_TOKEN_HEADER: &str = "dapr-api-token";

/// Connecting should never take long on the networks this targets; a short connect timeout makes
/// "nothing listens there" fail fast even when the overall request timeout is long.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request produced no successful answer. Each kind maps to one documented exit code.
#[derive(Debug)]
pub enum ApiError {
    /// The sidecar answered with a non-2xx status; `code`/`message` come from its
    /// `{"errorCode","message"}` body when it sent one.
    Server {
        status: StatusCode,
        code: Option<String>,
        message: String,
        hint: Option<&'static str>,
    },
    /// No answer at all: refused connection, unresolvable host, timeout, reset.
    Unreachable { endpoint: String, detail: String },
    /// A 2xx answer whose body is not what the API documents.
    Protocol(String),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Server {
                status,
                code,
                message,
                hint,
            } => {
                write!(f, "the sidecar answered {status}")?;
                match code {
                    Some(code) => write!(f, ": {code}: {message}")?,
                    None if !message.is_empty() => write!(f, ": {message}")?,
                    None => {}
                }
                if let Some(hint) = hint {
                    write!(f, " ({hint})")?;
                }
                Ok(())
            }
            ApiError::Unreachable { endpoint, detail } => write!(
                f,
                "could not reach the sidecar at {endpoint}: {detail} \
                 (is `weft dev` running there? set --endpoint or WEFT_ENDPOINT)"
            ),
            ApiError::Protocol(msg) => write!(f, "unexpected answer from the sidecar: {msg}"),
        }
    }
}

impl std::error::Error for ApiError {}

/// Turns the `--endpoint` value into a base URL. A bare `host:port` means plain http, because
/// that is how people type sidecar addresses (`127.0.0.1:3500`). Only http is accepted: this
/// build carries no TLS stack, and silently downgrading an https URL would be worse than refusing.
pub fn parse_endpoint(raw: &str) -> Result<Url, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("the endpoint is empty".into());
    }
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| format!("invalid endpoint URL {raw:?}: {e}"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(format!(
                "endpoint {raw:?} uses https, which this build does not support; \
                 use an http:// endpoint"
            ));
        }
        other => return Err(format!("endpoint {raw:?} has unsupported scheme {other:?}")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("endpoint {raw:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "endpoint {raw:?} must not have a query or fragment"
        ));
    }
    Ok(url)
}

/// A configured connection to one sidecar.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    /// Sent as `appID` on Dapr's instance operations (a cross-app call).
    app_id: Option<String>,
}

impl Api {
    pub fn new(base: Url, token: Option<String>, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .user_agent(concat!("weft-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Api {
            http,
            base,
            token,
            app_id: None,
        })
    }

    /// The same connection, naming `app` on every instance operation.
    pub fn for_app(self, app: Option<String>) -> Self {
        Api {
            app_id: app,
            ..self
        }
    }

    /// The endpoint as shown in messages (no trailing slash, so it reads like what was typed).
    pub fn endpoint(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    /// Builds `<base>/<segments…>?<query>`. Segments are percent-encoded one by one, so a name
    /// containing `/` or `?` cannot change the route.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("parse_endpoint only accepts http URLs, which have a path");
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    fn workflow_url(&self, tail: &[&str], query: &[(&str, &str)]) -> Url {
        let mut segments = vec!["v1.0", "workflows", "dapr"];
        segments.extend_from_slice(tail);
        let mut query = query.to_vec();
        if let Some(app) = &self.app_id {
            query.push(("appID", app));
        }
        self.url(&segments, &query)
    }

    /// `POST /v1.0/workflows/dapr/{name}/start[?instanceID=]` with the raw input as body.
    pub async fn start(
        &self,
        name: &str,
        id: Option<&str>,
        input: Option<&str>,
    ) -> Result<Value, ApiError> {
        let query: Vec<(&str, &str)> = id.map(|id| ("instanceID", id)).into_iter().collect();
        let url = self.workflow_url(&[name, "start"], &query);
        self.send(Method::POST, url, input, None).await
    }

    /// `GET /v1.0/workflows/dapr/{id}`.
    pub async fn get(&self, id: &str) -> Result<Value, ApiError> {
        self.send(Method::GET, self.workflow_url(&[id], &[]), None, None)
            .await
    }

    /// `POST /v1.0/workflows/dapr/{id}/raiseEvent/{event}` with the raw data as body.
    pub async fn raise(
        &self,
        id: &str,
        event: &str,
        data: Option<&str>,
    ) -> Result<Value, ApiError> {
        let url = self.workflow_url(&[id, "raiseEvent", event], &[]);
        self.send(Method::POST, url, data, None).await
    }

    /// `POST /v1.0/workflows/dapr/{id}/{op}` for the body-less operations (terminate, pause,
    /// resume, purge). `query` carries optional extras such as `reason`.
    pub async fn operate(
        &self,
        id: &str,
        op: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, ApiError> {
        let url = self.workflow_url(&[id, op], query);
        self.send(Method::POST, url, None, None).await
    }

    /// `POST /weft/v1/purge?…`: purge every finished instance matching the query.
    pub async fn purge_by_filter(&self, query: &[(&str, &str)]) -> Result<Value, ApiError> {
        let url = self.url(&["weft", "v1", "purge"], query);
        self.send(
            Method::POST,
            url,
            None,
            Some("purge by filter is a Weft extension: is the endpoint a Weft sidecar?"),
        )
        .await
    }

    /// One page of `GET /weft/v1/instances`.
    pub async fn list_page(
        &self,
        status: Option<&str>,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Value, ApiError> {
        let limit = limit.to_string();
        let mut query = vec![("limit", limit.as_str())];
        if let Some(status) = status {
            query.push(("status", status));
        }
        if let Some(after) = after {
            query.push(("after", after));
        }
        let url = self.url(&["weft", "v1", "instances"], &query);
        self.send(
            Method::GET,
            url,
            None,
            Some("listing is a Weft extension: is the endpoint a Weft sidecar?"),
        )
        .await
    }

    /// `GET /weft/v1/instances/{id}/history`.
    pub async fn history(&self, id: &str) -> Result<Value, ApiError> {
        let url = self.url(&["weft", "v1", "instances", id, "history"], &[]);
        self.send(Method::GET, url, None, None).await
    }

    /// Sends one request and classifies the outcome. `not_found_hint` is appended to a 404 that
    /// carries no Dapr error code, i.e. a route the server does not know.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&str>,
        not_found_hint: Option<&'static str>,
    ) -> Result<Value, ApiError> {
        let mut req = self.http.request(method, url);
        if let Some(token) = &self.token {
            req = req.header(API_TOKEN_HEADER, token);
        }
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport_error(&e))?;
        if status.is_success() {
            return parse_success_body(status, &text);
        }
        let (code, message) = parse_error_body(&text);
        let hint = if status == StatusCode::NOT_FOUND && code.is_none() {
            not_found_hint
        } else {
            None
        };
        Err(ApiError::Server {
            status,
            code,
            message,
            hint,
        })
    }

    fn transport_error(&self, err: &reqwest::Error) -> ApiError {
        let detail = if err.is_timeout() {
            "the request timed out (see --timeout)".to_string()
        } else if err.is_connect() {
            format!("connection failed: {}", root_cause(err))
        } else {
            root_cause(err)
        };
        ApiError::Unreachable {
            endpoint: self.endpoint(),
            detail,
        }
    }
}

/// reqwest's own message ("error sending request for url …") hides the useful part, e.g.
/// "Connection refused (os error 111)", at the bottom of the source chain.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The workflow API answers 202 with `{}` or an empty body for operations; treat both as `{}` so
/// JSON output is always a JSON document.
fn parse_success_body(status: StatusCode, text: &str) -> Result<Value, ApiError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(text)
        .map_err(|e| ApiError::Protocol(format!("{status} with a body that is not JSON ({e})")))
}

/// Extracts Dapr's `{"errorCode": …, "message": …}`; anything else is shown verbatim.
fn parse_error_body(text: &str) -> (Option<String>, String) {
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) {
        let code = obj
            .get("errorCode")
            .and_then(Value::as_str)
            .map(str::to_string);
        let message = obj
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string);
        if code.is_some() || message.is_some() {
            return (code, message.unwrap_or_default());
        }
    }
    (None, text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(endpoint: &str) -> Api {
        Api::new(
            parse_endpoint(endpoint).unwrap(),
            None,
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[test]
    fn endpoint_accepts_http_and_bare_host_port() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:3500").unwrap().as_str(),
            "http://127.0.0.1:3500/"
        );
        assert_eq!(
            parse_endpoint("localhost:3501").unwrap().as_str(),
            "http://localhost:3501/"
        );
    }

    #[test]
    fn endpoint_rejects_https_other_schemes_and_garbage() {
        assert!(parse_endpoint("https://x:1").unwrap_err().contains("https"));
        assert!(parse_endpoint("ftp://x").unwrap_err().contains("scheme"));
        assert!(parse_endpoint("").is_err());
        assert!(parse_endpoint("http://").is_err());
        assert!(parse_endpoint("http://h:1/?q=1").is_err());
        assert!(parse_endpoint("http://h:99999").is_err());
    }

    #[test]
    fn urls_encode_each_segment_and_keep_a_base_path() {
        let a = api("http://h:1");
        assert_eq!(
            a.workflow_url(&["my wf/x", "start"], &[("instanceID", "a-1")])
                .as_str(),
            "http://h:1/v1.0/workflows/dapr/my%20wf%2Fx/start?instanceID=a-1"
        );
        let a = api("http://h:1/prefix/");
        assert_eq!(
            a.url(&["weft", "v1", "instances"], &[("limit", "5")])
                .as_str(),
            "http://h:1/prefix/weft/v1/instances?limit=5"
        );
        assert_eq!(a.endpoint(), "http://h:1/prefix");
        // Another app's instance: every Dapr instance operation names it.
        let b = api("http://h:1").for_app(Some("appb".into()));
        assert_eq!(
            b.workflow_url(&["x-1", "terminate"], &[]).as_str(),
            "http://h:1/v1.0/workflows/dapr/x-1/terminate?appID=appb"
        );
        assert_eq!(
            b.workflow_url(&["w", "start"], &[("instanceID", "a-1")])
                .as_str(),
            "http://h:1/v1.0/workflows/dapr/w/start?instanceID=a-1&appID=appb"
        );
    }

    #[test]
    fn error_bodies_are_parsed_or_kept_verbatim() {
        assert_eq!(
            parse_error_body(r#"{"errorCode":"ERR_X","message":"boom"}"#),
            (Some("ERR_X".into()), "boom".into())
        );
        assert_eq!(
            parse_error_body("plain text\n"),
            (None, "plain text".into())
        );
        assert_eq!(parse_error_body(""), (None, String::new()));
    }

    #[test]
    fn success_bodies_default_to_an_empty_object() {
        assert_eq!(
            parse_success_body(StatusCode::ACCEPTED, "").unwrap(),
            serde_json::json!({})
        );
        assert!(matches!(
            parse_success_body(StatusCode::OK, "<html>"),
            Err(ApiError::Protocol(_))
        ));
    }

    #[test]
    fn server_errors_name_code_and_message() {
        let e = ApiError::Server {
            status: StatusCode::NOT_FOUND,
            code: Some("ERR_INSTANCE_ID_NOT_FOUND".into()),
            message: "unable to find workflow with the provided instance ID: x".into(),
            hint: None,
        };
        assert_eq!(
            e.to_string(),
            "the sidecar answered 404 Not Found: ERR_INSTANCE_ID_NOT_FOUND: \
             unable to find workflow with the provided instance ID: x"
        );
    }

    #[tokio::test]
    async fn connection_refused_names_the_endpoint() {
        // Bind then drop a listener so the port is (very likely) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let a = api(&format!("http://127.0.0.1:{port}"));
        let err = a.get("x").await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ApiError::Unreachable { .. }), "{msg}");
        assert!(msg.contains(&format!("http://127.0.0.1:{port}")), "{msg}");
        assert!(msg.to_lowercase().contains("refused"), "{msg}");
    }
}
