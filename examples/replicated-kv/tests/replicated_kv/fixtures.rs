//! Starting, killing and talking to `replicated-kv` processes (the generic parts are
//! `test_helper`'s `process` and `http` fixtures).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use test_helper::http::{exchange, head};
pub(crate) use test_helper::http::{
    keep_alive_request, read_until_closed, request, request_chunked, Reply,
};
pub(crate) use test_helper::process::{free_ports, Run};
use test_helper::process::{ChildProcess, LogFile};
pub(crate) use test_helper::{wait_for, wait_for_value, TempDir};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Generous: debug builds on a shared two-core machine.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// A fresh temp directory, kept if the test fails (so the logs can be read).
pub(crate) fn temp_dir(name: &str) -> TempDir {
    TempDir::new(&format!("replicated-kv-{name}")).keep_on_failure()
}

/// One `replicated-kv` process (restartable on the same ports and data dir).
pub(crate) struct KvNode {
    pub(crate) id: u32,
    pub(crate) http_port: u16,
    cluster_port: u16,
    seeds: Vec<u16>,
    data_dir: PathBuf,
    log: LogFile,
    extra_args: Vec<String>,
    fd_limit: Option<u32>,
    client: Client,
    process: Option<ChildProcess>,
}

impl KvNode {
    /// A node (not started) keeping its data and log under `dir`.
    pub(crate) fn new(id: u32, ports: (u16, u16), seeds: Vec<u16>, dir: &Path) -> Self {
        Self {
            id,
            cluster_port: ports.0,
            http_port: ports.1,
            seeds,
            data_dir: dir.join(format!("node-{id}")),
            log: LogFile::new(format!("node {id}"), dir.join(format!("node-{id}.log"))),
            extra_args: Vec::new(),
            fd_limit: None,
            client: Client::default(),
            process: None,
        }
    }

    /// How the fixture talks to the node (HTTPS, a token).
    pub(crate) fn with_client(mut self, client: Client) -> Self {
        self.client = client;
        self
    }

    /// Starts the process with at most `limit` open file descriptors (`ulimit -n`).
    pub(crate) fn with_fd_limit(mut self, limit: u32) -> Self {
        self.fd_limit = Some(limit);
        self
    }

    /// The client the fixture's requests use.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The process id of the running node.
    pub(crate) fn pid(&self) -> u32 {
        self.process.as_ref().expect("node running").pid()
    }

    /// The node's log so far, without terminal colour codes.
    pub(crate) fn log(&self) -> String {
        self.log.read()
    }

    /// Extra command-line arguments.
    pub(crate) fn with_args(mut self, args: &[&str]) -> Self {
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    pub(crate) fn cluster_port(&self) -> u16 {
        self.cluster_port
    }

    /// Starts the process (stderr appended to the node's log).
    pub(crate) fn start(&mut self) {
        assert!(self.process.is_none(), "node {} already running", self.id);
        let bin = BIN;
        let mut cmd = match self.fd_limit {
            None => Command::new(bin),
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(bin);
                sh
            }
        };
        cmd.arg("--node-id")
            .arg(self.id.to_string())
            .arg("--cluster-addr")
            .arg(format!("127.0.0.1:{}", self.cluster_port))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--repair-interval-ms")
            .arg("200")
            .args(&self.extra_args)
            .env("RUST_LOG", "info");
        for seed in &self.seeds {
            cmd.arg("--seed").arg(format!("127.0.0.1:{seed}"));
        }
        self.process = Some(ChildProcess::spawn(cmd, &self.log));
    }

    /// Kills the process with SIGKILL and reaps it.
    pub(crate) fn kill(&mut self) {
        self.process.take().expect("node running").kill();
    }

    /// Sends SIGTERM and waits (with a deadline) for the process to exit.
    pub(crate) async fn terminate(&mut self) -> ExitStatus {
        self.stop_with("TERM").await
    }

    /// Sends `signal` (`TERM`, `INT`, ...) and waits (with a deadline) for the process to exit.
    pub(crate) async fn stop_with(&mut self, signal: &str) -> ExitStatus {
        let process = self.process.take().expect("node running");
        process.stop_with(signal, DEADLINE).await
    }

