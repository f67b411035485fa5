//! The dashboard's files, embedded in the binary (plain ES modules and CSS: no build step), and
//! the one HTML page every dashboard address answers with (the page routes in the browser).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Name, content type, contents.
const FILES: &[(&str, &str, &str)] = &[
    ("style.css", "text/css", include_str!("../../ui/style.css")),
    ("app.js", "text/javascript", include_str!("../../ui/app.js")),
    ("api.js", "text/javascript", include_str!("../../ui/api.js")),
    ("dom.js", "text/javascript", include_str!("../../ui/dom.js")),
    (
        "instances.js",
        "text/javascript",
        include_str!("../../ui/instances.js"),
    ),
    (
        "instance.js",
        "text/javascript",
        include_str!("../../ui/instance.js"),
    ),
    (
        "timeline.js",
        "text/javascript",
        include_str!("../../ui/timeline.js"),
    ),
    (
        "cluster.js",
        "text/javascript",
        include_str!("../../ui/cluster.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../ui/favicon.svg"),
    ),
];

const INDEX: &str = include_str!("../../ui/index.html");

/// Pages run only this server's scripts and cannot be framed (the action buttons must not be
/// clickable through another site's page).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn headers(content_type: &'static str) -> [(header::HeaderName, &'static str); 4] {
    [
        (header::CONTENT_TYPE, content_type),
        // Revalidate each time: a new binary serves new files under the same names.
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ]
}

pub(super) async fn index() -> Response {
    (headers("text/html; charset=utf-8"), INDEX).into_response()
}

pub(super) async fn asset(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, ty, body)) => (headers(ty), *body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such dashboard file\n").into_response(),
    }
}
