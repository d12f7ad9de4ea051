//! `replicated-kv`: an HTTP key-value server on one Datacake node, with the eventually
//! consistent store over a `SqliteStorage`; `replicated-kv certs` makes the certificates for
//! HTTPS. See the README for the API, the configuration, HTTPS and token auth, the lifecycle
//! and a three-node walkthrough.
//!
//! Exit status: 0 after a graceful shutdown (SIGTERM or SIGINT) or `--print-config`, 1 if
//! the server cannot start or its shutdown outlasts `shutdown_timeout_ms`, 2 for an invalid
//! configuration (bad flag, variable, file, key or value), 130 or 143 for a second SIGINT or
//! SIGTERM during the shutdown.
#![forbid(unsafe_code)]

mod auth;
mod certs;
mod config;
mod http;
mod keys;
mod metrics;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use datacake_eventual_consistency::EventuallyConsistentStoreExtension;
use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
use datacake_sqlite::{SqliteStorage, SqliteStorageOptions};
use metrics_exporter_prometheus::PrometheusHandle;
use server_common::lifecycle::{self, Outcome, ServerContext, Started};
use server_common::metrics::HttpMetrics;
use server_common::node_settings::millis;
use server_common::ServerOptions;
use tokio::net::TcpListener;

use crate::auth::{Access, BearerToken};
use crate::config::{Cli, Command, Config, ServeArgs};
use crate::http::App;

fn main() -> ExitCode {
    let cli = server_common::config::parse::<Cli, Config>();
    match cli.command {
        Some(Command::Certs(command)) => match certs::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("replicated-kv: {error:#}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Serve(args)) => serve(&args),
        None => serve(&cli.serve),
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    lifecycle::main("replicated-kv", &args.config, args, run)
}

async fn run(config: Config) -> Outcome {
    let (prepared, listener) = match prepare(&config).await {
        Ok(prepared) => prepared,
        Err(error) => return Outcome::StartFailed(error),
    };
    let options = ServerOptions {
        tls: prepared.https.clone(),
        header_read_timeout: millis(config.header_read_timeout_ms),
        stall_timeout: millis(config.stall_timeout_ms),
        max_connections: config.max_connections,
    };
    let metrics = HttpMetrics::new(metrics::PREFIX);
    let timeout = millis(config.shutdown_timeout_ms);
    lifecycle::run(listener, options, metrics, timeout, |context| {
        start(config, prepared, context)
    })
    .await
}

/// What is read and set up before serving.
struct Prepared {
    token: Option<BearerToken>,
    https: Option<Arc<rustls::ServerConfig>>,
    prometheus: PrometheusHandle,
}

/// Reads the token and certificate files, installs the metrics recorder, binds the HTTP port.
async fn prepare(config: &Config) -> anyhow::Result<(Prepared, TcpListener)> {
    let token = config
        .auth_token_file
        .as_deref()
        .map(BearerToken::from_file)
        .transpose()?;
    let https = match (&config.http_tls_cert, &config.http_tls_key) {
        (Some(cert), Some(key)) => Some(server_common::server_config(cert, key)?),
        _ => None,
    };
    if token.is_none() && config.open_health {
        tracing::warn!("open_health has no effect without auth_token_file");
    }
    let prometheus = metrics::install().context("cannot install the metrics recorder")?;
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    let prepared = Prepared {
        token,
        https,
        prometheus,
    };
    Ok((prepared, listener))
}

/// Opens the database, joins the cluster and starts the store (while `/health` says
/// `starting`).
async fn start(
    config: Config,
    prepared: Prepared,
    context: ServerContext,
) -> anyhow::Result<Started<impl std::future::Future<Output = ()>>> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let db = config.data_dir.join("kv.db");
    let options = SqliteStorageOptions::new().with_synchronous(config.sqlite_synchronous.into());
    let storage = SqliteStorage::open_with(&db, options)
        .await
        .with_context(|| format!("cannot open {}", db.display()))?;

    let node_id = config.node_id();
    let builder = DatacakeNodeBuilder::new(
        node_id,
        ConnectionConfig::new(
            config.cluster_addr,
            config.public_addr(),
            config.seeds.clone(),
        ),
    )
    .with_cluster_id(config.cluster_id.clone())
    .with_data_center(config.data_center.clone())
    // The store's hand-off and the leave announcement each get a quarter of the shutdown's
    // time (the node's leave timeout bounds both).
    .with_leave_timeout(
        (millis(config.shutdown_timeout_ms) / 4).min(DatacakeNodeBuilder::MAX_TIMEOUT),
    );
    let mut builder = server_common::node_settings::with_discovery(
        builder,
        &config.discover_dns,
        config.discover_file.as_deref(),
    );
    let cluster_tls = match (&config.tls_ca, &config.tls_cert, &config.tls_key) {
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
    let store = match node
        .add_extension(
            EventuallyConsistentStoreExtension::new(storage)
                .with_repair_interval(millis(config.repair_interval_ms)),
        )
        .await
    {
        Ok(store) => store,
        Err(error) => {
            node.shutdown().await;
            return Err(error).context("cannot start the store");
        }
    };
    let authenticated = prepared.token.is_some();
    tracing::info!(
        node_id,
        cluster_addr = %node.me().public_addr,
        http_addr = %config.http_addr,
        https = prepared.https.is_some(),
        cluster_tls = cluster_tls_on,
        token_auth = authenticated,
        open_health = authenticated && config.open_health,
        data = %db.display(),
        seeds = ?config.seeds,
        "replicated-kv ready"
    );

    let access = Access::new(prepared.token, config.open_health);
    let app = App::new(
        store,
        node.handle(),
        config.max_body_bytes,
        millis(config.stall_timeout_ms),
        access,
        prepared.prometheus,
        context,
    );
    Ok(Started {
        router: http::router(app),
        route_name: http::route_name,
        // The store is dropped after this, closing the database once its queued writes are
        // done; every acknowledged write was committed before its answer.
        stop: node.shutdown(),
    })
}
