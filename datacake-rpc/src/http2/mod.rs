//! HTTP/2 (RFC 9113) spoken by the crate itself, on both ends: frames ([`frame`]), header
//! compression ([`hpack`], RFC 7541), message heads ([`head`]), one connection's rules as a
//! state machine without I/O ([`state`]), and the driver and handles that put it on a socket
//! ([`io`]).
//!
//! Why not h2: a 64-byte call cost about 62k instructions per round trip (both ends), about
//! two thirds of them in h2's stream machinery on each end; on these modules it costs under
//! 30k (`valgrind --tool=callgrind` on `benchmarks/examples/echo_probe.rs`; the crate README
//! has the figures). What goes over the wire is plain HTTP/2: the tests check both ends
//! against an independent implementation (h2 and hyper as raw clients and servers).

pub(crate) mod frame;
pub(crate) mod head;
pub(crate) mod hpack;
mod huffman;
pub(crate) mod io;
pub(crate) mod state;
mod stream;

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

/// The bytes a hex string (whitespace ignored) stands for, as the RFCs print them.
#[cfg(test)]
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}
