//! Extensions: an RPC service registered by an extension is reachable from another node,
//! extension tasks stop with the node, and leave hooks run before a graceful leave.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datacake_node::{ClusterExtension, DatacakeHandle, DatacakeNode, ExtensionGuard};
use datacake_rpc::{Handler, Request, RpcClient, RpcService, ServiceRegistry, Status};

use crate::fixtures::*;

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct Greet {
    pub(crate) name: String,
}

pub(crate) struct GreeterService {
    node_id: u32,
}

impl RpcService for GreeterService {
    fn service_name() -> &'static str {
        "greeter"
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<Greet>();
    }
}

#[async_trait::async_trait]
impl Handler<Greet> for GreeterService {
    type Reply = String;

    fn path() -> &'static str {
        "greet"
    }

    async fn on_message(&self, request: Request<Greet>) -> Result<String, Status> {
        Ok(format!(
            "hello {} from node {}",
            request.name.as_str(),
            self.node_id
        ))
    }
}

/// Sets its flag when dropped (the background task holding it ended).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct GreeterExtension {
    task_stopped: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl ClusterExtension for GreeterExtension {
    type Output = DatacakeHandle;
    type Error = std::convert::Infallible;

    async fn init_extension(self, node: &DatacakeNode) -> Result<DatacakeHandle, Self::Error> {
        node.add_rpc_service(GreeterService {
            node_id: node.me().node_id,
        });
        let flag = DropFlag(self.task_stopped);
        node.spawn_task(async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        });
        Ok(node.handle())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_service_is_reachable_from_another_node() {
    let n1 = start(1, &[]).await;
    let n2 = start(2, &[&n1]).await;
    let stopped = Arc::new(AtomicBool::new(false));
    let handle = n1
        .add_extension(GreeterExtension {
            task_stopped: stopped.clone(),
        })
        .await
        .unwrap();
    assert_eq!(handle.me().node_id, 1);

    n2.wait_for_nodes([1, 2], CONVERGE).await.unwrap();
    let target = n2
        .live_members()
        .into_iter()
        .find(|m| m.node_id == 1)
        .expect("node 1 is a member");
    let mut client =
        RpcClient::<GreeterService>::new(n2.network().get_or_connect(target.public_addr));
    client.set_timeout(Duration::from_secs(5));
    let reply = client
        .send(&Greet {
            name: "node 2".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.as_str(), "hello node 2 from node 1");

    assert!(!stopped.load(Ordering::SeqCst));
    n1.shutdown().await;
    assert!(
        stopped.load(Ordering::SeqCst),
        "the extension's task outlived the node"
    );
    assert!(handle.shutdown_signal().is_shutdown());
    n2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_removes_a_service_and_counts_running_tasks() {
    let n1 = start(1, &[]).await;
    let n2 = start(2, &[&n1]).await;
    let baseline = n1.handle().running_tasks();
    let stopped = Arc::new(AtomicBool::new(false));
    let handle = n1
        .add_extension(GreeterExtension {
            task_stopped: stopped.clone(),
        })
        .await
        .unwrap();
    assert_eq!(handle.running_tasks(), baseline + 1);

    n2.wait_for_nodes([1, 2], CONVERGE).await.unwrap();
    let mut client =
        RpcClient::<GreeterService>::new(n2.network().get_or_connect(n1.me().public_addr));
    client.set_timeout(Duration::from_secs(5));
    let greet = Greet {
        name: "node 2".into(),
    };
    client.send(&greet).await.expect("served");
    handle.remove_rpc_service(GreeterService::service_name());
    let status = client.send(&greet).await.expect_err("removed");
    assert_eq!(
        status.code(),
        datacake_rpc::ErrorCode::Unavailable,
        "{status:?}"
    );

    // The node's own method is the same implementation.
    n1.add_rpc_service(GreeterService { node_id: 1 });
    client.send(&greet).await.expect("served again");
    n1.remove_rpc_service(GreeterService::service_name());
    assert!(client.send(&greet).await.is_err());

    n1.shutdown().await;
    assert_eq!(handle.running_tasks(), 0, "shutdown stops every task");
    handle.remove_rpc_service("greeter"); // the server is gone: nothing happens
    n2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_hooks_run_on_a_graceful_leave_while_peers_still_count_the_node() {
    let n1 = start(1, &[]).await;
    let n2 = start(2, &[&n1]).await;
    n1.wait_for_nodes([1, 2], CONVERGE).await.unwrap();

    let kept = ExtensionGuard::new(n2.handle(), "");
    let (seen_tx, seen) = tokio::sync::oneshot::channel();
    let peer = n1.handle();
    kept.before_leave(move || async move {
        let counted = peer.live_members().iter().any(|m| m.node_id == 2);
        let _ = seen_tx.send(counted);
    });
    // The hook of an extension that stopped first is not run.
    let dropped = ExtensionGuard::new(n2.handle(), "");
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    dropped.before_leave(move || async move { flag.store(true, Ordering::SeqCst) });
    drop(dropped);

    n2.shutdown().await;
    assert_eq!(
        seen.await,
        Ok(true),
        "the hook ran, before node 1 heard of the leave"
    );
    assert!(!ran.load(Ordering::SeqCst), "a dropped guard's hook ran");
    drop(kept);
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_hook_that_never_ends_is_cancelled_at_the_leave_timeout() {
    let node = builder(1, &[])
        .with_leave_timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let guard = ExtensionGuard::new(node.handle(), "");
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(cancelled.clone());
    guard.before_leave(move || async move {
        let _dropped_when_cancelled = flag;
        std::future::pending::<()>().await
    });
    tokio::time::timeout(CONVERGE, node.shutdown())
        .await
        .expect("the shutdown ends although the hook never does");
    assert!(
        cancelled.load(Ordering::SeqCst),
        "the hook was not cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_node_drops_its_leave_hooks_unrun() {
    let node = start(1, &[]).await;
    let guard = ExtensionGuard::new(node.handle(), "");
    let (ran, released) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (flag, held) = (ran.clone(), DropFlag(released.clone()));
    guard.before_leave(move || async move {
        let _held = held;
        flag.store(true, Ordering::SeqCst);
    });
    // Handles (the guard's among them) outlive the node: the hook, and what it holds, must
    // not (it may hold a handle itself).
    let handle = node.handle();
    drop(node);
    assert!(handle.shutdown_signal().is_shutdown());
    assert!(
        released.load(Ordering::SeqCst),
        "the hook outlived the node"
    );
    assert!(
        !ran.load(Ordering::SeqCst),
        "an abrupt stop ran a leave hook"
    );
    drop(guard);
}
