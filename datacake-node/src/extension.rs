//! Cluster extensions: functionality attached to a running node.

use async_trait::async_trait;

use crate::node::DatacakeNode;

/// Something built on top of a running [`DatacakeNode`]: a replicated store, a Raft group, a
/// metrics exporter...
///
/// [`DatacakeNode::add_extension`] calls [`init_extension`](Self::init_extension) once with the
/// node; the extension may register RPC services ([`DatacakeNode::add_rpc_service`]), read the
/// membership, keep a [`DatacakeHandle`](crate::DatacakeHandle), and start background work.
///
/// **Background tasks must stop when the node shuts down.** Either spawn them with
/// [`DatacakeNode::spawn_task`] (the node cancels them on shutdown, and waits for them within
/// its leave timeout), or watch [`DatacakeNode::shutdown_signal`] yourself.
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
