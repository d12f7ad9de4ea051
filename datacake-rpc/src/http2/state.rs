//! One HTTP/2 connection, either end, as a state machine: the connection's reader feeds it
//! the bytes that arrive ([`State::receive`]), callers open, answer, read and write streams
//! through it, and whoever writes takes the frames it queued ([`State::take_output`]). It
//! does no I/O itself (see [`super::io`]), so every rule is tested with frames alone.
//!
//! A client sends requests (`POST`, `:scheme http`, `:authority`, `:path`) and reads
//! replies; it switches server push off, so a `PUSH_PROMISE` is a protocol error. A server
//! reads the client's preface, takes requests up to its stream limit (refusing the rest
//! with `REFUSED_STREAM`, answering an oversized head with 431) and answers them; its
//! graceful close is a GOAWAY naming the last stream it took. Both ends send bodies within
//! the peer's flow-control windows, hand window room back as bytes are consumed (not as they
//! arrive, so a reader that stops reading stops the sender), check a body against its
//! Content-Length, and decode every header block, even of streams already given up, so the
//! compression context stays in step.

use std::collections::{HashMap, VecDeque};
use std::task::Waker;

use bytes::{Bytes, BytesMut};

use super::frame::{self, Frame, FrameError, Settings, StreamId, MAX_WINDOW};
use super::head::{self, Fields, Head};
use super::stream::{contradicts_length, Stream, LENGTH_CONTRADICTED};
use super::{hpack, Reason};

pub(crate) use super::stream::Wakeups;

mod client;
mod server;

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// What this end announces, and the windows it keeps open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) role: Role,
    /// Each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE).
    pub(crate) stream_window: u32,
    /// The connection's receive window.
    pub(crate) connection_window: u32,
    /// The largest frame accepted (SETTINGS_MAX_FRAME_SIZE).
    pub(crate) max_frame_size: u32,
    /// The largest header list accepted (SETTINGS_MAX_HEADER_LIST_SIZE).
    pub(crate) max_header_list_size: u32,
    /// The most streams the peer may open at once (a server's
    /// SETTINGS_MAX_CONCURRENT_STREAMS; a client accepts none).
    pub(crate) max_concurrent_streams: u32,
}

/// The settings a peer is assumed to have until its SETTINGS frame says otherwise (RFC 9113
/// §6.5.2), except the stream limit: 100 until told, as most servers allow at least that.
const DEFAULT_WINDOW: i64 = 65_535;
const DEFAULT_MAX_FRAME: u32 = 16_384;
const DEFAULT_MAX_STREAMS: u32 = 100;

/// Why a stream or the connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    /// The peer reset the stream (a server, with `REFUSED_STREAM`: refused it unprocessed).
    #[error("the peer reset the stream ({0})")]
    Reset(Reason),
    /// The server is closing the connection (GOAWAY) without having processed this stream:
    /// it may be sent again on another connection.
    #[error("the server is closing the connection and did not process the call")]
    NotProcessed,
    /// The peer broke the protocol on this stream; the stream was reset.
    #[error("the peer broke the protocol: {0}")]
    Protocol(&'static str),
    /// This end gave the stream up.
    #[error("the stream was abandoned ({0})")]
    Abandoned(Reason),
    /// The connection is gone (closed, broken, or a connection error): no stream on it can
    /// continue.
    #[error("connection closed: {0}")]
    Closed(String),
}

impl Error {
    /// The call was not processed by the server and may be sent again.
    pub(crate) fn is_unprocessed(&self) -> bool {
        matches!(
            self,
            Error::Reset(Reason::REFUSED_STREAM) | Error::NotProcessed
        )
    }
}

/// A header block being collected from HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct PartialBlock {
    stream: StreamId,
    end_stream: bool,
    block: BytesMut,
}

/// The most bytes of answers to the peer's frames (see `State::answers_queued`) waiting to be
/// written: far more than a peer that reads needs, small enough that one that does not
/// cannot grow the connection's memory by asking.
const MAX_QUEUED_ANSWERS: usize = 64 << 10;

