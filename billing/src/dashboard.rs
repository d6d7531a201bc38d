//! The built-in dashboard: static files compiled into the binary (`include_bytes!`), served
//! under `/dashboard/` with their content types and cache headers. The page reads the API
//! with the key the user typed (kept in the tab's `sessionStorage`), so serving it needs no
//! key. Nothing is fetched from elsewhere: the chart library is vendored
//! (`billing/assets/vendor/README.md`) and the Content-Security-Policy allows this origin only.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::AppState;

/// One embedded file.
struct Asset {
    /// Path under `/dashboard/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Versioned by its folder name (vendored libraries): cached for a year. The app's own
    /// files keep their names across releases, so browsers revalidate them (ETag) instead.
    immutable: bool,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../assets/dashboard/index.html"),
        immutable: false,
    },
    Asset {
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/dashboard/app.js"),
        immutable: false,
    },
    Asset {
        path: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/dashboard/app.css"),
        immutable: false,
    },
    Asset {
        path: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/dashboard/favicon.svg"),
        immutable: false,
    },
    Asset {
        path: "vendor/uplot-1.6.32/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/vendor/uplot-1.6.32/uPlot.iife.min.js"),
        immutable: true,
    },
    Asset {
        path: "vendor/uplot-1.6.32/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/vendor/uplot-1.6.32/uPlot.min.css"),
        immutable: true,
    },
    Asset {
        path: "vendor/uplot-1.6.32/LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../assets/vendor/uplot-1.6.32/LICENSE"),
        immutable: true,
    },
];

/// Strong ETags of [`ASSETS`], in the same order (computed once, on first use).
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.body))[..32]))
        .collect()
});

/// Scripts, styles, images and API calls from this origin only; no framing. uPlot and the
/// app set styles through the DOM (allowed), never with inline `<style>` or `style=""`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; \
                   frame-ancestors 'none'";

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return (StatusCode::NOT_FOUND, "no such dashboard file").into_response();
    };
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let cache = if asset.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

async fn index(headers: HeaderMap) -> Response {
    serve("", &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

/// `/` and `/dashboard` lead to the page; `/dashboard/…` serves its files.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard/", get(index))
        .route("/dashboard/{*path}", get(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_its_type_and_cache_rule() {
        let none = HeaderMap::new();
        let page = serve("", &none);
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let lib = serve("vendor/uplot-1.6.32/uPlot.iife.min.js", &none);
        assert_eq!(
            lib.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(lib.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable"));
        assert_eq!(
            serve("../Cargo.toml", &none).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(serve("nope.js", &none).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_known_etag_is_answered_304() {
        let first = serve("app.js", &HeaderMap::new());
        let etag = first.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve("app.js", &again).status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn the_page_loads_only_embedded_files() {
        // Every script and stylesheet the page names is one of ours (no CDN).
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                let url = part.split('"').next().unwrap();
                assert!(
                    !url.contains("//"),
                    "index.html loads {url:?} from elsewhere"
                );
                // `#` and `/openapi.json` are links on this origin, not page resources.
                if url.starts_with('#') || url.starts_with('/') {
                    continue;
                }
                assert!(
                    ASSETS.iter().any(|a| a.path == url),
                    "index.html refers to {url:?}, which is not embedded"
                );
            }
        }
    }
}
