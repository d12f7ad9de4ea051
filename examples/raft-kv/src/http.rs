//! The HTTP API: the axum routes, their handlers, and the mapping of Raft's errors to
//! statuses and codes.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{RawQuery, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use datacake_node::DatacakeHandle;
use datacake_raft::{RaftError, RaftHandle, ReadConsistency, Role};
use datacake_rpc::ErrorCode;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{StatusCode, Uri};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use server_common::lifecycle::ServerContext;
use server_common::{error_chain, query_pairs, read_body, ApiError, EncodedPath, PROMETHEUS_TEXT};

use crate::config::Limits;
use crate::keys;
use crate::machine::{Answer, Command, KvMachine, Query, Response as Applied};
use crate::metrics;

/// The header carrying a key's version on `GET /:key`.
pub(crate) const VERSION_HEADER: &str = "x-version";

/// The routes' patterns.
const HEALTH: &str = "/health";
const CLUSTER: &str = "/cluster";
const METRICS: &str = "/metrics";
const COUNTER: &str = "/counter/{name}";
const COUNTER_INCR: &str = "/counter/{name}/incr";
const KEY: &str = "/{key}";

type Answered = Result<Response, ApiError>;

/// Everything a request handler needs.
#[derive(Debug)]
pub(crate) struct App {
    raft: RaftHandle<KvMachine>,
    node: DatacakeHandle,
    limits: Limits,
    prometheus: PrometheusHandle,
    context: ServerContext,
}

/// The API's routes over `app` (named for the HTTP metrics by [`route_name`]).
pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route(HEALTH, get(health).fallback(only_get))
        .route(CLUSTER, get(cluster).fallback(only_get))
        .route(METRICS, get(metrics_page).fallback(only_get))
        .route(COUNTER, get(counter).fallback(only_get))
        .route(
            COUNTER_INCR,
            post(incr).fallback(|| async { method_not_allowed("POST") }),
        )
        .route(
            KEY,
            get(get_key)
                .put(put_key)
                .delete(delete_key)
                .fallback(|| async { method_not_allowed("GET, PUT, DELETE") }),
        )
        .fallback(not_found)
        .with_state(Arc::new(app))
}

/// The name of the route with `pattern`, as the `route` label of the HTTP metrics.
pub(crate) fn route_name(pattern: &str) -> &'static str {
    match pattern {
        HEALTH => "health",
        CLUSTER => "cluster",
        METRICS => "metrics",
        COUNTER => "counter",
        COUNTER_INCR => "counter_incr",
        KEY => "kv",
        _ => "other",
    }
}

