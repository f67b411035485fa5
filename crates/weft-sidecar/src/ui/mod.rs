//! The web dashboard under `/ui/`: embedded pages and assets, the browser's way in with the API
//! token (header, cookie, or `?token=` that sets the cookie), and the small JSON endpoints the
//! pages need beyond Weft's HTTP API (mounted again under `/ui/api/` with the same auth).

mod api;
mod assets;
mod auth;
mod cluster;
mod rate;

use crate::route::Router;
use axum::routing::{get, post};
use std::sync::Arc;

/// What the dashboard's own handlers share.
#[derive(Clone)]
pub(crate) struct UiState {
    router: Router,
    rate: Arc<rate::Rate>,
}

/// The dashboard's routes. `api` is the HTTP API (without its auth layer), served again under
/// `/ui/api` so the pages can reach it with the cookie a browser holds; everything here sits
/// behind [`auth::layer`] when a token is configured.
pub fn routes<S>(router: Router, token: Option<Arc<str>>, api: axum::Router<S>) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let state = UiState {
        router,
        rate: rate::Rate::start(),
    };
    let own = axum::Router::new()
        .route("/ui", get(assets::index))
        .route("/ui/", get(assets::index))
        .route("/ui/cluster", get(assets::index))
        .route("/ui/instances/{id}", get(assets::index))
        .route("/ui/assets/{file}", get(assets::asset))
        .route("/ui/api/summary", get(api::summary))
        .route("/ui/api/instances", get(api::instances))
        .route("/ui/api/instances/{id}", get(api::instance))
        .route("/ui/api/instances/{id}/rerun", post(api::rerun))
        .route("/ui/api/bulk", post(api::bulk))
        .route("/ui/api/cluster", get(cluster::cluster))
        .with_state(state);
    axum::Router::new()
        .nest("/ui/api/http", api)
        .merge(own)
        .layer(axum::middleware::from_fn(move |req, next| {
            auth::check(token.clone(), req, next)
        }))
}

#[cfg(test)]
mod tests;