/// The state of one connection.
#[derive(Debug)]
pub(crate) struct State {
    config: Config,
    /// Encoded frames waiting to be written: small frames gather in `scratch`; large payloads
    /// go in `segments` as they are, so they are never copied.
    segments: VecDeque<Bytes>,
    scratch: BytesMut,
    streams: HashMap<u32, Stream, foldhash::fast::RandomState>,
    /// A client's next stream id.
    next_id: u32,
    /// The highest stream id the peer opened (a server's).
    last_peer_id: u32,
    /// Streams open or half-closed.
    active: u32,
    /// Callers waiting for the server's stream limit to make room (a client's).
    waiting_to_open: Vec<Waker>,
    /// Requests taken, waiting for [`State::poll_accept`] (a server's).
    accepted: VecDeque<StreamId>,
    accept_waker: Option<Waker>,
    /// A server still waits for the client's preface.
    awaiting_preface: bool,
    peer_max_streams: u32,
    peer_initial_window: i64,
    peer_max_frame: u32,
    send_window: i64,
    recv_window: i64,
    /// Bytes consumed on the connection, not yet handed back.
    released: u32,
    decoder: hpack::Decoder,
    encoder: hpack::Encoder,
    /// Where header blocks are encoded before they are framed (kept, so no allocation).
    block: BytesMut,
    partial: Option<PartialBlock>,
    /// The last stream the peer said it will process (a client's, from the server's GOAWAY).
    going_away: Option<StreamId>,
    /// The last stream this end takes, once it sent GOAWAY (a server's graceful close).
    goaway_sent: Option<u32>,
    /// The peer sent GOAWAY: it opens no more streams.
    peer_leaving: bool,
    /// A client retired the connection: no new streams, it ends with its last one.
    retired: bool,
    /// The connection failed or closed; nothing more happens on it.
    closed: Option<Error>,
    /// Given up: nothing more is written either.
    abandoned: bool,
    /// Answers owed to the peer's own frames (PING and SETTINGS acknowledgements, resets of
    /// its broken streams) queued since the last write: a peer that keeps asking without
    /// reading the answers is cut off at [`MAX_QUEUED_ANSWERS`].
    answers_queued: usize,
    /// The payload of our ping awaiting its answer, and whether the answer came.
    ping: Option<[u8; 8]>,
    ponged: bool,
    ping_waker: Option<Waker>,
    pings_sent: u64,
}

impl State {
    /// A new connection: (a client's preface,) our settings and the connection window are
    /// queued.
    pub(crate) fn new(config: Config) -> Self {
        let mut state = Self {
            config,
            segments: VecDeque::new(),
            scratch: BytesMut::with_capacity(4096),
            streams: HashMap::default(),
            next_id: 1,
            last_peer_id: 0,
            active: 0,
            waiting_to_open: Vec::new(),
            accepted: VecDeque::new(),
            accept_waker: None,
            awaiting_preface: config.role == Role::Server,
            peer_max_streams: DEFAULT_MAX_STREAMS,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame: DEFAULT_MAX_FRAME,
            send_window: DEFAULT_WINDOW,
            recv_window: DEFAULT_WINDOW,
            released: 0,
            decoder: hpack::Decoder::new(hpack::DEFAULT_TABLE_SIZE),
            encoder: hpack::Encoder::default(),
            block: BytesMut::new(),
            partial: None,
            going_away: None,
            goaway_sent: None,
            peer_leaving: false,
            retired: false,
            closed: None,
            abandoned: false,
            answers_queued: 0,
            ping: None,
            ponged: false,
            ping_waker: None,
            pings_sent: 0,
        };
        let settings = match config.role {
            Role::Client => {
                state.scratch.extend_from_slice(frame::PREFACE);
                Settings {
                    enable_push: Some(false),
                    ..Settings::default()
                }
            }
            Role::Server => Settings {
                max_concurrent_streams: Some(config.max_concurrent_streams),
                ..Settings::default()
            },
        };
        let settings = Settings {
            initial_window_size: Some(config.stream_window),
            max_frame_size: Some(config.max_frame_size),
            max_header_list_size: Some(config.max_header_list_size),
            ..settings
        };
        frame::encode_settings(&mut state.scratch, &settings);
        let grow = i64::from(config.connection_window) - DEFAULT_WINDOW;
        if grow > 0 {
            frame::encode_window_update(&mut state.scratch, StreamId(0), grow as u32);
            state.recv_window += grow;
        }
        state
    }

    /// Whether frames are waiting to be written.
    pub(crate) fn has_output(&self) -> bool {
        !self.scratch.is_empty() || !self.segments.is_empty()
    }

    /// Bytes of the frames waiting to be written.
    pub(crate) fn queued_len(&self) -> usize {
        self.scratch.len() + self.segments.iter().map(Bytes::len).sum::<usize>()
    }

    /// The frames waiting to be written, in order.
    pub(crate) fn take_output(&mut self, into: &mut VecDeque<Bytes>) {
        self.answers_queued = 0;
        if !self.scratch.is_empty() {
            self.segments.push_back(self.scratch.split().freeze());
        }
        into.append(&mut self.segments);
    }

    /// The connection's failure, if it failed.
    pub(crate) fn closed(&self) -> Option<&Error> {
        self.closed.as_ref()
    }

