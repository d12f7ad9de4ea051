//! Starting, killing and talking to `raft-kv` processes (the generic parts are
//! `test_helper`'s `process` and `http` fixtures).

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use serde_json::Value;
use test_helper::http::Reply;
pub(crate) use test_helper::process::free_ports;
use test_helper::process::{ChildProcess, LogFile, Run};
use test_helper::{wait_for_value, TempDir};

/// Generous: debug builds on a shared two-core machine.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// The longest one request may take before the fixture gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_raft-kv");

/// Raft timings short enough for tests, as flags.
pub(crate) const FAST_TIMINGS: [&str; 8] = [
    "--election-timeout-min-ms",
    "500",
    "--election-timeout-max-ms",
    "1000",
    "--heartbeat-interval-ms",
    "100",
    "--request-timeout-ms",
    "3000",
];

/// A fresh temp directory, kept if the test fails (so the logs can be read).
pub(crate) fn temp_dir(name: &str) -> TempDir {
    TempDir::new(&format!("raft-kv-{name}")).keep_on_failure()
}

/// Runs `raft-kv args...` to its end (within [`DEADLINE`]).
pub(crate) async fn run_binary(args: &[&str]) -> Run {
    test_helper::process::run_binary(BIN, args, DEADLINE).await
}

/// One `raft-kv` process, restartable on the same ports and data directory.
pub(crate) struct Node {
    pub(crate) id: u32,
    pub(crate) cluster_port: u16,
    pub(crate) http_port: u16,
    args: Vec<String>,
    log: LogFile,
    process: Option<ChildProcess>,
}

impl Node {
    /// A node (not started) with its data and log under `dir`, started with `args` (which
    /// must set everything but the log filter).
    pub(crate) fn new(id: u32, ports: (u16, u16), dir: &Path, args: Vec<String>) -> Self {
        Self {
            id,
            cluster_port: ports.0,
            http_port: ports.1,
            args,
            log: LogFile::new(format!("node {id}"), dir.join(format!("node-{id}.log"))),
            process: None,
        }
    }

    /// A node configured by flags only: `bootstrap_expect`, seeds on `seeds` (cluster ports),
    /// fast timings, and `extra` flags.
    pub(crate) fn with_flags(
        id: u32,
        ports: (u16, u16),
        dir: &Path,
        bootstrap_expect: usize,
        seeds: &[u16],
        extra: &[&str],
    ) -> Self {
        let data_dir = dir.join(format!("node-{id}"));
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            id.to_string(),
            "--cluster-addr".into(),
            format!("127.0.0.1:{}", ports.0),
            "--http-addr".into(),
            format!("127.0.0.1:{}", ports.1),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--bootstrap-expect".into(),
            bootstrap_expect.to_string(),
        ];
        for seed in seeds {
            args.push("--seed".into());
            args.push(format!("127.0.0.1:{seed}"));
        }
        args.extend(FAST_TIMINGS.iter().chain(extra).map(|a| a.to_string()));
        Self::new(id, ports, dir, args)
    }

    /// Starts the process (stderr appended to its log).
    pub(crate) fn start(&mut self) {
        assert!(self.process.is_none(), "node {} already running", self.id);
        let mut command = Command::new(BIN);
        command
            .args(&self.args)
            .env("RUST_LOG", "info,openraft=warn,openraft::replication=off");
        self.process = Some(ChildProcess::spawn(command, &self.log));
    }

    /// Kills the process with SIGKILL and reaps it.
    pub(crate) fn kill(&mut self) {
        self.process.take().expect("node running").kill();
    }

    /// Sends `signal` (`TERM`, `INT`) and waits for the process to exit.
    pub(crate) async fn stop_with(&mut self, signal: &str) -> ExitStatus {
        let process = self.process.take().expect("node running");
        process.stop_with(signal, DEADLINE).await
    }

    /// One request, given up after [`REQUEST_TIMEOUT`].
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<Reply> {
        let request = test_helper::http::request(self.http_port, method, path, body);
        tokio::time::timeout(REQUEST_TIMEOUT, request)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, b"").await.expect("GET")
    }

    pub(crate) async fn put(&self, path: &str, body: &[u8]) -> Reply {
        self.request("PUT", path, body).await.expect("PUT")
    }

    pub(crate) async fn post(&self, path: &str) -> Reply {
        self.request("POST", path, b"").await.expect("POST")
    }

    pub(crate) async fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, b"").await.expect("DELETE")
    }

    /// `/cluster`, if the node answers.
    pub(crate) async fn cluster(&self) -> Option<Value> {
        match self.request("GET", "/cluster", b"").await {
            Ok(reply) if reply.status == 200 => Some(reply.json()),
            _ => None,
        }
    }

    /// Waits until `/health` answers 200.
    pub(crate) async fn wait_healthy(&self) {
        let what = format!("node {} to be healthy", self.id);
        wait_for_value(&what, DEADLINE, || async {
            let reply = self.request("GET", "/health", b"").await.ok()?;
            (reply.status == 200).then_some(())
        })
        .await;
    }

    /// This node's applied index, if it answers.
    pub(crate) async fn applied_index(&self) -> Option<u64> {
        self.cluster().await?["applied_index"].as_u64()
    }
}

/// Waits until one of `nodes` leads with a quorum and every one of them names it leader;
/// returns its index in `nodes` and its term.
pub(crate) async fn wait_for_leader(nodes: &[&Node]) -> (usize, u64) {
    wait_for_value("a leader every node agrees on", DEADLINE, || async {
        let mut views = Vec::new();
        for node in nodes {
            views.push(node.cluster().await?);
        }
        let leader = views
            .iter()
            .position(|v| v["role"] == "leader" && v["has_quorum"] == true)?;
        let id = u64::from(nodes[leader].id);
        views
            .iter()
            .all(|v| v["leader"].as_u64() == Some(id))
            .then(|| (leader, views[leader]["term"].as_u64().unwrap_or(0)))
    })
    .await
}
