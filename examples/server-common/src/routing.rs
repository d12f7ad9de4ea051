//! What the servers' axum routers share: route names for the HTTP metrics, and path
//! parameters as the client sent them.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use http::request::Parts;
use http::Uri;

/// The route that answered, as the `route` label of the HTTP metrics: put in the response's
/// extensions by [`name_routes`], read by the recording in [`lifecycle`](crate::lifecycle).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteName(pub(crate) &'static str);

/// The route name of answers from no route (the router's fallback).
pub(crate) const OTHER: &str = "other";

/// Names every answer of `router` for the HTTP metrics' `route` label: `name` maps the
/// pattern of the route that matched (as given to [`Router::route`], e.g. `"/{key}"`) to a
/// fixed name; answers that matched no route are named `other`. The label is thereby never
/// a path from the network.
///
/// Call it last, after the fallback and the other layers, so that what those answer (a 401
/// of an authentication layer, say) is named too.
///
/// ```
/// use axum::routing::get;
/// use axum::Router;
///
/// fn route_name(pattern: &str) -> &'static str {
///     match pattern {
///         "/health" => "health",
///         _ => "other",
///     }
/// }
/// let router: Router = Router::new().route("/health", get(|| async { "ok" }));
/// let router = server_common::name_routes(router, route_name);
/// ```
pub fn name_routes(router: Router, name: fn(&str) -> &'static str) -> Router {
    router.layer(middleware::from_fn(move |request: Request, next: Next| {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or(OTHER, |pattern| name(pattern.as_str()));
        async move {
            let mut response: Response = next.run(request).await;
            response.extensions_mut().insert(RouteName(route));
            response
        }
    }))
}

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
    use axum::routing::get;
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn call(router: &Router, path: &str) -> (StatusCode, Option<&'static str>, String) {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let name = response.extensions().get::<RouteName>().map(|r| r.0);
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, name, String::from_utf8(body.to_vec()).unwrap())
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
        assert_eq!(call(&router, "/%63%2F%G0").await.2, "%63%2F%G0||");
        assert_eq!(call(&router, "/x/%FF/y?q=1").await.2, "|%FF|");
    }

    #[tokio::test]
    async fn answers_carry_the_name_of_their_route() {
        fn name(pattern: &str) -> &'static str {
            match pattern {
                "/{key}" => "kv",
                "/health" => "health",
                _ => "unnamed",
            }
        }
        let ok = || async { "ok" };
        let router = Router::new()
            .route("/health", get(ok))
            .route("/{key}", get(ok))
            .route("/a/b", get(ok));
        let router = name_routes(router, name);
        assert_eq!(call(&router, "/health").await.1, Some("health"));
        assert_eq!(call(&router, "/anything").await.1, Some("kv"));
        assert_eq!(call(&router, "/a/b").await.1, Some("unnamed"));
        let (status, name, _) = call(&router, "/x/y/z").await;
        assert_eq!((status, name), (StatusCode::NOT_FOUND, Some(OTHER)));
    }
}
