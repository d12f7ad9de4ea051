//! HPACK header compression (RFC 7541): a [`Decoder`] for the peer's header blocks, and for
//! ours an [`Encoder`] (fields that repeat on every call, indexed) beside the stateless
//! [`encode_field`] and [`encode_sensitive`].
//!
//! The decoder reads bytes from untrusted peers: it never panics, never allocates more than
//! the block's own length can justify (string lengths are checked against the bytes left
//! before anything is read, a Huffman string's output is at most 8/5 of its input, and the
//! dynamic table holds at most its advertised size), and rejects integers longer than
//! [`MAX_INT_CONTINUATIONS`] bytes past their prefix.
//!
//! The stateless encoders never add to the peer's dynamic table: a field is the static
//! table's entry when one matches exactly, else a literal "without indexing" (with the static
//! table's index for the name when it has the name). [`Encoder`] adds the fields it is given
//! and keeps a copy of the peer's table to refer to them.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::huffman::{self, HuffmanError};

/// The dynamic table's size until a setting says otherwise (RFC 9113 §6.5.2,
/// `SETTINGS_HEADER_TABLE_SIZE`).
pub(crate) const DEFAULT_TABLE_SIZE: usize = 4096;

/// What each entry costs in the dynamic table beyond its name and value (RFC 7541 §4.1), and
/// each field in the header list size (RFC 9113 §6.5.2).
pub(crate) const ENTRY_OVERHEAD: usize = 32;

/// How many continuation bytes an integer (RFC 7541 §5.1) may have after its prefix: four
/// carry 28 bits, so no accepted value exceeds 2^28 + 254, far above any length or index a
/// block can use, and well inside a 32-bit `usize`.
const MAX_INT_CONTINUATIONS: u32 = 4;

/// Scratch space for Huffman strings kept between blocks; a block that needed more gives the
/// extra back once it is decoded.
const SCRATCH_KEEP: usize = 16 * 1024;

/// The number of entries in the static table.
const STATIC_LEN: usize = 61;

/// The static table (RFC 7541 Appendix A): entry `i` (1-based) is `STATIC_TABLE[i - 1]`.
static STATIC_TABLE: [(&[u8], &[u8]); STATIC_LEN] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The static table's entry `index` (1-based, as on the wire), if there is one.
pub(crate) fn static_entry(index: usize) -> Option<(&'static [u8], &'static [u8])> {
    STATIC_TABLE.get(index.checked_sub(1)?).copied()
}

/// Where the static table has `name`: `Some((index, true))` for an entry with both `name`
/// and `value`, else `Some((index, false))` for the first entry with `name`, else `None`.
///
/// A match on the name's length picks a handful of candidates, so a name that is not in the
/// table costs a length compare and at most a few byte compares; the pseudo-headers'
/// common values are matched by hand.
pub(crate) fn static_index(name: &[u8], value: &[u8]) -> Option<(usize, bool)> {
    let index = match name.len() {
        3 => match name {
            b"age" => 21,
            b"via" => 60,
            _ => return None,
        },
        4 => match name {
            b"date" => 33,
            b"etag" => 34,
            b"from" => 37,
            b"host" => 38,
            b"link" => 45,
            b"vary" => 59,
            _ => return None,
        },
        5 => match name {
            b":path" => {
                return Some(match value {
                    b"/" => (4, true),
                    b"/index.html" => (5, true),
                    _ => (4, false),
                })
            }
            b"allow" => 22,
            b"range" => 50,
            _ => return None,
        },
        6 => match name {
            b"accept" => 19,
            b"cookie" => 32,
            b"expect" => 35,
            b"server" => 54,
            _ => return None,
        },
        7 => match name {
            b":method" => {
                return Some(match value {
                    b"GET" => (2, true),
                    b"POST" => (3, true),
                    _ => (2, false),
                })
            }
            b":scheme" => {
                return Some(match value {
                    b"http" => (6, true),
                    b"https" => (7, true),
                    _ => (6, false),
                })
            }
            b":status" => {
                return Some(match value {
                    b"200" => (8, true),
                    b"204" => (9, true),
                    b"206" => (10, true),
                    b"304" => (11, true),
                    b"400" => (12, true),
                    b"404" => (13, true),
                    b"500" => (14, true),
                    _ => (8, false),
                })
            }
            b"expires" => 36,
            b"referer" => 51,
            b"refresh" => 52,
            _ => return None,
        },
        8 => match name {
            b"if-match" => 39,
            b"if-range" => 42,
            b"location" => 46,
            _ => return None,
        },
        10 => match name {
            b":authority" => 1,
            b"set-cookie" => 55,
            b"user-agent" => 58,
            _ => return None,
        },
        11 => match name {
            b"retry-after" => 53,
            _ => return None,
        },
        12 => match name {
            b"content-type" => 31,
            b"max-forwards" => 47,
            _ => return None,
        },
        13 => match name {
            b"accept-ranges" => 18,
            b"authorization" => 23,
            b"cache-control" => 24,
            b"content-range" => 30,
            b"if-none-match" => 41,
            b"last-modified" => 44,
            _ => return None,
        },
        14 => match name {
            b"accept-charset" => 15,
            b"content-length" => 28,
            _ => return None,
        },
        15 => match name {
            b"accept-encoding" => 16,
            b"accept-language" => 17,
            _ => return None,
        },
        16 => match name {
            b"content-encoding" => 26,
            b"content-language" => 27,
            b"content-location" => 29,
            b"www-authenticate" => 61,
            _ => return None,
        },
        17 => match name {
            b"if-modified-since" => 40,
            b"transfer-encoding" => 57,
            _ => return None,
        },
        18 => match name {
            b"proxy-authenticate" => 48,
            _ => return None,
        },
        19 => match name {
            b"content-disposition" => 25,
            b"if-unmodified-since" => 43,
            b"proxy-authorization" => 49,
            _ => return None,
        },
        25 => match name {
            b"strict-transport-security" => 56,
            _ => return None,
        },
        27 => match name {
            b"access-control-allow-origin" => 20,
            _ => return None,
        },
        _ => return None,
    };
    // The other names have one entry each: a full match when the values agree (only
    // accept-encoding's is not empty).
    let (_, entry_value) = static_entry(index)?;
    Some((index, entry_value == value))
}