    /// Whether any stream is open, or a request waits to be accepted.
    pub(crate) fn has_streams(&self) -> bool {
        self.active > 0 || !self.accepted.is_empty()
    }

    /// Whether the connection is done: closed, or closing (GOAWAY sent or received, or a
    /// client retired it) with no stream left.
    pub(crate) fn is_finished(&self) -> bool {
        let closing = self.goaway_sent.is_some() || self.peer_leaving || self.retired;
        self.closed.is_some() || (closing && !self.has_streams())
    }

    /// Adds a handle to `id` (an upload beside a reply).
    pub(crate) fn retain(&mut self, id: StreamId) {
        if let Some(stream) = self.streams.get_mut(&id.0) {
            stream.handles += 1;
        }
    }

    /// Drops a handle to `id`; with the last one the stream is forgotten, and a stream still
    /// open is reset: with NO_ERROR when this end finished its side (a server that answered
    /// before reading the whole request), else with CANCEL.
    pub(crate) fn release(&mut self, id: StreamId, wake: &mut Wakeups) {
        let Some(stream) = self.streams.get_mut(&id.0) else {
            return;
        };
        stream.handles = stream.handles.saturating_sub(1);
        if stream.handles > 0 {
            return;
        }
        if !stream.is_closed() && self.closed.is_none() {
            let answered = self.config.role == Role::Server && stream.local_ended;
            let reason = if answered && stream.pending.is_empty() {
                Reason::NO_ERROR
            } else {
                Reason::CANCEL
            };
            frame::encode_rst_stream(&mut self.scratch, id, reason);
        }
        let was_active = stream.active;
        // Bytes never read are handed back to the connection.
        let unread = stream.data.bytes();
        self.streams.remove(&id.0);
        self.release_connection(unread);
        if was_active {
            self.active -= 1;
            wake.append(&mut self.waiting_to_open);
        }
    }

    /// Queues `data` on `id`, ending this end's side after it when `end`; what the windows
    /// do not allow yet waits and leaves as WINDOW_UPDATEs arrive.
    pub(crate) fn send_data(
        &mut self,
        id: StreamId,
        data: Bytes,
        end: bool,
        wake: &mut Wakeups,
    ) -> Result<(), Error> {
        let stream = self.stream_mut(id)?;
        if let Some(error) = &stream.failed {
            return Err(error.clone());
        }
        if stream.local_ended {
            return Err(Error::Closed("the body was already ended".into()));
        }
        if !data.is_empty() {
            stream.pending.push_back(data);
        }
        stream.pending_end = end;
        if end {
            stream.local_ended = true;
        }
        self.flush_stream(id, wake);
        Ok(())
    }

    /// Bytes queued on `id` that still wait for window room (0 once the stream is gone).
    pub(crate) fn unsent(&self, id: StreamId) -> usize {
        self.streams.get(&id.0).map_or(0, |s| s.pending.bytes())
    }

    /// Registers `waker` to be woken when `id` can send more (or failed).
    pub(crate) fn wait_to_send(&mut self, id: StreamId, waker: &Waker) -> Result<(), Error> {
        let stream = self.stream_mut(id)?;
        if let Some(error) = &stream.failed {
            return Err(error.clone());
        }
        stream.writer = Some(waker.clone());
        Ok(())
    }

    /// Resets `id` (this end gives up: an upload failed or was abandoned, a reply stalled).
    pub(crate) fn reset(&mut self, id: StreamId, reason: Reason, wake: &mut Wakeups) {
        let Some(stream) = self.streams.get_mut(&id.0) else {
            return;
        };
        if stream.is_closed() {
            return;
        }
        stream.fail(Error::Abandoned(reason), wake);
        if self.closed.is_none() {
            frame::encode_rst_stream(&mut self.scratch, id, reason);
        }
        self.deactivate(id, wake);
    }

    /// The next piece of the peer's body and whether it is the last (`Some(Ok(None))` at
    /// the end), handing its bytes back to the peer's windows; otherwise `waker` is woken
    /// when more arrives.
    pub(crate) fn poll_data(
        &mut self,
        id: StreamId,
        waker: &Waker,
    ) -> Option<Result<Option<(Bytes, bool)>, Error>> {
        let half_window = self.config.stream_window / 2;
        let Some(stream) = self.streams.get_mut(&id.0) else {
            return Some(Err(self.gone()));
        };
        if let Some(data) = stream.data.pop_front() {
            let len = data.len();
            if !stream.remote_ended {
                stream.released += len as u32;
                if stream.released >= half_window {
                    let increment = std::mem::take(&mut stream.released);
                    stream.recv_window += i64::from(increment);
                    frame::encode_window_update(&mut self.scratch, id, increment);
                }
            }
            let last = stream.remote_ended && stream.data.is_empty() && stream.failed.is_none();
            self.release_connection(len);
            return Some(Ok(Some((data, last))));
        }
        if let Some(error) = &stream.failed {
            return Some(Err(error.clone()));
        }
        if stream.remote_ended {
            return Some(Ok(None));
        }
        stream.reader = Some(waker.clone());
        None
    }

