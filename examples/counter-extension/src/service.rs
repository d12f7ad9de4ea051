//! The counter's RPC service: how peers push state to this node ([`Merge`]) and read from it
//! ([`Fetch`]).

use std::sync::Arc;

use datacake_rpc::{Handler, Request, RpcService, ServiceRegistry, Status};

use crate::messages::{check_entries, check_name, Fetch, FetchReply, Merge, MergeAck};
use crate::replica::{Event, Replica};

/// The name the service is registered under on the node's RPC server: one service name per
/// extension, so extensions never collide.
pub const SERVICE_NAME: &str = "counter-extension";

/// Serves this node's counters to its peers.
///
/// Registered by [`CounterExtension`](crate::CounterExtension); public only so that a
/// [`RpcClient`](datacake_rpc::RpcClient)`<CounterService>` can be named.
#[derive(Debug)]
pub struct CounterService {
    pub(crate) replica: Arc<Replica>,
}

impl CounterService {
    /// Counts a refused message on its way out.
    fn refuse(&self, status: Status) -> Status {
        self.replica.record(Event::MessageRefused);
        status
    }
}

impl RpcService for CounterService {
    fn service_name() -> &'static str {
        SERVICE_NAME
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<Merge>();
        registry.add_handler::<Fetch>();
    }
}

#[datacake_rpc::async_trait]
impl Handler<Merge> for CounterService {
    type Reply = MergeAck;

    fn path() -> &'static str {
        "merge"
    }

    async fn on_message(&self, request: Request<Merge>) -> Result<MergeAck, Status> {
        let from = request.remote_addr();
        // With TLS, the caller must be the node it claims to be (a no-op on plaintext).
        self.replica
            .node
            .verify_caller(request.peer(), request.from.to_native())?;
        // Bounds first, on the archived bytes; only then the clock, then the state.
        check_entries(&request.entries).map_err(|s| self.refuse(s))?;
        self.replica
            .register_clock(request.clock.to_native(), from)?;
        let merge = request.into_inner().deserialize_view()?;
        self.replica.merge(merge.entries).map_err(|_| {
            self.refuse(Status::resource_exhausted(format!(
                "the node holds its maximum of {} counter entries",
                self.replica.max_entries
            )))
        })?;
        self.replica.record(Event::MergeReceived);
        Ok(MergeAck {
            clock: self.replica.node.clock().get_time(),
        })
    }
}

#[datacake_rpc::async_trait]
impl Handler<Fetch> for CounterService {
    type Reply = FetchReply;

    fn path() -> &'static str {
        "fetch"
    }

    async fn on_message(&self, request: Request<Fetch>) -> Result<FetchReply, Status> {
        let from = request.remote_addr();
        self.replica
            .node
            .verify_caller(request.peer(), request.from.to_native())?;
        check_name(&request.name).map_err(|s| self.refuse(s))?;
        self.replica
            .register_clock(request.clock.to_native(), from)?;
        // At most MAX_ENTRIES_PER_MESSAGE: the state never holds more for one counter.
        let entries = self.replica.counters.lock().entries_of(&request.name);
        Ok(FetchReply {
            clock: self.replica.node.clock().get_time(),
            entries,
        })
    }
}
