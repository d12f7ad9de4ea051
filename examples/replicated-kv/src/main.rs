//! `replicated-kv`: an HTTP key-value server on one Datacake node, with the eventually
//! consistent store over a `SqliteStorage`; `replicated-kv certs` makes the certificates for
//! HTTPS. See the README for the API, HTTPS and token auth, and a three-node walkthrough.

mod auth;
mod certs;
mod http;
mod keys;
mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use datacake_eventual_consistency::EventuallyConsistentStoreExtension;
use datacake_node::{
    ConnectionConfig, DatacakeNodeBuilder, DEFAULT_CLUSTER_ID, DEFAULT_DATA_CENTER,
};
use datacake_sqlite::{SqliteStorage, SqliteStorageOptions, Synchronous};
use server_common::{shutdown_signal, ServerOptions};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::auth::{Access, BearerToken};
use crate::certs::CertsCommand;
use crate::http::App;

/// An HTTP key-value server replicated across a Datacake cluster.
///
/// `GET|PUT|DELETE /:keyspace/:key?consistency=LEVEL`, `GET /cluster`, `GET /health`,
/// `GET /metrics`. Logs go to stderr, filtered by `RUST_LOG` (default `info`).
///
/// Without a subcommand it runs the server (`replicated-kv --node-id 1 ...` is
/// `replicated-kv serve --node-id 1 ...`).
#[derive(Debug, Parser)]
#[command(
    name = "replicated-kv",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default without a subcommand).
    Serve(Box<ServeArgs>),
    /// Make a cluster CA and node certificates (PEM files).
    #[command(subcommand)]
    Certs(CertsCommand),
}

/// The server's flags.
#[derive(Debug, Args)]
struct ServeArgs {
    /// This node's id, unique among the live members of the cluster.
    #[arg(long, required = true)]
    node_id: Option<u32>,
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
    /// Serve the HTTP API over HTTPS with this certificate chain (PEM, leaf first); needs
    /// --http-tls-key.
    #[arg(long, value_name = "FILE", requires = "http_tls_key")]
    http_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --http-tls-cert.
    #[arg(long, value_name = "FILE", requires = "http_tls_cert")]
    http_tls_key: Option<PathBuf>,
    /// Require `Authorization: Bearer <token>` on every request; the token is this file's
    /// contents, trimmed (an empty file is an error).
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
    /// With --auth-token-file: let GET /health and /metrics in without the token (for load
    /// balancers and scrapers).
    #[arg(long)]
    open_health: bool,
    /// Close a connection that has not sent a request's headers within this time (also an
    /// idle keep-alive connection, and a TLS handshake), in milliseconds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_ms: u64,
    /// Most HTTP connections served at once; a connection over the limit is closed at once.
    #[arg(long, default_value_t = 1_024, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Speak mutual TLS with the other nodes (gossip and replication), trusting this cluster
    /// CA certificate (PEM); needs --tls-cert and --tls-key. Without it the cluster port is
    /// plaintext: keep it on a private network.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM, from `replicated-kv certs node`), naming
    /// datacake://<cluster>/<node-id>; needs --tls-ca.
    #[arg(long, value_name = "FILE", requires = "tls_ca")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert; needs --tls-ca.
    #[arg(long, value_name = "FILE", requires = "tls_ca")]
    tls_key: Option<PathBuf>,
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Certs(command)) => certs::run(command),
        Some(Command::Serve(args)) => serve_main(*args),
        None => serve_main(cli.serve),
    }
}

fn serve_main(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Runtime::new()
        .context("cannot start the runtime")?
        .block_on(run(args))
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let node_id = args.node_id.context("--node-id is required")?;
    // Configuration errors first, before touching the disk or the cluster.
    let token = args
        .auth_token_file
        .as_deref()
        .map(BearerToken::from_file)
        .transpose()?;
    let tls = match (&args.http_tls_cert, &args.http_tls_key) {
        (Some(cert), Some(key)) => Some(server_common::server_config(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("--http-tls-cert and --http-tls-key go together"),
    };
    if token.is_none() && args.open_health {
        tracing::warn!("--open-health has no effect without --auth-token-file");
    }
    let authenticated = token.is_some();
    let server_options = ServerOptions {
        tls: tls.clone(),
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
    };

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
    let mut builder = DatacakeNodeBuilder::new(
        node_id,
        ConnectionConfig::new(args.cluster_addr, public, args.seeds.clone()),
    )
    .with_cluster_id(args.cluster_id.clone())
    .with_data_center(args.data_center.clone());
    let cluster_tls = match (&args.tls_ca, &args.tls_cert, &args.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Some(
            datacake_rpc::TlsConfig::mutual_from_files(ca, cert, key)
                .context("cannot load the cluster tls files")?,
        ),
        _ => None,
    };
    let cluster_tls_on = cluster_tls.is_some();
    if let Some(tls) = cluster_tls {
        builder = builder.with_tls(tls);
    }
    let node = builder.connect().await.context("cannot join the cluster")?;
    let store = node
        .add_extension(
            EventuallyConsistentStoreExtension::new(storage)
                .with_repair_interval(Duration::from_millis(args.repair_interval_ms.max(1))),
        )
        .await
        .context("cannot start the store")?;
    tracing::info!(
        node_id,
        cluster_addr = %node.me().public_addr,
        http_addr = %listener.local_addr()?,
        https = tls.is_some(),
        cluster_tls = cluster_tls_on,
        token_auth = authenticated,
        open_health = authenticated && args.open_health,
        data = %db.display(),
        seeds = ?args.seeds,
        "replicated-kv ready"
    );

    let access = Access::new(token, args.open_health);
    let app = Arc::new(App::new(store, node.handle(), args.max_body_bytes, access));
    let connections = app.http_metrics().connections();
    server_common::serve(
        listener,
        move |request| app.clone().serve(request),
        connections,
        server_options,
        shutdown_signal(),
    )
    .await;

    tracing::info!("leaving the cluster");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
