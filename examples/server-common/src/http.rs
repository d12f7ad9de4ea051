//! JSON errors, bodies read within a size limit and a stall timeout, query strings.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};

/// The content type of `/metrics` pages (Prometheus text format 0.0.4).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A 4xx or 5xx answer, sent as `{"error": code, "message": ..., ...fields}`. A 408
/// (Request Timeout) also closes the connection (`Connection: close`): the request it
/// answers was not all read, so the connection cannot carry another.
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
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::REQUEST_TIMEOUT {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The request's body, refused with 413 `body_too_large` past `max_bytes` (whether declared
/// by `Content-Length` or only found while reading, e.g. chunked), 408 `body_timeout` (which
/// closes the connection) if no next piece of it comes within `stall_timeout`, or 400
/// `bad_body` if it cannot be read.
///
/// The timeout bounds each wait for more of the body, not the whole: a large body arriving
/// steadily, however slowly, is read to its end; one that stops is not waited for.
pub async fn read_body<B>(
    request: Request<B>,
    max_bytes: usize,
    stall_timeout: Duration,
) -> Result<Bytes, ApiError>
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
    let mut body = std::pin::pin!(Limited::new(request.into_body(), max_bytes));
    let mut collected = BytesMut::new();
    loop {
        let Ok(frame) = tokio::time::timeout(stall_timeout, body.as_mut().frame()).await else {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body stopped: no more of it came within {} ms",
                    stall_timeout.as_millis()
                ),
            ));
        };
        match frame {
            None => return Ok(collected.freeze()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    collected.put(data);
                }
            }
            Some(Err(error)) if error.is::<LengthLimitError>() => return Err(too_large()),
            Some(Err(error)) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("cannot read the body: {error}"),
                ))
            }
        }
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
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body_util::Full;
    use hyper::body::Frame;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::*;

    const STALL: Duration = Duration::from_millis(100);

    /// A body whose pieces come from a channel, when its sender sends them; it ends when the
    /// sender is dropped.
    struct Piecewise(mpsc::Receiver<&'static [u8]>);

    impl hyper::body::Body for Piecewise {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|piece| piece.map(|piece| Ok(Frame::data(Bytes::from_static(piece)))))
        }
    }

    /// A request with a [`Piecewise`] body, and the sender of its pieces.
    fn piecewise() -> (Request<Piecewise>, mpsc::Sender<&'static [u8]>) {
        let (tx, rx) = mpsc::channel(16);
        (Request::new(Piecewise(rx)), tx)
    }

    #[tokio::test]
    async fn bodies_are_read_within_the_limit() {
        let request = |body: &'static [u8]| {
            Request::builder()
                .body(Full::new(Bytes::from_static(body)))
                .unwrap()
        };
        assert_eq!(read_body(request(b"abc"), 3, STALL).await.unwrap(), "abc");
        let error = read_body(request(b"abcd"), 3, STALL).await.unwrap_err();
        assert_eq!(
            (error.status(), error.code()),
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_coming_times_out() {
        let (request, pieces) = piecewise();
        pieces.send(b"a piece").await.unwrap();
        let started = Instant::now();
        // `pieces` stays alive: the body neither ends nor goes on.
        let error = tokio::time::timeout(STALL * 10, read_body(request, 1024, STALL))
            .await
            .expect("read_body waited on a body that stopped")
            .unwrap_err();
        let waited = started.elapsed();
        assert_eq!(
            (error.status(), error.code()),
            (StatusCode::REQUEST_TIMEOUT, "body_timeout")
        );
        assert!(waited >= STALL && waited < STALL * 2, "{waited:?}");
        let response = error.into_response();
        assert_eq!(response.headers()["connection"], "close");
        drop(pieces);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_body_is_read_to_its_end() {
        let (request, pieces) = piecewise();
        // Ten pieces 60 ms apart: 600 ms in all, no wait as long as the timeout.
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(STALL * 6 / 10).await;
                pieces.send(b"0123456789").await.unwrap();
            }
        });
        let body = read_body(request, 1024, STALL).await.unwrap();
        assert_eq!(body, b"0123456789".repeat(10));
    }

    #[test]
    fn errors_are_json_with_their_extra_fields() {
        let response = ApiError::new(StatusCode::CONFLICT, "x", "m")
            .with_field("current", 3)
            .with_field("error", "ignored")
            .into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert!(response.headers().get("connection").is_none());
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
