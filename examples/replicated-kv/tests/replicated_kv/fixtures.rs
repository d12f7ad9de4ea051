//! Starting, killing and talking to `replicated-kv` processes.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use test_helper::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
            child: None,
        }
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_replicated-kv"));
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
            match request(self.http_port, "GET", "/health", b"").await {
                Ok(reply) if reply.status == 200 => {
                    reply.json()["live_members"].as_u64() == Some(n as u64)
                }
                _ => false,
            }
        })
        .await;
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        request(self.http_port, "GET", path, b"")
            .await
            .expect("GET")
    }

    pub(crate) async fn put(&self, path: &str, body: &[u8]) -> Reply {
        request(self.http_port, "PUT", path, body)
            .await
            .expect("PUT")
    }

    pub(crate) async fn delete(&self, path: &str) -> Reply {
        request(self.http_port, "DELETE", path, b"")
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

/// One HTTP/1.1 request on a fresh connection.
pub(crate) async fn request(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<Reply> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    send(port, head.as_bytes(), body).await
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
    send(port, head.as_bytes(), &chunked).await
}

async fn send(port: u16, head: &[u8], body: &[u8]) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(head).await?;
    // The server may answer (e.g. 413) and stop reading before the whole body is sent.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
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
