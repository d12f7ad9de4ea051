//! A client connection on a socket: the driver that reads and writes for
//! [`ClientState`], and the handles callers hold (a request's reply, its body, its upload,
//! the connection's pings).
//!
//! One task drives the connection ([`Driver::run`]): it reads whatever arrives, hands it to
//! the state, and writes what the state queued. A caller that queues a request while the
//! driver is between turns writes it itself ([`Link::queued`]): when a read brings several
//! replies, the driver wakes every caller they belong to, and each queues its next request;
//! the first of them sends its request at once, so the server starts on it while the client
//! works through the rest, which leave together in the driver's next write. (Leaving all of
//! them to the driver put both ends in lock-step: see the crate README.)

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, ReadBuf};

use super::client::{ClientConfig, ClientState, Error, Head, Wakeups};
use super::frame::StreamId;
use super::Reason;
use crate::net::Io;

/// How many reads one turn of the driver makes before letting other tasks run.
const READS_PER_TURN: usize = 16;
/// The read buffer's room asked for before each read.
const READ_CHUNK: usize = 64 << 10;
/// The most buffers handed to one vectored write.
const MAX_SLICES: usize = 64;

/// What handles need of a connection, whatever its socket type.
pub(crate) trait Link: Send + Sync {
    /// The connection's state.
    fn state(&self) -> &Mutex<ClientState>;
    /// Frames were queued: write them now if the driver is between turns, else make sure it
    /// runs.
    fn queued(&self);
}

/// Runs `f` on the state, then wakes the callers it woke and has the queued frames written.
fn with_state<R>(link: &dyn Link, f: impl FnOnce(&mut ClientState, &mut Wakeups) -> R) -> R {
    let mut wake = Wakeups::new();
    let (result, output) = {
        let mut state = link.state().lock();
        let result = f(&mut state, &mut wake);
        (result, state.has_output())
    };
    for waker in wake {
        waker.wake();
    }
    if output {
        link.queued();
    }
    result
}

/// The socket's side of a connection: the bytes read and not yet decoded, and the frames
/// taken from the state and not yet written.
struct Socket<I> {
    io: I,
    read: BytesMut,
    write: VecDeque<Bytes>,
    /// The socket reached its end or failed: no more reads.
    eof: bool,
}

/// One client connection: its state and its socket.
pub(crate) struct Driver<I> {
    state: Mutex<ClientState>,
    socket: Mutex<Socket<I>>,
    /// The driver task's waker.
    waker: Mutex<Option<Waker>>,
    /// Set by each of the driver's turns, taken by the first caller after it.
    turn_taken: AtomicBool,
}