    /// Whether the peer's body is complete and fully read.
    #[cfg(test)]
    fn is_body_done(&self, id: StreamId) -> bool {
        self.streams
            .get(&id.0)
            .is_some_and(|s| s.remote_ended && s.data.is_empty() && s.failed.is_none())
    }

    /// Sends a ping unless one is awaiting its answer; `Err` if the connection is closed.
    pub(crate) fn send_ping(&mut self) -> Result<(), Error> {
        if let Some(error) = &self.closed {
            return Err(error.clone());
        }
        if self.ping.is_none() {
            self.pings_sent += 1;
            let payload = self.pings_sent.to_be_bytes();
            frame::encode_ping(&mut self.scratch, false, payload);
            self.ping = Some(payload);
            self.ponged = false;
        }
        Ok(())
    }

    /// Whether the last ping was answered (taking the answer); otherwise `waker` is woken
    /// when it is.
    pub(crate) fn poll_pong(&mut self, waker: &Waker) -> Option<Result<(), Error>> {
        if std::mem::take(&mut self.ponged) {
            return Some(Ok(()));
        }
        if let Some(error) = &self.closed {
            return Some(Err(error.clone()));
        }
        self.ping_waker = Some(waker.clone());
        None
    }

    /// Ends the connection: every stream not yet ended by the peer fails with `error` (a
    /// client's streams the server never saw, as [`Error::NotProcessed`]) and every waiting
    /// caller is woken.
    pub(crate) fn close(&mut self, error: Error, wake: &mut Wakeups) {
        if self.closed.is_some() {
            return;
        }
        let last = self.going_away.map_or(u32::MAX, |s| s.0);
        for (id, stream) in self.streams.iter_mut() {
            // A body the peer ended stays readable to its end.
            if !stream.remote_ended {
                let error = if *id > last {
                    Error::NotProcessed
                } else {
                    error.clone()
                };
                stream.fail(error, wake);
            }
            stream.wake_all(wake);
        }
        wake.append(&mut self.waiting_to_open);
        wake.extend(self.ping_waker.take());
        wake.extend(self.accept_waker.take());
        self.closed = Some(error);
    }

    /// Gives the connection up at once (its peer stopped answering): every stream fails,
    /// and nothing more is written.
    pub(crate) fn abandon(&mut self, why: &str, wake: &mut Wakeups) {
        self.close(Error::Closed(why.to_owned()), wake);
        self.abandoned = true;
        self.scratch.clear();
        self.segments.clear();
    }

