//! What both ends of an HTTP/2 connection do alike: send bytes within the peer's flow-control
//! window ([`send_windowed`], and [`pipe`] for a streamed body), and notice a peer that stopped
//! answering ([`keep_alive`], with the client's early [`Probe`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::Body;

/// The most capacity [`send_windowed`] asks h2 for at a time: the largest HTTP/2 window.
pub(crate) const MAX_RESERVATION: usize = (1 << 31) - 1;

/// Why [`send_windowed`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendStopped {
    /// The stream or its connection is gone (reset, closed).
    Gone,
    /// The peer's window stayed shut for the whole stall bound; the stream is reset.
    Stalled,
}

/// Hands `data` to h2 in pieces no larger than the room the peer's flow-control windows (the
/// stream's and the connection's) have at the time, ending the stream after it when `end`.
/// So h2 never holds bytes the peer has not made room for: a peer that keeps its window shut
/// pins nothing beyond what it already accepted, and once the last piece is handed over the
/// stream closes as soon as the connection has written it. (h2's `send_data` alone would
/// buffer everything beyond the window, keeping the stream open, and the bytes with it, for
/// as long as the connection lives.)
///
/// With `stall`, waiting for room longer than that resets the stream
/// ([`SendStopped::Stalled`]).
pub(crate) async fn send_windowed(
    tx: &mut h2::SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    stall: Option<Duration>,
) -> Result<(), SendStopped> {
    if data.is_empty() {
        if end {
            tx.send_data(data, true).map_err(|_| SendStopped::Gone)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        // (h2 truncates a reservation to 32 bits; no window is larger than 2^31 - 1 anyway.)
        tx.reserve_capacity(data.len().min(MAX_RESERVATION));
        while tx.capacity() == 0 {
            let room = std::future::poll_fn(|cx| tx.poll_capacity(cx));
            let room = match stall {
                None => room.await,
                Some(stall) => match tokio::time::timeout(stall, room).await {
                    Ok(room) => room,
                    Err(_) => {
                        tx.send_reset(h2::Reason::CANCEL);
                        return Err(SendStopped::Stalled);
                    }
                },
            };
            match room {
                Some(Ok(_)) => {}
                _ => return Err(SendStopped::Gone),
            }
        }
        let piece = data.split_to(tx.capacity().min(data.len()));
        tx.send_data(piece, end && data.is_empty())
            .map_err(|_| SendStopped::Gone)?;
    }
    Ok(())
}

/// Streams a reply body within the peer's flow-control window ([`send_windowed`], with
/// `stall`), and resets the stream when the body fails.
pub(crate) async fn pipe(mut body: Body, mut tx: h2::SendStream<Bytes>, stall: Option<Duration>) {
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            tx.send_reset(h2::Reason::CANCEL);
            return;
        };
        if send_windowed(&mut tx, chunk, false, stall).await.is_err() {
            return;
        }
    }
    let _ = send_windowed(&mut tx, Bytes::new(), true, stall).await;
}

/// A request to ping a connection now, because a call on it timed out: a connection whose
/// byte stream stalled (a peer that vanished without closing it, a firewall that dropped its
/// state) answers nothing, not even pings, and is replaced within `bound` instead of after
/// the keep-alive interval. A peer that is merely slow keeps its connection: it answers the
/// ping late, and while it does, replies still arrive on the connection (its pong may wait
/// behind megabytes of requests in the byte stream), which counts as alive too.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    wake: tokio::sync::Notify,
    bound_millis: AtomicU64,
    /// Replies received on the connection so far.
    replies: AtomicU64,
}

impl Probe {
    /// The shortest time a probe waits for its answer, whatever the call's timeout.
    const MIN_BOUND: Duration = Duration::from_secs(1);

    pub(crate) fn request(&self, bound: Duration) {
        let millis = u64::try_from(bound.max(Self::MIN_BOUND).as_millis()).unwrap_or(u64::MAX);
        self.bound_millis.store(millis, Ordering::Release);
        self.wake.notify_one();
    }

    fn bound(&self) -> Duration {
        Duration::from_millis(self.bound_millis.load(Ordering::Acquire))
    }

    pub(crate) fn replied(&self) {
        self.replies.fetch_add(1, Ordering::Relaxed);
    }

    fn replies(&self) -> u64 {
        self.replies.load(Ordering::Relaxed)
    }
}

/// An HTTP/2 connection's pings: h2's on the server, the crate's own on a channel.
pub(crate) trait Pings: Send {
    /// Sends a ping; `false` if the connection is gone.
    fn send_ping(&mut self) -> bool;
    /// Resolves with `true` once the ping is answered, `false` if the connection is gone.
    fn pong(&mut self) -> impl Future<Output = bool> + Send;
}

impl Pings for h2::PingPong {
    fn send_ping(&mut self) -> bool {
        h2::PingPong::send_ping(self, h2::Ping::opaque()).is_ok()
    }

    async fn pong(&mut self) -> bool {
        std::future::poll_fn(|cx| self.poll_pong(cx)).await.is_ok()
    }
}

/// Pings every `interval`, and at once when `probe` asks; resolves once a ping is not
/// answered within `interval` (a probe's: within its bound, if shorter) and, with a probe, no
/// reply arrived on the connection in that time either.
pub(crate) async fn keep_alive<P: Pings>(
    pings: Option<P>,
    interval: Duration,
    probe: Option<Arc<Probe>>,
) {
    let Some(mut pings) = pings else {
        // Only the first caller gets the handle; without it, never report silence.
        return futures::future::pending().await;
    };
    loop {
        let wait = match &probe {
            Some(probe) => tokio::select! {
                () = tokio::time::sleep(interval) => interval,
                () = probe.wake.notified() => probe.bound().min(interval),
            },
            None => {
                tokio::time::sleep(interval).await;
                interval
            }
        };
        if !pings.send_ping() {
            return;
        }
        let pong = pings.pong();
        tokio::pin!(pong);
        loop {
            let replies = probe.as_ref().map(|p| p.replies());
            match tokio::time::timeout(wait, &mut pong).await {
                Ok(true) => break,
                Ok(false) => return,
                // Replies arrived while the pong was late: slow, not gone. Wait on.
                Err(_) if probe.as_ref().map(|p| p.replies()) != replies => {}
                Err(_) => return,
            }
        }
    }
}
