//! The dashboard's routes through the whole HTTP router: pages and assets served, the token
//! enforced (header, `?token=` redirect and cookie, the extra header on changes), JSON answers.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "t0k3n with space";

fn app(token: Option<&str>) -> axum::Router {
    crate::http::router(
        crate::testing::local_router(),
        token.map(str::to_string),
        1 << 20,
    )
}

async fn call(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, 1 << 22).await.unwrap().to_vec();
    (parts.status, parts.headers, body)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn pages_and_assets_are_served_from_the_binary() {
    let app = app(None);
    for uri in ["/ui", "/ui/", "/ui/cluster", "/ui/instances/order-1"] {
        let (status, headers, body) = call(&app, get(uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(
            headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert!(
            String::from_utf8_lossy(&body).contains("/ui/assets/app.js"),
            "{uri}"
        );
    }
    for (file, ty) in [
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("timeline.js", "text/javascript"),
    ] {
        let (status, headers, body) = call(&app, get(&format!("/ui/assets/{file}"))).await;
        assert_eq!(status, StatusCode::OK, "{file}");
        assert_eq!(headers[header::CONTENT_TYPE], ty);
        assert!(!body.is_empty());
    }
    let (status, _, _) = call(&app, get("/ui/assets/nope.js")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = call(&app, get("/ui/api/summary")).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["total"], 0);
    let (status, _, body) = call(&app, get("/ui/api/instances?status=NOPE")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["message"].as_str().unwrap().contains("NOPE"), "{v}");
    // The HTTP API again under /ui/api/http (what the pages call).
    let (status, _, _) = call(&app, get("/ui/api/http/weft/v1/instances")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn with_a_token_only_the_header_or_the_cookie_lets_a_request_in() {
    let app = app(Some(TOKEN));
    for uri in [
        "/ui/",
        "/ui/assets/app.js",
        "/ui/api/cluster",
        "/ui/api/http/weft/v1/instances",
    ] {
        let (status, _, _) = call(&app, get(uri)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let with_header = Request::get("/ui/")
        .header("dapr-api-token", TOKEN)
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, with_header).await.0, StatusCode::OK);
    let (status, _, _) = call(&app, get("/ui/?token=wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, headers, _) = call(&app, get("/ui/cluster?a=1&token=t0k3n%20with+space")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/ui/cluster?a=1");
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/ui")
    );
    let cookie = set.split(';').next().unwrap().to_string();

    let with_cookie = |method: &str, uri: &str, csrf: bool| {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::COOKIE, &cookie);
        if csrf {
            b = b
                .header("x-weft-ui", "1")
                .header(header::CONTENT_TYPE, "application/json");
        }
        b.body(Body::from(r#"{"op":"terminate","ids":[]}"#))
            .unwrap()
    };
    assert_eq!(
        call(&app, with_cookie("GET", "/ui/api/summary", false))
            .await
            .0,
        StatusCode::OK
    );
    // A change with the cookie alone is what another site's form could send: refused.
    assert_eq!(
        call(&app, with_cookie("POST", "/ui/api/bulk", false))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _, body) = call(&app, with_cookie("POST", "/ui/api/bulk", true)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    // The API itself still wants the header: the cookie is the dashboard's only.
    let api = Request::get("/weft/v1/instances")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, api).await.0, StatusCode::UNAUTHORIZED);
}
