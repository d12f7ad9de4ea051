//! The HTTP API: the axum routes, their handlers, and JSON errors.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use datacake_eventual_consistency::{
    Consistency, ConsistencyError, EventuallyConsistentStore, ReplicatedStoreHandle, StoreError,
};
use datacake_node::{DatacakeHandle, ParseConsistencyError};
use datacake_sqlite::{SqliteStorage, SqliteStorageError};
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode, Uri};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use server_common::lifecycle::ServerContext;
use server_common::{error_chain, query_param, read_body, ApiError, EncodedPath, PROMETHEUS_TEXT};

use crate::auth::{Access, Refusal};
use crate::keys::{self, MAX_KEYSPACE_LEN, MAX_KEY_LEN};
use crate::metrics;

/// The consistency of reads and writes without `?consistency=`.
const DEFAULT_CONSISTENCY: Consistency = Consistency::Quorum;

/// The routes' patterns.
const HEALTH: &str = "/health";
const CLUSTER: &str = "/cluster";
const METRICS: &str = "/metrics";
const MEMBER: &str = "/cluster/members/{node_id}";
const KV: &str = "/{keyspace}/{key}";

/// Everything a request handler needs.
#[derive(Debug)]
pub(crate) struct App {
    store: EventuallyConsistentStore<SqliteStorage>,
    handle: ReplicatedStoreHandle<SqliteStorage>,
    node: DatacakeHandle,
    max_body_bytes: usize,
    stall_timeout: Duration,
    access: Access,
    prometheus: PrometheusHandle,
    context: ServerContext,
}

impl App {
    /// The app over a running store on `node`, refusing bodies over `max_body_bytes` or
    /// stopping for `stall_timeout`, and requests `access` does not let in; `/metrics`
    /// renders `prometheus`, `/health` reads the `context`'s phase.
    pub(crate) fn new(
        store: EventuallyConsistentStore<SqliteStorage>,
        node: DatacakeHandle,
        max_body_bytes: usize,
        stall_timeout: Duration,
        access: Access,
        prometheus: PrometheusHandle,
        context: ServerContext,
    ) -> Self {
        Self {
            handle: store.handle(),
            store,
            node,
            max_body_bytes,
            stall_timeout,
            access,
            prometheus,
            context,
        }
    }
}

/// The API's routes over `app` (named for the HTTP metrics by [`route_name`]); `app`'s
/// access rule is checked first on every request, known route or not.
pub(crate) fn router(app: App) -> Router {
    let app = Arc::new(app);
    let router = Router::new()
        .route(HEALTH, get(health).fallback(method_not_allowed))
        .route(CLUSTER, get(cluster).fallback(method_not_allowed))
        .route(METRICS, get(metrics_page).fallback(method_not_allowed))
        // Another method on a member is no route at all (404), as it always was.
        .route(MEMBER, delete(remove_member).fallback(not_found))
        .route(
            KV,
            get(get_key)
                .put(put_key)
                .delete(delete_key)
                .fallback(method_not_allowed),
        )
        .fallback(not_found);
    // Without a token there is nothing to check: no layer, nothing to pay per request.
    let router = if app.access.is_open() {
        router
    } else {
        router.layer(middleware::from_fn_with_state(app.clone(), authenticate))
    };
    router.with_state(app)
}

/// The name of the route with `pattern`, as the `route` label of the HTTP metrics.
pub(crate) fn route_name(pattern: &str) -> &'static str {
    match pattern {
        HEALTH => "health",
        CLUSTER => "cluster",
        METRICS => "metrics",
        MEMBER => "member",
        KV => "kv",
        _ => "other",
    }
}

/// Lets a request through if the access rule does, else answers 401.
async fn authenticate(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    match app.access.check(request.uri().path(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            metrics::unauthorized();
            unauthorized(refusal)
        }
    }
}

