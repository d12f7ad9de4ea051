//! HTTP/2 frames (RFC 9113 §4 and §6): reading them off a connection's receive buffer
//! ([`decode`]) and writing them into its send buffer (the `encode_*` functions).
//!
//! [`decode`] reads untrusted bytes. It never panics, never copies a payload (payloads are
//! split off the receive buffer) and allocates nothing beyond what `bytes` needs to share
//! that buffer. It checks everything RFC 9113 asks of a single frame; the rules that need
//! the connection's state (a CONTINUATION must follow its HEADERS, streams open in order,
//! flow-control windows, which end may push, ...) are the connection's, and are noted on the
//! [`Frame`] variants they concern.
//!
//! The encoders append to a `BytesMut` and allocate nothing beyond the buffer growing.

use std::fmt;
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::Reason;

/// The client connection preface (RFC 9113 §3.4), sent before the client's first SETTINGS.
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The length of a frame header (RFC 9113 §4.1).
pub(crate) const HEADER_LEN: usize = 9;

/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may set (2^14, also the initial value).
pub(crate) const MIN_MAX_FRAME_SIZE: u32 = 1 << 14;

/// The largest SETTINGS_MAX_FRAME_SIZE a peer may set (2^24-1, the most a frame header's
/// length field holds).
pub(crate) const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;

/// The largest flow-control window, and the largest WINDOW_UPDATE increment (2^31-1).
pub(crate) const MAX_WINDOW: u32 = (1 << 31) - 1;

/// The 31 bits of a stream identifier (or of a window increment) below the reserved bit.
const U31: u32 = (1 << 31) - 1;

/// The most debug data [`encode_goaway`] writes: what fits a GOAWAY frame of the smallest
/// maximum frame size every peer accepts.
const MAX_GOAWAY_DEBUG: usize = MIN_MAX_FRAME_SIZE as usize - 8;

/// Frame types (RFC 9113 §6; the fourth byte of the frame header).
pub(crate) mod kind {
    /// DATA (§6.1): bytes of a stream's message body.
    pub(crate) const DATA: u8 = 0x0;
    /// HEADERS (§6.2): opens a stream and carries (the start of) a field block.
    pub(crate) const HEADERS: u8 = 0x1;
    /// PRIORITY (§6.3): a deprecated priority signal.
    pub(crate) const PRIORITY: u8 = 0x2;
    /// RST_STREAM (§6.4): ends a stream at once.
    pub(crate) const RST_STREAM: u8 = 0x3;
    /// SETTINGS (§6.5): the sender's configuration, or the acknowledgment of the peer's.
    pub(crate) const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE (§6.6): a server announcing a stream it will push.
    pub(crate) const PUSH_PROMISE: u8 = 0x5;
    /// PING (§6.7): a round-trip probe, or its answer.
    pub(crate) const PING: u8 = 0x6;
    /// GOAWAY (§6.8): the sender is closing the connection.
    pub(crate) const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE (§6.9): flow-control credit for a stream or the connection.
    pub(crate) const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION (§6.10): more of a field block begun by HEADERS or PUSH_PROMISE.
    pub(crate) const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 §6; the fifth byte of the frame header). A flag means something
/// only for the frame types named; other flags are ignored when reading (§4.1).
pub(crate) mod flag {
    /// END_STREAM on DATA and HEADERS: the sender's last frame on the stream.
    pub(crate) const END_STREAM: u8 = 0x1;
    /// ACK on SETTINGS and PING: the frame acknowledges the peer's.
    pub(crate) const ACK: u8 = 0x1;
    /// END_HEADERS on HEADERS, PUSH_PROMISE and CONTINUATION: the field block ends here.
    pub(crate) const END_HEADERS: u8 = 0x4;
    /// PADDED on DATA, HEADERS and PUSH_PROMISE: a pad length byte leads the payload and
    /// that many bytes of padding end it.
    pub(crate) const PADDED: u8 = 0x8;
    /// PRIORITY on HEADERS: 5 bytes of priority fields follow the pad length.
    pub(crate) const PRIORITY: u8 = 0x20;
}

/// Setting identifiers (RFC 9113 §6.5.2 and §5.3.2).
mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub(super) const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH.
    pub(super) const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub(super) const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub(super) const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE.
    pub(super) const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub(super) const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    /// SETTINGS_NO_RFC7540_PRIORITIES (RFC 9113 §5.3.2).
    pub(super) const NO_RFC7540_PRIORITIES: u16 = 0x9;
}

/// A stream identifier (31 bits; the reserved bit is dropped when reading and cleared when
/// writing). Stream 0 is the connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct StreamId(pub(crate) u32);

impl StreamId {
    /// Stream 0: frames about the connection as a whole.
    pub(crate) const ZERO: StreamId = StreamId(0);

    /// Whether a client opened this stream (client streams are odd, §5.1.1).
    pub(crate) fn is_client_initiated(self) -> bool {
        self.0 & 1 == 1
    }

