//! The client side of one HTTP/2 connection: the task that drives it, and the early write a
//! caller makes on the driver's behalf.
//!
//! h2 writes queued frames only when its connection future is polled, and that future lives
//! in a task of its own. When a read brings several replies, the driver wakes every caller
//! they belong to; each caller queues its next request, which wakes the driver again, but
//! the driver runs only after all of them (a runtime runs woken tasks in order). So the
//! requests of a clump of replies left in one write, the server answered them as one burst,
//! the replies came back as one clump, and both sides worked in lock-step: each turn the
//! other side's thread had gone idle and paid a wake-up. Between 4 and 12 calls in flight
//! that held throughput to a third of what the same calls over separate TCP connections
//! reach.
//!
//! So the first caller after each of the driver's turns polls the connection itself (with
//! the driver's waker, so every registration it makes still wakes the driver): its request
//! leaves at once and the server starts on it while the client works through the rest of
//! the clump, which still leaves together in the driver's next write. One extra write per
//! clump, not per call; see the crate README for the figures.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::net::Io;

/// Writes what callers queued on a connection, from the caller's task.
pub(crate) trait EarlyWrite: Send + Sync {
    /// Called after a request was queued: writes it now if it is the first since the
    /// driver's last turn (and nobody is polling the connection right now).
    fn queued(&self);
}

/// One h2 client connection, shared by its driver task and its callers.
pub(crate) struct Driver<I> {
    state: Mutex<State<I>>,
    /// The driver task's waker.
    waker: Mutex<Option<Waker>>,
    /// Set by each of the driver's turns, taken by the first caller after it.
    turn_taken: AtomicBool,
}

// One per connection, inside the `Arc` it lives in for good: the size of the open variant
// costs nothing, while boxing it would add a pointer chase to every poll.
#[allow(clippy::large_enum_variant)]
enum State<I> {
    Open(h2::client::Connection<I, Bytes>),
    /// The connection is gone: a caller's poll saw it end (with this outcome, not yet handed
    /// to the driver), or [`Driver::run`] has ended.
    Ended(Option<Result<(), h2::Error>>),
}

impl<I: Io> Driver<I> {
    pub(crate) fn new(connection: h2::client::Connection<I, Bytes>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::Open(connection)),
            waker: Mutex::new(None),
            turn_taken: AtomicBool::new(true),
        })
    }

    /// Drives the connection until it ends (in the driver task). Once this future completes
    /// or is dropped (the keep-alive gave up, the runtime shut down), the connection is
    /// dropped, failing every call still waiting on it.
    pub(crate) async fn run(self: Arc<Self>) -> Result<(), h2::Error> {
        struct CloseOnDrop<'a, I>(&'a Driver<I>);
        impl<I> Drop for CloseOnDrop<'_, I> {
            fn drop(&mut self) {
                *self.0.state.lock() = State::Ended(None);
            }
        }
        let _close = CloseOnDrop(&self);
        std::future::poll_fn(|cx| self.poll(cx)).await
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        {
            let mut waker = self.waker.lock();
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        match &mut *self.state.lock() {
            State::Open(connection) => {
                self.turn_taken.store(false, Ordering::Relaxed);
                Pin::new(connection).poll(cx)
            }
            State::Ended(outcome) => Poll::Ready(outcome.take().unwrap_or(Ok(()))),
        }
    }
}

impl<I: Io> EarlyWrite for Driver<I> {
    fn queued(&self) {
        if self.turn_taken.swap(true, Ordering::Relaxed) {
            return;
        }
        let Some(waker) = self.waker.lock().clone() else {
            return;
        };
        // Held by the driver (on another thread): it writes the request itself.
        let Some(mut state) = self.state.try_lock() else {
            return;
        };
        let State::Open(connection) = &mut *state else {
            return;
        };
        let mut cx = Context::from_waker(&waker);
        if let Poll::Ready(outcome) = Pin::new(connection).poll(&mut cx) {
            // A finished connection is never polled again; the driver takes the outcome.
            *state = State::Ended(Some(outcome));
            waker.wake();
        }
    }
}
