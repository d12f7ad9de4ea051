//! HTTP/2 (RFC 9113) spoken by the crate itself: the frame layer ([`frame`]) and header
//! compression ([`hpack`], RFC 7541).
//!
//! Why: a 64-byte call costs about 62k instructions per round trip (both ends), and h2's
//! stream machinery is about two thirds of them on each end (`valgrind --tool=callgrind`
//! per thread on `benchmarks/examples/echo_probe.rs`; the crate README has the figures).
//! Reaching the 30k target needs a frame path of our own for small unary calls on both ends.
//! It is built in stages: first these codecs, each checked against the RFCs' own examples
//! and by property tests; then the client's connection on them; then the server's. Until a
//! connection uses them they are compiled for their tests only.

pub(crate) mod client;
pub(crate) mod frame;
pub(crate) mod hpack;
mod huffman;
pub(crate) mod io;

use std::fmt;

/// An HTTP/2 error code (RFC 9113 §7), as carried by `RST_STREAM` and `GOAWAY`. Codes this
/// crate does not know are kept as they are (the RFC says to treat them as `INTERNAL_ERROR`
/// only when acting on them).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Reason(pub(crate) u32);

impl Reason {
    pub(crate) const NO_ERROR: Reason = Reason(0x0);
    pub(crate) const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub(crate) const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub(crate) const STREAM_CLOSED: Reason = Reason(0x5);
    pub(crate) const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub(crate) const REFUSED_STREAM: Reason = Reason(0x7);
    pub(crate) const CANCEL: Reason = Reason(0x8);
    pub(crate) const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub(crate) const ENHANCE_YOUR_CALM: Reason = Reason(0xb);

    /// The code's name in the RFC, if it has one.
    pub(crate) fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => return None,
        })
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Reason({:#x})", self.0),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