    /// Whether the connection was given up (see [`abandon`](Self::abandon)).
    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned
    }

    /// Closes the connection because the peer broke the protocol: GOAWAY with `reason`.
    fn fail_connection(&mut self, reason: Reason, what: &str, wake: &mut Wakeups) {
        if self.closed.is_none() {
            let last = StreamId(self.last_peer_id);
            frame::encode_goaway(&mut self.scratch, last, reason, what.as_bytes());
        }
        self.close(
            Error::Closed(format!("the peer broke the protocol ({reason}): {what}")),
            wake,
        );
    }

    /// Handles the bytes that arrived: every whole frame in `buf` (the rest stays for the
    /// next read). Returns `false` once the connection is closed.
    pub(crate) fn receive(&mut self, buf: &mut BytesMut, wake: &mut Wakeups) -> bool {
        if self.awaiting_preface {
            let n = buf.len().min(frame::PREFACE.len());
            if buf[..n] != frame::PREFACE[..n] {
                self.fail_connection(Reason::PROTOCOL_ERROR, "not the HTTP/2 preface", wake);
                return false;
            }
            if n < frame::PREFACE.len() {
                return true;
            }
            let _ = buf.split_to(n);
            self.awaiting_preface = false;
            wake.extend(self.accept_waker.take());
        }
        while self.closed.is_none() {
            match frame::decode(buf, self.config.max_frame_size) {
                Ok(Some(frame)) => self.on_frame(frame, wake),
                Ok(None) => break,
                Err(FrameError::Connection { reason, what }) => {
                    self.fail_connection(reason, what, wake)
                }
                Err(FrameError::Stream {
                    stream,
                    reason,
                    what,
                }) => self.fail_stream(stream, reason, what, wake),
            }
        }
        self.closed.is_none()
    }

    fn on_frame(&mut self, frame: Frame, wake: &mut Wakeups) {
        if let Some(partial) = &self.partial {
            let continues =
                matches!(&frame, Frame::Continuation { stream, .. } if *stream == partial.stream);
            if !continues {
                return self.fail_connection(
                    Reason::PROTOCOL_ERROR,
                    "a header block was interrupted by another frame",
                    wake,
                );
            }
        }
        match frame {
            Frame::Data {
                stream,
                end_stream,
                payload,
                flow_len,
            } => self.on_data(stream, end_stream, payload, flow_len, wake),
            Frame::Headers {
                stream,
                end_stream,
                end_headers,
                block,
            } => {
                if end_headers {
                    self.on_header_block(stream, end_stream, &block, wake);
                } else {
                    self.partial = Some(PartialBlock {
                        stream,
                        end_stream,
                        block: BytesMut::from(&block[..]),
                    });
                    self.check_partial_size(wake);
                }
            }
            Frame::Continuation {
                end_headers, block, ..
            } => {
                let Some(partial) = &mut self.partial else {
                    return self.fail_connection(
                        Reason::PROTOCOL_ERROR,
                        "a continuation without a header block",
                        wake,
                    );
                };
                partial.block.extend_from_slice(&block);
                if end_headers {
                    let partial = self.partial.take().expect("checked above");
                    self.on_header_block(partial.stream, partial.end_stream, &partial.block, wake);
                } else {
                    self.check_partial_size(wake);
                }
            }
            Frame::Priority { .. } | Frame::Unknown { .. } => {}
            Frame::RstStream { stream, reason } => {
                if self.known(stream, wake) {
                    if let Some(s) = self.streams.get_mut(&stream.0) {
                        s.fail(Error::Reset(reason), wake);
                    }
                    self.deactivate(stream, wake);
                }
            }
            Frame::Settings(settings) => self.on_settings(settings, wake),
            Frame::SettingsAck => {}
            Frame::PushPromise { .. } => self.fail_connection(
                Reason::PROTOCOL_ERROR,
                "a push promise, which this end does not accept",
                wake,
            ),
            Frame::Ping {
                ack: false,
                payload,
            } => {
                frame::encode_ping(&mut self.scratch, true, payload);
                self.answered(frame::HEADER_LEN + 8, wake);
            }
            Frame::Ping { ack: true, payload } => {
                if self.ping == Some(payload) {
                    self.ping = None;
                    self.ponged = true;
                    wake.extend(self.ping_waker.take());
                }
            }
            Frame::GoAway {
                last_stream,
                reason,
                ..
            } => self.on_goaway(last_stream, reason, wake),
            Frame::WindowUpdate { stream, increment } => {
                self.on_window_update(stream, increment, wake)
            }
        }
    }

    /// The most header-block bytes (HEADERS plus CONTINUATIONs) buffered before decoding: a
    /// compressed block is rarely larger than the list it decodes to, so twice the list limit
    /// leaves room without letting a peer grow the buffer without end.
    fn check_partial_size(&mut self, wake: &mut Wakeups) {
        let limit = 2 * self.config.max_header_list_size as usize + 1024;
        let too_large = self.partial.as_ref().is_some_and(|p| p.block.len() > limit);
        if too_large {
            self.fail_connection(Reason::ENHANCE_YOUR_CALM, "a header block too large", wake);
        }
    }

    /// Whether `id` is a stream this end tracks. A frame for a stream never opened is a
    /// connection error; frames for streams already forgotten are ignored.
    fn known(&mut self, id: StreamId, wake: &mut Wakeups) -> bool {
        if self.streams.contains_key(&id.0) {
            return true;
        }
        let never_opened = match self.config.role {
            Role::Client => !id.is_client_initiated() || id.0 >= self.next_id,
            Role::Server => !id.is_client_initiated() || id.0 > self.last_peer_id,
        };
        if never_opened {
            self.fail_connection(
                Reason::PROTOCOL_ERROR,
                "a frame on a stream that was never opened",
                wake,
            );
        }
        false
    }

    fn on_data(
        &mut self,
        id: StreamId,
        end_stream: bool,
        payload: Bytes,
        flow_len: u32,
        wake: &mut Wakeups,
    ) {
        self.recv_window -= i64::from(flow_len);
        if self.recv_window < 0 {
            return self.fail_connection(
                Reason::FLOW_CONTROL_ERROR,
                "data beyond the connection window",
                wake,
            );
        }
        if !self.known(id, wake) {
            self.release_connection(flow_len as usize);
            return;
        }
        // Padding is never handed to a reader: its room comes back at once.
        self.release_connection(flow_len as usize - payload.len());
        let stream = self.streams.get_mut(&id.0).expect("known");
        if stream.failed.is_some() {
            let unread = payload.len();
            self.release_connection(unread);
            return;
        }
        if !stream.head_received {
            return self.fail_stream(id, Reason::PROTOCOL_ERROR, "data before the head", wake);
        }
        if stream.remote_ended {
            return self.fail_stream(id, Reason::STREAM_CLOSED, "data after the end", wake);
        }
        stream.recv_window -= i64::from(flow_len);
        if stream.recv_window < 0 {
            return self.fail_stream(
                id,
                Reason::FLOW_CONTROL_ERROR,
                "data beyond the stream window",
                wake,
            );
        }
        stream.received_len += payload.len() as u64;
        if contradicts_length(stream.expected_len, stream.received_len, end_stream) {
            return self.fail_stream(id, Reason::PROTOCOL_ERROR, LENGTH_CONTRADICTED, wake);
        }
        if !payload.is_empty() {
            stream.data.push_back(payload);
        }
        wake.extend(stream.reader.take());
        if end_stream {
            stream.remote_ended = true;
            self.deactivate(id, wake);
        }
    }

    fn on_header_block(
        &mut self,
        id: StreamId,
        end_stream: bool,
        block: &[u8],
        wake: &mut Wakeups,
    ) {
        let limit = self.config.max_header_list_size as usize;
        let mut fields = Fields::default();
        match self
            .decoder
            .decode(block, limit, |name, value| fields.add(name, value))
        {
            Ok(()) => {}
            Err(hpack::HpackError::ListTooLarge) => fields.too_large(),
            Err(_) => {
                return self.fail_connection(
                    Reason::COMPRESSION_ERROR,
                    "a header block that does not decode",
                    wake,
                )
            }
        }
        let opens = self.config.role == Role::Server && id.0 > self.last_peer_id;
        if opens {
            return self.on_request(id, end_stream, fields, wake);
        }
        if !self.known(id, wake) {
            return;
        }
        let stream = self.streams.get_mut(&id.0).expect("known");
        if stream.failed.is_some() {
            return;
        }
        if stream.remote_ended {
            return self.fail_stream(id, Reason::STREAM_CLOSED, "headers after the end", wake);
        }
        if stream.head_received {
            // Trailers: accepted (and not read) only as the end of the body.
            if !end_stream {
                let what = "trailers that do not end the stream";
                return self.fail_stream(id, Reason::PROTOCOL_ERROR, what, wake);
            }
            if let Err(what) = fields.check_trailers() {
                return self.fail_stream(id, Reason::PROTOCOL_ERROR, what, wake);
            }
            if contradicts_length(stream.expected_len, stream.received_len, true) {
                return self.fail_stream(id, Reason::PROTOCOL_ERROR, LENGTH_CONTRADICTED, wake);
            }
            stream.remote_ended = true;
            wake.extend(stream.reader.take());
            return self.deactivate(id, wake);
        }
        // A reply's head (only a client has streams it opened).
        let head = match fields.into_response() {
            Ok(Some(head)) => head,
            // 1xx heads precede the real one; none may end the stream.
            Ok(None) if !end_stream => return,
            Ok(None) => {
                let what = "an informational reply that ends the stream";
                return self.fail_stream(id, Reason::PROTOCOL_ERROR, what, wake);
            }
            Err(what) => return self.fail_stream(id, Reason::PROTOCOL_ERROR, what, wake),
        };
        stream.expected_len = head.content_length;
        if contradicts_length(stream.expected_len, 0, end_stream) {
            return self.fail_stream(id, Reason::PROTOCOL_ERROR, LENGTH_CONTRADICTED, wake);
        }
        stream.head = Some(Head::Response(head));
        stream.head_received = true;
        stream.remote_ended = end_stream;
        wake.extend(stream.reader.take());
        if end_stream {
            self.deactivate(id, wake);
        }
    }

    fn on_settings(&mut self, settings: Settings, wake: &mut Wakeups) {
        if self.config.role == Role::Client && settings.enable_push == Some(true) {
            return self.fail_connection(Reason::PROTOCOL_ERROR, "a server enabled push", wake);
        }
        if let Some(limit) = settings.header_table_size {
            self.encoder.set_peer_limit(limit as usize);
        }
        if let Some(max) = settings.max_concurrent_streams {
            self.peer_max_streams = max;
            wake.append(&mut self.waiting_to_open);
        }
        if let Some(size) = settings.max_frame_size {
            self.peer_max_frame = size;
        }
        if let Some(window) = settings.initial_window_size {
            let delta = i64::from(window) - self.peer_initial_window;
            self.peer_initial_window = i64::from(window);
            let ids: Vec<u32> = self.streams.keys().copied().collect();
            for id in ids {
                let stream = self.streams.get_mut(&id).expect("listed");
                stream.send_window += delta;
                if stream.send_window > i64::from(MAX_WINDOW) {
                    return self.fail_connection(
                        Reason::FLOW_CONTROL_ERROR,
                        "a stream window grew past 2^31-1",
                        wake,
                    );
                }
                self.flush_stream(StreamId(id), wake);
            }
        }
        frame::encode_settings_ack(&mut self.scratch);
        self.answered(frame::HEADER_LEN, wake);
    }

    /// Counts `len` bytes of answers queued to the peer's own frames; a peer asking for more
    /// than [`MAX_QUEUED_ANSWERS`] without reading them is cut off.
    fn answered(&mut self, len: usize, wake: &mut Wakeups) {
        self.answers_queued += len;
        if self.answers_queued > MAX_QUEUED_ANSWERS {
            self.fail_connection(
                Reason::ENHANCE_YOUR_CALM,
                "the peer does not read the answers it asks for",
                wake,
            );
        }
    }

    fn on_goaway(&mut self, last: StreamId, reason: Reason, wake: &mut Wakeups) {
        if reason != Reason::NO_ERROR {
            tracing::debug!(%reason, "the peer is closing the connection");
        }
        self.peer_leaving = true;
        if self.config.role == Role::Server {
            return;
        }
        let last = self.going_away.map_or(last, |earlier| earlier.min(last));
        self.going_away = Some(last);
        let unprocessed: Vec<u32> = self
            .streams
            .keys()
            .copied()
            .filter(|id| *id > last.0)
            .collect();
        for id in unprocessed {
            if let Some(stream) = self.streams.get_mut(&id) {
                stream.fail(Error::NotProcessed, wake);
            }
            self.deactivate(StreamId(id), wake);
        }
        wake.append(&mut self.waiting_to_open);
    }

    fn on_window_update(&mut self, id: StreamId, increment: u32, wake: &mut Wakeups) {
        if id.0 == 0 {
            self.send_window += i64::from(increment);
            if self.send_window > i64::from(MAX_WINDOW) {
                return self.fail_connection(
                    Reason::FLOW_CONTROL_ERROR,
                    "the connection window grew past 2^31-1",
                    wake,
                );
            }
            let waiting: Vec<u32> = self
                .streams
                .iter()
                .filter(|(_, s)| !s.pending.is_empty())
                .map(|(id, _)| *id)
                .collect();
            for id in waiting {
                self.flush_stream(StreamId(id), wake);
            }
            return;
        }
        if !self.known(id, wake) {
            return;
        }
        let stream = self.streams.get_mut(&id.0).expect("known");
        stream.send_window += i64::from(increment);
        if stream.send_window > i64::from(MAX_WINDOW) {
            return self.fail_stream(
                id,
                Reason::FLOW_CONTROL_ERROR,
                "a stream window grew past 2^31-1",
                wake,
            );
        }
        self.flush_stream(id, wake);
    }

    /// Sends what `id` has pending, as far as both windows allow.
    fn flush_stream(&mut self, id: StreamId, wake: &mut Wakeups) {
        let Some(stream) = self.streams.get_mut(&id.0) else {
            return;
        };
        if stream.failed.is_some() {
            return;
        }
        let mut sent_any = false;
        while let Some(front) = stream.pending.front_mut() {
            let room = stream.send_window.min(self.send_window);
            if room <= 0 {
                break;
            }
            let take = front
                .len()
                .min(room as usize)
                .min(self.peer_max_frame as usize);
            let piece = if take == front.len() {
                stream.pending.pop_front().expect("front")
            } else {
                front.split_to(take)
            };
            stream.send_window -= take as i64;
            self.send_window -= take as i64;
            let end = stream.pending_end && stream.pending.is_empty();
            push_data(&mut self.scratch, &mut self.segments, id, piece, end);
            sent_any = true;
        }
        if stream.pending.is_empty() && stream.pending_end {
            if !sent_any {
                // Nothing was left to carry END_STREAM: an empty DATA frame does.
                push_data(
                    &mut self.scratch,
                    &mut self.segments,
                    id,
                    Bytes::new(),
                    true,
                );
            }
            stream.pending_end = false;
        }
        if sent_any || stream.pending.is_empty() {
            wake.extend(stream.writer.take());
        }
        if stream.is_closed() {
            self.deactivate(id, wake);
        }
    }

    fn stream_mut(&mut self, id: StreamId) -> Result<&mut Stream, Error> {
        if !self.streams.contains_key(&id.0) {
            return Err(self.gone());
        }
        Ok(self.streams.get_mut(&id.0).expect("checked"))
    }

    /// What an operation on a stream no longer tracked reports.
    fn gone(&self) -> Error {
        self.closed
            .clone()
            .unwrap_or_else(|| Error::Closed("the stream is gone".into()))
    }

    /// Frames a message head on `id`: its block is built in the kept buffer, starting with the
    /// table size updates the peer is owed, then `fields` (which may index into the peer's
    /// table through the encoder).
    fn queue_head(
        &mut self,
        id: StreamId,
        end_stream: bool,
        fields: impl FnOnce(&mut hpack::Encoder, &mut BytesMut),
    ) {
        let mut block = std::mem::take(&mut self.block);
        block.clear();
        self.encoder.begin(&mut block);
        fields(&mut self.encoder, &mut block);
        frame::encode_headers(
            &mut self.scratch,
            id,
            &block,
            end_stream,
            self.peer_max_frame,
        );
        self.block = block;
    }

    /// Resets a stream the peer opened without taking it (RST_STREAM with `reason`), counted
    /// as an answer the peer asked for.
    fn refuse(&mut self, id: StreamId, reason: Reason, wake: &mut Wakeups) {
        frame::encode_rst_stream(&mut self.scratch, id, reason);
        self.answered(frame::HEADER_LEN + 4, wake);
    }

    /// Fails `id` because the peer broke the protocol on it: RST_STREAM with `reason`.
    fn fail_stream(
        &mut self,
        id: StreamId,
        reason: Reason,
        what: &'static str,
        wake: &mut Wakeups,
    ) {
        if let Some(stream) = self.streams.get_mut(&id.0) {
            stream.fail(Error::Protocol(what), wake);
            frame::encode_rst_stream(&mut self.scratch, id, reason);
            self.deactivate(id, wake);
        } else if self.known(id, wake) {
            frame::encode_rst_stream(&mut self.scratch, id, reason);
        }
        self.answered(frame::HEADER_LEN + 4, wake);
    }

    /// Stops counting a closed stream as active, and forgets it if no handle is left.
    fn deactivate(&mut self, id: StreamId, wake: &mut Wakeups) {
        let Some(stream) = self.streams.get_mut(&id.0) else {
            return;
        };
        if stream.active && stream.is_closed() {
            stream.active = false;
            self.active -= 1;
            wake.append(&mut self.waiting_to_open);
            if self.active == 0 && self.accepted.is_empty() {
                // A closing server waits in `accept` for its last stream to end.
                wake.extend(self.accept_waker.take());
            }
        }
        if stream.handles == 0 && !stream.active && stream.head.is_none() {
            self.streams.remove(&id.0);
        }
    }

    /// Hands `len` consumed bytes back to the connection window, in WINDOW_UPDATEs of at
    /// least half the window.
    fn release_connection(&mut self, len: usize) {
        self.released = self.released.saturating_add(len as u32);
        if self.released >= self.config.connection_window / 2 {
            let increment = std::mem::take(&mut self.released);
            self.recv_window += i64::from(increment);
            frame::encode_window_update(&mut self.scratch, StreamId(0), increment);
        }
    }
}

