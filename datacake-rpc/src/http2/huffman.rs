//! The Huffman code of HPACK (RFC 7541 §5.2 and Appendix B).
//!
//! The code is canonical: within each bit length, codes are consecutive and ordered by
//! symbol, and each length's first code follows the previous length's last one. So only the
//! bit length of each of the 257 symbols (the 256 octets plus EOS) is stored here
//! ([`CODE_LENGTHS`]); the codes used for encoding and the tables used for decoding are
//! derived from it at compile time.
//!
//! Decoding keeps up to 64 input bits in a left-aligned register. A 4096-entry table indexed
//! by the next 12 bits gives the one or two whole codes they start with, so text (ASCII
//! letters, digits and common punctuation have codes of 5 to 8 bits) decodes about two
//! symbols per load; a longer code (rare in headers) is found by comparing the next 32 bits
//! against each longer length's upper bound.

use bytes::{BufMut, BytesMut};

/// The symbol number of EOS ("end of string"), which must never appear in a string.
const EOS: usize = 256;

/// The longest code (EOS and a few control octets have 30 bits).
const MAX_LEN: usize = 30;

/// Bit length of each symbol's code: octets 0 to 255, then EOS (RFC 7541 Appendix B).
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 0x20 ' '
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 0x30 '0'
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 0x40 '@'
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 0x50 'P'
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 0x60 '`'
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 0x70 'p'
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0
    30, // EOS
];

/// Each symbol's code, right-aligned (its low `CODE_LENGTHS[symbol]` bits).
static CODES: [u32; 257] = canonical_codes();

/// Assigns the canonical codes: in order of (length, symbol), each code is the previous one
/// plus one, shifted left by the difference in length. Fails the build unless the lengths
/// describe a complete prefix code (every bit string decodes), which is what makes the
/// decoder's tables total.
const fn canonical_codes() -> [u32; 257] {
    let mut codes = [0u32; 257];
    let mut next: u32 = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        let mut symbol = 0;
        while symbol < 257 {
            if CODE_LENGTHS[symbol] as usize == len {
                codes[symbol] = next;
                next += 1;
            }
            symbol += 1;
        }
        // A complete code uses up exactly all 2^len strings of each length.
        assert!(
            next <= 1 << len,
            "Huffman code lengths over-subscribe the code space"
        );
        next <<= 1;
        len += 1;
    }
    assert!(
        next == 1 << (MAX_LEN + 1),
        "Huffman code lengths leave codes unassigned"
    );
    codes
}

/// How many bits of input the decoding table is indexed by.
const FAST_BITS: u32 = 12;

/// The tables the decoder needs, derived from [`CODE_LENGTHS`].
struct DecodeTables {
    /// Indexed by the next [`FAST_BITS`] bits of input, what they start with: see
    /// [`FastEntry`]; 0 when the first code there is longer than `FAST_BITS`.
    fast: [u32; 1 << FAST_BITS],
    /// `limit[len]`: one past the last code of length `len`, left-aligned in 32 bits (as a
    /// `u64`, since the last one is 2^32). A left-aligned window `w` starts with a code of
    /// length `len` when `len` is the smallest length with `w < limit[len]`.
    limit: [u64; MAX_LEN + 1],
    /// `first[len]`: the first code of length `len` (right-aligned).
    first: [u32; MAX_LEN + 1],
    /// `offset[len]`: where the symbols of length `len` start in `sorted`.
    offset: [u16; MAX_LEN + 1],
    /// The symbols in canonical order: by length, then by value.
    sorted: [u16; 257],
}

/// The layout of an entry of [`DecodeTables::fast`]: the one or two whole codes at the
/// start of a [`FAST_BITS`]-bit window.
struct FastEntry;

impl FastEntry {
    /// Bits 0..8: the first symbol. Bits 8..16: the second, if any.
    const SECOND_SHIFT: u32 = 8;
    /// Bits 16..21: the first code's length.
    const LEN1_SHIFT: u32 = 16;
    /// Bits 21..26: the length of both codes (of the first alone when there is one).
    const TOTAL_SHIFT: u32 = 21;
    /// Bits 26..28: how many symbols (1 or 2; 0 for a longer code).
    const COUNT_SHIFT: u32 = 26;