impl<I: Io> Driver<I> {
    /// A connection on `io`; the preface and settings are written by the first turn.
    pub(crate) fn new(io: I, config: ClientConfig) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(ClientState::new(config)),
            socket: Mutex::new(Socket {
                io,
                read: BytesMut::with_capacity(READ_CHUNK),
                write: VecDeque::new(),
                eof: false,
            }),
            waker: Mutex::new(None),
            turn_taken: AtomicBool::new(true),
        })
    }

    /// Drives the connection until it closes. Dropping this future (the keep-alive gave up,
    /// the runtime shut down) closes the connection, failing every call on it.
    pub(crate) async fn run(self: Arc<Self>) -> Result<(), Error> {
        struct CloseOnDrop<'a, I>(&'a Driver<I>);
        impl<I> Drop for CloseOnDrop<'_, I> {
            fn drop(&mut self) {
                let mut wake = Wakeups::new();
                self.0
                    .state
                    .lock()
                    .close(Error::Closed("the connection was closed".into()), &mut wake);
                wake.into_iter().for_each(Waker::wake);
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
        let more = self.read(&mut socket, cx);
        self.write(&mut socket, cx);
        let state = self.state.lock();
        if let Some(error) = state.closed() {
            if socket.write.is_empty() && !state.has_output() {
                return Poll::Ready(match error {
                    Error::Closed(_) if socket.eof => Ok(()),
                    error => Err(error.clone()),
                });
            }
        }
        if more {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Reads and handles what arrived; `true` if there may be more to read now.
    fn read(&self, socket: &mut Socket<I>, cx: &mut Context<'_>) -> bool {
        for _ in 0..READS_PER_TURN {
            if socket.eof {
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
                    let error = Error::Closed("the server closed the connection".into());
                    self.state.lock().close(error, &mut wake);
                }
                Ok(n) => {
                    // SAFETY: `poll_read` initialised the first `n` bytes of the spare room.
                    unsafe { read.set_len(read.len() + n) };
                    self.state.lock().receive(read, &mut wake);
                }
                Err(e) => {
                    socket.eof = true;
                    let error = Error::Closed(format!("reading failed: {e}"));
                    self.state.lock().close(error, &mut wake);
                }
            }
            wake.into_iter().for_each(Waker::wake);
        }
        true
    }

    /// Writes what the state queued, as far as the socket takes it.
    fn write(&self, socket: &mut Socket<I>, cx: &mut Context<'_>) {
        loop {
            if socket.write.is_empty() {
                self.state.lock().take_output(&mut socket.write);
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
                    let mut wake = Wakeups::new();
                    let error = Error::Closed("writing to the server failed".into());
                    self.state.lock().close(error, &mut wake);
                    write.clear();
                    socket.eof = true;
                    wake.into_iter().for_each(Waker::wake);
                    return;
                }
                Poll::Ready(Ok(mut n)) => {
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

impl<I: Io> Link for Driver<I> {
    fn state(&self) -> &Mutex<ClientState> {
        &self.state
    }

    fn queued(&self) {
        let Some(waker) = self.waker.lock().clone() else {
            return;
        };
        if !self.turn_taken.swap(true, Ordering::Relaxed) {
            // The first caller since the driver's turn writes at once (if the driver is not
            // busy on another thread), registering the driver's waker for what stays.
            if let Some(mut socket) = self.socket.try_lock() {
                let mut cx = Context::from_waker(&waker);
                self.write(&mut socket, &mut cx);
                return;
            }
        }
        waker.wake();
    }
}

/// A handle to open streams on a connection, and to ping it.
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
            handle: Some(Handle {
                link: self.link.clone(),
                id,
            }),
        }
    }

    /// An upload on stream `id` (a second handle).
    pub(crate) fn upload(&self, id: StreamId) -> Upload {
        self.link.state().lock().retain(id);
        Upload {
            handle: Handle {
                link: self.link.clone(),
                id,
            },
        }
    }

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

impl Drop for Handle {
    fn drop(&mut self) {
        let id = self.id;
        with_state(&*self.link, |state, wake| state.release(id, wake));
    }
}

/// The reply's head; then its body.
pub(crate) struct ReplyFuture {
    handle: Option<Handle>,
}

impl Future for ReplyFuture {
    type Output = Result<(Head, ReplyBody), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let handle = self.handle.as_ref().expect("polled after completion");
        let head = handle.link.state().lock().poll_head(handle.id, cx.waker());
        match head {
            None => Poll::Pending,
            Some(Err(e)) => Poll::Ready(Err(e)),
            Some(Ok(head)) => {
                let handle = self.handle.take().expect("checked");
                Poll::Ready(Ok((head, ReplyBody { handle })))
            }
        }
    }
}

/// A reply's body as it arrives.
pub(crate) struct ReplyBody {
    handle: Handle,
}

impl ReplyBody {
    /// The next piece of the body, `None` at its end.
    pub(crate) fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        let id = self.handle.id;
        let polled = with_state(&*self.handle.link, |state, _| {
            state.poll_data(id, cx.waker())
        });
        match polled {
            None => Poll::Pending,
            Some(Ok(data)) => Poll::Ready(data.map(Ok)),
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }
}

impl std::fmt::Debug for ReplyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplyBody({})", self.handle.id.0)
    }
}

/// A request body sent chunk by chunk.
pub(crate) struct Upload {
    handle: Handle,
}

impl Upload {
    /// Queues `data` (ending the body when `end`) and waits until the flow-control windows
    /// let all of it leave, so at most one chunk waits in memory.
    pub(crate) async fn send(&mut self, data: Bytes, end: bool) -> Result<(), Error> {
        let id = self.handle.id;
        let link = &*self.handle.link;
        with_state(link, |state, wake| state.send_data(id, data, end, wake))?;
        std::future::poll_fn(|cx| {
            let mut state = link.state().lock();
            if state.unsent(id) == 0 {
                return Poll::Ready(Ok(()));
            }
            if let Err(e) = state.wait_to_send(id, cx.waker()) {
                return Poll::Ready(Err(e));
            }
            Poll::Pending
        })
        .await
    }

    /// Gives up the request: the stream is reset with `CANCEL`.
    pub(crate) fn cancel(&self) {
        let id = self.handle.id;
        with_state(&*self.handle.link, |state, wake| {
            state.reset(id, Reason::CANCEL, wake)
        });
    }
}
