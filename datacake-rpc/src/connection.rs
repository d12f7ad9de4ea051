//! What both ends of an HTTP/2 connection do alike: stream a body within the peer's
//! flow-control windows ([`pipe`]), and notice a peer that stopped answering
//! ([`keep_alive`], with the client's early [`Probe`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::oneshot;

use crate::http2::io::{Pinger, SendBody, Stalled};
use crate::Body;

/// Streams a body (a request's or a reply's) chunk by chunk, each once the peer's
/// flow-control windows took the one before ([`SendBody::send`], with `stall`), and resets
/// the stream when the body fails.
///
/// `caller`, for a request body: dropping its sender before sending on it (the caller gave up
/// before the reply's head came) stops the upload and resets the stream, which tells the
/// server's handler to stop; sending on it leaves the upload to run to its end.
pub(crate) async fn pipe(
    mut body: Body,
    mut send: SendBody,
    stall: Option<Duration>,
    mut caller: Option<oneshot::Receiver<()>>,
) -> Result<(), Stalled> {
    loop {
        let next = tokio::select! {
            next = body.next() => next,
            () = abandoned(&mut caller) => {
                send.cancel();
                return Ok(());
            }
        };
        let Some(chunk) = next else { break };
        let Ok(chunk) = chunk else {
            send.cancel();
            return Ok(());
        };
        tokio::select! {
            sent = send.send(chunk, false, stall) => sent?,
            () = abandoned(&mut caller) => {
                send.cancel();
                return Ok(());
            }
        }
    }
    send.send(Bytes::new(), true, stall).await
}

/// Resolves once `caller`'s sender is dropped without sending; never if there is none or it
/// sent (then `caller` becomes `None`).
async fn abandoned(caller: &mut Option<oneshot::Receiver<()>>) {
    if let Some(receiver) = caller.as_mut() {
        if receiver.await.is_err() {
            return;
        }
        *caller = None;
    }
    std::future::pending().await
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

/// Pings every `interval`, and at once when `probe` asks; resolves once a ping is not
/// answered within `interval` (a probe's: within its bound, if shorter) and, with a probe, no
/// reply arrived on the connection in that time either.
pub(crate) async fn keep_alive(
    pings: Option<Pinger>,
    interval: Duration,
    probe: Option<Arc<Probe>>,
) {
    let Some(pings) = pings else {
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
        if pings.send_ping().is_err() {
            return;
        }
        let pong = pings.pong();
        tokio::pin!(pong);
        loop {
            let replies = probe.as_ref().map(|p| p.replies());
            match tokio::time::timeout(wait, &mut pong).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return,
                // Replies arrived while the pong was late: slow, not gone. Wait on.
                Err(_) if probe.as_ref().map(|p| p.replies()) != replies => {}
                Err(_) => return,
            }
        }
    }
}
