//! The client side of one HTTP/2 connection, as a state machine: callers open streams and
//! queue frames, the connection's reader feeds it the frames that arrive, and whoever writes
//! takes the queued bytes ([`ClientState::take_output`]). It does no I/O itself (see
//! [`super::io`]), so every rule below is tested with frames alone.
//!
//! What it speaks: requests as `POST` with `:scheme http`, `:authority` and `:path`, bodies
//! within the server's flow-control windows, replies read as they arrive with window room
//! given back as the caller consumes them. Server push is switched off in the settings; a
//! `PUSH_PROMISE` is a protocol error. Header blocks are decoded even for streams the client
//! already gave up, so the compression context stays in step.

use std::collections::{HashMap, VecDeque};
use std::task::Waker;

use bytes::{Bytes, BytesMut};

use super::frame::{self, Frame, FrameError, Settings, StreamId, MAX_WINDOW};
use super::hpack;
use super::Reason;

/// What the client announces, and the windows it keeps open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientConfig {
    /// Each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE).
    pub(crate) stream_window: u32,
    /// The connection's receive window.
    pub(crate) connection_window: u32,
    /// The largest frame accepted (SETTINGS_MAX_FRAME_SIZE).
    pub(crate) max_frame_size: u32,
    /// The largest reply header list accepted (SETTINGS_MAX_HEADER_LIST_SIZE).
    pub(crate) max_header_list_size: u32,
}

/// The most header-block bytes (HEADERS plus CONTINUATIONs) buffered before decoding: a
/// compressed block is rarely larger than the list it decodes to, so twice the list limit
/// leaves room without letting a peer grow the buffer without end.
fn max_block_size(config: &ClientConfig) -> usize {
    2 * config.max_header_list_size as usize + 1024
}

/// The settings a server is assumed to have until its SETTINGS frame says otherwise (RFC
/// 9113 §6.5.2), except the stream limit: 100 until told, as most servers allow at least that.
const DEFAULT_WINDOW: i64 = 65_535;
const DEFAULT_MAX_FRAME: u32 = 16_384;
const DEFAULT_MAX_STREAMS: u32 = 100;

/// A reply's head: its status and headers.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: http::StatusCode,
    pub(crate) headers: http::HeaderMap,
}

/// Why a stream or the connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    /// The server reset the stream (or, with `REFUSED_STREAM`, refused it unprocessed).
    #[error("the server reset the stream ({0})")]
    Reset(Reason),
    /// The server is closing the connection (GOAWAY) without having processed this stream:
    /// it may be sent again on another connection.
    #[error("the server is closing the connection and did not process the call")]
    NotProcessed,
    /// The server broke the protocol on this stream; the stream was reset.
    #[error("the server's reply broke the protocol: {0}")]
    Protocol(&'static str),
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

/// One stream the client opened.
#[derive(Debug)]
struct Stream {
    /// The reply's head once it arrived (`None` after the caller took it).
    head: Option<Head>,
    head_received: bool,
    /// Reply bytes not yet taken by the caller.
    data: VecDeque<Bytes>,
    /// The server ended its side (END_STREAM).
    remote_ended: bool,
    /// The stream failed; every further operation on it reports this.
    failed: Option<Error>,
    /// We ended our side (END_STREAM sent, or the stream was reset).
    local_ended: bool,
    /// How much more the server may send on the stream.
    recv_window: i64,
    /// Bytes the caller consumed that are not yet handed back to the server.
    released: u32,
    /// How much more we may send on the stream.
    send_window: i64,
    /// Body bytes waiting for window room, and whether END_STREAM follows them.
    pending: VecDeque<Bytes>,
    pending_end: bool,
    /// The caller waiting for the head or for data.
    reader: Option<Waker>,
    /// The caller waiting for send capacity.
    writer: Option<Waker>,
    /// Handles (reply, body, upload) still held; at zero the stream is forgotten.
    handles: u8,
    /// Counted in `active` (open or half-closed).
    active: bool,
}

impl Stream {
    fn is_closed(&self) -> bool {
        self.failed.is_some() || (self.remote_ended && self.local_ended && self.pending.is_empty())
    }
}

/// A header block being collected from HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct PartialBlock {
    stream: StreamId,
    end_stream: bool,
    block: BytesMut,
}

/// The state of one client connection.
#[derive(Debug)]
pub(crate) struct ClientState {
    config: ClientConfig,
    /// Encoded frames waiting to be written: small frames gather in `scratch`; large payloads
    /// go in `segments` as they are, so they are never copied.
    segments: VecDeque<Bytes>,
    scratch: BytesMut,
    streams: HashMap<u32, Stream>,
    next_id: u32,
    /// Streams open or half-closed, against the server's limit.
    active: u32,
    /// Callers waiting for the server's stream limit to make room.
    waiting_to_open: Vec<Waker>,
    peer_max_streams: u32,
    peer_initial_window: i64,
    peer_max_frame: u32,
    send_window: i64,
    recv_window: i64,
    /// Bytes consumed on the connection, not yet handed back.
    released: u32,
    decoder: hpack::Decoder,
    encoder: hpack::Encoder,
    partial: Option<PartialBlock>,
    /// The last stream the server said it will process (GOAWAY).
    going_away: Option<StreamId>,
    /// The connection failed or closed; nothing more happens on it.
    closed: Option<Error>,
    /// The payload of our ping awaiting its answer, and whether the answer came.
    ping: Option<[u8; 8]>,
    ponged: bool,
    ping_waker: Option<Waker>,
    pings_sent: u64,
}