/// Why a header block could not be decoded.
///
/// Every case but [`ListTooLarge`](HpackError::ListTooLarge) is a connection error of type
/// `COMPRESSION_ERROR` (RFC 9113 §4.3): the dynamic table may now differ from the peer's,
/// so the [`Decoder`] refuses further blocks ([`Poisoned`](HpackError::Poisoned)) and the
/// connection must end. `ListTooLarge` concerns one stream only: the block was still
/// decoded to its end, so the dynamic table is in step with the peer's and the decoder can
/// take the next block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HpackError {
    /// The block ends inside a field representation: in an integer, or before a string's
    /// declared length.
    #[error("header block ends inside a field representation")]
    Truncated,
    /// An integer has more than [`MAX_INT_CONTINUATIONS`] bytes after its prefix.
    #[error("integer in header block is too large")]
    IntegerOverflow,
    /// A field refers to table index 0, which RFC 7541 §6.1 reserves.
    #[error("header field refers to table index 0")]
    ZeroIndex,
    /// A field refers to an index past the static and dynamic tables.
    #[error("header field refers to table index {0}, past the end of the tables")]
    IndexOutOfRange(usize),
    /// A Huffman-coded string is invalid (RFC 7541 §5.2).
    #[error("invalid Huffman-coded string: {0}")]
    Huffman(#[from] HuffmanError),
    /// A dynamic table size update asks for more than we advertised.
    #[error("dynamic table size update to {size} exceeds the limit {limit}")]
    TableSizeTooLarge {
        /// The size asked for.
        size: usize,
        /// Our `SETTINGS_HEADER_TABLE_SIZE`.
        limit: usize,
    },
    /// A dynamic table size update follows a field in the block (RFC 7541 §4.2 allows them
    /// only at the start).
    #[error("dynamic table size update after the start of a header block")]
    TableSizeUpdateNotAtStart,
    /// The header list is larger than the limit given to [`Decoder::decode`]. The only
    /// error after which the decoder can go on (see the type's documentation).
    #[error("header list is larger than the limit")]
    ListTooLarge,
    /// The decoder failed on an earlier block with a connection error, so its dynamic table
    /// can no longer be trusted.
    #[error("header decoder used after a compression error")]
    Poisoned,
}

impl HpackError {
    /// Whether the error ends the connection (`COMPRESSION_ERROR`), as all but
    /// [`ListTooLarge`](HpackError::ListTooLarge) do.
    pub(crate) fn is_connection_error(&self) -> bool {
        !matches!(self, HpackError::ListTooLarge)
    }
}

/// Decodes the header blocks a peer sends on one connection, keeping the dynamic table
/// (RFC 7541 §2.3.2) in step with the peer's encoder.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// The dynamic table; its maximum size as last set by the peer's size update.
    table: Table,
    /// The most the peer may set the table's maximum size to: our
    /// `SETTINGS_HEADER_TABLE_SIZE`.
    limit: usize,
    /// Holds the decoded Huffman strings of the field being decoded.
    scratch: Vec<u8>,
    /// Set by a connection error: the table may be out of step, so no more blocks.
    poisoned: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_TABLE_SIZE)
    }
}

/// A string as read from a block: the block's own bytes, or a range of the decoder's scratch
/// space when it was Huffman-coded.
enum Str<'a> {
    Block(&'a [u8]),
    Scratch(Range<usize>),
}

impl<'a> Str<'a> {
    fn bytes<'s>(&self, scratch: &'s [u8]) -> &'s [u8]
    where
        'a: 's,
    {
        match self {
            Str::Block(bytes) => bytes,
            Str::Scratch(range) => scratch.get(range.clone()).unwrap_or_default(),
        }
    }
}

/// The name of a literal field: a table index, or a string.
enum Name<'a> {
    Indexed(usize),
    Literal(Str<'a>),
}

/// The header list size so far, against the limit.
struct ListSize {
    used: usize,
    max: usize,
}

impl ListSize {
    /// Counts a field, then passes it on unless the list has outgrown the limit.
    #[inline]
    fn emit(&mut self, name: &[u8], value: &[u8], field: &mut impl FnMut(&[u8], &[u8])) {
        self.used = self
            .used
            .saturating_add(name.len() + value.len() + ENTRY_OVERHEAD);
        if self.used <= self.max {
            field(name, value);
        }
    }

    fn exceeded(&self) -> bool {
        self.used > self.max
    }
}

impl Decoder {
    /// A decoder for a connection on which we advertise `max_table_size` as
    /// `SETTINGS_HEADER_TABLE_SIZE` ([`DEFAULT_TABLE_SIZE`] unless we send another value).
    /// The dynamic table starts at that size, and the peer may not set it any larger.
    ///
    /// The peer's encoder starts from the protocol default (4096) until it has our
    /// SETTINGS, and may send blocks before then; advertising a smaller size therefore
    /// needs care from the connection (the peer must first acknowledge it), so 4096 is the
    /// safe choice.
    pub(crate) fn new(max_table_size: usize) -> Self {
        Decoder {
            table: Table::new(max_table_size),
            limit: max_table_size,
            scratch: Vec::new(),
            poisoned: false,
        }
    }

