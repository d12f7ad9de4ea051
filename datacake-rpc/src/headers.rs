//! [`Headers`]: metadata sent beside a request or reply.

use std::fmt;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use crate::Status;

/// Header names and values sent with a request or a reply (HTTP/2 headers underneath).
///
/// ```
/// use datacake_rpc::Headers;
///
/// let mut headers = Headers::new();
/// headers.insert("x-trace-id", "abc").unwrap();
/// assert_eq!(headers.get("x-trace-id"), Some("abc"));
/// assert!(headers.insert("bad name", "x").is_err());
/// ```
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Headers {
    map: HeaderMap,
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn from_map(map: HeaderMap) -> Self {
        Self { map }
    }

    pub(crate) fn into_map(self) -> HeaderMap {
        self.map
    }

    /// Sets `name` (case-insensitive) to `value`, replacing earlier values. Fails with
    /// [`InvalidPayload`](crate::ErrorCode::InvalidPayload) for names or values HTTP does not
    /// allow.
    pub fn insert(&mut self, name: &str, value: &str) -> Result<(), Status> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Status::invalid_payload(format!("invalid header name {name:?}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| Status::invalid_payload(format!("invalid header value {value:?}")))?;
        self.map.insert(name, value);
        Ok(())
    }

    /// The first value of `name`, if present and valid UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).and_then(|v| v.to_str().ok())
    }

    /// The raw first value of `name`.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.map.get(name).map(|v| v.as_bytes())
    }

    /// Every header as (name, raw value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (k, String::from_utf8_lossy(v))))
            .finish()
    }
}
