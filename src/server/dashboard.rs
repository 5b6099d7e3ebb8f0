//! The web dashboard: the built single-page app of `web/` (its `web/dist/`), embedded
//! in the binary at compile time and served at `/` and `/assets/*`.
//!
//! The assets are compiled in with `rust-embed` (feature `debug-embed`, so debug
//! builds embed too): the server never reads `web/` at run time and a user needs no
//! Node. Vite names every asset under `assets/` by its content hash, so those are
//! cached for a year as immutable; `index.html` is revalidated on every load so a new
//! binary's assets are picked up at once.
//!
//! Unknown paths outside `/api/` get `index.html` (the app routes by the URL
//! fragment, but a reload of any deep path must still land in the app); unknown
//! `/api/` paths and missing `/assets/` files stay problem-document 404s.
//!
//! The page itself is public (it holds no data); everything it shows comes from the
//! API with the operator's token.

use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use super::problem::ApiError;

/// The built dashboard (`web/dist/`, rebuilt by `cd web && npm run build`).
#[derive(RustEmbed)]
#[folder = "web/dist/"]
struct Assets;

/// Cache policy of content-hashed files under `assets/`.
const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cache policy of everything else (`index.html`, icons): always revalidate.
const CACHE_REVALIDATE: &str = "no-cache";

/// The content type of a file by its extension; the dashboard ships only these.
fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map_or("", |(_, ext)| ext);
    match extension {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// One embedded file as a response, or `None` when it is not embedded.
fn embedded(path: &str) -> Option<Response> {
    let file = Assets::get(path)?;
    let cache = if path.starts_with("assets/") {
        CACHE_IMMUTABLE
    } else {
        CACHE_REVALIDATE
    };
    let mut response = (StatusCode::OK, file.data.into_owned()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Some(response)
}

/// Serves the dashboard for any path the API router does not match: embedded files
/// by path, `index.html` for other non-API paths, a 404 problem for unknown API
/// routes and missing assets.
pub async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path.starts_with("api/") || path == "api" {
        return ApiError::not_found("no such route").into_response();
    }
    if !path.is_empty()
        && let Some(response) = embedded(path)
    {
        return response;
    }
    if path.starts_with("assets/") {
        return ApiError::not_found(format!("no asset /{path}")).into_response();
    }
    embedded("index.html").unwrap_or_else(|| {
        ApiError::not_found("the dashboard was not built into this binary").into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_by_extension() {
        let cases = [
            ("index.html", "text/html; charset=utf-8"),
            ("assets/index-abc.js", "text/javascript; charset=utf-8"),
            ("assets/index-abc.css", "text/css; charset=utf-8"),
            ("favicon.svg", "image/svg+xml"),
            ("no-extension", "application/octet-stream"),
        ];
        for (path, expected) in cases {
            assert_eq!(content_type(path), expected, "{path}");
        }
    }

    #[tokio::test]
    async fn index_assets_fallback_and_api_404() {
        let index = serve(Uri::from_static("/")).await;
        assert_eq!(index.status(), StatusCode::OK);
        assert_eq!(index.headers()[header::CACHE_CONTROL], CACHE_REVALIDATE);
        assert_eq!(
            index.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let deep = serve(Uri::from_static("/fleet/devices")).await;
        assert_eq!(deep.status(), StatusCode::OK, "SPA fallback");
        let api = serve(Uri::from_static("/api/v1/nope")).await;
        assert_eq!(api.status(), StatusCode::NOT_FOUND);
        let asset = serve(Uri::from_static("/assets/missing.js")).await;
        assert_eq!(asset.status(), StatusCode::NOT_FOUND);
        let script = Assets::iter()
            .find(|path| path.starts_with("assets/") && path.ends_with(".js"))
            .expect("the build has a script under assets/");
        let uri: Uri = format!("/{script}").parse().expect("asset path is a URI");
        let response = serve(uri).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CACHE_CONTROL], CACHE_IMMUTABLE);
    }
}
