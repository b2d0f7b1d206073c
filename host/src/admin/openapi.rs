//! `GET /openapi.json`: the OpenAPI document of enrichd's HTTP surface
//! (`openapi/enrichd.yaml`), compiled into the binary and served as JSON.
//!
//! The YAML is the source people edit and review; it is converted once, on
//! the first request, and the JSON bytes are kept. The tests check that the
//! document parses and that every route the server answers is in it
//! (`tests/tests/openapi.rs`, which also runs schemathesis against a live
//! server with it).

use std::sync::LazyLock;

use bytes::Bytes;
use hyper::{Response, StatusCode};

use crate::http::{error, json, Body};

/// Where the document is served on the admin listener.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Every path the admin listener answers, as the document spells them
/// (`{id}` for a delivery id). Kept next to the document: the tests check
/// each is in it and answered, so a new endpoint cannot go undocumented
/// without failing them.
pub const ADMIN_PATHS: &[&str] = &[
    "/healthz",
    "/stats",
    "/deliveries",
    "/deliveries/{id}",
    super::RELOAD_PATH,
    "/metrics",
    OPENAPI_PATH,
    "/ui",
    "/ui/",
    "/ui/deliveries",
    "/ui/deliveries/{id}",
    "/ui/plugins",
    "/ui/engagelab",
];

/// The document as written (YAML, OpenAPI 3.1).
pub const OPENAPI_YAML: &str = include_str!("../../../openapi/enrichd.yaml");

/// The document converted to JSON, or why it could not be (a defect the
/// tests catch: the file is part of the build).
static OPENAPI_JSON: LazyLock<Result<Bytes, String>> = LazyLock::new(|| {
    serde_norway::from_str::<serde_json::Value>(OPENAPI_YAML)
        .map_err(|e| e.to_string())
        .and_then(|doc| serde_json::to_vec(&doc).map_err(|e| e.to_string()))
        .map(Bytes::from)
});

/// The document as a JSON value.
///
/// # Errors
/// When the YAML compiled in does not parse.
pub fn document() -> Result<serde_json::Value, String> {
    let bytes = OPENAPI_JSON.as_ref().map_err(Clone::clone)?;
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// The answer to `GET /openapi.json`.
pub fn serve() -> Response<Body> {
    match &*OPENAPI_JSON {
        Ok(bytes) => json(StatusCode::OK, bytes.clone()),
        Err(e) => {
            tracing::error!(error = %e, "admin: the compiled-in OpenAPI document does not parse");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "OpenAPI document unavailable",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_parses_as_openapi_3_1() {
        let doc = document().expect("openapi/enrichd.yaml parses");
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"][OPENAPI_PATH]["get"].is_object());
    }
}
