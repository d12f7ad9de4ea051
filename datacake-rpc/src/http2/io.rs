//! A connection on a socket: the driver that reads and writes for [`State`], and the
//! handles callers hold (a client's request, its reply and upload; a server's accepted
//! requests, their bodies and replies; both ends' pings).
//!
//! One task drives the connection ([`Driver::run`]; on a server, the connection's own task,
//! beside its accept loop): it reads whatever arrives, hands it to the state, and writes
//! what the state queued. A caller that queues a request while the
//! driver is between turns writes it itself ([`Link::queued`]): when a read brings several
//! replies, the driver wakes every caller they belong to, and each queues its next request;
//! the first of them sends its request at once, so the server starts on it while the client
//! works through the rest, which leave together in the driver's next write. (Leaving all of
//! them to the driver put both ends in lock-step: see the crate README.)

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, ReadBuf};

use super::frame::StreamId;
use super::head::{RequestHead, ResponseHead};
use super::state::{Config, Error, State, Wakeups};
use super::Reason;
use crate::net::Io;

/// How many reads one turn of the driver makes before letting other tasks run.
const READS_PER_TURN: usize = 16;
/// The read buffer's room asked for before each read.
const READ_CHUNK: usize = 64 << 10;
/// The most buffers handed to one vectored write.
const MAX_SLICES: usize = 64;

/// A server's rule for a peer that does not read: reading stops while at least `at` bytes
/// wait to be written, and goes on once they went out, so a peer that sends requests without
/// reading the replies cannot make the server queue more than about `at` (plus the replies to
/// one read). Each time reading stops, `count` goes up. A client has none and always reads:
/// if both ends paused, two peers each blocked writing to the other would wait forever.
#[derive(Debug, Clone)]
pub(crate) struct ReadPause {
    pub(crate) at: usize,
    pub(crate) count: Arc<AtomicU64>,
}

/// What handles need of a connection, whatever its socket type.
pub(crate) trait Link: Send + Sync {
    /// The connection's state.
    fn state(&self) -> &Mutex<State>;
    /// Frames were queued: write them now if the driver is between turns, else make sure it
    /// runs.
    fn queued(&self);
    /// Has the driver look at the connection again (it was given up).
    fn wake_driver(&self);
}

/// Runs `f` on the state, then wakes the callers it woke and has the queued frames written
/// (and the driver look at a connection that is done now, so it ends).
fn with_state<R>(link: &dyn Link, f: impl FnOnce(&mut State, &mut Wakeups) -> R) -> R {
    let mut wake = Wakeups::new();
    let (result, output, finished) = {
        let mut state = link.state().lock();
        let result = f(&mut state, &mut wake);
        (result, state.has_output(), state.is_finished())
    };
    wake.wake_all();
    if output {
        link.queued();
    }
    if finished {
        link.wake_driver();
    }
    result
}

/// The socket's side of a connection: the bytes read and not yet decoded, and the frames
/// taken from the state and not yet written.
struct Socket<I> {
    io: I,
    read: BytesMut,
    write: VecDeque<Bytes>,
    /// The bytes in `write` (counted only where reads may pause).
    unwritten: usize,
    /// Reading waits for `write` to go out (see [`ReadPause`]).
    paused: bool,
    /// The socket reached its end or failed: no more reads.
    eof: bool,
}

/// One connection: its state and its socket.
pub(crate) struct Driver<I> {
    state: Mutex<State>,
    /// `None` once the driver ended: the socket is closed then, whatever handles remain.
    socket: Mutex<Option<Socket<I>>>,
    /// The driver task's waker.
    waker: Mutex<Option<Waker>>,
    /// Set by each of the driver's turns, taken by the first caller after it.
    turn_taken: AtomicBool,
    /// See [`ReadPause`].
    pause_reads: Option<ReadPause>,
}

