//! Cluster extensions: functionality attached to a running node, and the guard that ties
//! an extension's lifetime to its handles.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::handle::DatacakeHandle;
use crate::node::DatacakeNode;

/// Something built on top of a running [`DatacakeNode`]: a replicated store, a Raft group, a
/// metrics exporter...
///
/// [`DatacakeNode::add_extension`] calls [`init_extension`](Self::init_extension) once with the
/// node; the extension may register RPC services ([`DatacakeNode::add_rpc_service`]), read the
/// membership, keep a [`DatacakeHandle`](crate::DatacakeHandle), and start background work.
///
/// **Background tasks must stop when the node shuts down.** Either spawn them with
/// [`DatacakeHandle::spawn_task`] (the node cancels them on shutdown, and waits for them within
/// its leave timeout), or watch [`DatacakeHandle::shutdown_signal`] yourself.
///
/// **The handles own the extension; the node only hosts it.** When the last handle an
/// extension handed back (its [`Output`](Self::Output)) is dropped, the extension stops on
/// this node: its RPC service leaves the node's server (peers calling it get
/// `Unavailable`) and its background tasks end, while the node keeps running. An
/// [`ExtensionGuard`] kept in the state the handles share does both; the extensions in this
/// workspace (the eventually consistent store, Raft, the counter example) follow the rule.
///
/// ```
/// use datacake_node::{ClusterExtension, DatacakeNode};
///
/// /// Logs every membership change until the node shuts down.
/// struct MembershipLogger;
///
/// #[async_trait::async_trait]
/// impl ClusterExtension for MembershipLogger {
///     type Output = ();
///     type Error = std::convert::Infallible;
///
///     async fn init_extension(self, node: &DatacakeNode) -> Result<(), Self::Error> {
///         use futures::StreamExt;
///         let mut changes = node.membership_changes();
///         node.spawn_task(async move {
///             while let Some(change) = changes.next().await {
///                 println!("joined {:?}, left {:?}", change.joined, change.left);
///             }
///         });
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait ClusterExtension: Sized + Send {
    /// What the extension hands back once running (typically a handle to use it).
    type Output: Send;
    /// Why it could not start.
    type Error: Send;

    /// Starts the extension on `node`.
    async fn init_extension(self, node: &DatacakeNode) -> Result<Self::Output, Self::Error>;
}

/// Stops an extension when dropped: removes its RPC service from the node and ends the tasks
/// spawned through its [`ExtensionTasks`]. Keep it in the state the extension's handles share
/// (and nowhere a service or task holds), so the last handle's drop is what stops it; see
/// [`ClusterExtension`].
///
/// ```
/// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder, ExtensionGuard};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let addr = "127.0.0.1:0".parse()?;
/// # let node = DatacakeNodeBuilder::new(1, ConnectionConfig::new(addr, addr, Vec::<String>::new()))
/// #     .connect()
/// #     .await?;
/// let guard = ExtensionGuard::new(node.handle(), "my-service");
/// let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
/// guard.tasks().spawn(async move {
///     let _alive = tx; // dropped when the task ends
///     std::future::pending::<()>().await
/// });
/// drop(guard); // the extension's last handle went away
/// assert!(rx.recv().await.is_none(), "the task ended");
/// # node.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ExtensionGuard {
    node: DatacakeHandle,
    service: &'static str,
    stop: watch::Sender<()>,
    /// Tells this guard's leave hooks from other extensions'.
    id: u64,
}

/// Ids of guards, for their leave hooks.
static NEXT_GUARD_ID: AtomicU64 = AtomicU64::new(0);

impl ExtensionGuard {
    /// A guard for the extension whose RPC service is called `service` (`""` for an
    /// extension without one) on `node`.
    pub fn new(node: DatacakeHandle, service: &'static str) -> Self {
        Self {
            node,
            service,
            stop: watch::channel(()).0,
            id: NEXT_GUARD_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Runs `hook` when the node leaves gracefully ([`DatacakeNode::shutdown`]), before the
    /// leave is announced, while peers still count this node as a live member and its RPC
    /// services still answer: for work that must reach peers before they stop talking to
    /// this node, such as handing off data only it holds.
    ///
    /// The hooks of every extension run at the same time, bounded together by the node's
    /// leave timeout
    /// ([`with_leave_timeout`](crate::DatacakeNodeBuilder::with_leave_timeout)); a hook
    /// still running then is cancelled. None runs if the node is dropped instead (an abrupt
    /// stop) or once this guard is dropped (the extension stopped first).
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder, ExtensionGuard};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let addr = "127.0.0.1:0".parse()?;
    /// # let node = DatacakeNodeBuilder::new(1, ConnectionConfig::new(addr, addr, Vec::<String>::new()))
    /// #     .connect()
    /// #     .await?;
    /// let guard = ExtensionGuard::new(node.handle(), "my-service");
    /// let (tx, rx) = tokio::sync::oneshot::channel();
    /// guard.before_leave(move || async move {
    ///     let _ = tx.send("handed off");
    /// });
    /// node.shutdown().await;
    /// assert_eq!(rx.await?, "handed off");
    /// # Ok(())
    /// # }
    /// ```
    pub fn before_leave<F, Fut>(&self, hook: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.node
            .inner
            .leave_hooks
            .lock()
            .push((self.id, Box::new(move || Box::pin(hook()))));
    }

    /// Spawns the extension's tasks, which end with the guard (or the node).
    pub fn tasks(&self) -> ExtensionTasks {
        ExtensionTasks {
            node: self.node.clone(),
            stop: self.stop.subscribe(),
        }
    }
}

impl Drop for ExtensionGuard {
    fn drop(&mut self) {
        if !self.service.is_empty() {
            self.node.remove_rpc_service(self.service);
        }
        let id = self.id;
        self.node
            .inner
            .leave_hooks
            .lock()
            .retain(|(owner, _)| *owner != id);
        // `stop` is dropped next: every task spawned through `ExtensionTasks` ends.
    }
}

/// Spawns an extension's background tasks: each runs until it finishes, the node shuts
/// down, or the extension's [`ExtensionGuard`] is dropped. Cheap to clone; holding it does
/// not keep the extension running.
#[derive(Debug, Clone)]
pub struct ExtensionTasks {
    node: DatacakeHandle,
    stop: watch::Receiver<()>,
}

impl ExtensionTasks {
    /// Runs `task` on the node (see [`DatacakeHandle::spawn_task`]) until the extension
    /// stops.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let tasks = self.clone();
        self.node.spawn_task(async move {
            tokio::select! {
                () = tasks.stopped() => {}
                () = task => {}
            }
        });
    }

    /// Waits until the extension stops (its guard is dropped), e.g. to release what a task
    /// spawned with [`spawn`](Self::spawn) could not (it is cancelled, not told).
    pub async fn stopped(&self) {
        let mut stop = self.stop.clone();
        // Nothing is ever sent: `changed` fails once the guard is gone.
        while stop.changed().await.is_ok() {}
    }
}