    /// Whether this is stream 0, the connection.
    pub(crate) fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The identifier in 4 bytes as sent, with the reserved bit ignored.
    fn read(bytes: [u8; 4]) -> StreamId {
        StreamId(u32::from_be_bytes(bytes) & U31)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A frame read by [`decode`], checked against every rule of RFC 9113 that concerns the
/// frame alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// DATA (§6.1), padding removed. Flow control counts `flow_len`, not `payload.len()`.
    Data {
        /// The stream the bytes belong to (never 0).
        stream: StreamId,
        /// The sender's last frame on the stream.
        end_stream: bool,
        /// The body bytes.
        payload: Bytes,
        /// The bytes of the frame that count against flow control: the whole payload,
        /// padding and pad length included (§6.9.1).
        flow_len: u32,
    },
    /// HEADERS (§6.2), with padding and priority fields removed. Without `end_headers`, the
    /// next frame the connection reads must be a CONTINUATION on the same stream; any
    /// other frame is a connection error PROTOCOL_ERROR (§6.10).
    Headers {
        /// The stream (never 0).
        stream: StreamId,
        /// The sender's last frame on the stream (it may still be followed by CONTINUATION
        /// frames completing the field block, §8.1).
        end_stream: bool,
        /// The field block is complete in this frame.
        end_headers: bool,
        /// The field block, or its first fragment. It must reach the HPACK decoder even if
        /// the stream is refused, or the compression state diverges (§4.3).
        block: Bytes,
    },
    /// PRIORITY (§6.3): checked (5 bytes, a stream not depending on itself), then of no
    /// use; RFC 9113 deprecates the priority scheme it belongs to (§5.3.2).
    Priority {
        /// The stream the signal is about (never 0; any state, even idle, §6.3).
        stream: StreamId,
    },
    /// RST_STREAM (§6.4). On an idle stream it is a connection error PROTOCOL_ERROR, which
    /// is the connection's to check.
    RstStream {
        /// The stream ended (never 0).
        stream: StreamId,
        /// Why the peer ended it.
        reason: Reason,
    },
    /// A SETTINGS frame carrying settings (§6.5), each already checked against its range.
    /// The connection applies them in full and answers with a SETTINGS ACK.
    Settings(Settings),
    /// A SETTINGS frame with the ACK flag: the peer applied our last settings.
    SettingsAck,
    /// PUSH_PROMISE (§6.6), padding removed. A server receiving one, or a client that
    /// sent SETTINGS_ENABLE_PUSH = 0, must treat it as a connection error PROTOCOL_ERROR
    /// (§8.4), so its field block need not be decoded. Without `end_headers`,
    /// CONTINUATION frames follow as for HEADERS.
    PushPromise {
        /// The stream the promise is made on (never 0).
        stream: StreamId,
        /// The stream the server will push on (reserved bit dropped; not checked here).
        promised: StreamId,
        /// The field block is complete in this frame.
        end_headers: bool,
        /// The field block of the promised request, or its first fragment.
        block: Bytes,
    },
    /// PING (§6.7). One without `ack` is answered with the same payload and `ack` set.
    Ping {
        /// This is the answer to a PING.
        ack: bool,
        /// The opaque payload.
        payload: [u8; 8],
    },
    /// GOAWAY (§6.8): the peer processes no stream above `last_stream`.
    GoAway {
        /// The highest stream the peer may have acted on (reserved bit dropped).
        last_stream: StreamId,
        /// Why the connection closes (`NO_ERROR` for a graceful close).
        reason: Reason,
        /// Diagnostic bytes, not meant for machines.
        debug: Bytes,
    },
    /// WINDOW_UPDATE (§6.9), with an increment of at least 1. A window growing past
    /// [`MAX_WINDOW`] is a FLOW_CONTROL_ERROR (stream or connection), the connection's to
    /// check.
    WindowUpdate {
        /// The stream credited, or 0 for the connection's window.
        stream: StreamId,
        /// The credit in bytes, 1 to [`MAX_WINDOW`] (the reserved bit dropped).
        increment: u32,
    },
    /// CONTINUATION (§6.10). It is only valid right after a HEADERS, PUSH_PROMISE or
    /// CONTINUATION without END_HEADERS on the same stream; anywhere else it is a
    /// connection error PROTOCOL_ERROR, which is the connection's to check.
    Continuation {
        /// The stream (never 0).
        stream: StreamId,
        /// The field block is complete with this frame.
        end_headers: bool,
        /// The next fragment of the field block.
        block: Bytes,
    },
    /// A frame of a type this code does not know, to be ignored (§4.1, §5.5); its payload
    /// has been dropped. The one exception belongs to the connection: between a HEADERS
    /// (or PUSH_PROMISE) without END_HEADERS and its last CONTINUATION, any other frame,
    /// unknown types included, is a connection error PROTOCOL_ERROR (§6.10).
    Unknown {
        /// The frame type.
        kind: u8,
        /// The stream named in the header (reserved bit dropped).
        stream: StreamId,
    },
}

/// Settings a peer sent in one SETTINGS frame (§6.5.2): each is `None` when absent (the
/// value in force stays), and a setting sent twice keeps its last value. Unknown identifiers
/// are ignored (§6.5.2). Every value read by [`decode`] is within its range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    /// SETTINGS_HEADER_TABLE_SIZE (0x1): the largest HPACK dynamic table the sender's
    /// decoder allows the receiver's encoder (initially 4096).
    pub(crate) header_table_size: Option<u32>,
    /// SETTINGS_ENABLE_PUSH (0x2): whether the sender accepts PUSH_PROMISE (initially
    /// true). A client must treat `Some(true)` from a server as a connection error
    /// PROTOCOL_ERROR (§6.5.2); that is the connection's to check, as only it knows its end.
    pub(crate) enable_push: Option<bool>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS (0x3): how many streams the receiver may open
    /// (initially unlimited).
    pub(crate) max_concurrent_streams: Option<u32>,
    /// SETTINGS_INITIAL_WINDOW_SIZE (0x4): every stream's initial send window, at most
    /// [`MAX_WINDOW`] (initially 65,535).
    pub(crate) initial_window_size: Option<u32>,
    /// SETTINGS_MAX_FRAME_SIZE (0x5): the largest frame payload the sender accepts,
    /// [`MIN_MAX_FRAME_SIZE`] to [`MAX_MAX_FRAME_SIZE`] (initially the former).
    pub(crate) max_frame_size: Option<u32>,
    /// SETTINGS_MAX_HEADER_LIST_SIZE (0x6): advice on the largest field section the sender
    /// accepts (initially unlimited).
    pub(crate) max_header_list_size: Option<u32>,
    /// SETTINGS_NO_RFC7540_PRIORITIES (0x9, §5.3.2): the sender ignores RFC 7540 priority
    /// signals.
    pub(crate) no_rfc7540_priorities: Option<bool>,
}

impl Settings {
    /// Every setting as (identifier, value if present), in identifier order.
    fn entries(&self) -> [(u16, Option<u32>); 7] {
        [
            (setting::HEADER_TABLE_SIZE, self.header_table_size),
            (setting::ENABLE_PUSH, self.enable_push.map(u32::from)),
            (setting::MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
            (setting::INITIAL_WINDOW_SIZE, self.initial_window_size),
            (setting::MAX_FRAME_SIZE, self.max_frame_size),
            (setting::MAX_HEADER_LIST_SIZE, self.max_header_list_size),
            (
                setting::NO_RFC7540_PRIORITIES,
                self.no_rfc7540_priorities.map(u32::from),
            ),
        ]
    }

    /// Reads a SETTINGS payload (a whole number of 6-byte entries), checking each value.
    fn read(payload: &[u8]) -> Result<Settings, FrameError> {
        let (entries, rest) = payload.as_chunks::<6>();
        if !rest.is_empty() {
            return Err(FrameError::connection(
                Reason::FRAME_SIZE_ERROR,
                "settings length not a multiple of 6",
            ));
        }
        let mut settings = Settings::default();
        for &[i0, i1, v0, v1, v2, v3] in entries {
            let value = u32::from_be_bytes([v0, v1, v2, v3]);
            match u16::from_be_bytes([i0, i1]) {
                setting::HEADER_TABLE_SIZE => settings.header_table_size = Some(value),
                setting::ENABLE_PUSH => {
                    settings.enable_push = Some(read_bool(value, "enable push not 0 or 1")?)
                }
                setting::MAX_CONCURRENT_STREAMS => settings.max_concurrent_streams = Some(value),
                setting::INITIAL_WINDOW_SIZE => {
                    if value > MAX_WINDOW {
                        return Err(FrameError::connection(
                            Reason::FLOW_CONTROL_ERROR,
                            "initial window size above 2^31-1",
                        ));
                    }
                    settings.initial_window_size = Some(value);
                }
                setting::MAX_FRAME_SIZE => {
                    if !(MIN_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) {
                        return Err(FrameError::connection(
                            Reason::PROTOCOL_ERROR,
                            "max frame size out of range",
                        ));
                    }
                    settings.max_frame_size = Some(value);
                }
                setting::MAX_HEADER_LIST_SIZE => settings.max_header_list_size = Some(value),
                setting::NO_RFC7540_PRIORITIES => {
                    settings.no_rfc7540_priorities =
                        Some(read_bool(value, "no rfc7540 priorities not 0 or 1")?)
                }
                _ => {}
            }
        }
        Ok(settings)
    }
}

/// A boolean setting's value: 0 or 1, anything else a connection error PROTOCOL_ERROR.
fn read_bool(value: u32, what: &'static str) -> Result<bool, FrameError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(FrameError::connection(Reason::PROTOCOL_ERROR, what)),
    }
}

/// Why bytes could not be read as a frame: a connection error (RFC 9113 §5.4.1: send
/// GOAWAY with the reason and close) or a stream error (§5.4.2: send RST_STREAM with the
/// reason on that stream; the connection goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// The connection cannot go on.
    #[error("connection error {reason}: {what}")]
    Connection {
        /// The error code for GOAWAY.
        reason: Reason,
        /// What was wrong, for logs.
        what: &'static str,
    },
    /// One stream cannot go on; the frame was taken off the buffer, so decoding can go on.
    #[error("stream error {reason} on stream {stream}: {what}")]
    Stream {
        /// The stream to reset.
        stream: StreamId,
        /// The error code for RST_STREAM.
        reason: Reason,
        /// What was wrong, for logs.
        what: &'static str,
    },
}

impl FrameError {
    /// A connection error (cold: kept off the decoding path).
    #[cold]
    fn connection(reason: Reason, what: &'static str) -> FrameError {
        FrameError::Connection { reason, what }
    }

    /// A stream error (cold: kept off the decoding path).
    #[cold]
    fn stream(stream: StreamId, reason: Reason, what: &'static str) -> FrameError {
        FrameError::Stream {
            stream,
            reason,
            what,
        }
    }
}

/// A frame header (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy)]
struct Head {
    /// The payload's length.
    len: u32,
    /// The frame type (see [`kind`]).
    kind: u8,
    /// The flags (see [`flag`]).
    flags: u8,
    /// The stream, reserved bit dropped.
    stream: StreamId,
}

impl Head {
    /// Reads the 9 bytes of a header.
    fn read(bytes: &[u8; HEADER_LEN]) -> Head {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = *bytes;
        Head {
            len: u32::from_be_bytes([0, l0, l1, l2]),
            kind,
            flags,
            stream: StreamId::read([s0, s1, s2, s3]),
        }
    }