impl<I: Io> Driver<I> {
    /// A connection on `io`; the preface and settings are written by the first turn.
    pub(crate) fn new(io: I, config: Config, pause_reads: Option<ReadPause>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::new(config)),
            socket: Mutex::new(Some(Socket {
                io,
                read: BytesMut::with_capacity(READ_CHUNK),
                write: VecDeque::new(),
                unwritten: 0,
                paused: false,
                eof: false,
            })),
            waker: Mutex::new(None),
            turn_taken: AtomicBool::new(true),
            pause_reads,
        })
    }

    /// Drives the connection until it closes. Dropping this future (the keep-alive gave up,
    /// the runtime shut down) closes the connection, failing every call on it.
    pub(crate) async fn run(self: Arc<Self>) -> Result<(), Error> {
        struct CloseOnDrop<'a, I>(&'a Driver<I>);
        impl<I> Drop for CloseOnDrop<'_, I> {
            fn drop(&mut self) {
                self.0
                    .close(Error::Closed("the connection was closed".into()));
                // Handles may outlive the driver (a handler still running, a channel's
                // slot): the socket goes now, so the peer sees the connection end.
                drop(self.0.socket.lock().take());
            }
        }
        let _close = CloseOnDrop(&self);
        std::future::poll_fn(|cx| self.poll(cx)).await
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        {
            let mut waker = self.waker.lock();
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        self.turn_taken.store(false, Ordering::Relaxed);
        let mut socket = self.socket.lock();
        let Some(socket) = socket.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut more = self.read(socket, cx);
        self.write(socket, cx);
        // Paused, reading goes on in the next turn once writing made room; until then a
        // write the socket did not take wakes the driver.
        if socket.paused && !self.must_pause(socket) {
            more = true;
        }
        let state = self.state.lock();
        if state.is_abandoned() {
            return Poll::Ready(Err(state.closed().cloned().expect("abandoned is closed")));
        }
        if socket.write.is_empty() && !state.has_output() {
            if let Some(error) = state.closed() {
                return Poll::Ready(match error {
                    Error::Closed(_) if socket.eof => Ok(()),
                    error => Err(error.clone()),
                });
            }
            if state.is_finished() {
                return Poll::Ready(Ok(()));
            }
        }
        if more {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Whether reading must wait for the bytes queued to go out first (see
    /// [`ReadPause`]).
    fn must_pause(&self, socket: &Socket<I>) -> bool {
        self.pause_reads.as_ref().is_some_and(|pause| {
            socket
                .unwritten
                .saturating_add(self.state.lock().queued_len())
                >= pause.at
        })
    }

    /// Reads and handles what arrived; `true` if there may be more to read now.
    fn read(&self, socket: &mut Socket<I>, cx: &mut Context<'_>) -> bool {
        for _ in 0..READS_PER_TURN {
            if socket.eof {
                return false;
            }
            let pause = self.must_pause(socket);
            if pause && !socket.paused {
                if let Some(rule) = &self.pause_reads {
                    rule.count.fetch_add(1, Ordering::Relaxed);
                }
            }
            socket.paused = pause;
            if pause {
                return false;
            }
            if socket.read.capacity() - socket.read.len() < READ_CHUNK / 4 {
                socket.read.reserve(READ_CHUNK);
            }
            let Socket { io, read, .. } = socket;
            let outcome = {
                let spare = read.spare_capacity_mut();
                let mut buf = ReadBuf::uninit(spare);
                match Pin::new(io).poll_read(cx, &mut buf) {
                    Poll::Pending => return false,
                    Poll::Ready(Ok(())) => Ok(buf.filled().len()),
                    Poll::Ready(Err(e)) => Err(e),
                }
            };
            let mut wake = Wakeups::new();
            match outcome {
                Ok(0) => {
                    socket.eof = true;
                    let error = Error::Closed("the peer closed the connection".into());
                    self.state.lock().close(error, &mut wake);
                }
                Ok(n) => {
                    // SAFETY: `poll_read` initialised the first `n` bytes of the spare room.
                    unsafe { read.set_len(read.len() + n) };
                    if !self.state.lock().receive(read, &mut wake) {
                        // The connection failed: nothing more is read (what the peer still
                        // sends would only pile up), the GOAWAY still goes out.
                        socket.eof = true;
                    }
                }
                Err(e) => {
                    socket.eof = true;
                    let error = Error::Closed(format!("reading failed: {e}"));
                    self.state.lock().close(error, &mut wake);
                }
            }
            wake.wake_all();
        }
        true
    }

    /// Writes what the state queued, as far as the socket takes it.
    fn write(&self, socket: &mut Socket<I>, cx: &mut Context<'_>) {
        loop {
            if socket.write.is_empty() {
                self.state.lock().take_output(&mut socket.write);
                if self.pause_reads.is_some() {
                    socket.unwritten = socket.write.iter().map(Bytes::len).sum();
                }
                if socket.write.is_empty() {
                    let _ = Pin::new(&mut socket.io).poll_flush(cx);
                    return;
                }
            }
            let Socket { io, write, .. } = socket;
            let written = if io.is_write_vectored() {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let n = write.len().min(MAX_SLICES);
                for (slice, bytes) in slices.iter_mut().zip(write.iter()) {
                    *slice = IoSlice::new(bytes);
                }
                Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n])
            } else {
                Pin::new(&mut *io).poll_write(cx, write.front().expect("not empty"))
            };
            match written {
                Poll::Pending => return,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    self.close(Error::Closed("writing to the peer failed".into()));
                    write.clear();
                    socket.unwritten = 0;
                    socket.eof = true;
                    return;
                }
                Poll::Ready(Ok(mut n)) => {
                    socket.unwritten = socket.unwritten.saturating_sub(n);
                    while n > 0 {
                        let front = write.front_mut().expect("written bytes were queued");
                        if n >= front.len() {
                            n -= front.len();
                            write.pop_front();
                        } else {
                            front.advance(n);
                            n = 0;
                        }
                    }
                }
            }
        }
    }
}

