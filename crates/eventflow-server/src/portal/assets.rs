//! The stylesheet and the script, embedded in the binary.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::secure;

pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static str, &'static str) = match file.as_str() {
        "portal.css" => (include_str!("static/portal.css"), "text/css; charset=utf-8"),
        "portal.js" => (
            include_str!("static/portal.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return secure((StatusCode::NOT_FOUND, "no such file").into_response()),
    };
    secure(
        (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            body,
        )
            .into_response(),
    )
}