    const fn pack(first: u16, second: u16, len1: u32, total: u32, count: u32) -> u32 {
        (first as u32)
            | (second as u32) << Self::SECOND_SHIFT
            | len1 << Self::LEN1_SHIFT
            | total << Self::TOTAL_SHIFT
            | count << Self::COUNT_SHIFT
    }
}

static DECODE: DecodeTables = decode_tables();

/// The symbol and code length at the start of `window` (left-aligned): the canonical
/// search, which always succeeds as the code is complete.
const fn decode_symbol(t: &DecodeTables, window: u32) -> (u16, u32) {
    let mut len = 1;
    while len < MAX_LEN && window as u64 >= t.limit[len] {
        len += 1;
    }
    let code = window >> (32 - len);
    let index = t.offset[len] as usize + (code - t.first[len]) as usize;
    (t.sorted[index], len as u32)
}

const fn decode_tables() -> DecodeTables {
    let mut t = DecodeTables {
        fast: [0; 1 << FAST_BITS],
        limit: [0; MAX_LEN + 1],
        first: [0; MAX_LEN + 1],
        offset: [0; MAX_LEN + 1],
        sorted: [0; 257],
    };
    let mut next: u32 = 0;
    let mut count: usize = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        t.first[len] = next;
        t.offset[len] = count as u16;
        let mut symbol = 0;
        while symbol < 257 {
            if CODE_LENGTHS[symbol] as usize == len {
                t.sorted[count] = symbol as u16;
                count += 1;
                next += 1;
            }
            symbol += 1;
        }
        t.limit[len] = (next as u64) << (32 - len);
        next <<= 1;
        len += 1;
    }
    let mut w: u32 = 0;
    while w < 1 << FAST_BITS {
        let window = w << (32 - FAST_BITS);
        let (first, len1) = decode_symbol(&t, window);
        if len1 <= FAST_BITS {
            let (second, len2) = decode_symbol(&t, window << len1);
            t.fast[w as usize] = if len1 + len2 <= FAST_BITS {
                FastEntry::pack(first, second, len1, len1 + len2, 2)
            } else {
                FastEntry::pack(first, 0, len1, len1, 1)
            };
        }
        w += 1;
    }
    t
}

/// Why a Huffman-coded string is invalid (RFC 7541 §5.2): each is a decoding error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HuffmanError {
    /// The string contains the EOS symbol.
    #[error("the EOS symbol appears in the string")]
    Eos,
    /// The string ends in more than 7 bits of padding.
    #[error("padding longer than 7 bits")]
    PaddingTooLong,
    /// The string's last bits are neither a whole code nor a prefix of EOS (all 1s).
    #[error("padding is not a prefix of EOS")]
    InvalidPadding,
}

/// How many bytes [`encode`] appends for `src`.
pub(super) fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src.iter().map(|&b| CODE_LENGTHS[b as usize] as usize).sum();
    bits.div_ceil(8)
}

/// Appends the Huffman coding of `src` to `dst`, padding the last byte with 1s (the start
/// of EOS).
pub(super) fn encode(src: &[u8], dst: &mut BytesMut) {
    // Enough for text, and for any string HPACK sends Huffman-coded (only when that is
    // shorter); anything longer grows `dst` as it goes. No second pass to find the length.
    dst.reserve(src.len());
    // `acc`'s low `bits` bits are pending output; `bits` stays below 32 between symbols, so
    // with a code of at most 30 bits nothing pending is shifted out.
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in src {
        let len = CODE_LENGTHS[b as usize] as u32;
        acc = (acc << len) | CODES[b as usize] as u64;
        bits += len;
        if bits >= 32 {
            bits -= 32;
            dst.put_u32((acc >> bits) as u32);
        }
    }
    while bits >= 8 {
        bits -= 8;
        dst.put_u8((acc >> bits) as u8);
    }
    if bits > 0 {
        dst.put_u8(((acc << (8 - bits)) as u8) | (0xff >> bits));
    }
}

/// The size of [`decode`]'s output buffer (a power of two).
const OUT_LEN: usize = 128;