/// Wakers to wake once the state's lock is released.
pub(crate) type Wakeups = Vec<Waker>;

impl ClientState {
    /// A new connection: the preface, our settings and the connection window are queued.
    pub(crate) fn new(config: ClientConfig) -> Self {
        let mut state = Self {
            config,
            segments: VecDeque::new(),
            scratch: BytesMut::with_capacity(4096),
            streams: HashMap::new(),
            next_id: 1,
            active: 0,
            waiting_to_open: Vec::new(),
            peer_max_streams: DEFAULT_MAX_STREAMS,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame: DEFAULT_MAX_FRAME,
            send_window: DEFAULT_WINDOW,
            recv_window: DEFAULT_WINDOW,
            released: 0,
            decoder: hpack::Decoder::new(hpack::DEFAULT_TABLE_SIZE),
            encoder: hpack::Encoder::default(),
            partial: None,
            going_away: None,
            closed: None,
            ping: None,
            ponged: false,
            ping_waker: None,
            pings_sent: 0,
        };
        state.scratch.extend_from_slice(frame::PREFACE);
        let settings = Settings {
            enable_push: Some(false),
            initial_window_size: Some(config.stream_window),
            max_frame_size: Some(config.max_frame_size),
            max_header_list_size: Some(config.max_header_list_size),
            ..Settings::default()
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

    /// The frames waiting to be written, in order.
    pub(crate) fn take_output(&mut self, into: &mut VecDeque<Bytes>) {
        self.seal_scratch();
        into.append(&mut self.segments);
    }

    fn seal_scratch(&mut self) {
        if !self.scratch.is_empty() {
            self.segments.push_back(self.scratch.split().freeze());
        }
    }

    /// The connection's failure, if it failed.
    pub(crate) fn closed(&self) -> Option<&Error> {
        self.closed.as_ref()
    }

    /// Opens a stream for a request: `Ok(None)` when the server's stream limit is reached
    /// (`waker` is woken when a stream closes).
    pub(crate) fn open(
        &mut self,
        authority: &str,
        path: &str,
        headers: &http::HeaderMap,
        end_stream: bool,
        waker: &Waker,
    ) -> Result<Option<StreamId>, Error> {
        if let Some(error) = &self.closed {
            return Err(error.clone());
        }
        if self.going_away.is_some() || self.next_id > MAX_WINDOW {
            return Err(Error::NotProcessed);
        }
        if self.active >= self.peer_max_streams {
            if !self.waiting_to_open.iter().any(|w| w.will_wake(waker)) {
                self.waiting_to_open.push(waker.clone());
            }
            return Ok(None);
        }
        let id = StreamId(self.next_id);
        self.next_id += 2;
        let mut block = BytesMut::with_capacity(64 + path.len() + authority.len());
        self.encoder.begin(&mut block);
        hpack::encode_field(&mut block, b":method", b"POST");
        hpack::encode_field(&mut block, b":scheme", b"http");
        // Every call on the connection repeats these: indexed after the first.
        self.encoder
            .encode_indexed(&mut block, b":authority", authority.as_bytes());
        self.encoder
            .encode_indexed(&mut block, b":path", path.as_bytes());
        for (name, value) in headers {
            if value.is_sensitive() {
                hpack::encode_sensitive(&mut block, name.as_str().as_bytes(), value.as_bytes());
            } else {
                hpack::encode_field(&mut block, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        frame::encode_headers(
            &mut self.scratch,
            id,
            &block,
            end_stream,
            self.peer_max_frame,
        );
        self.active += 1;
        self.streams.insert(
            id.0,
            Stream {
                head: None,
                head_received: false,
                data: VecDeque::new(),
                remote_ended: false,
                failed: None,
                local_ended: end_stream,
                recv_window: i64::from(self.config.stream_window),
                released: 0,
                send_window: self.peer_initial_window,
                pending: VecDeque::new(),
                pending_end: false,
                reader: None,
                writer: None,
                // The reply's handle; an upload takes another.
                handles: 1,
                active: true,
            },
        );
        Ok(Some(id))
    }

    /// Adds a handle to `id` (an upload beside the reply).
    pub(crate) fn retain(&mut self, id: StreamId) {
        if let Some(stream) = self.streams.get_mut(&id.0) {
            stream.handles += 1;
        }
    }

    /// Drops a handle to `id`; with the last one, a stream still open is reset (CANCEL) and
    /// the stream is forgotten.
    pub(crate) fn release(&mut self, id: StreamId, wake: &mut Wakeups) {
        let Some(stream) = self.streams.get_mut(&id.0) else {
            return;
        };
        stream.handles = stream.handles.saturating_sub(1);
        if stream.handles > 0 {
            return;
        }
        if !stream.is_closed() && self.closed.is_none() {
            frame::encode_rst_stream(&mut self.scratch, id, Reason::CANCEL);
        }
        let was_active = stream.active;
        // Bytes the caller never read are handed back to the connection.
        let unread: usize = stream.data.iter().map(Bytes::len).sum();
        self.streams.remove(&id.0);
        self.release_connection(unread);
        if was_active {
            self.active -= 1;
            wake.append(&mut self.waiting_to_open);
        }
    }

    /// Queues `data` on `id`, ending our side after it when `end`; what the windows do not
    /// allow yet waits and leaves as WINDOW_UPDATEs arrive.
    pub(crate) fn send_data(
        &mut self,
        id: StreamId,
        data: Bytes,
        end: bool,
        wake: &mut Wakeups,
    ) -> Result<(), Error> {
        let stream = self.stream_mut(id)?;
        if stream.local_ended {
            return Err(Error::Closed("the request body was already ended".into()));
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

    /// Bytes queued on `id` that still wait for window room.
    pub(crate) fn unsent(&self, id: StreamId) -> usize {
        self.streams
            .get(&id.0)
            .map_or(0, |s| s.pending.iter().map(Bytes::len).sum())
    }

    /// Registers `waker` to be woken when `id` can send more (or failed).
    pub(crate) fn wait_to_send(&mut self, id: StreamId, waker: &Waker) -> Result<(), Error> {
        let stream = self.stream_mut(id)?;
        stream.writer = Some(waker.clone());
        Ok(())
    }

    /// Resets `id` (our side gives up: an upload failed or was abandoned).
    pub(crate) fn reset(&mut self, id: StreamId, reason: Reason, wake: &mut Wakeups) {
        let Some(stream) = self.streams.get_mut(&id.0) else {
            return;
        };
        if stream.is_closed() {
            return;
        }
        stream.failed = Some(Error::Closed(format!("the stream was reset ({reason})")));
        stream.local_ended = true;
        stream.pending.clear();
        wake.extend(stream.reader.take());
        wake.extend(stream.writer.take());
        if self.closed.is_none() {
            frame::encode_rst_stream(&mut self.scratch, id, reason);
        }
        self.deactivate(id, wake);
    }

    /// The reply's head, once it arrived; otherwise `waker` is woken when it does.
    pub(crate) fn poll_head(&mut self, id: StreamId, waker: &Waker) -> Option<Result<Head, Error>> {
        let stream = match self.stream_mut(id) {
            Ok(stream) => stream,
            Err(e) => return Some(Err(e)),
        };
        if let Some(head) = stream.head.take() {
            return Some(Ok(head));
        }
        if let Some(error) = &stream.failed {
            return Some(Err(error.clone()));
        }
        stream.reader = Some(waker.clone());
        None
    }

    /// The next piece of the reply's body (`Some(None)` at its end), handing its bytes back
    /// to the server's windows; otherwise `waker` is woken when more arrives.
    pub(crate) fn poll_data(
        &mut self,
        id: StreamId,
        waker: &Waker,
    ) -> Option<Result<Option<Bytes>, Error>> {
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
            self.release_connection(len);
            return Some(Ok(Some(data)));
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

    /// Whether the reply's body is complete and fully read.
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

    /// Ends the connection: every stream fails with `error` (those the server never saw, as
    /// [`Error::NotProcessed`]) and every waiting caller is woken.
    pub(crate) fn close(&mut self, error: Error, wake: &mut Wakeups) {
        if self.closed.is_some() {
            return;
        }
        let last = self.going_away.map_or(u32::MAX, |s| s.0);
        for (id, stream) in self.streams.iter_mut() {
            // A reply the server ended stays readable to its end.
            if stream.failed.is_none() && !stream.remote_ended {
                stream.failed = Some(if *id > last {
                    Error::NotProcessed
                } else {
                    error.clone()
                });
            }
            wake.extend(stream.reader.take());
            wake.extend(stream.writer.take());
        }
        wake.append(&mut self.waiting_to_open);
        wake.extend(self.ping_waker.take());
        self.closed = Some(error);
    }

    /// Closes the connection because the server broke the protocol: GOAWAY with `reason`.
    fn fail_connection(&mut self, reason: Reason, what: &str, wake: &mut Wakeups) {
        if self.closed.is_none() {
            let last = StreamId(0);
            frame::encode_goaway(&mut self.scratch, last, reason, what.as_bytes());
        }
        self.close(
            Error::Closed(format!("the server broke the protocol ({reason}): {what}")),
            wake,
        );
    }

    /// Handles the bytes that arrived: every whole frame in `buf` (the rest stays for the
    /// next read). Returns `false` once the connection is closed.
    pub(crate) fn receive(&mut self, buf: &mut BytesMut, wake: &mut Wakeups) -> bool {
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
                    self.fail_stream_remotely(stream, Error::Reset(reason), wake);
                }
            }
            Frame::Settings(settings) => self.on_settings(settings, wake),
            Frame::SettingsAck => {}
            Frame::PushPromise { .. } => self.fail_connection(
                Reason::PROTOCOL_ERROR,
                "a push promise, though push is disabled",
                wake,
            ),
            Frame::Ping {
                ack: false,
                payload,
            } => {
                frame::encode_ping(&mut self.scratch, true, payload);
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

    fn check_partial_size(&mut self, wake: &mut Wakeups) {
        let too_large = self
            .partial
            .as_ref()
            .is_some_and(|p| p.block.len() > max_block_size(&self.config));
        if too_large {
            self.fail_connection(Reason::ENHANCE_YOUR_CALM, "a header block too large", wake);
        }
    }

    /// Whether `id` is a stream we opened and still track; a frame for an idle stream (never
    /// opened) is a connection error. Frames for streams already forgotten are ignored.
    fn known(&mut self, id: StreamId, wake: &mut Wakeups) -> bool {
        if self.streams.contains_key(&id.0) {
            return true;
        }
        if id.0.is_multiple_of(2) || id.0 >= self.next_id {
            self.fail_connection(
                Reason::PROTOCOL_ERROR,
                "a frame on a stream the client never opened",
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
        // Padding is never handed to a caller: its room comes back at once.
        let padding = flow_len as usize - payload.len();
        if !self.known(id, wake) {
            self.release_connection(flow_len as usize);
            return;
        }
        self.release_connection(padding);
        let stream = self.streams.get_mut(&id.0).expect("known");
        if stream.failed.is_some() {
            let unread = payload.len();
            self.release_connection(unread);
            return;
        }
        if !stream.head_received {
            return self.fail_stream(
                id,
                Reason::PROTOCOL_ERROR,
                "data before the reply's head",
                wake,
            );
        }
        if stream.remote_ended {
            return self.fail_stream(
                id,
                Reason::STREAM_CLOSED,
                "data after the end of the reply",
                wake,
            );
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
        if !payload.is_empty() {
            stream.data.push_back(payload);
        }
        if end_stream {
            stream.remote_ended = true;
        }
        wake.extend(stream.reader.take());
        if end_stream {
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
        let decoded = self
            .decoder
            .decode(block, limit, |name, value| fields.add(name, value));
        match decoded {
            Ok(()) => {}
            Err(hpack::HpackError::ListTooLarge) => fields.error = Some("reply headers too large"),
            Err(_) => {
                return self.fail_connection(
                    Reason::COMPRESSION_ERROR,
                    "a header block that does not decode",
                    wake,
                )
            }
        }
        if !self.known(id, wake) {
            return;
        }
        let stream = self.streams.get_mut(&id.0).expect("known");
        if stream.failed.is_some() {
            return;
        }
        if stream.remote_ended {
            return self.fail_stream(
                id,
                Reason::STREAM_CLOSED,
                "headers after the end of the reply",
                wake,
            );
        }
        if stream.head_received {
            // Trailers: accepted (and not read) only as the end of the reply.
            if !end_stream {
                return self.fail_stream(
                    id,
                    Reason::PROTOCOL_ERROR,
                    "trailers without the end of the reply",
                    wake,
                );
            }
            if fields.status.is_some() {
                return self.fail_stream(
                    id,
                    Reason::PROTOCOL_ERROR,
                    "a pseudo-header in trailers",
                    wake,
                );
            }
            stream.remote_ended = true;
            wake.extend(stream.reader.take());
            return self.deactivate(id, wake);
        }
        if let Some(what) = fields.error {
            return self.fail_stream(id, Reason::PROTOCOL_ERROR, what, wake);
        }
        let Some(status) = fields.status else {
            return self.fail_stream(id, Reason::PROTOCOL_ERROR, "a reply without :status", wake);
        };
        if status.is_informational() {
            // 1xx heads precede the real one; none may end the stream.
            if end_stream {
                return self.fail_stream(
                    id,
                    Reason::PROTOCOL_ERROR,
                    "an informational reply ended the stream",
                    wake,
                );
            }
            return;
        }
        stream.head = Some(Head {
            status,
            headers: fields.headers,
        });
        stream.head_received = true;
        if end_stream {
            stream.remote_ended = true;
        }
        wake.extend(stream.reader.take());
        if end_stream {
            self.deactivate(id, wake);
        }
    }

    fn on_settings(&mut self, settings: Settings, wake: &mut Wakeups) {
        if settings.enable_push == Some(true) {
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
    }

    fn on_goaway(&mut self, last: StreamId, reason: Reason, wake: &mut Wakeups) {
        let last = self.going_away.map_or(last, |earlier| earlier.min(last));
        self.going_away = Some(last);
        let unprocessed: Vec<u32> = self
            .streams
            .keys()
            .copied()
            .filter(|id| *id > last.0)
            .collect();
        for id in unprocessed {
            self.fail_stream_remotely(StreamId(id), Error::NotProcessed, wake);
        }
        if reason != Reason::NO_ERROR {
            tracing::debug!(%reason, "the server is closing the connection");
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

    /// Fails `id` because the server broke the protocol on it: RST_STREAM with `reason`.
    fn fail_stream(
        &mut self,
        id: StreamId,
        reason: Reason,
        what: &'static str,
        wake: &mut Wakeups,
    ) {
        if let Some(stream) = self.streams.get_mut(&id.0) {
            if stream.failed.is_none() {
                stream.failed = Some(Error::Protocol(what));
                stream.local_ended = true;
                stream.pending.clear();
                wake.extend(stream.reader.take());
                wake.extend(stream.writer.take());
            }
            frame::encode_rst_stream(&mut self.scratch, id, reason);
            self.deactivate(id, wake);
        } else if self.known(id, wake) {
            frame::encode_rst_stream(&mut self.scratch, id, reason);
        }
    }

    /// Fails `id` because the server ended it (RST_STREAM, or GOAWAY before processing it).
    fn fail_stream_remotely(&mut self, id: StreamId, error: Error, wake: &mut Wakeups) {
        let Some(stream) = self.streams.get_mut(&id.0) else {
            return;
        };
        if stream.failed.is_none() && !(stream.remote_ended && stream.local_ended) {
            stream.failed = Some(error);
            stream.local_ended = true;
            stream.pending.clear();
        }
        wake.extend(stream.reader.take());
        wake.extend(stream.writer.take());
        self.deactivate(id, wake);
    }

    /// Stops counting a closed stream against the server's limit, and forgets it if no
    /// handle is left.
    fn deactivate(&mut self, id: StreamId, wake: &mut Wakeups) {
        let Some(stream) = self.streams.get_mut(&id.0) else {
            return;
        };
        if stream.active && stream.is_closed() {
            stream.active = false;
            self.active -= 1;
            wake.append(&mut self.waiting_to_open);
        }
        if stream.handles == 0 && !stream.active {
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

/// A reply head's fields as they are decoded.
#[derive(Default)]
struct Fields {
    status: Option<http::StatusCode>,
    headers: http::HeaderMap,
    /// The first thing wrong with the head, if any.
    error: Option<&'static str>,
    regular_seen: bool,
}

impl Fields {
    fn add(&mut self, name: &[u8], value: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            if pseudo != b"status" || self.status.is_some() || self.regular_seen {
                self.error = Some("a pseudo-header other than one leading :status");
                return;
            }
            match http::StatusCode::from_bytes(value) {
                Ok(status) => self.status = Some(status),
                Err(_) => self.error = Some("a malformed :status"),
            }
            return;
        }
        self.regular_seen = true;
        // Names must already be lowercase (RFC 9113 §8.2.1); `from_bytes` would fold them.
        if name.iter().any(u8::is_ascii_uppercase) {
            self.error = Some("an uppercase header name");
            return;
        }
        let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) else {
            self.error = Some("a malformed header");
            return;
        };
        if is_connection_specific(&name) {
            self.error = Some("a connection-specific header");
            return;
        }
        self.headers.append(name, value);
    }
}

/// Headers HTTP/2 forbids (RFC 9113 §8.2.2).
fn is_connection_specific(name: &http::header::HeaderName) -> bool {
    use http::header::{CONNECTION, TRANSFER_ENCODING, UPGRADE};
    name == CONNECTION
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    const CONFIG: ClientConfig = ClientConfig {
        stream_window: 1 << 20,
        connection_window: 4 << 20,
        max_frame_size: 1 << 20,
        max_header_list_size: 16 << 10,
    };

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Waker, Arc<Counter>) {
        let counter = Arc::new(Counter::default());
        (Waker::from(counter.clone()), counter)
    }

    fn wake(wakeups: Wakeups) {
        wakeups.into_iter().for_each(Waker::wake);
    }

    /// Every frame the client queued (after the preface, which must lead the first batch).
    fn sent(state: &mut ClientState) -> Vec<Frame> {
        let mut segments = VecDeque::new();
        state.take_output(&mut segments);
        let mut bytes = BytesMut::new();
        for segment in segments {
            bytes.extend_from_slice(&segment);
        }
        if bytes.starts_with(frame::PREFACE) {
            let _ = bytes.split_to(frame::PREFACE.len());
        }
        let mut frames = Vec::new();
        while let Some(frame) =
            frame::decode(&mut bytes, 1 << 24).expect("the client's frames decode")
        {
            frames.push(frame);
        }
        assert!(bytes.is_empty(), "a partial frame was queued");
        frames
    }

    /// A client past its opening frames.
    fn client(config: ClientConfig) -> ClientState {
        let mut state = ClientState::new(config);
        let opening = sent(&mut state);
        assert!(matches!(opening[0], Frame::Settings(_)), "{opening:?}");
        state
    }

    fn receive(state: &mut ClientState, bytes: BytesMut) -> bool {
        let mut buf = bytes;
        let mut wakeups = Wakeups::new();
        let open = state.receive(&mut buf, &mut wakeups);
        wake(wakeups);
        open
    }

    fn head_block(fields: &[(&str, &str)]) -> BytesMut {
        let mut block = BytesMut::new();
        for (name, value) in fields {
            hpack::encode_field(&mut block, name.as_bytes(), value.as_bytes());
        }
        block
    }

    fn reply_head(id: u32, fields: &[(&str, &str)], end_stream: bool) -> BytesMut {
        let mut out = BytesMut::new();
        frame::encode_headers(
            &mut out,
            StreamId(id),
            &head_block(fields),
            end_stream,
            16_384,
        );
        out
    }

    fn data(id: u32, payload: &[u8], end_stream: bool) -> BytesMut {
        let mut out = BytesMut::new();
        frame::encode_data(&mut out, StreamId(id), payload, end_stream);
        out
    }

    /// Opens a stream, dropping what was queued so far (the request's head with the rest).
    fn open(state: &mut ClientState, end_stream: bool) -> StreamId {
        let (waker, _) = waker();
        let id = state
            .open(
                "127.0.0.1:1",
                "/svc/call",
                &http::HeaderMap::new(),
                end_stream,
                &waker,
            )
            .expect("the connection is open")
            .expect("below the stream limit");
        sent(state);
        id
    }

    fn send(state: &mut ClientState, id: StreamId, body: &'static [u8], end: bool) {
        let mut wakeups = Wakeups::new();
        state
            .send_data(id, Bytes::from_static(body), end, &mut wakeups)
            .unwrap();
        wake(wakeups);
    }

    fn head(state: &mut ClientState, id: StreamId) -> Option<Result<Head, Error>> {
        state.poll_head(id, &waker().0)
    }

    fn next_data(state: &mut ClientState, id: StreamId) -> Option<Result<Option<Bytes>, Error>> {
        state.poll_data(id, &waker().0)
    }

    fn release(state: &mut ClientState, id: StreamId) {
        let mut wakeups = Wakeups::new();
        state.release(id, &mut wakeups);
        wake(wakeups);
    }

    #[test]
    fn the_connection_opens_with_the_preface_settings_and_window() {
        let mut state = ClientState::new(CONFIG);
        let mut segments = VecDeque::new();
        state.take_output(&mut segments);
        assert!(segments[0].starts_with(frame::PREFACE));
        let mut state = ClientState::new(CONFIG);
        let frames = sent(&mut state);
        let Frame::Settings(settings) = &frames[0] else {
            panic!("{frames:?}")
        };
        assert_eq!(settings.enable_push, Some(false));
        assert_eq!(settings.initial_window_size, Some(CONFIG.stream_window));
        assert_eq!(settings.max_frame_size, Some(CONFIG.max_frame_size));
        assert_eq!(
            settings.max_header_list_size,
            Some(CONFIG.max_header_list_size)
        );
        assert!(matches!(
            frames[1],
            Frame::WindowUpdate { stream: StreamId(0), increment } if i64::from(increment) == i64::from(CONFIG.connection_window) - DEFAULT_WINDOW
        ));
    }

    #[test]
    fn a_request_leaves_as_one_headers_and_one_data_frame() {
        let mut state = client(CONFIG);
        let mut headers = http::HeaderMap::new();
        headers.insert("x-trace", http::HeaderValue::from_static("abc"));
        let (waker, _) = waker();
        let id = state
            .open("10.0.0.1:7000", "/svc/echo", &headers, false, &waker)
            .unwrap()
            .unwrap();
        assert_eq!(id, StreamId(1));
        send(&mut state, id, b"hello", true);
        let frames = sent(&mut state);
        assert_eq!(frames.len(), 2, "{frames:?}");
        let Frame::Headers {
            stream,
            end_stream: false,
            end_headers: true,
            block,
        } = &frames[0]
        else {
            panic!("{frames:?}")
        };
        assert_eq!(*stream, id);
        let mut fields = Vec::new();
        hpack::Decoder::new(4096)
            .decode(block, 1 << 16, |n, v| {
                fields.push((
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                ))
            })
            .unwrap();
        let expected = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "10.0.0.1:7000"),
            (":path", "/svc/echo"),
            ("x-trace", "abc"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(fields, expected);
        assert!(
            matches!(&frames[1], Frame::Data { stream, end_stream: true, payload, .. } if *stream == id && payload[..] == b"hello"[..])
        );
        // The next stream takes the next odd id.
        assert_eq!(open(&mut state, true), StreamId(3));
    }

    #[test]
    fn a_reply_is_read_as_its_head_then_its_body() {
        let mut state = client(CONFIG);
        let id = open(&mut state, true);
        let (reader, woken) = waker();
        assert!(state.poll_head(id, &reader).is_none());
        assert!(receive(
            &mut state,
            reply_head(1, &[(":status", "200"), ("x-reply", "yes")], false)
        ));
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            1,
            "the caller waiting for the head was woken"
        );
        let head = head(&mut state, id).unwrap().unwrap();
        assert_eq!(head.status, http::StatusCode::OK);
        assert_eq!(head.headers.get("x-reply").unwrap(), "yes");
        assert!(next_data(&mut state, id).is_none(), "no body yet");
        assert!(receive(&mut state, data(1, b"abc", false)));
        assert!(receive(&mut state, data(1, b"def", true)));
        assert_eq!(next_data(&mut state, id).unwrap().unwrap().unwrap(), "abc");
        assert_eq!(next_data(&mut state, id).unwrap().unwrap().unwrap(), "def");
        assert!(state.is_body_done(id));
        assert_eq!(next_data(&mut state, id).unwrap().unwrap(), None);
        release(&mut state, id);
        assert!(
            state.streams.is_empty(),
            "a finished stream is forgotten with its handle"
        );
        assert_eq!(state.active, 0);
        assert!(
            sent(&mut state).is_empty(),
            "a finished stream is not reset"
        );
    }

    #[test]
    fn a_reply_head_that_breaks_the_rules_fails_only_its_stream() {
        for fields in [
            &[("x-no-status", "1")][..],
            &[(":status", "abc")],
            &[(":status", "200"), (":path", "/x")],
            &[(":status", "200"), ("connection", "close")],
            &[("x-first", "1"), (":status", "200")],
        ] {
            let mut state = client(CONFIG);
            let id = open(&mut state, true);
            assert!(
                receive(&mut state, reply_head(1, fields, false)),
                "{fields:?}"
            );
            assert!(
                matches!(head(&mut state, id), Some(Err(Error::Protocol(_)))),
                "{fields:?}"
            );
            let frames = sent(&mut state);
            assert!(
                matches!(
                    frames[..],
                    [Frame::RstStream {
                        reason: Reason::PROTOCOL_ERROR,
                        ..
                    }]
                ),
                "{fields:?}: {frames:?}"
            );
            assert_eq!(state.active, 0);
            // The connection goes on.
            assert_eq!(open(&mut state, true), StreamId(3));
        }
    }

    #[test]
    fn informational_heads_are_skipped() {
        let mut state = client(CONFIG);
        let id = open(&mut state, true);
        assert!(receive(
            &mut state,
            reply_head(1, &[(":status", "100")], false)
        ));
        assert!(head(&mut state, id).is_none());
        assert!(receive(
            &mut state,
            reply_head(1, &[(":status", "503")], true)
        ));
        assert_eq!(head(&mut state, id).unwrap().unwrap().status, 503);
    }

    #[test]
    fn the_servers_stream_limit_holds_callers_back_until_a_stream_closes() {
        let mut state = client(CONFIG);
        let mut settings = BytesMut::new();
        frame::encode_settings(
            &mut settings,
            &Settings {
                max_concurrent_streams: Some(1),
                ..Settings::default()
            },
        );
        assert!(receive(&mut state, settings));
        assert!(matches!(sent(&mut state)[..], [Frame::SettingsAck]));
        let first = open(&mut state, true);
        let (waiter, woken) = waker();
        let second = state.open("a:1", "/s/c", &http::HeaderMap::new(), true, &waiter);
        assert_eq!(second, Ok(None));
        assert!(receive(
            &mut state,
            reply_head(1, &[(":status", "200")], true)
        ));
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            1,
            "the waiting caller was woken"
        );
        let _ = head(&mut state, first);
        assert_eq!(open(&mut state, true), StreamId(3));
    }

    #[test]
    fn a_body_leaves_as_the_servers_windows_allow() {
        let mut state = client(CONFIG);
        let mut settings = BytesMut::new();
        frame::encode_settings(
            &mut settings,
            &Settings {
                initial_window_size: Some(4),
                ..Settings::default()
            },
        );
        assert!(receive(&mut state, settings));
        let id = open(&mut state, false);
        send(&mut state, id, b"0123456789", true);
        let frames = sent(&mut state);
        assert!(
            matches!(&frames[..], [Frame::Data { end_stream: false, payload, .. }] if payload[..] == b"0123"[..]),
            "{frames:?}"
        );
        assert_eq!(state.unsent(id), 6);
        let (writer, woken) = waker();
        state.wait_to_send(id, &writer).unwrap();
        let mut update = BytesMut::new();
        frame::encode_window_update(&mut update, id, 100);
        assert!(receive(&mut state, update));
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        let frames = sent(&mut state);
        assert!(
            matches!(&frames[..], [Frame::Data { end_stream: true, payload, .. }] if payload[..] == b"456789"[..]),
            "{frames:?}"
        );
        assert_eq!(state.unsent(id), 0);
    }

    #[test]
    fn a_shrinking_initial_window_holds_data_back() {
        let mut state = client(CONFIG);
        let id = open(&mut state, false);
        let mut settings = BytesMut::new();
        frame::encode_settings(
            &mut settings,
            &Settings {
                initial_window_size: Some(0),
                ..Settings::default()
            },
        );
        assert!(receive(&mut state, settings));
        send(&mut state, id, b"abc", true);
        let frames = sent(&mut state);
        assert!(matches!(&frames[..], [Frame::SettingsAck]), "{frames:?}");
        assert_eq!(state.unsent(id), 3);
    }

    #[test]
    fn data_past_a_window_is_refused() {
        let small = ClientConfig {
            stream_window: 8,
            connection_window: 65_535,
            ..CONFIG
        };
        let mut state = client(small);
        let id = open(&mut state, true);
        assert!(receive(
            &mut state,
            reply_head(1, &[(":status", "200")], false)
        ));
        assert!(receive(&mut state, data(1, b"0123456789", false)));
        let _ = head(&mut state, id);
        assert!(matches!(
            next_data(&mut state, id),
            Some(Err(Error::Protocol(_)))
        ));
        assert!(matches!(
            sent(&mut state)[..],
            [Frame::RstStream {
                reason: Reason::FLOW_CONTROL_ERROR,
                ..
            }]
        ));
        // The connection window counts every byte, whatever the stream.
        let mut state = client(small);
        let id = open(&mut state, true);
        assert!(receive(
            &mut state,
            reply_head(1, &[(":status", "200")], false)
        ));
        assert!(head(&mut state, id).unwrap().is_ok());
        let big = vec![0u8; 70_000];
        assert!(!receive(&mut state, data(1, &big, false)));
        assert!(matches!(
            next_data(&mut state, id),
            Some(Err(Error::Closed(_)))
        ));
        assert!(matches!(
            sent(&mut state)[..],
            [Frame::GoAway {
                reason: Reason::FLOW_CONTROL_ERROR,
                ..
            }]
        ));
    }

    #[test]
    fn bytes_read_go_back_to_the_server_as_window_updates() {
        let small = ClientConfig {
            stream_window: 8,
            connection_window: 65_535,
            ..CONFIG
        };
        let mut state = client(small);
        let id = open(&mut state, true);
        assert!(receive(
            &mut state,
            reply_head(1, &[(":status", "200")], false)
        ));
        assert!(receive(&mut state, data(1, b"0123", false)));
        let _ = head(&mut state, id);
        assert!(
            sent(&mut state).is_empty(),
            "nothing is handed back before it is read"
        );
        assert_eq!(next_data(&mut state, id).unwrap().unwrap().unwrap(), "0123");
        let frames = sent(&mut state);
        assert!(
            matches!(frames[..], [Frame::WindowUpdate { stream, increment: 4 }] if stream == id),
            "{frames:?}"
        );
        // Then the server may send the whole window again.
        assert!(receive(&mut state, data(1, b"01234567", false)));
        assert_eq!(
            next_data(&mut state, id).unwrap().unwrap().unwrap().len(),
            8
        );
    }

    #[test]
    fn a_reply_dropped_before_its_end_resets_the_stream() {
        let mut state = client(CONFIG);
        let id = open(&mut state, true);
        release(&mut state, id);
        assert!(matches!(
            sent(&mut state)[..],
            [Frame::RstStream { stream, reason: Reason::CANCEL }] if stream == id
        ));
        assert_eq!(state.active, 0);
        // What the server sent before it saw the reset is ignored, its room handed back.
        assert!(receive(
            &mut state,
            reply_head(1, &[(":status", "200")], false)
        ));
        let frame = vec![0u8; CONFIG.max_frame_size as usize];
        for _ in 0..CONFIG.connection_window / CONFIG.max_frame_size / 2 {
            assert!(receive(&mut state, data(1, &frame, false)));
        }
        assert!(matches!(
            sent(&mut state)[..],
            [Frame::WindowUpdate {
                stream: StreamId(0),
                ..
            }]
        ));
    }

    #[test]
    fn refused_and_unprocessed_streams_can_be_sent_again() {
        let mut state = client(CONFIG);
        let first = open(&mut state, true);
        let second = open(&mut state, true);
        let third = open(&mut state, true);
        let mut frames = BytesMut::new();
        frame::encode_rst_stream(&mut frames, first, Reason::REFUSED_STREAM);
        frame::encode_goaway(&mut frames, second, Reason::NO_ERROR, b"");
        assert!(receive(&mut state, frames));
        let refused = head(&mut state, first).unwrap().unwrap_err();
        assert!(refused.is_unprocessed(), "{refused:?}");
        assert!(
            head(&mut state, second).is_none(),
            "at or below the last stream: still served"
        );
        let unprocessed = head(&mut state, third).unwrap().unwrap_err();
        assert_eq!(unprocessed, Error::NotProcessed);
        let (waker, _) = waker();
        assert_eq!(
            state.open("a:1", "/s/c", &http::HeaderMap::new(), true, &waker),
            Err(Error::NotProcessed)
        );
        // A reset for another reason is not retried.
        let mut state = client(CONFIG);
        let id = open(&mut state, true);
        let mut frames = BytesMut::new();
        frame::encode_rst_stream(&mut frames, id, Reason::STREAM_CLOSED);
        assert!(receive(&mut state, frames));
        assert!(!head(&mut state, id).unwrap().unwrap_err().is_unprocessed());
    }

    #[test]
    fn a_server_that_breaks_the_connection_rules_is_left() {
        let cases: Vec<(&str, BytesMut)> = vec![
            ("a push promise", {
                let mut out = BytesMut::new();
                // PUSH_PROMISE on stream 1 promising stream 2, END_HEADERS.
                frame::encode_head(&mut out, 0x5, 0x4, StreamId(1), 4);
                out.extend_from_slice(&2u32.to_be_bytes());
                out
            }),
            (
                "a stream never opened",
                reply_head(7, &[(":status", "200")], true),
            ),
            (
                "a server-initiated stream",
                reply_head(2, &[(":status", "200")], true),
            ),
            ("an interrupted header block", {
                let block = head_block(&[(":status", "200")]);
                let mut out = BytesMut::new();
                frame::encode_head(&mut out, 0x1, 0x0, StreamId(1), block.len());
                out.extend_from_slice(&block);
                out.extend_from_slice(&data(1, b"x", false));
                out
            }),
            ("a header block that does not decode", {
                let mut out = BytesMut::new();
                // Indexed field 0 is never valid.
                frame::encode_headers(&mut out, StreamId(1), &[0x80], false, 16_384);
                out
            }),
        ];
        for (what, bytes) in cases {
            let mut state = client(CONFIG);
            let id = open(&mut state, true);
            assert!(!receive(&mut state, bytes), "{what}");
            assert!(
                matches!(head(&mut state, id), Some(Err(Error::Closed(_)))),
                "{what}"
            );
            let frames = sent(&mut state);
            assert!(
                matches!(frames.last(), Some(Frame::GoAway { .. })),
                "{what}: {frames:?}"
            );
            let (waker, _) = waker();
            assert!(state
                .open("a:1", "/s/c", &http::HeaderMap::new(), true, &waker)
                .is_err());
        }
    }

    #[test]
    fn pings_are_answered_and_ours_are_matched() {
        let mut state = client(CONFIG);
        let mut ping = BytesMut::new();
        frame::encode_ping(&mut ping, false, *b"12345678");
        assert!(receive(&mut state, ping));
        assert!(
            matches!(sent(&mut state)[..], [Frame::Ping { ack: true, payload }] if payload == *b"12345678")
        );
        state.send_ping().unwrap();
        let Frame::Ping {
            ack: false,
            payload,
        } = sent(&mut state)[0]
        else {
            panic!("no ping sent")
        };
        let (waker, woken) = waker();
        assert!(state.poll_pong(&waker).is_none());
        let mut other = BytesMut::new();
        frame::encode_ping(&mut other, true, *b"00000000");
        assert!(receive(&mut state, other));
        assert!(
            state.poll_pong(&waker).is_none(),
            "an answer to another ping"
        );
        let mut answer = BytesMut::new();
        frame::encode_ping(&mut answer, true, payload);
        assert!(receive(&mut state, answer));
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(state.poll_pong(&waker), Some(Ok(())));
    }

    #[test]
    fn closing_fails_every_stream_and_wakes_every_caller() {
        let mut state = client(CONFIG);
        let id = open(&mut state, true);
        let (reader, woken) = waker();
        assert!(state.poll_head(id, &reader).is_none());
        let mut wakeups = Wakeups::new();
        state.close(Error::Closed("gone".into()), &mut wakeups);
        wake(wakeups);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert!(matches!(head(&mut state, id), Some(Err(Error::Closed(why))) if why == "gone"));
    }
}