    /// Decodes one complete header block (a HEADERS frame's fragment and its CONTINUATION
    /// frames' joined), calling `field(name, value)` for each field in order.
    ///
    /// `max_list_size` bounds the header list: the sum over its fields of name length, value
    /// length and 32 (RFC 9113 §6.5.2, our `SETTINGS_MAX_HEADER_LIST_SIZE`). Once a field
    /// takes the list past it, that field and those after it are not passed to `field`, but
    /// the block is still decoded to its end so the dynamic table stays in step; then the
    /// result is [`HpackError::ListTooLarge`] (the fields passed before are a partial list the
    /// caller should drop), and the decoder can take the next block.
    ///
    /// Any other error is a connection error: `field` may have seen some of the block's
    /// fields, and the decoder answers every later call with [`HpackError::Poisoned`].
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        max_list_size: usize,
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        if self.poisoned {
            return Err(HpackError::Poisoned);
        }
        let result = self.decode_block(block, max_list_size, &mut field);
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
        if let Err(e) = &result {
            self.poisoned = e.is_connection_error();
        }
        result
    }

    fn decode_block(
        &mut self,
        block: &[u8],
        max_list_size: usize,
        field: &mut impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut list = ListSize {
            used: 0,
            max: max_list_size,
        };
        let mut pos = 0;
        // Table size updates are allowed until the first field.
        let mut at_start = true;
        while let Some(&first) = block.get(pos) {
            if first & 0x80 != 0 {
                // Indexed field (§6.1): 1xxxxxxx.
                let index = decode_int(block, &mut pos, 7)?;
                let (name, value) = self.entry(index)?;
                list.emit(name, value, field);
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): 001xxxxx.
                if !at_start {
                    return Err(HpackError::TableSizeUpdateNotAtStart);
                }
                let size = decode_int(block, &mut pos, 5)?;
                if size > self.limit {
                    return Err(HpackError::TableSizeTooLarge {
                        size,
                        limit: self.limit,
                    });
                }
                self.table.set_max_size(size);
                continue;
            } else {
                // Literal fields: with incremental indexing (§6.2.1) 01xxxxxx; without
                // indexing (§6.2.2) 0000xxxx; never indexed (§6.2.3) 0001xxxx.
                let indexing = first & 0x40 != 0;
                let name_index = decode_int(block, &mut pos, if indexing { 6 } else { 4 })?;
                self.scratch.clear();
                let name = if name_index == 0 {
                    Name::Literal(read_string(block, &mut pos, &mut self.scratch)?)
                } else {
                    Name::Indexed(name_index)
                };
                let value = read_string(block, &mut pos, &mut self.scratch)?;
                let name_bytes = match &name {
                    Name::Indexed(index) => self.entry(*index)?.0,
                    Name::Literal(name) => name.bytes(&self.scratch),
                };
                let value_bytes = value.bytes(&self.scratch);
                list.emit(name_bytes, value_bytes, field);
                if indexing {
                    let name = match name {
                        Name::Indexed(index) => self.owned_name(index),
                        Name::Literal(_) => Bytes::copy_from_slice(name_bytes),
                    };
                    self.table.insert(name, Bytes::copy_from_slice(value_bytes));
                }
            }
            at_start = false;
        }
        if list.exceeded() {
            return Err(HpackError::ListTooLarge);
        }
        Ok(())
    }

    /// The name and value at `index` of the static table followed by the dynamic table.
    #[inline]
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        if let Some(entry) = static_entry(index) {
            return Ok(entry);
        }
        if index == 0 {
            return Err(HpackError::ZeroIndex);
        }
        match self.table.entries.get(index - STATIC_LEN - 1) {
            Some((name, value)) => Ok((name, value)),
            None => Err(HpackError::IndexOutOfRange(index)),
        }
    }

    /// The name at `index` (already checked by [`Decoder::entry`]), as a `Bytes` for a new
    /// entry: no copy, whichever table it is in.
    fn owned_name(&self, index: usize) -> Bytes {
        if let Some((name, _)) = static_entry(index) {
            return Bytes::from_static(name);
        }
        index
            .checked_sub(STATIC_LEN + 1)
            .and_then(|i| self.table.entries.get(i))
            .map(|(name, _)| name.clone())
            .unwrap_or_default()
    }
}

/// A dynamic table (RFC 7541 §2.3.2): the decoder's, or the encoder's copy of the peer's.
#[derive(Debug)]
struct Table {
    /// Newest entry first (entry `STATIC_LEN + 1` on the wire).
    entries: VecDeque<(Bytes, Bytes)>,
    /// The table's size per RFC 7541 §4.1: each entry's name and value lengths plus
    /// [`ENTRY_OVERHEAD`].
    size: usize,
    max_size: usize,
}

