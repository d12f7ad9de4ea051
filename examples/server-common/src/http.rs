//! JSON errors, bodies read within a limit, query strings.

use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};

/// The content type of `/metrics` pages (Prometheus text format 0.0.4).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A 4xx or 5xx answer, sent as `{"error": code, "message": ..., ...fields}`.
///
/// ```
/// use axum::response::IntoResponse;
/// use http::StatusCode;
/// use server_common::ApiError;
///
/// let error = ApiError::new(StatusCode::CONFLICT, "version_mismatch", "the key moved on")
///     .with_field("current_version", 7);
/// assert_eq!(error.code(), "version_mismatch");
/// let response = error.into_response();
/// assert_eq!(response.status(), StatusCode::CONFLICT);
/// ```
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// An error with an HTTP status, a stable machine-readable code and a message for humans.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: serde_json::Map::new(),
        }
    }

    /// Adds a field to the JSON body (beside `error` and `message`, which it cannot replace).
    #[must_use]
    pub fn with_field(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        if name != "error" && name != "message" {
            self.fields.insert(name.to_owned(), value.into());
        }
        self
    }

    /// The status it is sent with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Its code (the `error` field).
    pub fn code(&self) -> &'static str {
        self.code
    }
}

/// The JSON response.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("error".to_owned(), self.code.into());
        body.insert("message".to_owned(), self.message.into());
        body.extend(self.fields);
        (self.status, Json(body)).into_response()
    }
}

/// The request's body, refused with 413 `body_too_large` past `max_bytes` (whether declared
/// by `Content-Length` or only found while reading, e.g. chunked), or 400 `bad_body` if it
/// cannot be read.
pub async fn read_body<B>(request: Request<B>, max_bytes: usize) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds {max_bytes} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes as u64) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), max_bytes).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("cannot read the body: {error}"),
        )),
    }
}

/// The value of the query parameter `name` in `query` (the part after `?`), as written (not
/// percent-decoded); `Some("")` for `name` alone or `name=`.
///
/// ```
/// assert_eq!(server_common::query_param(Some("a=1&b=2"), "b"), Some("2"));
/// assert_eq!(server_common::query_param(Some("a"), "a"), Some(""));
/// assert_eq!(server_common::query_param(None, "a"), None);
/// ```
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query_pairs(query)
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The `name=value` pairs of `query` in order (empty pairs skipped; `name` alone has the
/// value `""`).
pub fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;

    use super::*;

    #[tokio::test]
    async fn bodies_are_read_within_the_limit() {
        let request = |body: &'static [u8]| {
            Request::builder()
                .body(Full::new(Bytes::from_static(body)))
                .unwrap()
        };
        assert_eq!(read_body(request(b"abc"), 3).await.unwrap(), "abc");
        let error = read_body(request(b"abcd"), 3).await.unwrap_err();
        assert_eq!(
            (error.status(), error.code()),
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        );
    }

    #[test]
    fn errors_are_json_with_their_extra_fields() {
        let response = ApiError::new(StatusCode::CONFLICT, "x", "m")
            .with_field("current", 3)
            .with_field("error", "ignored")
            .into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()["content-type"], "application/json");
        let bytes = collect_body(response.into_body());
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"error": "x", "message": "m", "current": 3})
        );
    }

    fn collect_body(body: axum::body::Body) -> Bytes {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(body.collect())
            .unwrap()
            .to_bytes()
    }

    #[test]
    fn query_pairs_skip_empty_parts() {
        let pairs: Vec<_> = query_pairs(Some("a=1&&b&c=")).collect();
        assert_eq!(pairs, [("a", "1"), ("b", ""), ("c", "")]);
    }
}