impl<I: Io> Driver<I> {
    /// Writes what is queued now, from the driver's own task (a server answering a burst of
    /// requests in parts).
    pub(crate) fn flush(&self) {
        if let Some(waker) = self.waker.lock().clone() {
            self.write_now(&waker);
        }
    }

    /// Writes what is queued, outside the driver's turn, registering `waker` (the driver's)
    /// for what the socket does not take; `false` if the socket is busy (the driver is
    /// polling it on another thread).
    fn write_now(&self, waker: &Waker) -> bool {
        let Some(mut socket) = self.socket.try_lock() else {
            return false;
        };
        if let Some(socket) = socket.as_mut() {
            self.write(socket, &mut Context::from_waker(waker));
        }
        true
    }
}

impl<I> Driver<I> {
    /// Closes the connection's state with `error`, waking whoever waited on it.
    fn close(&self, error: Error) {
        let mut wake = Wakeups::new();
        self.state.lock().close(error, &mut wake);
        wake.wake_all();
    }
}

impl<I: Io> Link for Driver<I> {
    fn state(&self) -> &Mutex<State> {
        &self.state
    }

    fn wake_driver(&self) {
        if let Some(waker) = self.waker.lock().clone() {
            waker.wake();
        }
    }

    fn queued(&self) {
        let Some(waker) = self.waker.lock().clone() else {
            return;
        };
        // The first caller since the driver's turn writes at once (if the driver is not busy
        // on another thread).
        if !self.turn_taken.swap(true, Ordering::Relaxed) && self.write_now(&waker) {
            return;
        }
        waker.wake();
    }
}

/// A handle to open streams on a connection (a client's).
#[derive(Clone)]
pub(crate) struct Client {
    link: Arc<dyn Link>,
}

