//! `replicated-kv` processes on loopback: finding the binary, starting a cluster of them in a
//! temporary directory, waiting for membership, SIGKILL and restart on the same data.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use test_helper::TempDir;

use super::http::get_once;

/// The binary's file name.
const BIN_NAME: &str = "replicated-kv";

/// Finds the `replicated-kv` binary: `explicit` (`--kv-bin`) if given, else next to the
/// harness's own executable (the same `target/<profile>/` directory; from a test binary in
/// `target/<profile>/deps/`, the directory above).
pub(crate) fn locate_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(
            path.is_file(),
            "--kv-bin {}: no such file (build it with `cargo build --release -p replicated-kv`)",
            path.display()
        );
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("cannot find the harness's own executable")?;
    let name = format!("{BIN_NAME}{}", std::env::consts::EXE_SUFFIX);
    let mut looked = Vec::new();
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join(&name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(candidate);
        // Only `deps/` is worth climbing out of.
        dir = if d.file_name().is_some_and(|n| n == "deps") {
            d.parent()
        } else {
            None
        };
    }
    let profile = if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    };
    anyhow::bail!(
        "the kv suite needs the replicated-kv binary, not found at {}; build it first with \
         `cargo build{profile} -p replicated-kv` (the harness's own profile), or pass --kv-bin PATH",
        looked
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    )
}

/// `n` distinct free loopback ports (bound together on `127.0.0.1:0`, then released for the
/// child processes to bind).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot bind a free loopback port")?;
    Ok(listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.port())
        .collect())
}

/// One `replicated-kv` process, restartable on the same ports and data directory.
#[derive(Debug)]
pub(crate) struct KvNode {
    /// Its node id (1-based).
    pub(crate) id: u32,
    /// Its HTTP API address.
    pub(crate) http: SocketAddr,
    cluster_port: u16,
    seed: Option<u16>,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl KvNode {
    /// Starts the process; its stderr is appended to its log file.
    pub(crate) fn start(&mut self, bin: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "node {} is running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--node-id")
            .arg(self.id.to_string())
            .arg("--cluster-addr")
            .arg(format!("127.0.0.1:{}", self.cluster_port))
            .arg("--http-addr")
            .arg(self.http.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(seed) = self.seed {
            cmd.arg("--seed").arg(format!("127.0.0.1:{seed}"));
        }
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?,
        );
        Ok(())
    }

    /// Kills the process with SIGKILL and reaps it.
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("node is not running")?;
        child.kill().context("SIGKILL")?;
        child.wait().context("reap")?;
        Ok(())
    }

    /// An error if the process has exited, naming its status and the end of its log.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                anyhow::bail!(
                    "replicated-kv node {} exited ({status}); its log ends:\n{}",
                    self.id,
                    self.log_tail()
                );
            }
        }
        Ok(())
    }

    /// The last lines of its log.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// How many live members the node reports on `/cluster` (an error if it does not answer).
    pub(crate) async fn live_members(&self) -> anyhow::Result<usize> {
        let reply = get_once(self.http, "/cluster")
            .await
            .map_err(|f| anyhow::anyhow!("{f}"))?;
        anyhow::ensure!(reply.status == 200, "GET /cluster: {}", reply.status);
        let body: serde_json::Value = serde_json::from_slice(&reply.body)?;
        Ok(body["members"].as_array().map_or(0, Vec::len))
    }
}

impl Drop for KvNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `n` `replicated-kv` processes on loopback, node 1 the seed of the others, each with its
/// SQLite database in a temporary directory removed on drop.
#[derive(Debug)]
pub(crate) struct KvCluster {
    /// The nodes, in id order.
    pub(crate) nodes: Vec<KvNode>,
    bin: PathBuf,
    // Dropped after the nodes (field order), so no process writes into a removed directory.
    _dir: TempDir,
}

impl KvCluster {
    /// Starts `n` processes (nothing waits for them yet; see [`KvCluster::wait_formed`]).
    pub(crate) fn start(bin: &Path, n: u32, tag: &str) -> anyhow::Result<Self> {
        let dir = TempDir::new(&format!("bench-kv-{tag}-{n}"));
        let ports = free_ports(2 * n as usize)?;
        let seed = ports[0];
        let mut cluster = Self {
            nodes: (0..n as usize)
                .map(|i| KvNode {
                    id: i as u32 + 1,
                    http: SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1])),
                    cluster_port: ports[2 * i],
                    seed: (i > 0).then_some(seed),
                    data_dir: dir.join(format!("node-{}", i + 1)),
                    log: dir.join(format!("node-{}.log", i + 1)),
                    child: None,
                })
                .collect(),
            bin: bin.to_path_buf(),
            _dir: dir,
        };
        for node in &mut cluster.nodes {
            node.start(bin)?;
        }
        Ok(cluster)
    }

    /// The nodes' HTTP addresses.
    pub(crate) fn http_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.http).collect()
    }

    /// Restarts node `index` (on its ports and data directory).
    pub(crate) fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        let bin = self.bin.clone();
        self.nodes[index].start(&bin)
    }

    /// Waits until every running node reports `members` live members, or fails after
    /// `deadline` with what each node last said and the end of its log.
    pub(crate) async fn wait_formed(
        &mut self,
        members: usize,
        deadline: Duration,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let mut last = Vec::new();
            for node in &mut self.nodes {
                node.check_alive()?;
                if node.child.is_none() {
                    continue;
                }
                match node.live_members().await {
                    Ok(seen) if seen == members => {}
                    Ok(seen) => last.push(format!("node {} sees {seen}", node.id)),
                    Err(e) => last.push(format!("node {}: {e:#}", node.id)),
                }
            }
            if last.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| format!("--- node {} log ---\n{}", n.id, n.log_tail()))
                    .collect();
                anyhow::bail!(
                    "the replicated-kv cluster did not reach {members} live members within \
                     {deadline:?}: {}\n{}",
                    last.join("; "),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