/// Decodes the Huffman-coded `src`, appending the octets to `dst` (on error, some of them
/// may have been appended). Appends at most `src.len() * 8 / 5` octets (the shortest code
/// has 5 bits), so the output is bounded by the input.
///
/// About 15 instructions per octet of text (`valgrind`, x86-64): input is taken 8 bytes at
/// a time while there are 8; one table load yields the next one or two symbols when their
/// codes fit in [`FAST_BITS`] bits (ASCII letters, digits and common punctuation have 5 to
/// 8); output goes through a local buffer.
pub(super) fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HuffmanError> {
    dst.reserve(src.len() * 8 / 5);
    let t = &DECODE;
    // The next `bits` input bits, left-aligned. Below them: 0s, or (after a refill of 8
    // bytes) the first bits of the next input byte, which the next refill ORs in again.
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    let mut rest = src;
    // Decoded octets, flushed to `dst` once past OUT_LEN / 2 after a refill. Between refills
    // at most 64 bits are decoded, so at most 12 symbols (every code has 5 bits or more),
    // and the tail after the last refill has at most 5: `n` stays below 64 + 12 + 5, and
    // every write (with the spare byte after each pair) lands inside `out`.
    let mut out = [0u8; OUT_LEN + 1];
    let mut n = 0;
    let result = 'refill: loop {
        if let Some(chunk) = rest.first_chunk::<8>() {
            acc |= u64::from_be_bytes(*chunk) >> bits;
            let taken = (63 - bits) / 8;
            rest = rest.get(taken as usize..).unwrap_or_default();
            bits += taken * 8;
        } else {
            while bits <= 56 {
                let Some((&b, tail)) = rest.split_first() else {
                    break;
                };
                acc |= (b as u64) << (56 - bits);
                bits += 8;
                rest = tail;
            }
        }
        if n > OUT_LEN / 2 {
            dst.extend_from_slice(&out[..n]);
            n = 0;
        }
        if bits < MAX_LEN as u32 {
            // Only after the input has run out (a refill leaves more bits otherwise).
            break decode_tail(t, acc, bits, &mut out, &mut n);
        }
        // Every code fits in what is left: no checks for the end of input.
        while bits >= MAX_LEN as u32 {
            let entry = t.fast[(acc >> (64 - FAST_BITS)) as usize];
            if entry == 0 {
                // A code longer than FAST_BITS.
                let (symbol, len) = decode_symbol_at(t, (acc >> 32) as u32);
                if symbol as usize == EOS {
                    break 'refill Err(HuffmanError::Eos);
                }
                out[n] = symbol as u8;
                n += 1;
                acc <<= len;
                bits -= len;
                continue;
            }
            let total = (entry >> FastEntry::TOTAL_SHIFT) & 0x1f;
            // Both symbols at once (the second is overwritten next when there is only
            // one). `n` is below OUT_LEN (see `out`): the mask changes nothing but spares
            // a bounds check.
            let i = n & (OUT_LEN - 1);
            out[i..i + 2].copy_from_slice(&(entry as u16).to_le_bytes());
            n += (entry >> FastEntry::COUNT_SHIFT) as usize;
            acc <<= total;
            bits -= total;
        }
    };
    dst.extend_from_slice(&out[..n]);
    result
}

/// Decodes the last `bits` (fewer than 30) bits of the input, at the top of `acc`, into
/// `out[*n..]`: whole codes, then at most 7 bits of padding (all 1s).
#[inline]
fn decode_tail(
    t: &DecodeTables,
    mut acc: u64,
    mut bits: u32,
    out: &mut [u8; OUT_LEN + 1],
    n: &mut usize,
) -> Result<(), HuffmanError> {
    // At most 5 symbols are left (29 bits), and the caller leaves `*n` at most OUT_LEN / 2,
    // so the masked indexes below are the plain ones.
    while bits > 0 {
        let entry = t.fast[(acc >> (64 - FAST_BITS)) as usize];
        let len = if entry != 0 {
            let total = (entry >> FastEntry::TOTAL_SHIFT) & 0x1f;
            let i = *n & (OUT_LEN - 1);
            out[i..i + 2].copy_from_slice(&(entry as u16).to_le_bytes());
            if total <= bits {
                *n += (entry >> FastEntry::COUNT_SHIFT) as usize;
                total
            } else {
                // Only the first symbol, if it is whole, is input; the rest is padding.
                *n += 1;
                (entry >> FastEntry::LEN1_SHIFT) & 0x1f
            }
        } else {
            let (symbol, len) = decode_symbol_at(t, (acc >> 32) as u32);
            if len <= bits && symbol as usize == EOS {
                return Err(HuffmanError::Eos);
            }
            out[*n & (OUT_LEN - 1)] = symbol as u8;
            *n += 1;
            len
        };
        if len > bits {
            // The input ends inside this code (the symbol just written is not taken).
            *n -= 1;
            let padding = acc >> (64 - bits);
            if padding != (1 << bits) - 1 {
                return Err(HuffmanError::InvalidPadding);
            }
            if bits > 7 {
                return Err(HuffmanError::PaddingTooLong);
            }
            return Ok(());
        }
        acc <<= len;
        bits -= len;
    }
    Ok(())
}