    /// Sends `signal` (`TERM`, `INT`) without waiting.
    pub(crate) fn signal(&self, signal: &str) {
        self.process.as_ref().expect("node running").signal(signal);
    }

    /// Waits (with a deadline) for the process to exit.
    pub(crate) async fn wait_exit(&mut self) -> ExitStatus {
        let process = self.process.take().expect("node running");
        let what = format!("node {} to exit", self.id);
        process.wait_exit(&what, DEADLINE).await
    }

    /// Waits until this node's `/health` reports `n` live members.
    pub(crate) async fn wait_for_members(&self, n: usize) {
        let what = format!("node {} to see {n} live members", self.id);
        wait_for(&what, DEADLINE, || async {
            match self
                .client
                .request(self.http_port, "GET", "/health", b"")
                .await
            {
                Ok(reply) if reply.status == 200 => {
                    reply.json()["live_members"].as_u64() == Some(n as u64)
                }
                _ => false,
            }
        })
        .await;
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.client
            .request(self.http_port, "GET", path, b"")
            .await
            .expect("GET")
    }

    pub(crate) async fn put(&self, path: &str, body: &[u8]) -> Reply {
        self.client
            .request(self.http_port, "PUT", path, body)
            .await
            .expect("PUT")
    }

    pub(crate) async fn delete(&self, path: &str) -> Reply {
        self.client
            .request(self.http_port, "DELETE", path, b"")
            .await
            .expect("DELETE")
    }
}

/// How requests reach a node: plain or HTTPS, with or without a bearer token.
#[derive(Clone, Default)]
pub(crate) struct Client {
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Option<String>,
}

impl Client {
    /// HTTPS, trusting only the CA certificate in `ca_pem` (a file).
    pub(crate) fn https(ca_pem: &Path) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(ca_pem).expect("a CA certificate"))
            .expect("a usable CA certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            tls: Some(Arc::new(config)),
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` (any text, so tests can send wrong ones).
    pub(crate) fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// Sends no `Authorization` header.
    pub(crate) fn without_token(mut self) -> Self {
        self.token = None;
        self
    }

    /// Sends `Authorization: <value>` as given.
    pub(crate) async fn request_with_authorization(
        &self,
        port: u16,
        path: &str,
        value: &str,
    ) -> std::io::Result<Reply> {
        let head = head("GET", path, &format!("Authorization: {value}\r\n"), 0);
        self.send(port, head.as_bytes(), b"").await
    }

    /// One HTTP/1.1 request on a fresh connection.
    pub(crate) async fn request(
        &self,
        port: u16,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<Reply> {
        let auth = match &self.token {
            Some(token) => format!("Authorization: Bearer {token}\r\n"),
            None => String::new(),
        };
        let head = head(method, path, &auth, body.len());
        self.send(port, head.as_bytes(), body).await
    }

    async fn send(&self, port: u16, head: &[u8], body: &[u8]) -> std::io::Result<Reply> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        match &self.tls {
            None => exchange(tcp, head, body).await,
            Some(config) => {
                let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
                let tls = TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await?;
                exchange(tls, head, body).await
            }
        }
    }
}

/// The value of the sample `name` (no labels) in a Prometheus text page.
pub(crate) fn metric(text: &str, name: &str) -> u64 {
    test_helper::http::metric(text, name) as u64
}

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_replicated-kv");

/// Runs `replicated-kv args...`, killing it if it has not exited within [`DEADLINE`].
pub(crate) async fn run_binary(args: &[&str]) -> Run {
    test_helper::process::run_binary(BIN, args, DEADLINE).await
}

/// `/metrics` of the node at `port`, once a plain request gets an answer.
pub(crate) async fn wait_for_metrics(port: u16, what: &str) -> String {
    wait_for_value(what, DEADLINE, || async move {
        match request(port, "GET", "/metrics", b"").await {
            Ok(reply) if reply.status == 200 => Some(String::from_utf8(reply.body).unwrap()),
            _ => None,
        }
    })
    .await
}