impl Table {
    fn new(max_size: usize) -> Self {
        Table {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// Sets the maximum size, evicting what no longer fits (§4.3).
    fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    /// Adds an entry, evicting the oldest to make room; an entry larger than the table
    /// empties it and is not added (§4.4).
    fn insert(&mut self, name: Bytes, value: Bytes) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.entries.push_front((name, value));
    }

    /// The wire index of the entry `name: value`, if the table holds it.
    fn find(&self, name: &[u8], value: &[u8]) -> Option<usize> {
        self.entries
            .iter()
            .position(|(n, v)| n[..] == *name && v[..] == *value)
            .map(|i| i + STATIC_LEN + 1)
    }

    /// Evicts the oldest entries until the table's size is at most `target`.
    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            match self.entries.pop_back() {
                Some((name, value)) => {
                    let entry = name.len() + value.len() + ENTRY_OVERHEAD;
                    self.size = self.size.saturating_sub(entry);
                }
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

/// Reads an integer with a `prefix_bits`-bit prefix (RFC 7541 §5.1) at `*pos`, moving `*pos`
/// past it. The bits above the prefix in the first byte are ignored.
#[inline]
fn decode_int(block: &[u8], pos: &mut usize, prefix_bits: u32) -> Result<usize, HpackError> {
    let mask = (1usize << prefix_bits) - 1;
    let Some(&first) = block.get(*pos) else {
        return Err(HpackError::Truncated);
    };
    *pos += 1;
    let mut value = first as usize & mask;
    if value < mask {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let Some(&b) = block.get(*pos) else {
            return Err(HpackError::Truncated);
        };
        *pos += 1;
        value += ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift >= 7 * MAX_INT_CONTINUATIONS {
            return Err(HpackError::IntegerOverflow);
        }
    }
}

/// Reads a string literal (RFC 7541 §5.2) at `*pos`, moving `*pos` past it. A Huffman-coded
/// string is decoded onto the end of `scratch`.
fn read_string<'a>(
    block: &'a [u8],
    pos: &mut usize,
    scratch: &mut Vec<u8>,
) -> Result<Str<'a>, HpackError> {
    let huffman = block.get(*pos).is_some_and(|b| b & 0x80 != 0);
    let len = decode_int(block, pos, 7)?;
    let bytes = block
        .get(*pos..)
        .and_then(|rest| rest.get(..len))
        .ok_or(HpackError::Truncated)?;
    *pos += len;
    if huffman {
        let start = scratch.len();
        huffman::decode(bytes, scratch)?;
        Ok(Str::Scratch(start..scratch.len()))
    } else {
        Ok(Str::Block(bytes))
    }
}

/// Appends `value` as an integer with a `prefix_bits`-bit prefix (RFC 7541 §5.1), the
/// first byte's higher bits set to `flags`.
#[inline]
fn encode_int(dst: &mut BytesMut, value: usize, prefix_bits: u32, flags: u8) {
    let mask = (1usize << prefix_bits) - 1;
    if value < mask {
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        dst.put_u8(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

/// Appends a string literal (RFC 7541 §5.2), Huffman-coded when that is shorter.
fn encode_string(dst: &mut BytesMut, s: &[u8]) {
    let coded_len = huffman::encoded_len(s);
    if coded_len < s.len() {
        encode_int(dst, coded_len, 7, 0x80);
        huffman::encode(s, dst);
    } else {
        encode_int(dst, s.len(), 7, 0);
        dst.extend_from_slice(s);
    }
}

/// Appends a field: the static table's entry when it has both `name` and `value` (one byte
/// for `:method: POST`, `:scheme: http`, `:status: 200`, ...), else a literal without
/// indexing (RFC 7541 §6.2.2), its name a static-table index when the table has the name
/// (`:path`, `:authority`, `content-type`, ...) and a string otherwise. Strings are
/// Huffman-coded only when that is shorter.
pub(crate) fn encode_field(dst: &mut BytesMut, name: &[u8], value: &[u8]) {
    dst.reserve(name.len() + value.len() + 8);
    match static_index(name, value) {
        Some((index, true)) => encode_int(dst, index, 7, 0x80),
        Some((index, false)) => {
            encode_int(dst, index, 4, 0x00);
            encode_string(dst, value);
        }
        None => {
            dst.put_u8(0x00);
            encode_string(dst, name);
            encode_string(dst, value);
        }
    }
}

/// Appends a field as a literal never indexed (RFC 7541 §6.2.3), which intermediaries must
/// forward the same way rather than add to a table, for values such as credentials. Like
/// [`encode_field`] otherwise, except that even a full static-table match is sent as a
/// literal.
pub(crate) fn encode_sensitive(dst: &mut BytesMut, name: &[u8], value: &[u8]) {
    dst.reserve(name.len() + value.len() + 8);
    match static_index(name, value) {
        Some((index, _)) => {
            encode_int(dst, index, 4, 0x10);
            encode_string(dst, value);
        }
        None => {
            dst.put_u8(0x10);
            encode_string(dst, name);
            encode_string(dst, value);
        }
    }
}

/// Appends a dynamic table size update (RFC 7541 §6.3), which must start a header block.
fn encode_table_size_update(dst: &mut BytesMut, size: usize) {
    encode_int(dst, size, 5, 0x20);
}

/// Encodes the header blocks of one connection for fields that repeat on every request or
/// reply (a call's `:path` and `:authority`): the first block sends such a field as a literal
/// the peer adds to its dynamic table, later blocks as that entry's index, so the peer
/// decodes one byte instead of a string each time. It keeps a copy of the peer's table to
/// know what it holds; other fields go through [`encode_field`] and [`encode_sensitive`],
/// which leave the table alone.
#[derive(Debug)]
pub(crate) struct Encoder {
    table: Table,
    /// The smallest table size since the last block and the latest, when the peer's limit
    /// changed: the next block starts by announcing them (RFC 7541 §4.2).
    pending: Option<(usize, usize)>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            table: Table::new(DEFAULT_TABLE_SIZE),
            pending: None,
        }
    }
}

impl Encoder {
    /// The peer's `SETTINGS_HEADER_TABLE_SIZE`: the table is kept within it (and within the
    /// default, beyond which nothing is gained), evicting at once; the change is announced at
    /// the start of the next block.
    pub(crate) fn set_peer_limit(&mut self, limit: usize) {
        let size = limit.min(DEFAULT_TABLE_SIZE);
        if size == self.table.max_size && self.pending.is_none() {
            return;
        }
        let smallest = self
            .pending
            .map_or(size, |(smallest, _)| smallest.min(size));
        self.pending = Some((smallest, size));
        self.table.set_max_size(size);
    }

    /// Starts a block in `dst` (empty so far): the table size updates the peer is owed.
    pub(crate) fn begin(&mut self, dst: &mut BytesMut) {
        if let Some((smallest, latest)) = self.pending.take() {
            encode_table_size_update(dst, smallest);
            if latest != smallest {
                encode_table_size_update(dst, latest);
            }
        }
    }

    /// Appends a field the peer should keep: as an index if either table holds it, else as a
    /// literal with incremental indexing (RFC 7541 §6.2.1), which both copies of the table
    /// then add.
    pub(crate) fn encode_indexed(&mut self, dst: &mut BytesMut, name: &[u8], value: &[u8]) {
        let name_index = match static_index(name, value) {
            Some((index, true)) => return encode_int(dst, index, 7, 0x80),
            Some((index, false)) => Some(index),
            None => None,
        };
        if let Some(index) = self.table.find(name, value) {
            return encode_int(dst, index, 7, 0x80);
        }
        dst.reserve(name.len() + value.len() + 8);
        match name_index {
            Some(index) => encode_int(dst, index, 6, 0x40),
            None => {
                dst.put_u8(0x40);
                encode_string(dst, name);
            }
        }
        encode_string(dst, value);
        self.table
            .insert(Bytes::copy_from_slice(name), Bytes::copy_from_slice(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http2::hex;
    use proptest::prelude::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn pairs(list: &[(&str, &str)]) -> Fields {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn decode_all(decoder: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
        decode_limited(decoder, block, usize::MAX)
    }

    fn decode_limited(
        decoder: &mut Decoder,
        block: &[u8],
        max: usize,
    ) -> Result<Fields, HpackError> {
        let mut fields = Vec::new();
        decoder
            .decode(block, max, |n, v| fields.push((n.to_vec(), v.to_vec())))
            .map(|()| fields)
    }

    /// The dynamic table, newest first, as (name, value), and its size.
    fn table(decoder: &Decoder) -> (Fields, usize) {
        let entries = decoder
            .table
            .entries
            .iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        (entries, decoder.table.size)
    }

    fn error_of(block: &[u8]) -> HpackError {
        decode_all(&mut Decoder::default(), block).unwrap_err()
    }

    // ---- RFC 7541 Appendix C ----

    /// C.1: integer representation.
    #[test]
    fn c1_integers() {
        for (value, prefix, wire) in [(10, 5, "0a"), (1337, 5, "1f9a0a"), (42, 8, "2a")] {
            let mut dst = BytesMut::new();
            encode_int(&mut dst, value, prefix, 0);
            assert_eq!(dst.to_vec(), hex(wire), "{value}");
            let mut pos = 0;
            assert_eq!(decode_int(&hex(wire), &mut pos, prefix), Ok(value));
            assert_eq!(pos, dst.len());
        }
    }

    /// C.2.1: literal with indexing.
    #[test]
    fn c2_1_literal_with_indexing() {
        let mut d = Decoder::default();
        let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        let want = pairs(&[("custom-key", "custom-header")]);
        assert_eq!(decode_all(&mut d, &block).unwrap(), want);
        assert_eq!(table(&d), (want, 55));
    }

    /// C.2.2: literal without indexing.
    #[test]
    fn c2_2_literal_without_indexing() {
        let mut d = Decoder::default();
        let block = hex("040c 2f73 616d 706c 652f 7061 7468");
        assert_eq!(
            decode_all(&mut d, &block).unwrap(),
            pairs(&[(":path", "/sample/path")])
        );
        assert_eq!(table(&d), (vec![], 0));
    }

    /// C.2.3: literal never indexed.
    #[test]
    fn c2_3_literal_never_indexed() {
        let mut d = Decoder::default();
        let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
        assert_eq!(
            decode_all(&mut d, &block).unwrap(),
            pairs(&[("password", "secret")])
        );
        assert_eq!(table(&d), (vec![], 0));
    }

    /// C.2.4: indexed field.
    #[test]
    fn c2_4_indexed() {
        let mut d = Decoder::default();
        assert_eq!(
            decode_all(&mut d, &hex("82")).unwrap(),
            pairs(&[(":method", "GET")])
        );
        assert_eq!(table(&d), (vec![], 0));
    }

    fn request_lists() -> [Fields; 3] {
        [
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ]),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ]),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ]),
        ]
    }

