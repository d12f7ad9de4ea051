//! Discovery: nodes that know each other only through a discovery source.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datacake_node::{
    ConnectionConfig, DatacakeNode, DatacakeNodeBuilder, Discovery, DiscoveryError, DnsDiscovery,
    DnsResolver, FileDiscovery, NodeError, NodeId, StaticDiscovery,
};
use parking_lot::Mutex;

use crate::fixtures::{builder, wait_until_all_see, CONVERGE};

/// Discovery interval of these tests: short, so they are fast.
const POLL: Duration = Duration::from_millis(50);

/// A resolver whose answer the test changes, counting its lookups.
#[derive(Clone, Default)]
struct FakeResolver {
    answer: Arc<Mutex<Option<Vec<SocketAddr>>>>,
    lookups: Arc<AtomicUsize>,
}

impl FakeResolver {
    fn answer(&self, addrs: Option<Vec<SocketAddr>>) {
        *self.answer.lock() = addrs;
    }
}

#[async_trait::async_trait]
impl DnsResolver for FakeResolver {
    async fn resolve(&self, _host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        match self.answer.lock().as_ref() {
            Some(ips) => Ok(ips.iter().map(|a| SocketAddr::new(a.ip(), port)).collect()),
            None => Err(io::Error::other("server unreachable")),
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Replaces the file at `path` atomically (a temporary file renamed over it).
fn write_peers(path: &Path, nodes: &[&DatacakeNode]) {
    let mut text = String::from("# written by the test\n\n");
    for node in nodes {
        text.push_str(&format!(
            "{}  # node {}\n",
            node.me().public_addr,
            node.me().node_id
        ));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn start_with_file(id: NodeId, path: &Path) -> DatacakeNode {
    builder(id, &[])
        .with_discovery(FileDiscovery::new(path))
        .with_discovery_interval(POLL)
        .connect()
        .await
        .expect("node starts")
}

#[tokio::test]
async fn the_discovered_set_follows_the_dns_answers() {
    let resolver = FakeResolver::default();
    resolver.answer(Some(vec![addr("127.0.0.1:1"), addr("127.0.0.2:1")]));
    let node = builder(1, &[])
        .with_discovery(DnsDiscovery::with_resolver(
            "peers.test",
            7000,
            resolver.clone(),
        ))
        .with_discovery_interval(POLL)
        .connect()
        .await
        .expect("node starts");
    // The first poll happens in `connect`.
    assert_eq!(
        node.discovered_addrs(),
        vec![addr("127.0.0.1:7000"), addr("127.0.0.2:7000")]
    );

    resolver.answer(Some(vec![addr("127.0.0.3:1")]));
    test_helper::wait_for("the new answer to be discovered", CONVERGE, || async {
        node.discovered_addrs() == vec![addr("127.0.0.3:7000")]
    })
    .await;

    // A failing resolver keeps the last good set: wait for two more lookups, then look.
    let kept = node.discovered_addrs();
    resolver.answer(None);
    let before = resolver.lookups.load(Ordering::SeqCst);
    test_helper::wait_for("two failed lookups", CONVERGE, || async {
        resolver.lookups.load(Ordering::SeqCst) >= before + 2
    })
    .await;
    assert_eq!(node.discovered_addrs(), kept);
    node.shutdown().await;
}

#[tokio::test]
async fn own_address_is_not_discovered() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let me = SocketAddr::from(([127, 0, 0, 1], port));
    let other = addr("127.0.0.9:9");
    let node = DatacakeNodeBuilder::new(1, ConnectionConfig::new(me, me, Vec::<String>::new()))
        .with_discovery(StaticDiscovery::new([me, other, me]))
        .with_join_timeout(Duration::ZERO)
        .connect()
        .await
        .expect("node starts");
    assert_eq!(node.me().public_addr, me);
    assert_eq!(node.discovered_addrs(), vec![other]);
    node.shutdown().await;
}

#[tokio::test]
async fn a_node_finds_its_peer_through_localhost_dns() {
    let first = builder(1, &[]).connect().await.expect("node starts");
    let port = first.me().public_addr.port();
    // `localhost` resolves to 127.0.0.1 (and possibly ::1, where nothing listens).
    let second = builder(2, &[])
        .with_discovery(DnsDiscovery::new("localhost", port))
        .with_discovery_interval(POLL)
        .connect()
        .await
        .expect("node starts");
    assert!(second
        .discovered_addrs()
        .iter()
        .all(|a| a.ip().is_loopback() && a.port() == port));
    wait_until_all_see(&[&first, &second], &[1, 2]).await;
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn nodes_started_in_any_order_meet_through_a_file_written_later() {
    let dir = test_helper::TempDir::new("discovery-any-order").keep_on_failure();
    let peers = dir.join("peers");
    // The file does not exist yet: each node starts alone (and logs the missing file).
    let n3 = start_with_file(3, &peers).await;
    let n1 = start_with_file(1, &peers).await;
    let n2 = start_with_file(2, &peers).await;
    assert!(n1.discovered_addrs().is_empty());
    write_peers(&peers, &[&n1, &n2, &n3]);
    wait_until_all_see(&[&n1, &n2, &n3], &[1, 2, 3]).await;
    for node in [n3, n2, n1] {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_node_at_a_new_address_is_found_through_the_file() {
    let dir = test_helper::TempDir::new("discovery-moved").keep_on_failure();
    let peers = dir.join("peers");
    let n1 = start_with_file(1, &peers).await;
    let n2 = start_with_file(2, &peers).await;
    // Node 3 knows nobody: only the others' discovery can bring it in.
    let n3 = builder(3, &[]).connect().await.expect("node starts");
    write_peers(&peers, &[&n1, &n2, &n3]);
    wait_until_all_see(&[&n1, &n2, &n3], &[1, 2, 3]).await;

    // Node 3 moves: it stops and starts again on another port, still knowing nobody.
    let old = n3.me().public_addr;
    n3.shutdown().await;
    let n3 = builder(3, &[]).connect().await.expect("node starts");
    assert_ne!(n3.me().public_addr, old);
    write_peers(&peers, &[&n1, &n2, &n3]);
    let new_addr = n3.me().public_addr;
    let at_new_addr = |node: &DatacakeNode| {
        node.live_members()
            .iter()
            .any(|m| m.node_id == 3 && m.public_addr == new_addr)
    };
    test_helper::wait_for(
        "nodes 1 and 2 to see node 3 at its new address",
        CONVERGE,
        || async { at_new_addr(&n1) && at_new_addr(&n2) },
    )
    .await;
    wait_until_all_see(&[&n1, &n2, &n3], &[1, 2, 3]).await;
    for node in [n3, n2, n1] {
        node.shutdown().await;
    }
}

/// Lets a reader blocked on the FIFO at `path` go: opens it for writing (read and write,
/// which on Linux never blocks, even with no reader), writes `text` and closes it.
fn release_fifo(path: &Path, text: &str) {
    use std::io::Write;
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("the FIFO opens");
    fifo.write_all(text.as_bytes())
        .expect("the FIFO takes a line");
}

/// A seed file whose read hangs (a FIFO nobody writes to here; a hard NFS mount in
/// production) holds one blocking thread however often it is polled: a poll while that read
/// runs waits for it (and times out, as the poller's timeout drops it) instead of starting
/// another, so tokio's blocking pool is never drained. Before, each poll parked one more
/// thread; after 512 polls no `spawn_blocking` of the process ran any more.
#[test]
fn a_hung_seed_file_holds_one_blocking_thread() {
    let dir = test_helper::TempDir::new("discovery-fifo");
    let path = dir.join("peers");
    let mkfifo = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo runs");
    assert!(mkfifo.success(), "mkfifo failed: {mkfifo}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let source = FileDiscovery::new(&path);
    // Nothing in here panics: a panic would drop the runtime, which waits for its blocking
    // threads, stuck on the FIFO. The checks follow once the FIFO is released.
    let (timed_out, probe, waiting_early, answer) = runtime.block_on(async {
        let poll = || tokio::time::timeout(Duration::from_millis(20), source.discover());
        let mut timed_out = 0;
        for _ in 0..5 {
            if poll().await.is_err() {
                timed_out += 1;
            }
        }
        // One blocking thread is stuck on the FIFO at most: the other runs this.
        let probe = tokio::time::timeout(CONVERGE, tokio::task::spawn_blocking(|| ())).await;
        // A poll waiting for the read when the FIFO is written gets what was written.
        let mut waiting = std::pin::pin!(source.discover());
        let waiting_early = tokio::time::timeout(Duration::from_millis(20), waiting.as_mut()).await;
        release_fifo(&path, "127.0.0.1:7000\n");
        let answer = tokio::time::timeout(CONVERGE, waiting).await;
        (timed_out, probe, waiting_early.is_err(), answer)
    });
    // Reads queued behind stuck ones (before the fix) would block on the FIFO again.
    runtime.shutdown_timeout(Duration::from_secs(1));

    assert_eq!(
        timed_out, 5,
        "nobody wrote to the FIFO: every poll times out"
    );
    assert!(
        matches!(probe, Ok(Ok(()))),
        "spawn_blocking starved: the polls hold every blocking thread ({probe:?})"
    );
    assert!(waiting_early, "the FIFO was not written yet");
    let answer = answer
        .expect("the waiting poll got the read's answer")
        .expect("the read succeeded");
    assert_eq!(answer, vec![addr("127.0.0.1:7000")]);
}

#[tokio::test]
async fn bad_discovery_timings_are_refused() {
    let too_short = builder(1, &[])
        .with_discovery_interval(Duration::ZERO)
        .connect()
        .await;
    assert!(
        matches!(
            too_short,
            Err(NodeError::InvalidConfig {
                setting: "discovery_interval",
                ..
            })
        ),
        "{too_short:?}"
    );
    let no_timeout = builder(1, &[])
        .with_discovery_timeout(Duration::ZERO)
        .connect()
        .await;
    assert!(
        matches!(
            no_timeout,
            Err(NodeError::InvalidConfig {
                setting: "discovery_timeout",
                ..
            })
        ),
        "{no_timeout:?}"
    );
}

#[test]
fn discovery_errors_name_their_cause() {
    let error = DiscoveryError::Timeout {
        timeout: Duration::from_secs(5),
    };
    assert_eq!(error.to_string(), "no answer within 5s");
}
