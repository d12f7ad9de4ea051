//! Nodes for tests: on loopback with an OS-chosen port, gossiping every
//! [`GOSSIP_INTERVAL`] so membership settles in tens of milliseconds.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use datacake_node::{
    ConnectionConfig, DCAwareSelector, DatacakeHandle, DatacakeNode, DatacakeNodeBuilder, NodeId,
};

/// How often test nodes gossip.
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(50);

/// The builder of a test node `id` joining `seeds` (`host:port` of running nodes), for
/// tests that set more options before connecting.
pub fn builder(id: NodeId, seeds: impl IntoIterator<Item = String>) -> DatacakeNodeBuilder {
    let local = "127.0.0.1:0".parse().expect("a socket address");
    DatacakeNodeBuilder::new(
        id,
        ConnectionConfig::new(local, local, seeds.into_iter().collect::<Vec<_>>()),
    )
    .with_gossip_interval(GOSSIP_INTERVAL)
}

/// A running test node `id` joining `seeds` (panics if it cannot start).
pub async fn start(id: NodeId, seeds: impl IntoIterator<Item = String>) -> DatacakeNode {
    builder(id, seeds)
        .connect()
        .await
        .expect("test node connects")
}

/// A node on a runtime and thread of its own, which a test can stall as a long pause, a
/// stopped process or a frozen VM would, and resume.
#[derive(Debug)]
pub struct StallableNode {
    handle: DatacakeHandle,
    commands: tokio::sync::mpsc::UnboundedSender<StallCommand>,
    thread: std::thread::JoinHandle<()>,
}

#[derive(Debug)]
enum StallCommand {
    /// Block the node's only runtime thread until the sender of this channel is dropped.
    Stall(std::sync::mpsc::Receiver<()>),
    Stop,
}

/// Resumes a stalled [`StallableNode`] when dropped.
#[derive(Debug)]
pub struct Resume {
    _stalled_until_dropped: std::sync::mpsc::Sender<()>,
}

/// What [`StallableNode::start_with`] runs on the node's runtime once it is connected.
pub type Setup<T> =
    Box<dyn for<'a> FnOnce(&'a DatacakeNode) -> Pin<Box<dyn Future<Output = T> + 'a>> + Send>;

impl StallableNode {
    /// Connects the node `builder` describes on a new thread.
    pub async fn start(builder: DatacakeNodeBuilder<DCAwareSelector>) -> Self {
        Self::start_with(builder, Box::new(|_| Box::pin(async {})))
            .await
            .0
    }

    /// Connects the node `builder` describes on a new thread, runs `setup` there (to add
    /// an extension, say) and returns what it made.
    pub async fn start_with<T: Send + 'static>(
        builder: DatacakeNodeBuilder<DCAwareSelector>,
        setup: Setup<T>,
    ) -> (Self, T) {
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (commands, mut command_rx) = tokio::sync::mpsc::unbounded_channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let node = builder.connect().await.expect("node starts");
                let made = setup(&node).await;
                let _ = started_tx.send((node.handle(), made));
                while let Some(command) = command_rx.recv().await {
                    match command {
                        // Every task of the node waits while this blocks.
                        StallCommand::Stall(resume) => while resume.recv().is_ok() {},
                        StallCommand::Stop => break,
                    }
                }
                node.shutdown().await;
            });
        });
        let (handle, made) = started_rx.await.expect("node starts");
        let node = Self {
            handle,
            commands,
            thread,
        };
        (node, made)
    }

    /// The node's handle (usable from any runtime).
    pub fn handle(&self) -> &DatacakeHandle {
        &self.handle
    }

    /// Stalls the node until the returned [`Resume`] is dropped.
    pub fn stall(&self) -> Resume {
        let (resume, stalled) = std::sync::mpsc::channel();
        self.commands
            .send(StallCommand::Stall(stalled))
            .expect("node thread runs");
        Resume {
            _stalled_until_dropped: resume,
        }
    }

    /// Stalls the node until every one of `others` holds it dead (a live id is refused at
    /// connect), then runs `restart`, which starts its id again elsewhere and returns the new
    /// incarnation with its address; resumes the node and waits until it sees that it was
    /// replaced (its `superseded_by` names the restart). Each wait fails the test after
    /// `deadline`.
    pub async fn replaced_while_stalled<T>(
        &self,
        others: &[DatacakeHandle],
        restart: impl Future<Output = (T, SocketAddr)>,
        deadline: Duration,
    ) -> (T, SocketAddr) {
        let id = self.handle.me().node_id;
        let resume = self.stall();
        crate::wait_for("the stalled node to be held dead", deadline, || async {
            others
                .iter()
                .all(|other| !other.live_members().iter().any(|m| m.node_id == id))
        })
        .await;
        let (restarted, newer) = restart.await;
        drop(resume);
        crate::wait_for("the stalled node to see its restart", deadline, || async {
            self.handle.superseded_by() == Some(newer)
        })
        .await;
        (restarted, newer)
    }

    /// Shuts the node down and waits for its thread.
    pub async fn stop(self) {
        let _ = self.commands.send(StallCommand::Stop);
        tokio::task::spawn_blocking(move || self.thread.join())
            .await
            .expect("join task")
            .expect("node thread ends cleanly");
    }
}
