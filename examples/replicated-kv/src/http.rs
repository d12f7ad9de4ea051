//! The HTTP API: routing, handlers and JSON errors.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use datacake_eventual_consistency::{
    Consistency, ConsistencyError, EventuallyConsistentStore, ReplicatedStoreHandle, StoreError,
};
use datacake_node::{DatacakeHandle, ParseConsistencyError};
use datacake_sqlite::{SqliteStorage, SqliteStorageError};
use http::header::WWW_AUTHENTICATE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use server_common::lifecycle::{ServerContext, Service};
use server_common::{
    empty, error_chain, json, query_param, read_body, response, ApiError, PROMETHEUS_TEXT,
};

use crate::auth::{Access, Refusal};
use crate::keys::{self, MAX_KEYSPACE_LEN, MAX_KEY_LEN};
use crate::metrics;

/// The consistency of reads and writes without `?consistency=`.
const DEFAULT_CONSISTENCY: Consistency = Consistency::Quorum;

/// Everything a request handler needs.
#[derive(Debug)]
pub(crate) struct App {
    store: EventuallyConsistentStore<SqliteStorage>,
    handle: ReplicatedStoreHandle<SqliteStorage>,
    node: DatacakeHandle,
    max_body_bytes: usize,
    access: Access,
    prometheus: PrometheusHandle,
    context: ServerContext,
}

/// The answer to a failed store operation.
fn store_error(error: StoreError<SqliteStorageError>) -> ApiError {
    let message = error_chain(&error);
    match &error {
        StoreError::Consistency(ConsistencyError::NotEnoughNodes { .. }) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_enough_nodes", message)
        }
        StoreError::Consistency(ConsistencyError::ConsistencyFailure { .. }) => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "consistency_timeout", message)
        }
        StoreError::ReplicaFailed { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "replica_failed", message)
        }
        StoreError::Transport { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "peer_unreachable", message)
        }
        StoreError::ReservedKeyspace { .. } | StoreError::InvalidKeyspaceName { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_keyspace", message)
        }
        StoreError::TooManyKeyspaces { .. } => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "too_many_keyspaces",
            message,
        ),
        StoreError::MemberIsLive { .. } => {
            ApiError::new(StatusCode::CONFLICT, "member_is_live", message)
        }
        StoreError::UnknownMember { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_member", message)
        }
        StoreError::DocumentTooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "document_too_large", message)
        }
        _ => {
            tracing::error!(error = %message, "storage failure");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", message)
        }
    }
}

impl Service for App {
    fn call(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> impl Future<Output = (&'static str, Response<Full<Bytes>>)> {
        self.serve(request)
    }
}

impl App {
    /// The app over a running store on `node`, refusing bodies over `max_body_bytes` and
    /// requests `access` does not let in; `/metrics` renders `prometheus`, `/health` reads
    /// the `context`'s phase.
    pub(crate) fn new(
        store: EventuallyConsistentStore<SqliteStorage>,
        node: DatacakeHandle,
        max_body_bytes: usize,
        access: Access,
        prometheus: PrometheusHandle,
        context: ServerContext,
    ) -> Self {
        Self {
            handle: store.handle(),
            store,
            node,
            max_body_bytes,
            access,
            prometheus,
            context,
        }
    }

    /// Answers one request (errors become JSON responses), with its route.
    async fn serve(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> (&'static str, Response<Full<Bytes>>) {
        let path = request.uri().path().to_owned();
        let route = route_name(&path);
        let response = match self.access.check(&path, request.headers()) {
            Ok(()) => match self.route(request).await {
                Ok(response) => response,
                Err(error) => error.into_response(),
            },
            Err(refusal) => {
                metrics::unauthorized();
                unauthorized(refusal)
            }
        };
        (route, response)
    }

    async fn route(&self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
        let path = request.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (request.method(), segments.as_slice()) {
            (&Method::GET, ["health"]) => Ok(self.health()),
            (&Method::GET, ["cluster"]) => Ok(self.cluster()),
            (&Method::GET, ["metrics"]) => Ok(self.metrics_page()),
            (&Method::DELETE, ["cluster", "members", id]) => self.remove_member(id).await,
            (_, ["health" | "cluster" | "metrics"]) => Err(method_not_allowed()),
            (method, [keyspace, key]) => {
                let (keyspace, key) = check_names(keyspace, key)?;
                let consistency = consistency(request.uri().query())?;
                match *method {
                    Method::GET => self.get(keyspace, key, consistency).await,
                    Method::PUT => {
                        let body = read_body(request, self.max_body_bytes).await?;
                        self.put(keyspace, key, &body, consistency).await
                    }
                    Method::DELETE => self.delete(keyspace, key, consistency).await,
                    _ => Err(method_not_allowed()),
                }
            }
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {path}; use /:keyspace/:key, /cluster, /health or /metrics"),
            )),
        }
    }

