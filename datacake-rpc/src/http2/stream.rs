//! One stream's bookkeeping (what arrived, what waits to leave, who waits on it), and the
//! wakers a change of state owes, woken once the state's lock is released.

use std::collections::VecDeque;
use std::task::Waker;

use bytes::Bytes;

use super::head::Head;
use super::state::Error;

/// One stream.
#[derive(Debug)]
pub(super) struct Stream {
    /// The peer's head once it arrived (`None` again once taken).
    pub(super) head: Option<Head>,
    pub(super) head_received: bool,
    /// Body bytes not yet taken.
    pub(super) data: Chunks,
    /// The peer ended its side (END_STREAM).
    pub(super) remote_ended: bool,
    /// The body length the peer announced, and what arrived so far.
    pub(super) expected_len: Option<u64>,
    pub(super) received_len: u64,
    /// The stream failed; every further operation on it reports this.
    pub(super) failed: Option<Error>,
    /// This end ended its side (END_STREAM queued, or the stream was reset).
    pub(super) local_ended: bool,
    /// A server's reply head was sent.
    pub(super) responded: bool,
    /// How much more the peer may send on the stream.
    pub(super) recv_window: i64,
    /// Bytes consumed that are not yet handed back to the peer.
    pub(super) released: u32,
    /// How much more this end may send on the stream.
    pub(super) send_window: i64,
    /// Body bytes waiting for window room, and whether END_STREAM follows them.
    pub(super) pending: Chunks,
    pub(super) pending_end: bool,
    /// The caller waiting for the head or for data.
    pub(super) reader: Option<Waker>,
    /// The caller waiting for send capacity.
    pub(super) writer: Option<Waker>,
    /// The caller waiting to learn whether the peer reset the stream.
    pub(super) watcher: Option<Waker>,
    /// Handles still held; at zero the stream is forgotten.
    pub(super) handles: u8,
    /// Counted in `active` (open or half-closed).
    pub(super) active: bool,
}

impl Stream {
    pub(super) fn new(recv_window: u32, send_window: i64, handles: u8) -> Self {
        Stream {
            head: None,
            head_received: false,
            data: Chunks::default(),
            remote_ended: false,
            expected_len: None,
            received_len: 0,
            failed: None,
            local_ended: false,
            responded: false,
            recv_window: i64::from(recv_window),
            released: 0,
            send_window,
            pending: Chunks::default(),
            pending_end: false,
            reader: None,
            writer: None,
            watcher: None,
            handles,
            active: true,
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.failed.is_some() || (self.remote_ended && self.local_ended && self.pending.is_empty())
    }

    /// Fails the stream (if it had not failed or finished), waking whoever waits on it.
    pub(super) fn fail(&mut self, error: Error, wake: &mut Wakeups) {
        if self.failed.is_none() && !(self.remote_ended && self.local_ended) {
            self.failed = Some(error);
            self.local_ended = true;
            self.pending.clear();
        }
        self.wake_all(wake);
    }

    pub(super) fn wake_all(&mut self, wake: &mut Wakeups) {
        wake.extend(self.reader.take());
        wake.extend(self.writer.take());
        wake.extend(self.watcher.take());
    }
}

/// What a stream reset for [`contradicts_length`] says.
pub(super) const LENGTH_CONTRADICTED: &str = "a body that contradicts its content-length";

/// Whether `received` body bytes contradict the length the head announced (RFC 9113
/// §8.1.1): more than it, or, once the body `ended`, other than it.
pub(super) fn contradicts_length(announced: Option<u64>, received: u64, ended: bool) -> bool {
    announced.is_some_and(|n| received > n || (ended && received != n))
}

/// Body bytes queued on a stream. Most bodies are one chunk, kept inline; only a second one
/// allocates.
#[derive(Debug, Default)]
pub(super) struct Chunks {
    /// The oldest chunk; `None` only when `rest` is empty too.
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
}

impl Chunks {
    pub(super) fn push_back(&mut self, chunk: Bytes) {
        if self.first.is_none() {
            self.first = Some(chunk);
        } else {
            self.rest.push_back(chunk);
        }
    }

    pub(super) fn pop_front(&mut self) -> Option<Bytes> {
        let first = self.first.take();
        if first.is_some() {
            self.first = self.rest.pop_front();
        }
        first
    }

    pub(super) fn front_mut(&mut self) -> Option<&mut Bytes> {
        self.first.as_mut()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub(super) fn clear(&mut self) {
        self.first = None;
        self.rest.clear();
    }

    /// The bytes queued.
    pub(super) fn bytes(&self) -> usize {
        self.first.iter().chain(&self.rest).map(Bytes::len).sum()
    }
}

/// Wakers to wake once the state's lock is released: a few kept inline (a frame or a call
/// usually wakes one or two), any more on the heap.
#[derive(Default)]
pub(crate) struct Wakeups {
    inline: [Option<Waker>; 4],
    more: Vec<Waker>,
}

impl Wakeups {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(super) fn push(&mut self, waker: Waker) {
        match self.inline.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(waker),
            None => self.more.push(waker),
        }
    }

    pub(super) fn extend(&mut self, wakers: impl IntoIterator<Item = Waker>) {
        for waker in wakers {
            self.push(waker);
        }
    }

    pub(super) fn append(&mut self, wakers: &mut Vec<Waker>) {
        self.extend(wakers.drain(..));
    }

    /// Wakes them all.
    pub(crate) fn wake_all(self) {
        self.inline.into_iter().flatten().for_each(Waker::wake);
        self.more.into_iter().for_each(Waker::wake);
    }
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.inline.iter().flatten().count() + self.more.len();
        write!(f, "Wakeups({n})")
    }
}