    /// Whether `flag` is set.
    fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// A connection error PROTOCOL_ERROR unless the frame is on a stream.
    fn on_stream(self, what: &'static str) -> Result<(), FrameError> {
        if self.stream.is_zero() {
            return Err(FrameError::connection(Reason::PROTOCOL_ERROR, what));
        }
        Ok(())
    }

    /// A connection error PROTOCOL_ERROR unless the frame is on stream 0.
    fn on_connection(self, what: &'static str) -> Result<(), FrameError> {
        if !self.stream.is_zero() {
            return Err(FrameError::connection(Reason::PROTOCOL_ERROR, what));
        }
        Ok(())
    }
}

/// Takes one whole frame off the front of `buf` (advancing it), or returns `Ok(None)`, with
/// `buf` untouched, if `buf` does not hold a whole frame yet.
///
/// `max_frame_size` is the SETTINGS_MAX_FRAME_SIZE this end advertised: a header announcing
/// a longer payload is a connection error FRAME_SIZE_ERROR as soon as its 9 bytes are there,
/// before waiting for the payload.
///
/// After a [`FrameError::Stream`] the frame has been taken off `buf` and decoding can go on;
/// after a [`FrameError::Connection`] what is left in `buf` is unspecified (the connection
/// is to be closed).
pub(crate) fn decode(buf: &mut BytesMut, max_frame_size: u32) -> Result<Option<Frame>, FrameError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let head = Head::read(head);
    if head.len > max_frame_size {
        return Err(FrameError::connection(
            Reason::FRAME_SIZE_ERROR,
            "frame larger than the maximum frame size",
        ));
    }
    let len = head.len as usize;
    let end = HEADER_LEN + len;
    let Some(payload) = buf.get(HEADER_LEN..end) else {
        return Ok(None);
    };

    // Frames carrying bytes find them in `payload`, then split them off `buf` with `take`.
    let frame = match head.kind {
        kind::DATA => {
            head.on_stream("data frame on stream 0")?;
            let ([], range) = unpad::<0>(head, payload, "")?;
            Frame::Data {
                stream: head.stream,
                end_stream: head.has(flag::END_STREAM),
                payload: take(buf, end, range),
                flow_len: head.len,
            }
        }
        kind::HEADERS => {
            head.on_stream("headers frame on stream 0")?;
            let range = if head.has(flag::PRIORITY) {
                let (&[d0, d1, d2, d3, _weight], range) =
                    unpad::<5>(head, payload, "headers frame too short for its priority")?;
                if StreamId::read([d0, d1, d2, d3]) == head.stream {
                    // RFC 9113 §5.3.1 makes this a stream error, but the field block would
                    // then go undecoded and the HPACK state diverge: close instead (§5.4.1
                    // lets any stream error be treated as a connection error).
                    return Err(FrameError::connection(
                        Reason::PROTOCOL_ERROR,
                        "headers frame depends on its own stream",
                    ));
                }
                range
            } else {
                unpad::<0>(head, payload, "")?.1
            };
            Frame::Headers {
                stream: head.stream,
                end_stream: head.has(flag::END_STREAM),
                end_headers: head.has(flag::END_HEADERS),
                block: take(buf, end, range),
            }
        }
        kind::PUSH_PROMISE => {
            head.on_stream("push promise frame on stream 0")?;
            let (&promised, range) =
                unpad::<4>(head, payload, "push promise frame too short for its stream")?;
            Frame::PushPromise {
                stream: head.stream,
                promised: StreamId::read(promised),
                end_headers: head.has(flag::END_HEADERS),
                block: take(buf, end, range),
            }
        }
        kind::CONTINUATION => {
            head.on_stream("continuation frame on stream 0")?;
            Frame::Continuation {
                stream: head.stream,
                end_headers: head.has(flag::END_HEADERS),
                block: take(buf, end, 0..len),
            }
        }
        kind::GOAWAY => {
            head.on_connection("goaway frame on a stream")?;
            let Some((&[s0, s1, s2, s3, r0, r1, r2, r3], _)) = payload.split_first_chunk::<8>()
            else {
                return Err(FrameError::connection(
                    Reason::FRAME_SIZE_ERROR,
                    "goaway frame shorter than 8 bytes",
                ));
            };
            Frame::GoAway {
                last_stream: StreamId::read([s0, s1, s2, s3]),
                reason: Reason(u32::from_be_bytes([r0, r1, r2, r3])),
                debug: take(buf, end, 8..len),
            }
        }
        _ => {
            // Frames of a fixed size (and unknown ones) are read in place; the frame is
            // dropped from `buf` even on a stream error, so decoding can go on.
            let frame = read_in_place(head, payload);
            buf.advance(end);
            frame?
        }
    };
    Ok(Some(frame))
}

/// Splits a payload that may be PADDED into the `N` bytes of fixed fields that follow the
/// pad length, and the range of the payload between them and the padding.
///
/// Errors (connection errors: every padded frame type changes the connection's state):
/// PADDED without room for the pad length, or no room for the fixed fields, is
/// FRAME_SIZE_ERROR ("too small to contain mandatory frame data", §4.2); padding longer than
/// what remains is PROTOCOL_ERROR (§6.1, §6.2).
fn unpad<'a, const N: usize>(
    head: Head,
    payload: &'a [u8],
    too_short: &'static str,
) -> Result<(&'a [u8; N], Range<usize>), FrameError> {
    let (pad, start, rest) = if head.has(flag::PADDED) {
        let Some((&pad, rest)) = payload.split_first() else {
            return Err(FrameError::connection(
                Reason::FRAME_SIZE_ERROR,
                "padded frame without a pad length",
            ));
        };
        (usize::from(pad), 1, rest)
    } else {
        (0, 0, payload)
    };
    let Some((fields, rest)) = rest.split_first_chunk::<N>() else {
        return Err(FrameError::connection(Reason::FRAME_SIZE_ERROR, too_short));
    };
    if pad > rest.len() {
        return Err(FrameError::connection(
            Reason::PROTOCOL_ERROR,
            "padding longer than the payload",
        ));
    }
    Ok((fields, start + N..payload.len() - pad))
}

/// Takes the frame ending at `end` off the front of `buf`, keeping bytes `keep` of its
/// payload (`keep` within the payload, which `buf` holds whole).
fn take(buf: &mut BytesMut, end: usize, keep: Range<usize>) -> Bytes {
    if keep.is_empty() {
        buf.advance(end);
        return Bytes::new();
    }
    buf.advance(HEADER_LEN + keep.start);
    let kept = buf.split_to(keep.len()).freeze();
    buf.advance(end - HEADER_LEN - keep.end);
    kept
}

/// Reads a frame of a fixed size (PRIORITY, RST_STREAM, SETTINGS, PING, WINDOW_UPDATE) or of
/// an unknown type from its payload.
fn read_in_place(head: Head, payload: &[u8]) -> Result<Frame, FrameError> {
    match head.kind {
        kind::PRIORITY => {
            head.on_stream("priority frame on stream 0")?;
            let Ok(&[d0, d1, d2, d3, _weight]) = <&[u8; 5]>::try_from(payload) else {
                return Err(FrameError::stream(
                    head.stream,
                    Reason::FRAME_SIZE_ERROR,
                    "priority frame not 5 bytes",
                ));
            };
            if StreamId::read([d0, d1, d2, d3]) == head.stream {
                return Err(FrameError::stream(
                    head.stream,
                    Reason::PROTOCOL_ERROR,
                    "priority frame depends on its own stream",
                ));
            }
            Ok(Frame::Priority {
                stream: head.stream,
            })
        }
        kind::RST_STREAM => {
            head.on_stream("rst stream frame on stream 0")?;
            let Ok(&reason) = <&[u8; 4]>::try_from(payload) else {
                return Err(FrameError::connection(
                    Reason::FRAME_SIZE_ERROR,
                    "rst stream frame not 4 bytes",
                ));
            };
            Ok(Frame::RstStream {
                stream: head.stream,
                reason: Reason(u32::from_be_bytes(reason)),
            })
        }
        kind::SETTINGS => {
            head.on_connection("settings frame on a stream")?;
            if !head.has(flag::ACK) {
                return Settings::read(payload).map(Frame::Settings);
            }
            if !payload.is_empty() {
                return Err(FrameError::connection(
                    Reason::FRAME_SIZE_ERROR,
                    "settings ack with a payload",
                ));
            }
            Ok(Frame::SettingsAck)
        }
        kind::PING => {
            head.on_connection("ping frame on a stream")?;
            let Ok(&payload) = <&[u8; 8]>::try_from(payload) else {
                return Err(FrameError::connection(
                    Reason::FRAME_SIZE_ERROR,
                    "ping frame not 8 bytes",
                ));
            };
            Ok(Frame::Ping {
                ack: head.has(flag::ACK),
                payload,
            })
        }
        kind::WINDOW_UPDATE => {
            let Ok(&increment) = <&[u8; 4]>::try_from(payload) else {
                return Err(FrameError::connection(
                    Reason::FRAME_SIZE_ERROR,
                    "window update frame not 4 bytes",
                ));
            };
            let increment = u32::from_be_bytes(increment) & U31;
            if increment == 0 {
                let what = "window update of 0";
                return Err(if head.stream.is_zero() {
                    FrameError::connection(Reason::PROTOCOL_ERROR, what)
                } else {
                    FrameError::stream(head.stream, Reason::PROTOCOL_ERROR, what)
                });
            }
            Ok(Frame::WindowUpdate {
                stream: head.stream,
                increment,
            })
        }
        kind => Ok(Frame::Unknown {
            kind,
            stream: head.stream,
        }),
    }
}

