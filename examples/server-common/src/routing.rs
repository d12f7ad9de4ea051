//! Path parameters as the client sent them.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, MatchedPath};
use http::request::Parts;
use http::Uri;

/// An extractor: the path parameters of the route that matched, as the client sent them,
/// still percent-encoded (axum's `Path` and `RawPathParams` decode them, and let a badly
/// encoded one through as written).
///
/// ```
/// use axum::routing::get;
/// use axum::Router;
/// use server_common::EncodedPath;
///
/// let router: Router = Router::new().route(
///     "/{keyspace}/{key}",
///     get(|path: EncodedPath| async move { path.param("key").to_owned() }),
/// );
/// ```
#[derive(Debug, Clone)]
pub struct EncodedPath {
    uri: Uri,
    pattern: Option<MatchedPath>,
}

impl EncodedPath {
    /// The parameter `name` of the route's pattern (`{name}`), as sent; `""` if the route has
    /// none of that name.
    pub fn param(&self, name: &str) -> &str {
        let Some(pattern) = &self.pattern else {
            return "";
        };
        pattern
            .as_str()
            .split('/')
            .zip(self.uri.path().split('/'))
            .find(|(part, _)| {
                part.strip_prefix('{')
                    .and_then(|part| part.strip_suffix('}'))
                    == Some(name)
            })
            .map_or("", |(_, value)| value)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for EncodedPath {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Self {
            uri: parts.uri.clone(),
            pattern: parts.extensions.get::<MatchedPath>().cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::routing::get;
    use axum::Router;
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn call(router: &Router, path: &str) -> String {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn parameters_are_read_as_sent() {
        let params = |path: EncodedPath| async move {
            format!(
                "{}|{}|{}",
                path.param("a"),
                path.param("b"),
                path.param("c")
            )
        };
        let router: Router = Router::new()
            .route("/{a}", get(params))
            .route("/x/{b}/y", get(params));
        assert_eq!(call(&router, "/%63%2F%G0").await, "%63%2F%G0||");
        assert_eq!(call(&router, "/x/%FF/y?q=1").await, "|%FF|");
    }
}
