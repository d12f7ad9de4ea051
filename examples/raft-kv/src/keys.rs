//! From URL path segments to keys and counter names.
//!
//! A key is one path segment, percent-decoded: any UTF-8 text of 1 to `max_key_bytes` bytes
//! (so `/` in a key is written `%2F`). The names of the other routes are reserved, so that
//! `PUT /health` cannot make a key that `GET /health` would not return.

/// Keys that name routes.
pub(crate) const RESERVED: [&str; 4] = ["cluster", "health", "metrics", "counter"];

/// Why a path segment is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    /// Empty after decoding.
    #[error("a key or counter name must not be empty")]
    Empty,
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding at byte {0}")]
    BadEscape(usize),
    /// The decoded bytes are not UTF-8.
    #[error("a key or counter name must be UTF-8 once percent-decoded")]
    NotUtf8,
    /// Longer than the limit.
    #[error("a key or counter name is at most {max} bytes (this one has {len})")]
    TooLong { len: usize, max: usize },
    /// A route name.
    #[error("{0:?} is reserved (the name of a route)")]
    Reserved(String),
}

/// The key in the raw (still percent-encoded) path segment `raw`.
pub(crate) fn decode(raw: &str, max: usize) -> Result<String, KeyError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(KeyError::BadEscape(i))?;
            let (Some(high), Some(low)) = (hex_digit(hex[0]), hex_digit(hex[1])) else {
                return Err(KeyError::BadEscape(i));
            };
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
        // Stop early on absurdly long segments.
        if out.len() > max {
            return Err(KeyError::TooLong {
                len: raw.len(),
                max,
            });
        }
    }
    if out.is_empty() {
        return Err(KeyError::Empty);
    }
    let key = String::from_utf8(out).map_err(|_| KeyError::NotUtf8)?;
    if RESERVED.contains(&key.as_str()) {
        return Err(KeyError::Reserved(key));
    }
    Ok(key)
}

/// The value of one hexadecimal digit. (Not `u8::from_str_radix`, which also takes a sign:
/// `%+4` would decode.)
fn hex_digit(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|digit| digit as u8)
}

/// The key percent-encoded for a URL path segment: bytes other than ASCII letters, digits
/// and `-._~` become `%XX`.
#[cfg(test)]
pub(crate) fn encode(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_decoded_utf8() {
        assert_eq!(decode("alice", 256).unwrap(), "alice");
        assert_eq!(decode("a%2Fb%20c", 256).unwrap(), "a/b c");
        assert_eq!(decode("%C3%A9t%C3%A9", 256).unwrap(), "été");
        assert_eq!(decode("%FF", 256), Err(KeyError::NotUtf8));
        assert_eq!(decode("%G1", 256), Err(KeyError::BadEscape(0)));
        assert_eq!(decode("ab%2", 256), Err(KeyError::BadEscape(2)));
        // Two hex digits, nothing else: no sign, no space.
        assert_eq!(decode("%+41", 256), Err(KeyError::BadEscape(0)));
        assert_eq!(decode("a%-1", 256), Err(KeyError::BadEscape(1)));
        assert_eq!(decode("%%41", 256), Err(KeyError::BadEscape(0)));
        assert_eq!(decode("%4a%4A", 256).unwrap(), "JJ");
        assert_eq!(decode("", 256), Err(KeyError::Empty));
        assert!(matches!(decode("health", 256), Err(KeyError::Reserved(_))));
        assert!(matches!(
            decode("%63luster", 256),
            Err(KeyError::Reserved(_))
        ));
    }

    #[test]
    fn the_length_limit_counts_decoded_bytes() {
        assert!(decode(&"k".repeat(8), 8).is_ok());
        assert!(matches!(
            decode(&"k".repeat(9), 8),
            Err(KeyError::TooLong { .. })
        ));
        // Three escapes, three bytes.
        assert!(decode("%41%42%43", 3).is_ok());
    }

    #[test]
    fn encoding_round_trips() {
        for key in ["plain", "a/b c", "été", "100%"] {
            assert_eq!(decode(&encode(key), 256).unwrap(), key);
        }
    }
}
