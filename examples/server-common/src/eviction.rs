//! Which connection gives way when the server is full: the one idle longest.
//!
//! A connection is *busy* from the moment its request's headers are complete until its
//! response has been written (the response body dropped), and *idle* otherwise: before its
//! first request, between requests on a keep-alive connection, or while a client sends
//! headers slowly or not at all. With every slot taken, a new connection closes the
//! connection idle longest ([`Connections::evict_idlest`]) and takes its slot. So clients
//! that open connections and send nothing cannot keep others out until the header-read
//! timeout cuts them off: each newcomer pushes out the oldest of them. A busy connection is
//! never closed this way; with every connection busy, a newcomer is refused as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The connections being served.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    /// Orders activity: each registration and each request's start and end takes the next.
    /// A connection's registration tick is also its key in `open`.
    ticks: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
}

/// One connection's state, shared by its task, its requests and [`Connections`].
#[derive(Debug)]
pub(crate) struct Tracked {
    /// Requests whose responses are not yet written.
    busy: AtomicUsize,
    /// The tick of its last activity (opened, a request begun or answered).
    last_active: AtomicU64,
    /// Chosen to give way and not yet closed: not chosen twice.
    evicting: AtomicBool,
    evict: Notify,
    connections: Arc<Connections>,
}

/// A connection's place in [`Connections`]; dropping it removes the connection.
#[derive(Debug)]
pub(crate) struct Registration {
    id: u64,
    tracked: Arc<Tracked>,
}

/// Marks a connection busy while held (one per request, dropped with its response body).
#[derive(Debug)]
pub(crate) struct Busy(Arc<Tracked>);

impl Connections {
    /// Adds a connection, idle and the most recently active.
    pub(crate) fn register(self: &Arc<Self>) -> Registration {
        let id = self.tick();
        let tracked = Arc::new(Tracked {
            busy: AtomicUsize::new(0),
            last_active: AtomicU64::new(id),
            evicting: AtomicBool::new(false),
            evict: Notify::new(),
            connections: self.clone(),
        });
        self.open.lock().insert(id, tracked.clone());
        Registration { id, tracked }
    }

    /// Asks the connection idle longest to close; returns whether there was one.
    pub(crate) fn evict_idlest(&self) -> bool {
        let open = self.open.lock();
        let idlest = open
            .values()
            .filter(|t| t.busy.load(Ordering::SeqCst) == 0 && !t.evicting.load(Ordering::SeqCst))
            .min_by_key(|t| t.last_active.load(Ordering::SeqCst));
        match idlest {
            Some(tracked) => {
                tracked.evicting.store(true, Ordering::SeqCst);
                tracked.evict.notify_one();
                true
            }
            None => false,
        }
    }

    fn tick(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::Relaxed)
    }
}

impl Registration {
    /// The connection's shared state.
    pub(crate) fn tracked(&self) -> &Arc<Tracked> {
        &self.tracked
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.tracked.connections.open.lock().remove(&self.id);
    }
}

impl Tracked {
    /// Marks the connection busy until the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Busy(self.clone())
    }

    /// Waits until the connection is asked to give way, and returns then if it is idle (it
    /// may close: nothing is in progress on it). If a request began since it was chosen, it
    /// stays and can be chosen again later.
    pub(crate) async fn evicted(&self) {
        loop {
            self.evict.notified().await;
            if self.busy.load(Ordering::SeqCst) == 0 {
                return;
            }
            self.evicting.store(false, Ordering::SeqCst);
        }
    }

    fn touch(&self) {
        self.last_active
            .store(self.connections.tick(), Ordering::SeqCst);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_connection_idle_longest_gives_way_and_a_busy_one_never() {
        let connections = Arc::new(Connections::default());
        let first = connections.register();
        let second = connections.register();
        let third = connections.register();
        // The first is busy; of the idle ones the second was active longest ago.
        let busy = first.tracked().begin();
        let request = third.tracked().begin();
        drop(request);
        assert!(connections.evict_idlest());
        second.tracked().evicted().await;
        // Chosen once: the next choice is the third.
        assert!(connections.evict_idlest());
        third.tracked().evicted().await;
        // Only the busy one is left to choose from.
        assert!(!connections.evict_idlest());
        drop(busy);
        assert!(connections.evict_idlest());
        first.tracked().evicted().await;
        drop((first, second, third));
        assert!(connections.open.lock().is_empty());
    }

    #[tokio::test]
    async fn a_connection_that_began_a_request_once_chosen_stays() {
        let connections = Arc::new(Connections::default());
        let only = connections.register();
        assert!(connections.evict_idlest());
        let busy = only.tracked().begin();
        let tracked = only.tracked().clone();
        let waiting = tokio::spawn(async move { tracked.evicted().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a busy connection gave way");
        // Once idle again it can be chosen again.
        drop(busy);
        assert!(connections.evict_idlest());
        tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
            .await
            .expect("the idle connection gave way")
            .expect("task");
    }
}