    /// 200 `serving` with the live members, or 503 `starting` or `leaving`.
    fn health(&self) -> Response<Full<Bytes>> {
        if let Some(response) = self.context.phase.not_serving() {
            return response;
        }
        #[derive(Serialize)]
        struct Health {
            status: &'static str,
            node_id: u32,
            live_members: usize,
        }
        json(
            StatusCode::OK,
            &Health {
                status: "serving",
                node_id: self.node.me().node_id,
                live_members: self.node.statistics().live_members,
            },
        )
    }

    fn cluster(&self) -> Response<Full<Bytes>> {
        #[derive(Serialize)]
        struct Member {
            node_id: u32,
            public_addr: String,
            data_center: String,
        }
        #[derive(Serialize)]
        struct Cluster {
            cluster_id: String,
            node_id: u32,
            members: Vec<Member>,
        }
        let mut members: Vec<Member> = self
            .node
            .live_members()
            .into_iter()
            .map(|m| Member {
                node_id: m.node_id,
                public_addr: m.public_addr.to_string(),
                data_center: m.data_center.to_string(),
            })
            .collect();
        members.sort_unstable_by_key(|m| m.node_id);
        json(
            StatusCode::OK,
            &Cluster {
                cluster_id: self.node.cluster_id().to_owned(),
                node_id: self.node.me().node_id,
                members,
            },
        )
    }

    fn metrics_page(&self) -> Response<Full<Bytes>> {
        metrics::statistics(&self.node.statistics());
        let context = &self.context;
        context.metrics.connections(context.connections.counts());
        let text = self.prometheus.render();
        response(StatusCode::OK, PROMETHEUS_TEXT, Bytes::from(text))
    }

    async fn get(
        &self,
        keyspace: &str,
        key: &str,
        consistency: Consistency,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let document = self
            .handle
            .get(keyspace, keys::key_id(key), consistency)
            .await
            .map_err(store_error)?;
        match document.and_then(|doc| keys::decode(key, &doc.data)) {
            Some(value) => Ok(response(StatusCode::OK, "application/octet-stream", value)),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "key_not_found",
                format!("no value for {keyspace}/{key}"),
            )),
        }
    }

    async fn remove_member(&self, id: &str) -> Result<Response<Full<Bytes>>, ApiError> {
        let node_id: u32 = id.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_node_id",
                format!("{id:?} is not a node id"),
            )
        })?;
        self.store
            .remove_member(node_id)
            .await
            .map_err(store_error)?;
        Ok(empty(StatusCode::NO_CONTENT))
    }

    async fn put(
        &self,
        keyspace: &str,
        key: &str,
        value: &[u8],
        consistency: Consistency,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        self.handle
            .put(
                keyspace,
                keys::key_id(key),
                keys::encode(key, value),
                consistency,
            )
            .await
            .map_err(store_error)?;
        Ok(empty(StatusCode::NO_CONTENT))
    }

    async fn delete(
        &self,
        keyspace: &str,
        key: &str,
        consistency: Consistency,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        self.handle
            .del(keyspace, keys::key_id(key), consistency)
            .await
            .map_err(store_error)?;
        Ok(empty(StatusCode::NO_CONTENT))
    }
}

/// The route of `path`, as the `route` label of the HTTP metrics.
fn route_name(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["health"] => "health",
        ["cluster"] => "cluster",
        ["metrics"] => "metrics",
        ["cluster", "members", _] => "member",
        [_, _] => "kv",
        _ => "other",
    }
}

/// 401 with a `WWW-Authenticate: Bearer` challenge (RFC 6750: `error="invalid_token"` when
/// a token was presented but is wrong).
fn unauthorized(refusal: Refusal) -> Response<Full<Bytes>> {
    let (challenge, message) = match refusal {
        Refusal::Missing => (
            r#"Bearer realm="replicated-kv""#,
            "send the token as `Authorization: Bearer <token>`",
        ),
        Refusal::Invalid => (
            r#"Bearer realm="replicated-kv", error="invalid_token""#,
            "the bearer token is not valid",
        ),
    };
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, http::HeaderValue::from_static(challenge));
    response
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "use GET, PUT or DELETE on /:keyspace/:key and GET elsewhere",
    )
}

fn check_names<'a>(keyspace: &'a str, key: &'a str) -> Result<(&'a str, &'a str), ApiError> {
    if !keys::is_valid_name(keyspace, MAX_KEYSPACE_LEN) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_keyspace",
            format!(
                "a keyspace is 1 to {MAX_KEYSPACE_LEN} bytes of ASCII letters, digits, '-', '_', '.', '~'"
            ),
        ));
    }
    if !keys::is_valid_name(key, MAX_KEY_LEN) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_key",
            format!(
                "a key is 1 to {MAX_KEY_LEN} bytes of ASCII letters, digits, '-', '_', '.', '~'"
            ),
        ));
    }
    Ok((keyspace, key))
}

/// The `consistency` query parameter, or the default.
fn consistency(query: Option<&str>) -> Result<Consistency, ApiError> {
    match query_param(query, "consistency") {
        None => Ok(DEFAULT_CONSISTENCY),
        Some(value) => value.parse().map_err(|error: ParseConsistencyError| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_consistency",
                error.to_string(),
            )
        }),
    }
}
