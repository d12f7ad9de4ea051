//! `replicated-kv`: an HTTP key-value server on one Datacake node, with the eventually
//! consistent store over a `SqliteStorage`. See the README for the API and a three-node
//! walkthrough.

mod http;
mod keys;
mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use datacake_eventual_consistency::EventuallyConsistentStoreExtension;
use datacake_node::{
    ConnectionConfig, DatacakeNodeBuilder, DEFAULT_CLUSTER_ID, DEFAULT_DATA_CENTER,
};
use datacake_sqlite::{SqliteStorage, SqliteStorageOptions, Synchronous};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::http::App;

/// How long shutdown waits for in-flight HTTP requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP key-value server replicated across a Datacake cluster.
///
/// `GET|PUT|DELETE /:keyspace/:key?consistency=LEVEL`, `GET /cluster`, `GET /health`,
/// `GET /metrics`. Logs go to stderr, filtered by `RUST_LOG` (default `info`).
#[derive(Debug, Parser)]
#[command(name = "replicated-kv", version)]
struct Args {
    /// This node's id, unique among the live members of the cluster.
    #[arg(long)]
    node_id: u32,
    /// Address the cluster (gossip and RPC) server listens on.
    #[arg(long, default_value = "127.0.0.1:7001")]
    cluster_addr: SocketAddr,
    /// Address other nodes reach the cluster server at (default: --cluster-addr; set it when
    /// listening on a wildcard address such as 0.0.0.0).
    #[arg(long)]
    public_addr: Option<SocketAddr>,
    /// Address the HTTP API listens on.
    #[arg(long, default_value = "127.0.0.1:8001")]
    http_addr: SocketAddr,
    /// Cluster address (`host:port`) of a node to join through; repeat for several.
    #[arg(long = "seed", value_name = "HOST:PORT")]
    seeds: Vec<String>,
    /// This node's data centre.
    #[arg(long, default_value = DEFAULT_DATA_CENTER)]
    data_center: String,
    /// Directory for the node's SQLite database (`kv.db`); created if missing.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Cluster id: nodes with another id never become members.
    #[arg(long, default_value = DEFAULT_CLUSTER_ID)]
    cluster_id: String,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// How often anti-entropy repair runs with each peer, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    repair_interval_ms: u64,
    /// SQLite's `synchronous` setting for `kv.db` (WAL mode). Either way a process crash or
    /// SIGKILL loses no acknowledged write.
    #[arg(long, value_enum, default_value_t = SqliteSynchronous::Normal)]
    sqlite_synchronous: SqliteSynchronous,
}

/// The values of `--sqlite-synchronous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SqliteSynchronous {
    /// No fsync per commit: an OS crash or power loss may lose the last acknowledged writes
    /// (the database stays consistent).
    Normal,
    /// An fsync per commit: acknowledged writes survive an OS crash or power loss; slower
    /// writes.
    Full,
}

impl From<SqliteSynchronous> for Synchronous {
    fn from(value: SqliteSynchronous) -> Self {
        match value {
            SqliteSynchronous::Normal => Synchronous::Normal,
            SqliteSynchronous::Full => Synchronous::Full,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    run(args).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let db = args.data_dir.join("kv.db");
    let options = SqliteStorageOptions::new().with_synchronous(args.sqlite_synchronous.into());
    let storage = SqliteStorage::open_with(&db, options)
        .await
        .with_context(|| format!("cannot open {}", db.display()))?;
    let listener = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;

    let public = args.public_addr.unwrap_or(args.cluster_addr);
    let node = DatacakeNodeBuilder::new(
        args.node_id,
        ConnectionConfig::new(args.cluster_addr, public, args.seeds.clone()),
    )
    .with_cluster_id(args.cluster_id.clone())
    .with_data_center(args.data_center.clone())
    .connect()
    .await
    .context("cannot join the cluster")?;
    let store = node
        .add_extension(
            EventuallyConsistentStoreExtension::new(storage)
                .with_repair_interval(Duration::from_millis(args.repair_interval_ms.max(1))),
        )
        .await
        .context("cannot start the store")?;
    tracing::info!(
        node_id = args.node_id,
        cluster_addr = %node.me().public_addr,
        http_addr = %listener.local_addr()?,
        data = %db.display(),
        seeds = ?args.seeds,
        "replicated-kv ready"
    );

    let app = Arc::new(App::new(store, node.handle(), args.max_body_bytes));
    serve(listener, app).await;

    tracing::info!("leaving the cluster");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Serves HTTP until SIGINT or SIGTERM, then drains in-flight requests.
async fn serve(listener: TcpListener, app: Arc<App>) {
    let graceful = GracefulShutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                };
                let app = app.clone();
                let service = service_fn(move |request| app.clone().serve(request));
                let connection = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%peer, %error, "http connection ended with an error");
                    }
                });
            }
            signal = &mut shutdown => {
                tracing::info!(signal, "shutting down");
                break;
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "in-flight requests did not finish in time");
    }
}

/// Resolves with the name of the first SIGINT or SIGTERM received.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