/// Appends a frame header: a payload of `len` bytes (less than 2^24) follows.
pub(crate) fn encode_head(dst: &mut BytesMut, kind: u8, flags: u8, stream: StreamId, len: usize) {
    debug_assert!(
        len <= MAX_MAX_FRAME_SIZE as usize,
        "frame payload of {len} bytes"
    );
    let [_, l0, l1, l2] = (len as u32).to_be_bytes();
    let [s0, s1, s2, s3] = (stream.0 & U31).to_be_bytes();
    dst.extend_from_slice(&[l0, l1, l2, kind, flags, s0, s1, s2, s3]);
}

/// Appends a DATA frame carrying `payload` (no longer than the peer's maximum frame size).
pub(crate) fn encode_data(dst: &mut BytesMut, stream: StreamId, payload: &[u8], end_stream: bool) {
    dst.reserve(HEADER_LEN + payload.len());
    encode_data_head(dst, stream, payload.len(), end_stream);
    dst.extend_from_slice(payload);
}

/// Appends only the header of a DATA frame whose `len` bytes of payload the caller writes
/// next (say, from their own buffer with a vectored write).
pub(crate) fn encode_data_head(dst: &mut BytesMut, stream: StreamId, len: usize, end_stream: bool) {
    debug_assert!(!stream.is_zero(), "DATA on stream 0");
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    encode_head(dst, kind::DATA, flags, stream, len);
}

/// Appends a field block as a HEADERS frame followed, if the block is longer than
/// `max_frame_size` (the peer's), by as many CONTINUATION frames as it takes; the last frame
/// has END_HEADERS. `max_frame_size` is taken as at least 1 and at most
/// [`MAX_MAX_FRAME_SIZE`].
pub(crate) fn encode_headers(
    dst: &mut BytesMut,
    stream: StreamId,
    block: &[u8],
    end_stream: bool,
    max_frame_size: u32,
) {
    debug_assert!(!stream.is_zero(), "HEADERS on stream 0");
    let max = max_frame_size.clamp(1, MAX_MAX_FRAME_SIZE) as usize;
    let frames = block.len().div_ceil(max).max(1);
    dst.reserve(block.len() + frames * HEADER_LEN);

    let (first, mut rest) = block.split_at(block.len().min(max));
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if rest.is_empty() {
        flags |= flag::END_HEADERS;
    }
    encode_head(dst, kind::HEADERS, flags, stream, first.len());
    dst.extend_from_slice(first);
    while !rest.is_empty() {
        let (fragment, tail) = rest.split_at(rest.len().min(max));
        rest = tail;
        let flags = if rest.is_empty() {
            flag::END_HEADERS
        } else {
            0
        };
        encode_head(dst, kind::CONTINUATION, flags, stream, fragment.len());
        dst.extend_from_slice(fragment);
    }
}

/// Appends a SETTINGS frame with the settings present in `settings`, in identifier order.
pub(crate) fn encode_settings(dst: &mut BytesMut, settings: &Settings) {
    debug_assert!(settings.initial_window_size.is_none_or(|v| v <= MAX_WINDOW));
    debug_assert!(settings
        .max_frame_size
        .is_none_or(|v| (MIN_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&v)));
    let entries = settings.entries();
    let len = 6 * entries.iter().filter(|(_, value)| value.is_some()).count();
    dst.reserve(HEADER_LEN + len);
    encode_head(dst, kind::SETTINGS, 0, StreamId::ZERO, len);
    for (id, value) in entries {
        if let Some(value) = value {
            dst.put_u16(id);
            dst.put_u32(value);
        }
    }
}

/// Appends a SETTINGS frame acknowledging the peer's settings.
pub(crate) fn encode_settings_ack(dst: &mut BytesMut) {
    encode_head(dst, kind::SETTINGS, flag::ACK, StreamId::ZERO, 0);
}

/// Appends a PING frame (`ack`: the answer to the peer's PING, echoing its payload).
pub(crate) fn encode_ping(dst: &mut BytesMut, ack: bool, payload: [u8; 8]) {
    dst.reserve(HEADER_LEN + 8);
    let flags = if ack { flag::ACK } else { 0 };
    encode_head(dst, kind::PING, flags, StreamId::ZERO, 8);
    dst.extend_from_slice(&payload);
}

/// Appends a RST_STREAM frame ending `stream` with `reason`.
pub(crate) fn encode_rst_stream(dst: &mut BytesMut, stream: StreamId, reason: Reason) {
    debug_assert!(!stream.is_zero(), "RST_STREAM on stream 0");
    dst.reserve(HEADER_LEN + 4);
    encode_head(dst, kind::RST_STREAM, 0, stream, 4);
    dst.put_u32(reason.0);
}

/// Appends a GOAWAY frame. `debug` is cut to what fits a frame of [`MIN_MAX_FRAME_SIZE`],
/// which every peer accepts.
pub(crate) fn encode_goaway(
    dst: &mut BytesMut,
    last_stream: StreamId,
    reason: Reason,
    debug: &[u8],
) {
    let (debug, _) = debug.split_at(debug.len().min(MAX_GOAWAY_DEBUG));
    dst.reserve(HEADER_LEN + 8 + debug.len());
    encode_head(dst, kind::GOAWAY, 0, StreamId::ZERO, 8 + debug.len());
    dst.put_u32(last_stream.0 & U31);
    dst.put_u32(reason.0);
    dst.extend_from_slice(debug);
}