async fn health(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Answered {
    app.health(query.as_deref())
}

async fn cluster(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Answered {
    app.cluster(query.as_deref())
}

async fn metrics_page(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Answered {
    app.metrics_page(query.as_deref())
}

async fn counter(
    State(app): State<Arc<App>>,
    path: EncodedPath,
    RawQuery(query): RawQuery,
) -> Answered {
    app.counter(path.param("name"), query.as_deref()).await
}

async fn incr(
    State(app): State<Arc<App>>,
    path: EncodedPath,
    RawQuery(query): RawQuery,
) -> Answered {
    app.incr(path.param("name"), query.as_deref()).await
}

async fn get_key(
    State(app): State<Arc<App>>,
    path: EncodedPath,
    RawQuery(query): RawQuery,
) -> Answered {
    app.get(path.param("key"), query.as_deref()).await
}

async fn put_key(
    State(app): State<Arc<App>>,
    path: EncodedPath,
    RawQuery(query): RawQuery,
    request: Request,
) -> Answered {
    app.put(path.param("key"), query.as_deref(), request).await
}

async fn delete_key(
    State(app): State<Arc<App>>,
    path: EncodedPath,
    RawQuery(query): RawQuery,
) -> Answered {
    app.delete(path.param("key"), query.as_deref()).await
}

async fn only_get() -> ApiError {
    method_not_allowed("GET")
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route for {}; use /:key, /counter/:name, /counter/:name/incr, /cluster, \
             /health or /metrics",
            uri.path()
        ),
    )
}

impl App {
    /// The app over a running Raft on `node`; `/metrics` renders `prometheus`, `/health`
    /// reads the `context`'s phase.
    pub(crate) fn new(
        raft: RaftHandle<KvMachine>,
        node: DatacakeHandle,
        limits: Limits,
        prometheus: PrometheusHandle,
        context: ServerContext,
    ) -> Self {
        Self {
            raft,
            node,
            limits,
            prometheus,
            context,
        }
    }

    fn key(&self, raw: &str) -> Result<String, ApiError> {
        keys::decode(raw, self.limits.max_key_bytes)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_key", e.to_string()))
    }

    async fn get(&self, raw: &str, query: Option<&str>) -> Result<Response, ApiError> {
        let key = self.key(raw)?;
        let params = Params::parse(query, &["read"])?;
        let read = params.read()?;
        match self.read(Query::Get { key: key.clone() }, read).await? {
            Answer::Value(Some(stored)) => {
                let mut response =
                    ([(CONTENT_TYPE, "application/octet-stream")], stored.value).into_response();
                response
                    .headers_mut()
                    .insert(VERSION_HEADER, HeaderValue::from(stored.version));
                Ok(response)
            }
            Answer::Value(None) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "key_not_found",
                format!("no value for {key:?}"),
            )),
            other => Err(unexpected(&other)),
        }
    }

    async fn put(
        &self,
        raw: &str,
        query: Option<&str>,
        request: Request,
    ) -> Result<Response, ApiError> {
        let key = self.key(raw)?;
        let params = Params::parse(query, &["if_version"])?;
        let if_version = params.if_version()?;
        let limits = &self.limits;
        let value = read_body(request, limits.max_body_bytes, limits.stall_timeout()).await?;
        let command = Command::Put {
            key: key.clone(),
            value: value.to_vec(),
            if_version,
        };
        match self.write("put", command).await? {
            Applied::Written { version } => {
                #[derive(Serialize)]
                struct Written<'a> {
                    key: &'a str,
                    version: u64,
                }
                Ok(Json(Written { key: &key, version }).into_response())
            }
            Applied::VersionMismatch { current } => Err(version_mismatch(&key, current)),
            other => Err(unexpected(&other)),
        }
    }

    async fn delete(&self, raw: &str, query: Option<&str>) -> Result<Response, ApiError> {
        let key = self.key(raw)?;
        let params = Params::parse(query, &["if_version"])?;
        let if_version = params.if_version()?;
        let command = Command::Delete {
            key: key.clone(),
            if_version,
        };
        match self.write("delete", command).await? {
            Applied::Deleted { existed } => {
                #[derive(Serialize)]
                struct Deleted<'a> {
                    key: &'a str,
                    deleted: bool,
                }
                Ok(Json(Deleted {
                    key: &key,
                    deleted: existed,
                })
                .into_response())
            }
            Applied::VersionMismatch { current } => Err(version_mismatch(&key, current)),
            other => Err(unexpected(&other)),
        }
    }

    async fn incr(&self, raw: &str, query: Option<&str>) -> Result<Response, ApiError> {
        let name = self.key(raw)?;
        let params = Params::parse(query, &["by"])?;
        let by = match params.get("by") {
            None => 1,
            Some(by) => by.parse::<i64>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_by",
                    format!(
                        "by must be an integer from {} to {}, got {by:?}",
                        i64::MIN,
                        i64::MAX
                    ),
                )
            })?,
        };
        let command = Command::Incr {
            name: name.clone(),
            by,
        };
        match self.write("incr", command).await? {
            Applied::Counter { value } => Ok(counter_json(&name, value)),
            Applied::Overflow { value } => Err(ApiError::new(
                StatusCode::CONFLICT,
                "counter_overflow",
                format!("adding {by} to {value} would overflow a 64-bit signed integer"),
            )
            .with_field("name", name)
            .with_field("value", value)),
            other => Err(unexpected(&other)),
        }
    }

    async fn counter(&self, raw: &str, query: Option<&str>) -> Result<Response, ApiError> {
        let name = self.key(raw)?;
        let params = Params::parse(query, &["read"])?;
        let read = params.read()?;
        match self
            .read(Query::Counter { name: name.clone() }, read)
            .await?
        {
            Answer::Counter(value) => Ok(counter_json(&name, value)),
            other => Err(unexpected(&other)),
        }
    }

    /// Writes `command` through Raft, timing it as `op`.
    async fn write(&self, op: &'static str, command: Command) -> Result<Applied, ApiError> {
        let started = Instant::now();
        let result = self.raft.write(command).await.map_err(raft_error);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.code(),
        };
        metrics::write(op, outcome, started.elapsed());
        result
    }

    async fn read(&self, query: Query, read: ReadConsistency) -> Result<Answer, ApiError> {
        self.raft.read(query, read).await.map_err(raft_error)
    }

    /// 200 only while serving and healthy by Raft's rule ([`health_problem`]); 503 with
    /// `status` `starting` or `leaving` otherwise, or `serving` with the Raft `reason`.
    fn health(&self, query: Option<&str>) -> Result<Response, ApiError> {
        Params::parse(query, &[])?;
        if let Some(response) = self.context.phase.not_serving() {
            return Ok(response);
        }
        let status = self.raft.status();
        let me = self.raft.node_id();
        let role = metrics::role_name(status.role);
        if let Some((reason, message)) =
            health_problem(status.role, status.leader, me, self.raft.has_quorum())
        {
            return Err(
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unhealthy", message)
                    .with_field("status", "serving")
                    .with_field("reason", reason)
                    .with_field("node_id", me)
                    .with_field("role", role),
            );
        }
        #[derive(Serialize)]
        struct Health {
            status: &'static str,
            node_id: u32,
            role: &'static str,
            leader: Option<u32>,
        }
        Ok(Json(Health {
            status: "serving",
            node_id: me,
            role,
            leader: status.leader,
        })
        .into_response())
    }

    fn cluster(&self, query: Option<&str>) -> Result<Response, ApiError> {
        Params::parse(query, &[])?;
        #[derive(Serialize)]
        struct Member {
            node_id: u32,
            public_addr: String,
        }
        #[derive(Serialize)]
        struct Cluster {
            node_id: u32,
            role: &'static str,
            is_active: bool,
            has_quorum: bool,
            leader: Option<u32>,
            term: u64,
            voters: Vec<u32>,
            learners: Vec<u32>,
            commit_index: Option<u64>,
            applied_index: Option<u64>,
            last_log_index: Option<u64>,
            members: Vec<Member>,
        }
        let status = self.raft.status();
        let mut members: Vec<Member> = self
            .node
            .live_members()
            .into_iter()
            .map(|m| Member {
                node_id: m.node_id,
                public_addr: m.public_addr.to_string(),
            })
            .collect();
        members.sort_unstable_by_key(|m| m.node_id);
        Ok(Json(Cluster {
            node_id: self.raft.node_id(),
            role: metrics::role_name(status.role),
            is_active: status.role != Role::Inactive,
            has_quorum: self.raft.has_quorum(),
            leader: status.leader,
            term: status.term,
            voters: status.voters.iter().copied().collect(),
            learners: status.learners.iter().copied().collect(),
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            last_log_index: status.last_log_index,
            members,
        })
        .into_response())
    }

    fn metrics_page(&self, query: Option<&str>) -> Result<Response, ApiError> {
        Params::parse(query, &[])?;
        metrics::raft(&self.raft.status(), self.raft.has_quorum());
        let context = &self.context;
        context.metrics.connections(context.connections.counts());
        let text = self.prometheus.render();
        Ok(([(CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response())
    }
}

/// Why node `me` in `role`, knowing of `leader`, is not healthy (a reason code and a
/// message), or `None` if it is: it is in a cluster and either leads with a quorum or follows
/// a leader it knows.
fn health_problem(
    role: Role,
    leader: Option<u32>,
    me: u32,
    has_quorum: bool,
) -> Option<(&'static str, &'static str)> {
    match role {
        Role::Inactive => Some((
            "inactive",
            "this node is in no cluster yet: waiting for bootstrap_expect nodes, or to be added",
        )),
        Role::Leader if has_quorum => None,
        Role::Leader => Some((
            "no_quorum",
            "this node leads, but no quorum of voters has acknowledged it lately",
        )),
        Role::Follower | Role::Learner if leader.is_some_and(|l| l != me) => None,
        Role::Follower | Role::Learner | Role::Candidate => Some((
            "no_leader",
            "this node knows of no leader (an election is due or under way)",
        )),
    }
}

/// The query parameters of a request, checked against the ones its route takes.
#[derive(Debug)]
struct Params<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Params<'a> {
    /// Refuses parameters not in `allowed`, and any given twice.
    fn parse(query: Option<&'a str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (name, value) in query_pairs(query) {
            if !allowed.contains(&name) {
                let takes = if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                };
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unknown_parameter",
                    format!("unknown query parameter {name:?}; this route takes: {takes}"),
                ));
            }
            if seen.iter().any(|(seen, _)| *seen == name) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "duplicate_parameter",
                    format!("the query parameter {name:?} is given more than once"),
                ));
            }
            seen.push((name, value));
        }
        Ok(Self(seen))
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// `?read=linearizable|local`, linearizable by default.
    fn read(&self) -> Result<ReadConsistency, ApiError> {
        match self.get("read") {
            None | Some("linearizable") => Ok(ReadConsistency::Linearizable),
            Some("local") => Ok(ReadConsistency::Local),
            Some(other) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_read",
                format!("read must be linearizable or local, got {other:?}"),
            )),
        }
    }

    /// `?if_version=N`.
    fn if_version(&self) -> Result<Option<u64>, ApiError> {
        self.get("if_version")
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_version",
                        format!(
                            "if_version must be a version (0 to {}), got {v:?}",
                            u64::MAX
                        ),
                    )
                })
            })
            .transpose()
    }
}

