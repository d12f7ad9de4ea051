//! Extensions: an RPC service registered by an extension is reachable from another node, and
//! extension tasks stop with the node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datacake_node::{ClusterExtension, DatacakeHandle, DatacakeNode};
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