/// Appends a WINDOW_UPDATE frame crediting `stream` (0: the connection) with `increment`
/// bytes, 1 to [`MAX_WINDOW`].
pub(crate) fn encode_window_update(dst: &mut BytesMut, stream: StreamId, increment: u32) {
    debug_assert!(
        (1..=MAX_WINDOW).contains(&increment),
        "window increment {increment}"
    );
    dst.reserve(HEADER_LEN + 4);
    encode_head(dst, kind::WINDOW_UPDATE, 0, stream, 4);
    dst.put_u32(increment & U31);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A frame built by hand: a header announcing `payload`'s length, then `payload`.
    fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        encode_head(&mut buf, kind, flags, StreamId(stream), payload.len());
        buf.extend_from_slice(payload);
        buf
    }

    /// Decodes exactly one frame from `buf`, which must then be empty.
    fn one(mut buf: BytesMut) -> Frame {
        let frame = decode(&mut buf, MAX_MAX_FRAME_SIZE)
            .expect("a valid frame")
            .expect("a whole frame");
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        frame
    }

    /// Decodes `buf`, which must hold one frame that fails.
    fn error(mut buf: BytesMut) -> FrameError {
        let error = decode(&mut buf, MAX_MAX_FRAME_SIZE).expect_err("an invalid frame");
        let what = match error {
            FrameError::Connection { what, .. } | FrameError::Stream { what, .. } => what,
        };
        assert!(!what.is_empty() && what == what.to_lowercase(), "{what:?}");
        error
    }

    fn assert_connection_error(buf: BytesMut, reason: Reason) {
        match error(buf) {
            FrameError::Connection { reason: got, .. } => assert_eq!(got, reason),
            other => panic!("expected a connection error {reason}, got {other:?}"),
        }
    }

    fn assert_stream_error(buf: BytesMut, stream: u32, reason: Reason) {
        match error(buf) {
            FrameError::Stream {
                stream: got_stream,
                reason: got,
                ..
            } => assert_eq!((got_stream, got), (StreamId(stream), reason)),
            other => panic!("expected a stream error {reason}, got {other:?}"),
        }
    }

    /// Decodes every frame in `buf`, which must end on a frame boundary.
    fn all(mut buf: BytesMut, max_frame_size: u32) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = decode(&mut buf, max_frame_size).expect("valid frames") {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        frames
    }

    #[test]
    fn constants_match_the_rfc() {
        assert_eq!(PREFACE.len(), 24);
        assert_eq!(MIN_MAX_FRAME_SIZE, 16_384);
        assert_eq!(MAX_MAX_FRAME_SIZE, 16_777_215);
        assert_eq!(MAX_WINDOW, 2_147_483_647);
        assert!(StreamId(1).is_client_initiated());
        assert!(!StreamId(2).is_client_initiated());
        assert!(StreamId::ZERO.is_zero() && !StreamId(1).is_zero());
    }

    #[test]
    fn encode_head_writes_the_rfc_layout() {
        let mut buf = BytesMut::new();
        encode_head(&mut buf, 0xfa, 0x25, StreamId(0x8102_0304), 0x0a_0b0c);
        // The reserved bit of the stream is cleared when sending.
        assert_eq!(
            &buf[..],
            &[0x0a, 0x0b, 0x0c, 0xfa, 0x25, 0x01, 0x02, 0x03, 0x04]
        );
    }

    #[test]
    fn data_round_trips() {
        for (payload, end_stream) in [(&b"hello"[..], false), (&b""[..], true)] {
            let mut buf = BytesMut::new();
            encode_data(&mut buf, StreamId(3), payload, end_stream);
            assert_eq!(
                one(buf),
                Frame::Data {
                    stream: StreamId(3),
                    end_stream,
                    payload: Bytes::copy_from_slice(payload),
                    flow_len: payload.len() as u32,
                }
            );
        }
    }

    #[test]
    fn data_head_then_payload_is_a_data_frame() {
        let mut buf = BytesMut::new();
        encode_data_head(&mut buf, StreamId(5), 3, true);
        assert_eq!(buf.len(), HEADER_LEN);
        buf.extend_from_slice(b"abc");
        assert_eq!(
            one(buf),
            Frame::Data {
                stream: StreamId(5),
                end_stream: true,
                payload: Bytes::from_static(b"abc"),
                flow_len: 3,
            }
        );
    }

    #[test]
    fn headers_round_trip_in_one_frame() {
        for end_stream in [false, true] {
            let mut buf = BytesMut::new();
            encode_headers(&mut buf, StreamId(1), b"\x82\x86\x84", end_stream, 16_384);
            assert_eq!(
                one(buf),
                Frame::Headers {
                    stream: StreamId(1),
                    end_stream,
                    end_headers: true,
                    block: Bytes::from_static(b"\x82\x86\x84"),
                }
            );
        }
    }

    #[test]
    fn empty_headers_block_is_one_frame() {
        let mut buf = BytesMut::new();
        encode_headers(&mut buf, StreamId(1), b"", false, 16_384);
        assert_eq!(buf.len(), HEADER_LEN);
        assert_eq!(
            one(buf),
            Frame::Headers {
                stream: StreamId(1),
                end_stream: false,
                end_headers: true,
                block: Bytes::new(),
            }
        );
    }

    #[test]
    fn headers_split_into_continuations() {
        let block: Vec<u8> = (0..10).collect();
        let mut buf = BytesMut::new();
        encode_headers(&mut buf, StreamId(7), &block, true, 4);
        assert_eq!(buf.len(), 10 + 3 * HEADER_LEN);
        // Every frame fits the small maximum.
        assert_eq!(
            all(buf, 4),
            [
                Frame::Headers {
                    stream: StreamId(7),
                    end_stream: true,
                    end_headers: false,
                    block: Bytes::from_static(&[0, 1, 2, 3]),
                },
                Frame::Continuation {
                    stream: StreamId(7),
                    end_headers: false,
                    block: Bytes::from_static(&[4, 5, 6, 7]),
                },
                Frame::Continuation {
                    stream: StreamId(7),
                    end_headers: true,
                    block: Bytes::from_static(&[8, 9]),
                },
            ]
        );

        // A block of exactly two frames' worth ends on a full CONTINUATION.
        let mut buf = BytesMut::new();
        encode_headers(&mut buf, StreamId(7), &block[..8], false, 4);
        let frames = all(buf, 4);
        assert_eq!(frames.len(), 2);
        assert_eq!(
            frames[1],
            Frame::Continuation {
                stream: StreamId(7),
                end_headers: true,
                block: Bytes::from_static(&[4, 5, 6, 7]),
            }
        );
    }

    #[test]
    fn priority_round_trips() {
        // Stream 3 depends exclusively on stream 1, weight 16.
        let buf = raw(kind::PRIORITY, 0, 3, &[0x80, 0, 0, 1, 15]);
        assert_eq!(
            one(buf),
            Frame::Priority {
                stream: StreamId(3)
            }
        );
    }

    #[test]
    fn rst_stream_round_trips() {
        for reason in [Reason::CANCEL, Reason(0xdead_beef)] {
            let mut buf = BytesMut::new();
            encode_rst_stream(&mut buf, StreamId(9), reason);
            assert_eq!(
                one(buf),
                Frame::RstStream {
                    stream: StreamId(9),
                    reason,
                }
            );
        }
    }

    #[test]
    fn settings_round_trip() {
        let settings = Settings {
            header_table_size: Some(0),
            enable_push: Some(false),
            max_concurrent_streams: Some(100),
            initial_window_size: Some(MAX_WINDOW),
            max_frame_size: Some(MAX_MAX_FRAME_SIZE),
            max_header_list_size: Some(u32::MAX),
            no_rfc7540_priorities: Some(true),
        };
        let mut buf = BytesMut::new();
        encode_settings(&mut buf, &settings);
        assert_eq!(buf.len(), HEADER_LEN + 7 * 6);
        assert_eq!(one(buf), Frame::Settings(settings));

        let mut buf = BytesMut::new();
        encode_settings(&mut buf, &Settings::default());
        assert_eq!(buf.len(), HEADER_LEN);
        assert_eq!(one(buf), Frame::Settings(Settings::default()));
    }

    #[test]
    fn settings_ack_round_trips() {
        let mut buf = BytesMut::new();
        encode_settings_ack(&mut buf);
        assert_eq!(one(buf), Frame::SettingsAck);
    }

    #[test]
    fn settings_keep_the_last_value_and_ignore_unknown_identifiers() {
        let payload = [
            [0x00, 0x04, 0, 0, 0, 1],             // INITIAL_WINDOW_SIZE = 1
            [0x00, 0x08, 0xff, 0xff, 0xff, 0xff], // ENABLE_CONNECT_PROTOCOL: not known here
            [0xab, 0xcd, 0xff, 0xff, 0xff, 0xff], // unknown
            [0x00, 0x04, 0, 0, 0, 2],             // INITIAL_WINDOW_SIZE = 2
        ]
        .concat();
        assert_eq!(
            one(raw(kind::SETTINGS, 0, 0, &payload)),
            Frame::Settings(Settings {
                initial_window_size: Some(2),
                ..Settings::default()
            })
        );
    }

    #[test]
    fn push_promise_round_trips() {
        // Promised stream 2 with the reserved bit set, padded by 2 bytes.
        let payload = [&[2u8, 0x80, 0, 0, 2][..], b"\x82\x87", &[0, 0]].concat();
        let buf = raw(
            kind::PUSH_PROMISE,
            flag::PADDED | flag::END_HEADERS,
            1,
            &payload,
        );
        assert_eq!(
            one(buf),
            Frame::PushPromise {
                stream: StreamId(1),
                promised: StreamId(2),
                end_headers: true,
                block: Bytes::from_static(b"\x82\x87"),
            }
        );
    }

    #[test]
    fn ping_round_trips() {
        for ack in [false, true] {
            let mut buf = BytesMut::new();
            encode_ping(&mut buf, ack, *b"12345678");
            assert_eq!(
                one(buf),
                Frame::Ping {
                    ack,
                    payload: *b"12345678",
                }
            );
        }
    }

    #[test]
    fn goaway_round_trips() {
        let mut buf = BytesMut::new();
        encode_goaway(
            &mut buf,
            StreamId(11),
            Reason::ENHANCE_YOUR_CALM,
            b"slow down",
        );
        assert_eq!(
            one(buf),
            Frame::GoAway {
                last_stream: StreamId(11),
                reason: Reason::ENHANCE_YOUR_CALM,
                debug: Bytes::from_static(b"slow down"),
            }
        );
    }

    #[test]
    fn goaway_debug_is_cut_to_the_smallest_frame_size() {
        let mut buf = BytesMut::new();
        encode_goaway(&mut buf, StreamId(1), Reason::NO_ERROR, &[b'x'; 20_000]);
        assert_eq!(buf.len(), HEADER_LEN + MIN_MAX_FRAME_SIZE as usize);
        let Ok(Some(Frame::GoAway { debug, .. })) = decode(&mut buf, MIN_MAX_FRAME_SIZE) else {
            panic!("a GOAWAY frame");
        };
        assert_eq!(debug.len(), MAX_GOAWAY_DEBUG);
    }

    #[test]
    fn window_update_round_trips() {
        for (stream, increment) in [(0, 1), (5, MAX_WINDOW), (0, 65_535)] {
            let mut buf = BytesMut::new();
            encode_window_update(&mut buf, StreamId(stream), increment);
            assert_eq!(
                one(buf),
                Frame::WindowUpdate {
                    stream: StreamId(stream),
                    increment,
                }
            );
        }
    }

    #[test]
    fn unknown_frames_are_skipped() {
        let mut buf = raw(0x42, 0xff, 3, b"whatever");
        encode_ping(&mut buf, false, [0; 8]);
        assert_eq!(
            all(buf, MIN_MAX_FRAME_SIZE),
            [
                Frame::Unknown {
                    kind: 0x42,
                    stream: StreamId(3),
                },
                Frame::Ping {
                    ack: false,
                    payload: [0; 8],
                },
            ]
        );
    }

    #[test]
    fn undefined_flags_are_ignored() {
        let buf = raw(kind::DATA, !(flag::PADDED | flag::END_STREAM), 1, b"x");
        assert_eq!(
            one(buf),
            Frame::Data {
                stream: StreamId(1),
                end_stream: false,
                payload: Bytes::from_static(b"x"),
                flow_len: 1,
            }
        );
        // PRIORITY means nothing on DATA, END_STREAM nothing on CONTINUATION.
        let buf = raw(
            kind::CONTINUATION,
            flag::END_STREAM | flag::PRIORITY,
            1,
            b"y",
        );
        assert_eq!(
            one(buf),
            Frame::Continuation {
                stream: StreamId(1),
                end_headers: false,
                block: Bytes::from_static(b"y"),
            }
        );
    }

    #[test]
    fn data_padding_is_stripped_and_counted() {
        // Pad length 3, 2 bytes of data, 3 bytes of padding.
        let buf = raw(
            kind::DATA,
            flag::PADDED | flag::END_STREAM,
            1,
            b"\x03hi\0\0\0",
        );
        assert_eq!(
            one(buf),
            Frame::Data {
                stream: StreamId(1),
                end_stream: true,
                payload: Bytes::from_static(b"hi"),
                flow_len: 6,
            }
        );
        // Padding may fill everything after the pad length.
        let buf = raw(kind::DATA, flag::PADDED, 1, b"\x02\0\0");
        assert_eq!(
            one(buf),
            Frame::Data {
                stream: StreamId(1),
                end_stream: false,
                payload: Bytes::new(),
                flow_len: 3,
            }
        );
        // A pad length of 0 only adds the pad length byte.
        let buf = raw(kind::DATA, flag::PADDED, 1, b"\x00ok");
        assert_eq!(
            one(buf),
            Frame::Data {
                stream: StreamId(1),
                end_stream: false,
                payload: Bytes::from_static(b"ok"),
                flow_len: 3,
            }
        );
    }

    #[test]
    fn headers_padding_and_priority_are_stripped() {
        let expected = |end_headers| Frame::Headers {
            stream: StreamId(3),
            end_stream: false,
            end_headers,
            block: Bytes::from_static(b"\x82\x84"),
        };
        // PADDED: pad length 2.
        let buf = raw(kind::HEADERS, flag::PADDED, 3, b"\x02\x82\x84\0\0");
        assert_eq!(one(buf), expected(false));
        // PRIORITY: depends on stream 1, weight 200.
        let buf = raw(
            kind::HEADERS,
            flag::PRIORITY | flag::END_HEADERS,
            3,
            b"\0\0\0\x01\xc8\x82\x84",
        );
        assert_eq!(one(buf), expected(true));
        // Both: pad length 1, priority (exclusive on stream 0), block, padding.
        let payload = b"\x01\x80\0\0\0\x10\x82\x84\0";
        let flags = flag::PADDED | flag::PRIORITY | flag::END_HEADERS;
        assert_eq!(one(raw(kind::HEADERS, flags, 3, payload)), expected(true));
        // Priority fields and padding taking the whole payload leave an empty block.
        let payload = b"\x01\0\0\0\x01\x10\0";
        assert_eq!(
            one(raw(
                kind::HEADERS,
                flag::PADDED | flag::PRIORITY,
                3,
                payload
            )),
            Frame::Headers {
                stream: StreamId(3),
                end_stream: false,
                end_headers: false,
                block: Bytes::new(),
            }
        );
    }

    #[test]
    fn stream_frames_on_stream_zero_are_connection_errors() {
        let cases: [(u8, &[u8]); 6] = [
            (kind::DATA, b"x"),
            (kind::HEADERS, b"\x82"),
            (kind::PRIORITY, &[0, 0, 0, 1, 0]),
            (kind::RST_STREAM, &[0, 0, 0, 8]),
            (kind::PUSH_PROMISE, &[0, 0, 0, 2]),
            (kind::CONTINUATION, b"\x82"),
        ];
        for (kind, payload) in cases {
            assert_connection_error(raw(kind, 0, 0, payload), Reason::PROTOCOL_ERROR);
        }
    }

    #[test]
    fn connection_frames_on_a_stream_are_connection_errors() {
        let cases: [(u8, u8, &[u8]); 4] = [
            (kind::SETTINGS, 0, b""),
            (kind::SETTINGS, flag::ACK, b""),
            (kind::PING, 0, &[0; 8]),
            (kind::GOAWAY, 0, &[0; 8]),
        ];
        for (kind, flags, payload) in cases {
            assert_connection_error(raw(kind, flags, 1, payload), Reason::PROTOCOL_ERROR);
        }
    }

    #[test]
    fn padding_errors() {
        for kind in [kind::DATA, kind::HEADERS] {
            // No room for the pad length.
            assert_connection_error(raw(kind, flag::PADDED, 1, b""), Reason::FRAME_SIZE_ERROR);
            // Padding longer than what follows the pad length.
            for payload in [&b"\x01"[..], b"\x03ab", b"\xff"] {
                assert_connection_error(
                    raw(kind, flag::PADDED, 1, payload),
                    Reason::PROTOCOL_ERROR,
                );
            }
        }
        // PUSH_PROMISE: padding eating into the promised stream id.
        let buf = raw(kind::PUSH_PROMISE, flag::PADDED, 1, b"\x01\0\0\0\x02");
        assert_connection_error(buf, Reason::PROTOCOL_ERROR);
        // HEADERS: padding eating into the priority fields.
        let buf = raw(
            kind::HEADERS,
            flag::PADDED | flag::PRIORITY,
            1,
            b"\x01\0\0\0\x03\x10",
        );
        assert_connection_error(buf, Reason::PROTOCOL_ERROR);
    }

    #[test]
    fn headers_priority_errors() {
        // Too short for the 5 priority bytes.
        let buf = raw(kind::HEADERS, flag::PRIORITY, 1, b"\0\0\0\x03");
        assert_connection_error(buf, Reason::FRAME_SIZE_ERROR);
        let buf = raw(
            kind::HEADERS,
            flag::PRIORITY | flag::PADDED,
            1,
            b"\0\0\0\0\x03",
        );
        assert_connection_error(buf, Reason::FRAME_SIZE_ERROR);
        // Depending on itself (the reserved/exclusive bit aside): a protocol error, on the
        // connection since the field block would go undecoded.
        let buf = raw(kind::HEADERS, flag::PRIORITY, 5, b"\x80\0\0\x05\x10\x82");
        assert_connection_error(buf, Reason::PROTOCOL_ERROR);
    }

    #[test]
    fn push_promise_too_short() {
        let buf = raw(kind::PUSH_PROMISE, 0, 1, b"\0\0\x02");
        assert_connection_error(buf, Reason::FRAME_SIZE_ERROR);
    }

    #[test]
    fn priority_errors_are_stream_errors() {
        for payload in [&[0u8, 0, 0, 1][..], &[0, 0, 0, 1, 0, 0], b""] {
            assert_stream_error(
                raw(kind::PRIORITY, 0, 3, payload),
                3,
                Reason::FRAME_SIZE_ERROR,
            );
        }
        let buf = raw(kind::PRIORITY, 0, 3, &[0x80, 0, 0, 3, 0]);
        assert_stream_error(buf, 3, Reason::PROTOCOL_ERROR);
    }

    #[test]
    fn stream_errors_take_the_frame_off_the_buffer() {
        let mut buf = raw(kind::PRIORITY, 0, 3, &[0, 0, 0, 3, 0]);
        buf.extend_from_slice(&raw(kind::WINDOW_UPDATE, 0, 3, &[0, 0, 0, 0]));
        encode_ping(&mut buf, true, [7; 8]);
        for _ in 0..2 {
            assert!(matches!(
                decode(&mut buf, MIN_MAX_FRAME_SIZE),
                Err(FrameError::Stream { .. })
            ));
        }
        assert_eq!(
            one(buf),
            Frame::Ping {
                ack: true,
                payload: [7; 8],
            }
        );
    }

    #[test]
    fn rst_stream_length_errors() {
        for payload in [&[0u8, 0, 0][..], &[0, 0, 0, 0, 0], b""] {
            assert_connection_error(
                raw(kind::RST_STREAM, 0, 1, payload),
                Reason::FRAME_SIZE_ERROR,
            );
        }
    }

    #[test]
    fn settings_errors() {
        // Not a whole number of entries.
        for len in [1, 5, 7, 13] {
            let buf = raw(kind::SETTINGS, 0, 0, &vec![0; len]);
            assert_connection_error(buf, Reason::FRAME_SIZE_ERROR);
        }
        // ACK with a payload.
        let buf = raw(kind::SETTINGS, flag::ACK, 0, &[0, 4, 0, 0, 0, 1]);
        assert_connection_error(buf, Reason::FRAME_SIZE_ERROR);
        // Values out of range.
        let cases: [([u8; 6], Reason); 7] = [
            ([0, 2, 0, 0, 0, 2], Reason::PROTOCOL_ERROR),
            ([0, 2, 0xff, 0xff, 0xff, 0xff], Reason::PROTOCOL_ERROR),
            ([0, 4, 0x80, 0, 0, 0], Reason::FLOW_CONTROL_ERROR),
            ([0, 4, 0xff, 0xff, 0xff, 0xff], Reason::FLOW_CONTROL_ERROR),
            ([0, 5, 0, 0, 0x3f, 0xff], Reason::PROTOCOL_ERROR),
            ([0, 5, 0x01, 0, 0, 0], Reason::PROTOCOL_ERROR),
            ([0, 9, 0, 0, 0, 2], Reason::PROTOCOL_ERROR),
        ];
        for (entry, reason) in cases {
            assert_connection_error(raw(kind::SETTINGS, 0, 0, &entry), reason);
        }
        // The bounds themselves are fine.
        for entry in [
            [0, 2, 0, 0, 0, 1],
            [0, 4, 0x7f, 0xff, 0xff, 0xff],
            [0, 5, 0, 0, 0x40, 0],
            [0, 5, 0, 0xff, 0xff, 0xff],
        ] {
            assert!(matches!(
                one(raw(kind::SETTINGS, 0, 0, &entry)),
                Frame::Settings(_)
            ));
        }
    }

    #[test]
    fn ping_length_errors() {
        for len in [0, 7, 9] {
            let buf = raw(kind::PING, 0, 0, &vec![0; len]);
            assert_connection_error(buf, Reason::FRAME_SIZE_ERROR);
        }
    }

    #[test]
    fn goaway_length_errors() {
        for len in [0, 4, 7] {
            let buf = raw(kind::GOAWAY, 0, 0, &vec![0; len]);
            assert_connection_error(buf, Reason::FRAME_SIZE_ERROR);
        }
    }

    #[test]
    fn window_update_errors() {
        for len in [0, 3, 5] {
            let buf = raw(kind::WINDOW_UPDATE, 0, 0, &vec![1; len]);
            assert_connection_error(buf, Reason::FRAME_SIZE_ERROR);
            let buf = raw(kind::WINDOW_UPDATE, 0, 1, &vec![1; len]);
            assert_connection_error(buf, Reason::FRAME_SIZE_ERROR);
        }
        // An increment of 0 (the reserved bit aside).
        for increment in [[0u8, 0, 0, 0], [0x80, 0, 0, 0]] {
            let buf = raw(kind::WINDOW_UPDATE, 0, 0, &increment);
            assert_connection_error(buf, Reason::PROTOCOL_ERROR);
            let buf = raw(kind::WINDOW_UPDATE, 0, 7, &increment);
            assert_stream_error(buf, 7, Reason::PROTOCOL_ERROR);
        }
    }

    #[test]
    fn oversized_frame_fails_before_its_payload_arrives() {
        let mut buf = BytesMut::new();
        encode_data_head(
            &mut buf,
            StreamId(1),
            MIN_MAX_FRAME_SIZE as usize + 1,
            false,
        );
        assert_eq!(
            decode(&mut buf, MIN_MAX_FRAME_SIZE),
            Err(FrameError::Connection {
                reason: Reason::FRAME_SIZE_ERROR,
                what: "frame larger than the maximum frame size",
            })
        );
        // Exactly the maximum is fine (it waits for the payload), on any frame type.
        let mut buf = BytesMut::new();
        encode_head(&mut buf, 0x77, 0, StreamId(1), MIN_MAX_FRAME_SIZE as usize);
        assert_eq!(decode(&mut buf, MIN_MAX_FRAME_SIZE), Ok(None));
        let mut buf = BytesMut::new();
        encode_head(&mut buf, kind::SETTINGS, 0, StreamId(0), 18);
        assert!(decode(&mut buf, 12).is_err());
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete() {
        let mut frames = BytesMut::new();
        encode_headers(
            &mut frames,
            StreamId(1),
            b"\x82\x86\x84\x41\x0fwww",
            false,
            16_384,
        );
        encode_data(&mut frames, StreamId(1), b"a small request body", true);
        encode_settings(
            &mut frames,
            &Settings {
                max_frame_size: Some(1 << 20),
                ..Settings::default()
            },
        );
        encode_goaway(&mut frames, StreamId(1), Reason::NO_ERROR, b"bye");
        let expected = all(frames.clone(), MIN_MAX_FRAME_SIZE);
        let mut whole = frames;
        for frame in expected {
            let frame_len = {
                let mut copy = whole.clone();
                decode(&mut copy, MIN_MAX_FRAME_SIZE).unwrap();
                whole.len() - copy.len()
            };
            for prefix in 0..frame_len {
                let mut buf = BytesMut::from(&whole[..prefix]);
                assert_eq!(
                    decode(&mut buf, MIN_MAX_FRAME_SIZE),
                    Ok(None),
                    "{prefix} bytes"
                );
                assert_eq!(&buf[..], &whole[..prefix]);
            }
            assert_eq!(decode(&mut whole, MIN_MAX_FRAME_SIZE), Ok(Some(frame)));
        }
        assert!(whole.is_empty());
    }

    #[test]
    fn frames_in_one_buffer_decode_in_turn() {
        let mut buf = BytesMut::new();
        encode_headers(&mut buf, StreamId(1), b"\x88", false, 16_384);
        encode_data(&mut buf, StreamId(1), b"reply", true);
        // Then half of a third frame.
        encode_window_update(&mut buf, StreamId(0), 5);
        buf.truncate(buf.len() - 6);
        assert_eq!(
            decode(&mut buf, MIN_MAX_FRAME_SIZE),
            Ok(Some(Frame::Headers {
                stream: StreamId(1),
                end_stream: false,
                end_headers: true,
                block: Bytes::from_static(b"\x88"),
            }))
        );
        assert_eq!(
            decode(&mut buf, MIN_MAX_FRAME_SIZE),
            Ok(Some(Frame::Data {
                stream: StreamId(1),
                end_stream: true,
                payload: Bytes::from_static(b"reply"),
                flow_len: 5,
            }))
        );
        assert_eq!(decode(&mut buf, MIN_MAX_FRAME_SIZE), Ok(None));
        assert_eq!(buf.len(), HEADER_LEN + 4 - 6);
    }

    #[test]
    fn reserved_bits_are_ignored() {
        // The stream identifier's reserved bit, in the header.
        let mut buf = BytesMut::from(&[0, 0, 2, kind::DATA, 0, 0x80, 0, 0, 3, b'h', b'i'][..]);
        assert_eq!(
            decode(&mut buf, MIN_MAX_FRAME_SIZE),
            Ok(Some(Frame::Data {
                stream: StreamId(3),
                end_stream: false,
                payload: Bytes::from_static(b"hi"),
                flow_len: 2,
            }))
        );
        // A reserved bit alone is still stream 0.
        let buf = BytesMut::from(&[0, 0, 1, kind::DATA, 0, 0x80, 0, 0, 0, b'x'][..]);
        assert_connection_error(buf, Reason::PROTOCOL_ERROR);
        let buf = BytesMut::from(
            &[
                0,
                0,
                8,
                kind::PING,
                0,
                0x80,
                0,
                0,
                0,
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
            ][..],
        );
        assert_eq!(
            one(buf),
            Frame::Ping {
                ack: false,
                payload: [1, 2, 3, 4, 5, 6, 7, 8],
            }
        );
        // In a window increment and a GOAWAY's last stream.
        let buf = raw(kind::WINDOW_UPDATE, 0, 1, &[0x80, 0, 0, 9]);
        assert_eq!(
            one(buf),
            Frame::WindowUpdate {
                stream: StreamId(1),
                increment: 9,
            }
        );
        let buf = raw(kind::GOAWAY, 0, 0, &[0x80, 0, 0, 5, 0, 0, 0, 0]);
        assert_eq!(
            one(buf),
            Frame::GoAway {
                last_stream: StreamId(5),
                reason: Reason::NO_ERROR,
                debug: Bytes::new(),
            }
        );
    }

    #[test]
    fn errors_display_their_kind_and_reason() {
        let error = FrameError::stream(StreamId(3), Reason::PROTOCOL_ERROR, "window update of 0");
        assert_eq!(
            error.to_string(),
            "stream error PROTOCOL_ERROR on stream 3: window update of 0"
        );
        let error = FrameError::connection(Reason(0x99), "x");
        assert_eq!(error.to_string(), "connection error Reason(0x99): x");
    }

    /// Decodes `buf` until it needs more bytes or fails, checking that each call either
    /// takes a frame off or leaves `buf` as it was.
    fn decode_all(mut buf: BytesMut, max_frame_size: u32) {
        loop {
            let before = buf.clone();
            match decode(&mut buf, max_frame_size) {
                Ok(Some(_)) => assert!(buf.len() < before.len() && before.ends_with(&buf)),
                Ok(None) => {
                    assert_eq!(buf, before);
                    break;
                }
                Err(_) => break,
            }
        }
    }

    fn settings() -> impl Strategy<Value = Settings> {
        (
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(0..=MAX_WINDOW),
            proptest::option::of(MIN_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(a, b, c, d, e, f, g)| Settings {
                header_table_size: a,
                enable_push: b,
                max_concurrent_streams: c,
                initial_window_size: d,
                max_frame_size: e,
                max_header_list_size: f,
                no_rfc7540_priorities: g,
            })
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            max_frame_size in prop_oneof![Just(MIN_MAX_FRAME_SIZE), 0..=MAX_MAX_FRAME_SIZE],
        ) {
            decode_all(BytesMut::from(&bytes[..]), max_frame_size);
        }

        #[test]
        fn decode_never_panics_on_well_framed_garbage(
            frames in proptest::collection::vec(
                (0u8..12, any::<u8>(), prop_oneof![Just(0u32), Just(1), any::<u32>()],
                 proptest::collection::vec(any::<u8>(), 0..40)),
                1..8,
            ),
        ) {
            let mut buf = BytesMut::new();
            for (kind, flags, stream, payload) in &frames {
                buf.extend_from_slice(&raw(*kind, *flags, *stream, payload));
            }
            decode_all(buf, MIN_MAX_FRAME_SIZE);
        }

        #[test]
        fn data_round_trips_any(
            stream in 1..=U31,
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            end_stream in any::<bool>(),
        ) {
            let mut buf = BytesMut::new();
            encode_data(&mut buf, StreamId(stream), &payload, end_stream);
            prop_assert_eq!(one(buf), Frame::Data {
                stream: StreamId(stream),
                end_stream,
                payload: Bytes::from(payload.clone()),
                flow_len: payload.len() as u32,
            });
        }

        #[test]
        fn headers_round_trip_at_any_frame_size(
            stream in 1..=U31,
            block in proptest::collection::vec(any::<u8>(), 0..300),
            end_stream in any::<bool>(),
            max_frame_size in 1u32..400,
        ) {
            let mut buf = BytesMut::new();
            encode_headers(&mut buf, StreamId(stream), &block, end_stream, max_frame_size);
            let frames = all(buf, max_frame_size);
            let mut joined = Vec::new();
            for (i, frame) in frames.iter().enumerate() {
                let last = i + 1 == frames.len();
                match frame {
                    Frame::Headers { stream: s, end_stream: e, end_headers, block } if i == 0 => {
                        let expected = (StreamId(stream), end_stream, last);
                        prop_assert_eq!((*s, *e, *end_headers), expected);
                        joined.extend_from_slice(block);
                    }
                    Frame::Continuation { stream: s, end_headers, block } if i > 0 => {
                        prop_assert_eq!((*s, *end_headers), (StreamId(stream), last));
                        prop_assert!(!block.is_empty());
                        joined.extend_from_slice(block);
                    }
                    other => prop_assert!(false, "unexpected frame {:?}", other),
                }
            }
            prop_assert_eq!(joined, block);
        }

        #[test]
        fn window_update_round_trips_any(stream in 0..=U31, increment in 1..=MAX_WINDOW) {
            let mut buf = BytesMut::new();
            encode_window_update(&mut buf, StreamId(stream), increment);
            prop_assert_eq!(one(buf), Frame::WindowUpdate { stream: StreamId(stream), increment });
        }

        #[test]
        fn ping_round_trips_any(ack in any::<bool>(), payload in any::<[u8; 8]>()) {
            let mut buf = BytesMut::new();
            encode_ping(&mut buf, ack, payload);
            prop_assert_eq!(one(buf), Frame::Ping { ack, payload });
        }

        #[test]
        fn goaway_round_trips_any(
            last_stream in 0..=U31,
            reason in any::<u32>(),
            debug in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut buf = BytesMut::new();
            encode_goaway(&mut buf, StreamId(last_stream), Reason(reason), &debug);
            prop_assert_eq!(one(buf), Frame::GoAway {
                last_stream: StreamId(last_stream),
                reason: Reason(reason),
                debug: Bytes::from(debug),
            });
        }

        #[test]
        fn settings_round_trip_any(settings in settings()) {
            let mut buf = BytesMut::new();
            encode_settings(&mut buf, &settings);
            prop_assert_eq!(one(buf), Frame::Settings(settings));
        }
    }
}