/// Appends a message's regular headers to a header block.
fn encode_headers(block: &mut BytesMut, headers: &http::HeaderMap) {
    for (name, value) in headers {
        if head::is_connection_specific(name, value.as_bytes()) {
            // HTTP/2 forbids them (a handler's reply header, say): the peer would refuse the
            // whole message.
            tracing::debug!(header = %name, "dropping a header HTTP/2 does not allow");
            continue;
        }
        if value.is_sensitive() {
            hpack::encode_sensitive(block, name.as_str().as_bytes(), value.as_bytes());
        } else {
            hpack::encode_field(block, name.as_str().as_bytes(), value.as_bytes());
        }
    }
}

/// Appends a DATA frame: small payloads are copied into `scratch` beside the other frames,
/// large ones are kept as they are (their head in `scratch`).
fn push_data(
    scratch: &mut BytesMut,
    segments: &mut VecDeque<Bytes>,
    id: StreamId,
    payload: Bytes,
    end: bool,
) {
    const COPY_AT_MOST: usize = 16 << 10;
    if payload.len() <= COPY_AT_MOST {
        frame::encode_data(scratch, id, &payload, end);
        return;
    }
    frame::encode_data_head(scratch, id, payload.len(), end);
    segments.push_back(scratch.split().freeze());
    segments.push_back(payload);
}

#[cfg(test)]
mod tests;
