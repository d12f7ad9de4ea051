//! Starting, killing and talking to `replicated-kv` processes.

use std::fs::{File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use test_helper::wait_for;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Generous: debug builds on a shared two-core machine.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// A fresh directory under the system temp dir, removed when dropped (unless the test failed,
/// so the logs can be read).
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after epoch")
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "replicated-kv-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `n` distinct free loopback ports (bound together, then released).
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

/// One `replicated-kv` process (restartable on the same ports and data dir).
pub(crate) struct KvNode {
    pub(crate) id: u32,
    pub(crate) http_port: u16,
    cluster_port: u16,
    seeds: Vec<u16>,
    data_dir: PathBuf,
    log: PathBuf,
    extra_args: Vec<String>,
    fd_limit: Option<u32>,
    client: Client,
    child: Option<Child>,
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
            log: dir.join(format!("node-{id}.log")),
            extra_args: Vec::new(),
            fd_limit: None,
            client: Client::default(),
            child: None,
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
        self.child.as_ref().expect("node running").id()
    }

    /// The node's log so far, without terminal colour codes.
    pub(crate) fn log(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut plain = String::with_capacity(log.len());
        let mut chars = log.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI: ESC '[' parameters, ended by a letter.
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        plain
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
        assert!(self.child.is_none(), "node {} already running", self.id);
        let log: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let bin = env!("CARGO_BIN_EXE_replicated-kv");
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
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for seed in &self.seeds {
            cmd.arg("--seed").arg(format!("127.0.0.1:{seed}"));
        }
        self.child = Some(cmd.spawn().expect("spawn replicated-kv"));
    }

    /// Kills the process with SIGKILL and reaps it.
    pub(crate) fn kill(&mut self) {
        let mut child = self.child.take().expect("node running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// Sends SIGTERM and waits (with a deadline) for the process to exit.
    pub(crate) async fn terminate(&mut self) -> ExitStatus {
        self.stop_with("TERM").await
    }

    /// Sends `signal` (`TERM`, `INT`, ...) and waits (with a deadline) for the process to exit.
    pub(crate) async fn stop_with(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("node running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
        let mut exit = None;
        wait_for(&format!("exit after SIG{signal}"), DEADLINE, || {
            let done = child.try_wait().expect("try_wait");
            exit = exit.or(done);
            std::future::ready(exit.is_some())
        })
        .await;
        exit.expect("exited")
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

impl Drop for KvNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            if let Ok(log) = std::fs::read_to_string(&self.log) {
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- last lines of node {} log ---", self.id);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// An HTTP response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: String,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` field of a JSON error body.
    pub(crate) fn error_code(&self) -> String {
        self.json()["error"]
            .as_str()
            .expect("error field")
            .to_owned()
    }
}

/// One HTTP/1.1 request on a fresh plain connection, without a token.
pub(crate) async fn request(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<Reply> {
    Client::default().request(port, method, path, body).await
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
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {value}\r\nConnection: close\r\n\r\n"
        );
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
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        self.send(port, head.as_bytes(), body).await
    }

    async fn send(&self, port: u16, head: &[u8], body: &[u8]) -> std::io::Result<Reply> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        match &self.tls {
            None => send(tcp, head, body).await,
            Some(config) => {
                let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
                let tls = TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await?;
                send(tls, head, body).await
            }
        }
    }
}

/// Like [`request`], with a chunked body (no declared length).
pub(crate) async fn request_chunked(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<Reply> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut chunked = Vec::new();
    for chunk in body.chunks(512) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    send(stream, head.as_bytes(), &chunked).await
}

async fn send(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<Reply> {
    stream.write_all(head).await?;
    // The server may answer (e.g. 413) and stop reading before the whole body is sent.
    let _ = stream.write_all(body).await;
    let _ = stream.flush().await;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_reply(&raw)
}

/// The status, headers and body of a whole response.
fn parse_reply(raw: &[u8]) -> std::io::Result<Reply> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok(Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// One request on an open keep-alive connection: reads the response by its
/// `Content-Length`, leaving the connection open.
pub(crate) async fn keep_alive_request(
    stream: &mut TcpStream,
    path: &str,
) -> std::io::Result<Reply> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let headers = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let len: usize = headers
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| std::io::Error::other("no content-length"))?;
            if raw.len() >= split + 4 + len {
                return parse_reply(&raw);
            }
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Reads from `stream` until the peer closes it (EOF or reset), within `deadline`; returns
/// the bytes received, or `None` if it was still open at the deadline.
pub(crate) async fn read_until_closed(
    stream: &mut TcpStream,
    deadline: Duration,
) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(deadline, read_all).await.ok()?;
    Some(received)
}

/// The value of the sample `name` (no labels) in a Prometheus text page.
pub(crate) fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}:\n{text}"))
}

/// The output of a `replicated-kv` run that must exit within the deadline.
pub(crate) struct Run {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `replicated-kv args...`, killing it if it has not exited within [`DEADLINE`].
pub(crate) async fn run_binary(args: &[&str]) -> Run {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_replicated-kv"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn replicated-kv");
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let run = async {
        let (mut out, mut err) = (String::new(), String::new());
        let (status, _, _) = tokio::join!(
            child.wait(),
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        (status.expect("wait"), out, err)
    };
    match tokio::time::timeout(DEADLINE, run).await {
        Ok((status, stdout, stderr)) => Run {
            status,
            stdout,
            stderr,
        },
        Err(_) => panic!("replicated-kv {args:?} did not exit within {DEADLINE:?}"),
    }
}

/// Polls `probe` until it yields a value (see [`wait_for`]), and returns it.
pub(crate) async fn wait_for_value<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let found = std::cell::RefCell::new(None);
    wait_for(what, deadline, || {
        let attempt = probe();
        let found = &found;
        async move {
            let value = attempt.await;
            let done = value.is_some();
            *found.borrow_mut() = value;
            done
        }
    })
    .await;
    found
        .into_inner()
        .expect("wait_for returned, so a value was found")
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