/// [`decode_symbol`] at run time, for codes longer than [`FAST_BITS`]: the search starts
/// past them, and an impossible index (the code is complete, so there is none) reads as EOS
/// rather than panicking.
#[inline]
fn decode_symbol_at(t: &DecodeTables, window: u32) -> (u16, u32) {
    let mut len = FAST_BITS as usize + 1;
    while len < MAX_LEN && window as u64 >= t.limit[len] {
        len += 1;
    }
    let code = window >> (32 - len);
    let index = t.offset[len] as usize + code.wrapping_sub(t.first[len]) as usize;
    (
        t.sorted.get(index).copied().unwrap_or(EOS as u16),
        len as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http2::hex;
    use proptest::prelude::*;

    fn encoded(src: &[u8]) -> Vec<u8> {
        let mut dst = BytesMut::new();
        encode(src, &mut dst);
        assert_eq!(dst.len(), encoded_len(src));
        dst.to_vec()
    }

    fn decoded(src: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut dst = Vec::new();
        decode(src, &mut dst).map(|()| dst)
    }

    /// The codes derived from the lengths are Appendix B's.
    #[test]
    fn canonical_codes_match_appendix_b() {
        let known: [(usize, u32, u8); 12] = [
            (b'0' as usize, 0x0, 5),
            (b'1' as usize, 0x1, 5),
            (b'a' as usize, 0x3, 5),
            (b' ' as usize, 0x14, 6),
            (b'%' as usize, 0x15, 6),
            (b'A' as usize, 0x21, 6),
            (b':' as usize, 0x5c, 7),
            (b'&' as usize, 0xf8, 8),
            (b'!' as usize, 0x3f8, 10),
            (0, 0x1ff8, 13),
            (255, 0x3ffffee, 26),
            (EOS, 0x3fff_ffff, 30),
        ];
        for (symbol, code, len) in known {
            assert_eq!(CODES[symbol], code, "code of {symbol}");
            assert_eq!(CODE_LENGTHS[symbol], len, "length of {symbol}");
        }
    }

    /// RFC 7541 Appendix C.4 and C.6 strings.
    #[test]
    fn appendix_c_strings() {
        let cases: [(&str, &str); 11] = [
            ("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
            ("no-cache", "a8eb 1064 9cbf"),
            ("custom-key", "25a8 49e9 5ba9 7d7f"),
            ("custom-value", "25a8 49e9 5bb8 e8b4 bf"),
            ("302", "6402"),
            ("307", "640e ff"),
            ("private", "aec3 771a 4b"),
            (
                "Mon, 21 Oct 2013 20:13:21 GMT",
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
            ),
            (
                "https://www.example.com",
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
            ),
            ("gzip", "9bd9 ab"),
            (
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
                "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 \
                 3160 65c0 03ed 4ee5 b106 3d50 07",
            ),
        ];
        for (plain, coded) in cases {
            assert_eq!(encoded(plain.as_bytes()), hex(coded), "encoding {plain:?}");
            assert_eq!(
                decoded(&hex(coded)).unwrap(),
                plain.as_bytes(),
                "decoding {plain:?}"
            );
        }
    }

    #[test]
    fn empty_string() {
        assert_eq!(encoded(b""), b"");
        assert_eq!(decoded(b"").unwrap(), b"");
    }

    /// Every octet alone, which takes every code through both decoding paths (the table of
    /// short codes and the search for long ones), and at the end of the input.
    #[test]
    fn every_octet_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(decoded(&encoded(&[b])).unwrap(), [b], "octet {b}");
            let three = [b'a', b, b'~'];
            assert_eq!(
                decoded(&encoded(&three)).unwrap(),
                three,
                "octet {b} in the middle"
            );
        }
    }

    #[test]
    fn eos_is_an_error() {
        // EOS (30 1s) then 2 bits of padding.
        assert_eq!(decoded(&[0xff, 0xff, 0xff, 0xff]), Err(HuffmanError::Eos));
        // 'a' (00011), then EOS, then 5 bits of padding.
        let mut bits: u64 = (0b00011 << 35) | (0x3fff_ffff << 5) | 0b11111;
        bits <<= 24;
        assert_eq!(decoded(&bits.to_be_bytes()[..5]), Err(HuffmanError::Eos));
    }

    #[test]
    fn padding_longer_than_seven_bits_is_an_error() {
        // A whole byte of padding alone.
        assert_eq!(decoded(&[0xff]), Err(HuffmanError::PaddingTooLong));
        // '0' (00000) then 11 bits of 1s.
        assert_eq!(decoded(&[0x07, 0xff]), Err(HuffmanError::PaddingTooLong));
        // 'a' (00011) + 3 bits of padding is fine; a further byte of 1s is not.
        assert_eq!(decoded(&[0x1f]).unwrap(), b"a");
        assert_eq!(decoded(&[0x1f, 0xff]), Err(HuffmanError::PaddingTooLong));
    }

    #[test]
    fn padding_not_of_eos_is_an_error() {
        // 'a' (00011) then 000: the start of '0', not of EOS.
        assert_eq!(decoded(&[0x18]), Err(HuffmanError::InvalidPadding));
        // 'a' then 110.
        assert_eq!(decoded(&[0x1e]), Err(HuffmanError::InvalidPadding));
        // 'a' then the first 11 bits of a 13-bit code (octet 0: 1111111111000).
        assert_eq!(decoded(&[0x1f, 0xfe]), Err(HuffmanError::InvalidPadding));
    }

    /// The decoder the RFC describes, one bit at a time, to check the table-driven one
    /// against.
    fn reference_decode(src: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        let (mut code, mut len) = (0u32, 0u8);
        for i in 0..src.len() * 8 {
            code = (code << 1) | u32::from(src[i / 8] >> (7 - i % 8) & 1);
            len += 1;
            if let Some(symbol) = (0..257).find(|&s| CODE_LENGTHS[s] == len && CODES[s] == code) {
                if symbol == EOS {
                    return Err(HuffmanError::Eos);
                }
                out.push(symbol as u8);
                (code, len) = (0, 0);
            }
        }
        if code != (1 << len) - 1 {
            return Err(HuffmanError::InvalidPadding);
        }
        if len > 7 {
            return Err(HuffmanError::PaddingTooLong);
        }
        Ok(out)
    }

    /// Inputs likely to reach every branch: coded text, long codes, runs of 1s (EOS and
    /// padding), arbitrary bytes, in any order.
    fn tricky_input() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            "[ -~]{0,20}".prop_map(|s| encoded(s.as_bytes())),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(|s| encoded(&s)),
            proptest::collection::vec(Just(0xffu8), 1..6),
            proptest::collection::vec(any::<u8>(), 0..12),
        ];
        proptest::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn matches_bitwise_reference(src in tricky_input()) {
            prop_assert_eq!(decoded(&src), reference_decode(&src));
        }

        #[test]
        fn round_trip(src in proptest::collection::vec(any::<u8>(), 0..300)) {
            let coded = encoded(&src);
            prop_assert_eq!(decoded(&coded).unwrap(), src);
        }

        #[test]
        fn round_trip_text(src in "[ -~]{0,80}") {
            let coded = encoded(src.as_bytes());
            prop_assert_eq!(decoded(&coded).unwrap(), src.as_bytes());
        }

        #[test]
        fn decode_never_panics(src in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut dst = Vec::new();
            let _ = decode(&src, &mut dst);
            prop_assert!(dst.len() <= src.len() * 8 / 5);
        }
    }
}
