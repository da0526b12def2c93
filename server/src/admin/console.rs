//! The web console: one static page (HTML, CSS and script in one file, no build chain) that
//! reads the API from the browser.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::api::AdminState;

const PAGE: &str = include_str!("console.html");

/// `/` serves the page.
pub fn routes() -> axum::Router<std::sync::Arc<AdminState>> {
    axum::Router::new().route("/", get(page))
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}
