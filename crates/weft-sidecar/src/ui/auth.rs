//! The dashboard's way in when an API token is set: the `dapr-api-token` header as on the API,
//! or a cookie a browser gets by opening any page once with `?token=…`. Requests that change
//! something and come with the cookie only must also carry `x-weft-ui` (a header a page of
//! another site cannot send without a CORS preflight this server never grants).

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

const COOKIE: &str = "weft_ui_token";
pub(super) const CSRF_HEADER: &str = "x-weft-ui";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The token in the dashboard's cookie, if the request has one.
fn cookie_token(headers: &HeaderMap) -> Option<Vec<u8>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .and_then(|(_, v)| unhex(v))
}

/// `token` from the query string, percent-decoded; the rest of the query string as it was.
fn query_token(query: &str) -> Option<(String, String)> {
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("token", v)) => token = Some(percent_decode(v)),
            _ if pair == "token" => token = Some(String::new()),
            _ => rest.push(pair),
        }
    }
    token.map(|t| (t, rest.join("&")))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let byte = match b[i] {
            b'+' => b' ',
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    i += 2;
                    v
                }
                None => b'%',
            },
            o => o,
        };
        out.push(byte);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn refused(path: &str) -> Response {
    let msg = "the dashboard needs the sidecar's API token: open /ui/?token=<token> once \
               (it is kept in a cookie), or send the dapr-api-token header";
    if path.starts_with("/ui/api/") {
        let body = serde_json::json!({"errorCode": "ERR_UNAUTHENTICATED", "message": msg});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("401 Unauthorized: {msg}\n"),
    )
        .into_response()
}

/// Lets a request through when no token is set or it presents the token; `?token=` on a page
/// answers with a redirect to the same page without it, setting the cookie.
pub(super) async fn check(token: Option<Arc<str>>, req: Request, next: Next) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    let want = token.as_bytes();
    let matches = |given: &[u8]| crate::auth::token_matches(given, want);
    let path = req.uri().path().to_string();
    if let Some(v) = req.headers().get("dapr-api-token") {
        return if matches(v.as_bytes()) {
            next.run(req).await
        } else {
            refused(&path)
        };
    }
    if let Some((given, rest)) = req.uri().query().and_then(query_token) {
        if req.method() != Method::GET || !matches(given.as_bytes()) {
            return refused(&path);
        }
        let to = if rest.is_empty() {
            path
        } else {
            format!("{path}?{rest}")
        };
        let cookie = format!(
            "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict",
            hex(want)
        );
        let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        return resp;
    }
    let by_cookie = cookie_token(req.headers()).is_some_and(|t| matches(&t));
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if by_cookie && (safe || req.headers().contains_key(CSRF_HEADER)) {
        return next.run(req).await;
    }
    refused(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_and_query_tokens_are_read_back() {
        let mut h = HeaderMap::new();
        let v = format!("a=b; {COOKIE}={}; c=d", hex(b"s3cr3t t"));
        h.insert(header::COOKIE, HeaderValue::from_str(&v).unwrap());
        assert_eq!(cookie_token(&h).as_deref(), Some(&b"s3cr3t t"[..]));
        assert_eq!(
            query_token("status=RUNNING&token=a%2Bb%20c"),
            Some(("a+b c".to_string(), "status=RUNNING".to_string()))
        );
        assert_eq!(query_token("status=RUNNING"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
    }
}