    fn request_tables() -> [(Fields, usize); 3] {
        [
            (pairs(&[(":authority", "www.example.com")]), 57),
            (
                pairs(&[
                    ("cache-control", "no-cache"),
                    (":authority", "www.example.com"),
                ]),
                110,
            ),
            (
                pairs(&[
                    ("custom-key", "custom-value"),
                    ("cache-control", "no-cache"),
                    (":authority", "www.example.com"),
                ]),
                164,
            ),
        ]
    }

    fn check_series(
        max_table_size: usize,
        blocks: &[&str],
        lists: &[Fields],
        tables: &[(Fields, usize)],
    ) {
        let mut d = Decoder::new(max_table_size);
        for (i, block) in blocks.iter().enumerate() {
            assert_eq!(
                decode_all(&mut d, &hex(block)).unwrap(),
                lists[i],
                "block {i}"
            );
            assert_eq!(table(&d), tables[i], "table after block {i}");
        }
    }

    /// C.3: three requests on one connection, without Huffman coding.
    #[test]
    fn c3_requests_without_huffman() {
        check_series(
            4096,
            &[
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            &request_lists(),
            &request_tables(),
        );
    }

    /// C.4: the same requests with Huffman coding.
    #[test]
    fn c4_requests_with_huffman() {
        check_series(
            4096,
            &[
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
            &request_lists(),
            &request_tables(),
        );
    }

    const DATE1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
    const DATE2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
    const URL: &str = "https://www.example.com";
    const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";

    fn response_lists() -> [Fields; 3] {
        [
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", DATE1),
                ("location", URL),
            ]),
            pairs(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", DATE1),
                ("location", URL),
            ]),
            pairs(&[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", DATE2),
                ("location", URL),
                ("content-encoding", "gzip"),
                ("set-cookie", COOKIE),
            ]),
        ]
    }

    fn response_tables() -> [(Fields, usize); 3] {
        [
            (
                pairs(&[
                    ("location", URL),
                    ("date", DATE1),
                    ("cache-control", "private"),
                    (":status", "302"),
                ]),
                222,
            ),
            (
                pairs(&[
                    (":status", "307"),
                    ("location", URL),
                    ("date", DATE1),
                    ("cache-control", "private"),
                ]),
                222,
            ),
            (
                pairs(&[
                    ("set-cookie", COOKIE),
                    ("content-encoding", "gzip"),
                    ("date", DATE2),
                ]),
                215,
            ),
        ]
    }

    /// C.5: three responses with a 256-byte table (so entries are evicted), without Huffman.
    #[test]
    fn c5_responses_without_huffman() {
        check_series(
            256,
            &[
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
                 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
                 6c65 2e63 6f6d",
                "4803 3330 37c1 c0bf",
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
                 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
                 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
                 3d31",
            ],
            &response_lists(),
            &response_tables(),
        );
    }

    /// C.6: the same responses with Huffman coding.
    #[test]
    fn c6_responses_with_huffman() {
        check_series(
            256,
            &[
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                "4883 640e ffc1 c0bf",
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ],
            &response_lists(),
            &response_tables(),
        );
    }

    // ---- errors, each from a minimal block ----

    #[test]
    fn truncated_integer() {
        // Indexed field whose index needs a continuation byte that is missing.
        assert_eq!(error_of(&hex("ff")), HpackError::Truncated);
        assert_eq!(error_of(&hex("ff 80")), HpackError::Truncated);
    }

    #[test]
    fn truncated_string() {
        // Literal without indexing, new name of length 1, no bytes after.
        assert_eq!(error_of(&hex("00 01")), HpackError::Truncated);
        // Name present, value's length missing.
        assert_eq!(error_of(&hex("00 01 61")), HpackError::Truncated);
        // Value claims 3 bytes, has 2.
        assert_eq!(error_of(&hex("00 01 61 03 62 63")), HpackError::Truncated);
        // A length far beyond the block allocates nothing: it is refused first.
        assert_eq!(error_of(&hex("00 7f ff ff ff 7f")), HpackError::Truncated);
        // Indexed name, value missing altogether.
        assert_eq!(error_of(&hex("44")), HpackError::Truncated);
    }

    #[test]
    fn integer_overflow() {
        // Four continuation bytes are accepted, a fifth is not.
        assert_eq!(
            error_of(&hex("ff ff ff ff 7f")),
            HpackError::IndexOutOfRange(127 + (1 << 28) - 1)
        );
        assert_eq!(
            error_of(&hex("ff ff ff ff ff 01")),
            HpackError::IntegerOverflow
        );
        assert_eq!(
            error_of(&hex("ff 80 80 80 80 00")),
            HpackError::IntegerOverflow
        );
        // In a string length too.
        assert_eq!(
            error_of(&hex("00 7f 80 80 80 80 00")),
            HpackError::IntegerOverflow
        );
    }

    #[test]
    fn zero_index() {
        assert_eq!(error_of(&hex("80")), HpackError::ZeroIndex);
    }

    #[test]
    fn index_out_of_range() {
        // Empty dynamic table: 61 is the last index.
        assert_eq!(
            decode_all(&mut Decoder::default(), &hex("bd")).unwrap(),
            pairs(&[("www-authenticate", "")])
        );
        assert_eq!(error_of(&hex("be")), HpackError::IndexOutOfRange(62));
        // As a literal's name.
        assert_eq!(error_of(&hex("7f 00 00")), HpackError::IndexOutOfRange(63));
        // One entry: 62 is valid, 63 is not.
        let mut d = Decoder::default();
        decode_all(&mut d, &hex("40 01 61 01 62")).unwrap();
        assert_eq!(
            decode_all(&mut d, &hex("be")).unwrap(),
            pairs(&[("a", "b")])
        );
        assert_eq!(
            decode_all(&mut d, &hex("bf")),
            Err(HpackError::IndexOutOfRange(63))
        );
    }

    #[test]
    fn bad_huffman() {
        // Literal value, Huffman-coded, one byte of padding.
        assert_eq!(
            error_of(&hex("04 81 ff")),
            HpackError::Huffman(HuffmanError::PaddingTooLong)
        );
        // 'a' then 000.
        assert_eq!(
            error_of(&hex("04 81 18")),
            HpackError::Huffman(HuffmanError::InvalidPadding)
        );
        // EOS.
        assert_eq!(
            error_of(&hex("04 84 ffff ffff")),
            HpackError::Huffman(HuffmanError::Eos)
        );
        // In a name.
        assert_eq!(
            error_of(&hex("00 81 ff 00")),
            HpackError::Huffman(HuffmanError::PaddingTooLong)
        );
    }

    #[test]
    fn table_size_update_above_limit() {
        let mut d = Decoder::new(100);
        assert_eq!(
            decode_all(&mut d, &hex("3f 46")),
            Err(HpackError::TableSizeTooLarge {
                size: 101,
                limit: 100
            })
        );
        let mut d = Decoder::new(100);
        assert_eq!(
            decode_all(&mut d, &hex("3f 45 82")).unwrap(),
            pairs(&[(":method", "GET")])
        );
    }

    #[test]
    fn table_size_update_not_at_start() {
        assert_eq!(
            error_of(&hex("82 20")),
            HpackError::TableSizeUpdateNotAtStart
        );
        // Several at the start are fine.
        let mut d = Decoder::default();
        assert_eq!(
            decode_all(&mut d, &hex("20 3f e1 1f 82")).unwrap(),
            pairs(&[(":method", "GET")])
        );
        assert_eq!(d.table.max_size, 4096);
        // An update alone is a valid (empty) block.
        assert_eq!(decode_all(&mut d, &hex("3f 11")).unwrap(), vec![]);
        assert_eq!(d.table.max_size, 48);
    }

    #[test]
    fn list_too_large_keeps_table_in_step() {
        let mut d = Decoder::default();
        // ":method: GET" (42) then two indexed literals, "a: b" (34) and "c: d" (34).
        let block = hex("82 40 01 61 01 62 40 01 63 01 64");
        let mut seen = Vec::new();
        let result = d.decode(&block, 42 + 34, |n, v| seen.push((n.to_vec(), v.to_vec())));
        assert_eq!(result, Err(HpackError::ListTooLarge));
        assert_eq!(seen, pairs(&[(":method", "GET"), ("a", "b")]));
        // Both literals were still added.
        assert_eq!(table(&d), (pairs(&[("c", "d"), ("a", "b")]), 68));
        // The decoder can go on, and its table is the peer's.
        assert_eq!(
            decode_all(&mut d, &hex("be bf")).unwrap(),
            pairs(&[("c", "d"), ("a", "b")])
        );
        // The limit is inclusive.
        assert_eq!(
            decode_limited(&mut d, &hex("82"), 42).unwrap(),
            pairs(&[(":method", "GET")])
        );
        assert_eq!(
            decode_limited(&mut d, &hex("82"), 41),
            Err(HpackError::ListTooLarge)
        );
        assert_eq!(
            decode_limited(&mut d, &hex("82"), 42).unwrap(),
            pairs(&[(":method", "GET")])
        );
        assert!(!HpackError::ListTooLarge.is_connection_error());
    }

    #[test]
    fn error_poisons_decoder() {
        let mut d = Decoder::default();
        assert_eq!(decode_all(&mut d, &hex("80")), Err(HpackError::ZeroIndex));
        assert_eq!(decode_all(&mut d, &hex("82")), Err(HpackError::Poisoned));
        assert!(HpackError::ZeroIndex.is_connection_error());
    }

    // ---- the dynamic table ----

    #[test]
    fn size_update_evicts_oldest() {
        let mut d = Decoder::default();
        decode_all(&mut d, &hex("40 01 61 01 62 40 01 63 01 64")).unwrap();
        assert_eq!(table(&d).1, 68);
        // Shrink to 34 (0x22 = 31 + 3): only the newest entry stays.
        decode_all(&mut d, &hex("3f 03")).unwrap();
        assert_eq!(table(&d), (pairs(&[("c", "d")]), 34));
        // To 0: empty; then back up, and new entries fit again.
        decode_all(&mut d, &hex("20 3f e1 1f 40 01 65 01 66")).unwrap();
        assert_eq!(table(&d), (pairs(&[("e", "f")]), 34));
    }

    #[test]
    fn entry_larger_than_table_empties_it() {
        let mut d = Decoder::new(40);
        decode_all(&mut d, &hex("40 01 61 01 62")).unwrap();
        assert_eq!(table(&d).1, 34);
        // 33 + 32 > 40: emitted, the table emptied, nothing added.
        let fields = decode_all(
            &mut d,
            &hex("40 01 63 20 6464646464646464646464646464646464646464646464646464646464646464"),
        )
        .unwrap();
        assert_eq!(fields.len(), 1);
        assert_eq!(table(&d), (vec![], 0));
    }

    #[test]
    fn indexed_name_from_dynamic_table_survives_eviction() {
        // Table of 34: the entry "a: b" is the name for a new entry that evicts it.
        let mut d = Decoder::new(34);
        decode_all(&mut d, &hex("40 01 61 01 62")).unwrap();
        assert_eq!(
            decode_all(&mut d, &hex("7e 01 63")).unwrap(),
            pairs(&[("a", "c")])
        );
        assert_eq!(table(&d), (pairs(&[("a", "c")]), 34));
    }

    // ---- static table and encoder ----

    #[test]
    fn static_index_agrees_with_table() {
        for (i, &(name, value)) in STATIC_TABLE.iter().enumerate() {
            assert_eq!(
                static_index(name, value),
                Some((i + 1, true)),
                "{:?}",
                std::str::from_utf8(name)
            );
            let first = STATIC_TABLE.iter().position(|&(n, _)| n == name).unwrap() + 1;
            assert_eq!(static_index(name, b"\x00other"), Some((first, false)));
        }
        assert_eq!(static_index(b"x-request-id", b""), None);
        assert_eq!(static_index(b"Content-Type", b""), None);
        assert_eq!(static_index(b"", b""), None);
        assert_eq!(static_index(b":method", b"POST"), Some((3, true)));
        assert_eq!(static_index(b":scheme", b"http"), Some((6, true)));
        assert_eq!(static_index(b":status", b"200"), Some((8, true)));
        assert_eq!(static_index(b":path", b"/svc/handler"), Some((4, false)));
        assert_eq!(static_index(b":authority", b"localhost"), Some((1, false)));
        assert_eq!(static_entry(0), None);
        assert_eq!(static_entry(62), None);
    }

    fn encoded(name: &str, value: &str) -> Vec<u8> {
        let mut dst = BytesMut::new();
        encode_field(&mut dst, name.as_bytes(), value.as_bytes());
        dst.to_vec()
    }

    #[test]
    fn encodes_common_fields() {
        assert_eq!(encoded(":status", "200"), hex("88"));
        assert_eq!(encoded(":method", "POST"), hex("83"));
        assert_eq!(encoded(":scheme", "http"), hex("86"));
        // :path, name index 4, value "/svc/handler" (12 bytes; Huffman 9).
        let path = encoded(":path", "/svc/handler");
        assert_eq!(path[0], 0x04);
        assert_eq!(path[1], 0x80 | 9);
        assert_eq!(path.len(), 2 + 9);
        // Names with one entry (and an empty value) match fully only when empty.
        assert_eq!(encoded("content-type", ""), hex("9f"));
        assert_eq!(encoded("content-type", "a"), hex("0f 10 01 61"));
        // A name not in the table: literal name; "ab" would not shrink, so it is plain.
        assert_eq!(encoded("x", "ab"), hex("00 01 78 02 61 62"));
        let mut dst = BytesMut::new();
        encode_sensitive(&mut dst, b"authorization", b"");
        assert_eq!(dst.to_vec(), hex("1f 08 00"));
        let mut dst = BytesMut::new();
        encode_sensitive(&mut dst, b"secret", b"x");
        // "secret" is shorter Huffman-coded (4 bytes), "x" is not.
        assert_eq!(dst.to_vec(), hex("10 84 4149 6153 01 78"));
        let mut dst = BytesMut::new();
        encode_table_size_update(&mut dst, 0);
        encode_table_size_update(&mut dst, 4096);
        assert_eq!(dst.to_vec(), hex("20 3f e1 1f"));
    }

    fn header_name() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::sample::select(
                STATIC_TABLE
                    .iter()
                    .map(|&(n, _)| n.to_vec())
                    .collect::<Vec<_>>()
            ),
            proptest::collection::vec(any::<u8>(), 0..40),
            "[a-z-]{1,20}".prop_map(String::into_bytes),
        ]
    }

    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::sample::select(
                STATIC_TABLE
                    .iter()
                    .map(|&(_, v)| v.to_vec())
                    .collect::<Vec<_>>()
            ),
            proptest::collection::vec(any::<u8>(), 0..200),
            "[ -~]{0,60}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            fields in proptest::collection::vec(
                (header_name(), header_value(), any::<bool>()),
                0..12,
            ),
            update in proptest::option::of(0usize..5000),
        ) {
            let mut block = BytesMut::new();
            if let Some(size) = update {
                encode_table_size_update(&mut block, size.min(DEFAULT_TABLE_SIZE));
            }
            for (name, value, sensitive) in &fields {
                if *sensitive {
                    encode_sensitive(&mut block, name, value);
                } else {
                    encode_field(&mut block, name, value);
                }
            }
            let mut d = Decoder::default();
            let want: Fields = fields.iter().map(|(n, v, _)| (n.clone(), v.clone())).collect();
            prop_assert_eq!(decode_all(&mut d, &block).unwrap(), want);
            prop_assert_eq!(table(&d), (vec![], 0));
        }

        #[test]
        fn decode_never_panics(
            blocks in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..200),
                1..4,
            ),
            max_table_size in prop_oneof![Just(4096usize), 0usize..300],
            max_list_size in prop_oneof![Just(usize::MAX), 0usize..500],
        ) {
            let mut d = Decoder::new(max_table_size);
            for block in &blocks {
                let _ = d.decode(block, max_list_size, |_, _| {});
                prop_assert!(d.table.size <= d.table.max_size);
                prop_assert!(d.table.max_size <= max_table_size);
                let sum: usize =
                    d.table.entries.iter().map(|(n, v)| n.len() + v.len() + ENTRY_OVERHEAD).sum();
                prop_assert_eq!(sum, d.table.size);
            }
        }

        /// Blocks made of valid-looking representations (more likely to reach deep states
        /// than uniform bytes), some indexing into the dynamic table.
        #[test]
        fn decode_structured_never_panics(
            parts in proptest::collection::vec(
                prop_oneof![
                    (0x80u8..=0xff).prop_map(|b| vec![b]),
                    (header_name(), header_value()).prop_map(|(n, v)| {
                        let mut b = BytesMut::new();
                        b.put_u8(0x40);
                        encode_string(&mut b, &n);
                        encode_string(&mut b, &v);
                        b.to_vec()
                    }),
                    proptest::collection::vec(any::<u8>(), 0..8),
                ],
                0..10,
            ),
        ) {
            let block: Vec<u8> = parts.concat();
            let mut d = Decoder::new(256);
            let _ = d.decode(&block, 1000, |_, _| {});
            let _ = d.decode(&block, usize::MAX, |_, _| {});
        }
    }

    fn encode_call(encoder: &mut Encoder, path: &str) -> BytesMut {
        let mut block = BytesMut::new();
        encoder.begin(&mut block);
        encode_field(&mut block, b":method", b"POST");
        encoder.encode_indexed(&mut block, b":authority", b"10.0.0.1:7000");
        encoder.encode_indexed(&mut block, b":path", path.as_bytes());
        encoder.encode_indexed(&mut block, b"x-custom", b"v");
        block
    }

    fn fields_of(decoder: &mut Decoder, block: &[u8]) -> Fields {
        let mut fields = Vec::new();
        decoder
            .decode(block, 1 << 16, |n, v| fields.push((n.to_vec(), v.to_vec())))
            .unwrap();
        fields
    }

    #[test]
    fn the_encoder_sends_repeated_fields_as_indexes_the_peer_follows() {
        let mut encoder = Encoder::default();
        let mut decoder = Decoder::default();
        let first = encode_call(&mut encoder, "/svc/a");
        let second = encode_call(&mut encoder, "/svc/a");
        assert_eq!(second.len(), 4, "one byte per field: {second:?}");
        let third = encode_call(&mut encoder, "/svc/b");
        let expected = |path: &str| -> Fields {
            [
                (":method", "POST"),
                (":authority", "10.0.0.1:7000"),
                (":path", path),
                ("x-custom", "v"),
            ]
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
        };
        assert_eq!(fields_of(&mut decoder, &first), expected("/svc/a"));
        assert_eq!(fields_of(&mut decoder, &second), expected("/svc/a"));
        assert_eq!(fields_of(&mut decoder, &third), expected("/svc/b"));
        assert_eq!(table(&decoder).0.len(), 4);
    }

    #[test]
    fn a_lower_peer_limit_is_announced_before_the_next_field() {
        let mut encoder = Encoder::default();
        let mut decoder = Decoder::default();
        let first = encode_call(&mut encoder, "/svc/a");
        fields_of(&mut decoder, &first);
        // Down to nothing and back up between two blocks: both are announced, the smaller
        // first, and the copy of the table was emptied like the peer's.
        encoder.set_peer_limit(0);
        encoder.set_peer_limit(100);
        let second = encode_call(&mut encoder, "/svc/a");
        assert_eq!(second[0], 0x20, "a size update to 0 starts the block");
        assert_eq!(fields_of(&mut decoder, &second)[2].1, b"/svc/a");
        assert_eq!(decoder.table.max_size, 100);
        // Entries that fit the new size are indexed again.
        let third = encode_call(&mut encoder, "/svc/a");
        assert_eq!(fields_of(&mut decoder, &third)[2].1, b"/svc/a");
        assert_eq!(
            table(&decoder),
            (
                encoder
                    .table
                    .entries
                    .iter()
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect(),
                encoder.table.size
            )
        );
    }

    proptest! {
        #[test]
        fn the_encoders_table_stays_the_peers(
            steps in proptest::collection::vec(
                (0usize..6, proptest::option::of(0usize..5000)),
                1..60,
            )
        ) {
            let paths = ["/a", "/b/c", "/a-much-longer-path/with/parts", "/d", "/e/f/g", "/h"];
            let mut encoder = Encoder::default();
            let mut decoder = Decoder::default();
            for (path, limit) in steps {
                if let Some(limit) = limit {
                    encoder.set_peer_limit(limit);
                }
                let block = encode_call(&mut encoder, paths[path]);
                let fields = fields_of(&mut decoder, &block);
                prop_assert_eq!(&fields[2].1, paths[path].as_bytes());
                prop_assert_eq!(decoder.table.size, encoder.table.size);
            }
        }
    }
}