/// 200 `serving` with the live members, or 503 `starting` or `leaving`.
async fn health(State(app): State<Arc<App>>) -> Response {
    if let Some(response) = app.context.phase.not_serving() {
        return response;
    }
    #[derive(Serialize)]
    struct Health {
        status: &'static str,
        node_id: u32,
        live_members: usize,
    }
    Json(Health {
        status: "serving",
        node_id: app.node.me().node_id,
        live_members: app.node.statistics().live_members,
    })
    .into_response()
}

async fn cluster(State(app): State<Arc<App>>) -> Response {
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
    let mut members: Vec<Member> = app
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
    Json(Cluster {
        cluster_id: app.node.cluster_id().to_owned(),
        node_id: app.node.me().node_id,
        members,
    })
    .into_response()
}

async fn metrics_page(State(app): State<Arc<App>>) -> Response {
    metrics::statistics(&app.node.statistics());
    let context = &app.context;
    context.metrics.connections(context.connections.counts());
    let text = app.prometheus.render();
    ([(CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
}

async fn get_key(
    State(app): State<Arc<App>>,
    path: EncodedPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (keyspace, key, consistency) = kv_request(&path, query.as_deref())?;
    let document = app
        .handle
        .get(keyspace, keys::key_id(key), consistency)
        .await
        .map_err(store_error)?;
    match document.and_then(|doc| keys::decode(key, &doc.data)) {
        Some(value) => Ok(([(CONTENT_TYPE, "application/octet-stream")], value).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("no value for {keyspace}/{key}"),
        )),
    }
}

async fn put_key(
    State(app): State<Arc<App>>,
    path: EncodedPath,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<StatusCode, ApiError> {
    let (keyspace, key, consistency) = kv_request(&path, query.as_deref())?;
    let value = read_body(request, app.max_body_bytes, app.stall_timeout).await?;
    app.handle
        .put(
            keyspace,
            keys::key_id(key),
            keys::encode(key, &value),
            consistency,
        )
        .await
        .map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_key(
    State(app): State<Arc<App>>,
    path: EncodedPath,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    let (keyspace, key, consistency) = kv_request(&path, query.as_deref())?;
    app.handle
        .del(keyspace, keys::key_id(key), consistency)
        .await
        .map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_member(
    State(app): State<Arc<App>>,
    path: EncodedPath,
) -> Result<StatusCode, ApiError> {
    let id = path.param("node_id");
    let node_id: u32 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_node_id",
            format!("{id:?} is not a node id"),
        )
    })?;
    app.store
        .remove_member(node_id)
        .await
        .map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The keyspace, key and consistency of a request to `/:keyspace/:key`.
fn kv_request<'a>(
    path: &'a EncodedPath,
    query: Option<&str>,
) -> Result<(&'a str, &'a str, Consistency), ApiError> {
    let (keyspace, key) = check_names(path.param("keyspace"), path.param("key"))?;
    Ok((keyspace, key, consistency(query)?))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route for {}; use /:keyspace/:key, /cluster, /health or /metrics",
            uri.path()
        ),
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "use GET, PUT or DELETE on /:keyspace/:key and GET elsewhere",
    )
}

/// The answer to a failed store operation.
fn store_error(error: StoreError<SqliteStorageError>) -> ApiError {
    let message = error_chain(&error);
    match &error {
        StoreError::Consistency(ConsistencyError::NotEnoughNodes { .. }) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_enough_nodes", message)
        }
        StoreError::Consistency(ConsistencyError::NotJoined) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_joined", message)
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
        // This process's node id runs again elsewhere: send writes to the newer process.
        StoreError::Superseded { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "superseded", message)
        }
        // This node's clock runs ahead of most peers' beyond the drift bound: fix its clock.
        StoreError::ClockAhead { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "clock_ahead", message)
        }
        _ => {
            tracing::error!(error = %message, "storage failure");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", message)
        }
    }
}

/// 401 with a `WWW-Authenticate: Bearer` challenge (RFC 6750: `error="invalid_token"` when
/// a token was presented but is wrong).
fn unauthorized(refusal: Refusal) -> Response {
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
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
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