fn counter_json(name: &str, value: i64) -> Response {
    #[derive(Serialize)]
    struct Counter<'a> {
        name: &'a str,
        value: i64,
    }
    Json(Counter { name, value }).into_response()
}

fn version_mismatch(key: &str, current: u64) -> ApiError {
    let now = if current == 0 {
        "absent".to_owned()
    } else {
        format!("at version {current}")
    };
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "version_mismatch",
        format!("{key:?} is {now}; nothing was written"),
    )
    .with_field("key", key)
    .with_field("current_version", current)
}

fn method_not_allowed(allowed: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route takes {allowed}"),
    )
}

/// A state machine answer of the wrong kind for the request: a bug.
fn unexpected(answer: &dyn std::fmt::Debug) -> ApiError {
    tracing::error!(?answer, "unexpected state machine answer");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "unexpected state machine answer",
    )
}

/// The answer to a failed Raft write or read.
fn raft_error(error: RaftError) -> ApiError {
    let message = error_chain(&error);
    let maybe_applied = "; a write may still be applied";
    match &error {
        RaftError::NotLeader {
            leader: Some(leader),
        } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_leader", message)
            .with_field("leader", *leader),
        RaftError::NotLeader { leader: None } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            "no leader is known (an election is due or under way); retry shortly",
        ),
        RaftError::QuorumUnavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "quorum_unavailable",
            message + maybe_applied,
        ),
        RaftError::Timeout { .. } => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            message + maybe_applied,
        ),
        RaftError::Rpc(status) if status.code() == ErrorCode::Timeout => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            message + maybe_applied,
        ),
        RaftError::Rpc(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "leader_unreachable",
            format!("forwarding to the leader failed: {message}{maybe_applied}"),
        ),
        RaftError::Stopped => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopped",
            "raft has stopped on this node",
        ),
        RaftError::Superseded { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "superseded", message)
        }
        RaftError::CommandTooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
        }
        _ => {
            tracing::error!(error = %message, "raft failure");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_needs_a_cluster_and_a_leader_with_a_quorum() {
        let reason = |role, leader, quorum| health_problem(role, leader, 2, quorum).map(|p| p.0);
        assert_eq!(reason(Role::Leader, Some(2), true), None);
        assert_eq!(reason(Role::Leader, Some(2), false), Some("no_quorum"));
        assert_eq!(reason(Role::Follower, Some(1), false), None);
        assert_eq!(reason(Role::Learner, Some(1), false), None);
        assert_eq!(reason(Role::Follower, None, false), Some("no_leader"));
        assert_eq!(reason(Role::Candidate, Some(1), false), Some("no_leader"));
        assert_eq!(reason(Role::Inactive, Some(1), false), Some("inactive"));
    }

    #[test]
    fn query_parameters_are_checked_by_route() {
        let params = Params::parse(Some("read=local"), &["read"]).unwrap();
        assert_eq!(params.read().unwrap(), ReadConsistency::Local);
        assert_eq!(
            Params::parse(None, &["read"]).unwrap().read().unwrap(),
            ReadConsistency::Linearizable
        );
        let code =
            |query, allowed: &[&str]| Params::parse(Some(query), allowed).unwrap_err().code();
        assert_eq!(code("by=1", &["read"]), "unknown_parameter");
        assert_eq!(
            code("read=local&read=local", &["read"]),
            "duplicate_parameter"
        );
        let version = |query| {
            Params::parse(Some(query), &["if_version"])
                .unwrap()
                .if_version()
        };
        assert_eq!(version("if_version=0").unwrap(), Some(0));
        assert_eq!(version("if_version=x").unwrap_err().code(), "bad_version");
    }

    #[test]
    fn raft_errors_map_to_statuses_and_codes() {
        let cases = [
            (RaftError::NotLeader { leader: None }, 503, "no_leader"),
            (RaftError::NotLeader { leader: Some(3) }, 503, "not_leader"),
            (RaftError::QuorumUnavailable, 503, "quorum_unavailable"),
            (
                RaftError::Timeout {
                    after: std::time::Duration::from_secs(1),
                },
                504,
                "timeout",
            ),
            (
                RaftError::Rpc(datacake_rpc::Status::timeout("late")),
                504,
                "timeout",
            ),
            (
                RaftError::Rpc(datacake_rpc::Status::connection("refused")),
                503,
                "leader_unreachable",
            ),
            (RaftError::Stopped, 503, "stopped"),
            (
                RaftError::Superseded {
                    node_id: 3,
                    newer: "10.0.0.3:7000".parse().unwrap(),
                },
                503,
                "superseded",
            ),
            (
                RaftError::CommandTooLarge {
                    size: 2 << 20,
                    limit: 1 << 20,
                },
                413,
                "body_too_large",
            ),
            (
                RaftError::Storage {
                    what: "raft.db".into(),
                    source: std::io::Error::other("disk").into(),
                },
                500,
                "internal",
            ),
        ];
        for (error, status, code) in cases {
            let what = error.to_string();
            let error = raft_error(error);
            assert_eq!(
                (error.status().as_u16(), error.code()),
                (status, code),
                "{what}"
            );
        }
    }
}