impl Client {
    pub(crate) fn new<I: Io>(driver: Arc<Driver<I>>) -> Self {
        Self { link: driver }
    }

    /// Sends a request's head, once the server's stream limit allows, and with it `body`
    /// when the request's body is whole (`None` for a streamed one; an empty body ends the
    /// request with its head). Both leave in one write.
    pub(crate) async fn open(
        &self,
        authority: &str,
        path: &str,
        headers: &http::HeaderMap,
        body: Option<&Bytes>,
    ) -> Result<StreamId, Error> {
        let end_stream = body.is_some_and(Bytes::is_empty);
        std::future::poll_fn(|cx| {
            let opened = with_state(&*self.link, |state, wake| {
                let id = state.open(authority, path, headers, end_stream, cx.waker())?;
                if let (Some(id), Some(body)) = (id, body.filter(|b| !b.is_empty())) {
                    // (A stream just opened takes data; its reply reports its fate.)
                    let _ = state.send_data(id, body.clone(), true, wake);
                }
                Ok(id)
            });
            match opened {
                Ok(Some(id)) => Poll::Ready(Ok(id)),
                Ok(None) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    /// The reply to stream `id` (holding the stream's first handle).
    pub(crate) fn reply(&self, id: StreamId) -> ReplyFuture {
        ReplyFuture {
            handle: Some(Handle::new(self.link.clone(), id)),
        }
    }

    /// An upload on stream `id` (a second handle).
    pub(crate) fn upload(&self, id: StreamId) -> SendBody {
        self.link.state().lock().retain(id);
        SendBody {
            handle: Handle::new(self.link.clone(), id),
        }
    }

    /// The connection's pings.
    pub(crate) fn pings(&self) -> Pinger {
        Pinger {
            link: self.link.clone(),
        }
    }

    /// Gives the connection up (its peer stopped answering): every call on it fails.
    pub(crate) fn abandon(&self, why: &str) {
        abandon(&*self.link, why);
    }

    /// Takes no new calls on the connection: it closes once the calls in flight are done.
    pub(crate) fn retire(&self) {
        // (Done once no call is left: `with_state` then has the driver end it.)
        with_state(&*self.link, |state, _| state.retire());
    }
}

fn abandon(link: &dyn Link, why: &str) {
    // (Closed, so done: `with_state` has the driver end it.)
    with_state(link, |state, wake| state.abandon(why, wake));
}

/// What a server does with its connection: take requests, close gracefully, ping.
#[derive(Clone)]
pub(crate) struct Accepting {
    link: Arc<dyn Link>,
}

impl Accepting {
    pub(crate) fn new<I: Io>(driver: Arc<Driver<I>>) -> Self {
        Self { link: driver }
    }

    /// The next request, with its body and the way to answer it; `None` once the connection
    /// is closing and every request was taken. For a task other than the driver's (the
    /// server's own loop uses [`poll_accept_now`](Self::poll_accept_now)); only tests have one.
    #[cfg(test)]
    pub(crate) async fn accept(&self) -> Option<(RequestHead, RecvBody, Responder)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// A request already received, without registering a waker (`Pending` if none is);
    /// `Ready(None)` once the connection is closing and every request was taken. For the
    /// task that drives the connection: requests arrive only through the driver's reads, so
    /// that task knows when to look, and a waker would only wake it again for nothing.
    pub(crate) fn poll_accept_now(&self) -> Poll<Option<(RequestHead, RecvBody, Responder)>> {
        self.poll_accept(&mut Context::from_waker(std::task::Waker::noop()))
    }

    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(RequestHead, RecvBody, Responder)>> {
        let mut state = self.link.state().lock();
        if let Some((id, head)) = state.poll_accept(cx.waker()) {
            drop(state);
            let body = RecvBody::new(Handle::new(self.link.clone(), id));
            let responder = Responder {
                handle: Handle::new(self.link.clone(), id),
            };
            return Poll::Ready(Some((head, body, responder)));
        }
        if state.is_finished() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// Resolves once the client's preface arrived.
    pub(crate) async fn handshaken(&self) {
        std::future::poll_fn(|cx| {
            if self.link.state().lock().poll_handshake(cx.waker()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Whether a request is open or waits to be taken.
    pub(crate) fn has_streams(&self) -> bool {
        self.link.state().lock().has_streams()
    }

    /// How many requests the client opened so far.
    pub(crate) fn requests_opened(&self) -> u32 {
        self.link.state().lock().requests_opened()
    }

    /// Gives the connection up (its peer stopped answering).
    pub(crate) fn abandon(&self, why: &str) {
        abandon(&*self.link, why);
    }

    /// Closes gracefully: no new requests, those taken finish.
    pub(crate) fn go_away(&self) {
        with_state(&*self.link, |state, wake| state.go_away(wake));
    }

    /// The connection's pings.
    pub(crate) fn pings(&self) -> Pinger {
        Pinger {
            link: self.link.clone(),
        }
    }
}

/// A connection's pings.
pub(crate) struct Pinger {
    link: Arc<dyn Link>,
}

impl Pinger {
    /// Sends a ping (unless one is awaiting its answer).
    pub(crate) fn send_ping(&self) -> Result<(), Error> {
        with_state(&*self.link, |state, _| state.send_ping())
    }

    /// Resolves when the last ping is answered.
    pub(crate) async fn pong(&self) -> Result<(), Error> {
        std::future::poll_fn(|cx| match self.link.state().lock().poll_pong(cx.waker()) {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        })
        .await
    }
}

/// One handle to a stream; dropping the last one resets a stream still open.
struct Handle {
    link: Arc<dyn Link>,
    id: StreamId,
}

impl Handle {
    fn new(link: Arc<dyn Link>, id: StreamId) -> Self {
        Self { link, id }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State, StreamId, &mut Wakeups) -> R) -> R {
        let id = self.id;
        with_state(&*self.link, |state, wake| f(state, id, wake))
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // A drop can run anywhere (a runtime shutting down, a simulation tearing down): the
        // reset it may queue is left to the driver, never written from here.
        let mut wake = Wakeups::new();
        let (output, finished) = {
            let mut state = self.link.state().lock();
            state.release(self.id, &mut wake);
            (state.has_output(), state.is_finished())
        };
        wake.wake_all();
        // (A connection closing ends with its last stream: the driver must see that too.)
        if output || finished {
            self.link.wake_driver();
        }
    }
}

/// A client's reply: its head; then its body.
pub(crate) struct ReplyFuture {
    handle: Option<Handle>,
}

impl Future for ReplyFuture {
    type Output = Result<(ResponseHead, RecvBody), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let handle = self.handle.as_ref().expect("polled after completion");
        let head = handle
            .link
            .state()
            .lock()
            .poll_response(handle.id, cx.waker());
        match head {
            None => Poll::Pending,
            Some(Err(e)) => Poll::Ready(Err(e)),
            Some(Ok(head)) => {
                let handle = self.handle.take().expect("checked");
                Poll::Ready(Ok((head, RecvBody::new(handle))))
            }
        }
    }
}

/// The peer's body (a reply's on a client, a request's on a server) as it arrives.
pub(crate) struct RecvBody {
    handle: Handle,
    /// The last piece was taken.
    ended: bool,
}

impl RecvBody {
    fn new(handle: Handle) -> Self {
        Self {
            handle,
            ended: false,
        }
    }

    /// The next piece of the body, `None` at its end.
    pub(crate) fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self
            .handle
            .with(|state, id, _| state.poll_data(id, cx.waker()))
        {
            None => Poll::Pending,
            Some(Ok(Some((data, last)))) => {
                // The end is known now: the next poll needs no lock.
                self.ended = last;
                Poll::Ready(Some(Ok(data)))
            }
            Some(Ok(None)) => Poll::Ready(None),
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }
}

impl std::fmt::Debug for RecvBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecvBody({})", self.handle.id.0)
    }
}

/// A server's way to answer one request.
pub(crate) struct Responder {
    handle: Handle,
}

impl Responder {
    /// Sends the reply's head, and with it `body` when the reply is whole (an empty one ends
    /// the stream with the head; what the windows do not take yet waits on the returned
    /// [`SendBody`]). For a streamed reply (`None`), the body follows on the [`SendBody`].
    pub(crate) fn respond(
        self,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        body: Option<Bytes>,
    ) -> Result<SendBody, Error> {
        let end_stream = body.as_ref().is_some_and(Bytes::is_empty);
        self.handle.with(|state, id, wake| {
            state.respond(id, status, headers, end_stream, wake)?;
            match body {
                Some(body) if !body.is_empty() => state.send_data(id, body, true, wake),
                _ => Ok(()),
            }
        })?;
        Ok(SendBody {
            handle: self.handle,
        })
    }

    /// Resolves once the client reset the stream (it gave up on the call) or the connection
    /// closed.
    pub(crate) async fn reset(&mut self) -> Error {
        std::future::poll_fn(|cx| {
            match self
                .handle
                .with(|state, id, _| state.poll_reset(id, cx.waker()))
            {
                Some(error) => Poll::Ready(error),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// Why sending a body stopped.
#[derive(Debug)]
pub(crate) enum Stalled {
    /// The stream or its connection is gone.
    Gone,
    /// The peer's windows stayed shut for the whole stall bound; the stream was reset.
    Stalled,
}

/// A body sent chunk by chunk (a client's upload, a server's reply).
pub(crate) struct SendBody {
    handle: Handle,
}

impl SendBody {
    /// Queues `data` (ending the body when `end`) and waits until the flow-control windows
    /// let all of it leave, so at most one chunk waits in memory. With `stall`, fails with
    /// [`Stalled`] once the windows let nothing leave for that long.
    pub(crate) async fn send(
        &mut self,
        data: Bytes,
        end: bool,
        stall: Option<Duration>,
    ) -> Result<(), Stalled> {
        self.handle
            .with(|state, id, wake| state.send_data(id, data, end, wake))
            .map_err(|_| Stalled::Gone)?;
        self.drained(stall).await
    }

    /// Bytes queued that the windows have not let leave yet.
    pub(crate) fn unsent(&self) -> usize {
        self.handle.link.state().lock().unsent(self.handle.id)
    }

    /// Waits until everything queued left (see [`send`](Self::send) for `stall`).
    pub(crate) async fn drained(&mut self, stall: Option<Duration>) -> Result<(), Stalled> {
        loop {
            let before = self.unsent();
            let progress = std::future::poll_fn(|cx| {
                self.handle.with(|state, id, _| {
                    let unsent = state.unsent(id);
                    if unsent == 0 {
                        return Poll::Ready(Ok(true));
                    }
                    if unsent < before {
                        // Some of it left: the stall clock starts again.
                        return Poll::Ready(Ok(false));
                    }
                    match state.wait_to_send(id, cx.waker()) {
                        Ok(()) => Poll::Pending,
                        Err(e) => Poll::Ready(Err(e)),
                    }
                })
            });
            let outcome = match stall {
                None => progress.await,
                Some(stall) => match tokio::time::timeout(stall, progress).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        self.cancel();
                        return Err(Stalled::Stalled);
                    }
                },
            };
            match outcome {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(_) => return Err(Stalled::Gone),
            }
        }
    }

    /// Gives the body up: the stream is reset with `CANCEL`.
    pub(crate) fn cancel(&self) {
        self.handle
            .with(|state, id, wake| state.reset(id, Reason::CANCEL, wake));
    }
}

#[cfg(test)]
mod tests;
