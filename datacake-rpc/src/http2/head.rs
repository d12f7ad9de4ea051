//! A message's head as it is decoded: the pseudo-headers a request or a reply must carry,
//! and the checks RFC 9113 §8 asks of every field.

use http::header::{HeaderName, CONNECTION, CONTENT_LENGTH, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

/// A decoded head: a request's (on a server) or a reply's (on a client).
#[derive(Debug)]
pub(crate) enum Head {
    Request(RequestHead),
    Response(ResponseHead),
}

/// What a server needs of a request's head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) method: Method,
    /// The `:path`, query included.
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    /// The body length its Content-Length announces.
    pub(crate) content_length: Option<u64>,
}

impl RequestHead {
    /// The path without its query: what routes the request.
    pub(crate) fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

/// A reply's head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// The body length its Content-Length announces.
    pub(crate) content_length: Option<u64>,
}

/// Whether an HTTP/2 message may not carry this field (RFC 9113 §8.2.2): the
/// connection-specific headers of HTTP/1.1, and `te` other than `trailers`.
pub(crate) fn is_connection_specific(name: &HeaderName, value: &[u8]) -> bool {
    name == CONNECTION
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
        || (name == TE && value != b"trailers")
}

/// The fields of one header block, collected as the decoder yields them.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    status: Option<StatusCode>,
    method: Option<Method>,
    path: Option<String>,
    scheme: bool,
    authority: bool,
    headers: HeaderMap,
    /// The first thing wrong with the block, if any.
    error: Option<&'static str>,
    regular_seen: bool,
    pseudo_seen: bool,
    /// The list was larger than allowed: what was collected is incomplete.
    too_large: bool,
}

impl Fields {
    /// Takes one decoded field.
    pub(crate) fn add(&mut self, name: &[u8], value: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            self.add_pseudo(pseudo, value);
            return;
        }
        self.regular_seen = true;
        // Names must already be lowercase (RFC 9113 §8.2.1); `from_bytes` would fold them.
        if name.iter().any(u8::is_ascii_uppercase) {
            return self.fail("an uppercase header name");
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            return self.fail("a malformed header");
        };
        if is_connection_specific(&name, value.as_bytes()) {
            return self.fail("a connection-specific header");
        }
        self.headers.append(name, value);
    }

    fn add_pseudo(&mut self, pseudo: &[u8], value: &[u8]) {
        if self.regular_seen {
            return self.fail("a pseudo-header after a regular header");
        }
        self.pseudo_seen = true;
        match pseudo {
            b"status" if self.status.is_none() => match StatusCode::from_bytes(value) {
                Ok(status) => self.status = Some(status),
                Err(_) => self.fail("a malformed :status"),
            },
            b"method" if self.method.is_none() => match Method::from_bytes(value) {
                Ok(method) => self.method = Some(method),
                Err(_) => self.fail("a malformed :method"),
            },
            b"path" if self.path.is_none() => match std::str::from_utf8(value) {
                Ok(path) if path.starts_with('/') && !path.contains(char::is_whitespace) => {
                    self.path = Some(path.to_owned())
                }
                _ => self.fail("a malformed :path"),
            },
            b"scheme" if !self.scheme => self.scheme = true,
            b"authority" if !self.authority => self.authority = true,
            _ => self.fail("an unknown or repeated pseudo-header"),
        }
    }

    fn fail(&mut self, what: &'static str) {
        self.error.get_or_insert(what);
    }

    /// Marks the block as too large: what was collected is incomplete.
    pub(crate) fn too_large(&mut self) {
        self.too_large = true;
        self.fail("a header list larger than allowed");
    }

    /// Whether the block was larger than allowed.
    pub(crate) fn is_too_large(&self) -> bool {
        self.too_large
    }

    /// The block as a reply's head; `Ok(None)` for an informational (1xx) one.
    pub(crate) fn into_response(self) -> Result<Option<ResponseHead>, &'static str> {
        if let Some(what) = self.error {
            return Err(what);
        }
        if self.method.is_some() || self.path.is_some() || self.scheme || self.authority {
            return Err("a request pseudo-header in a reply");
        }
        let Some(status) = self.status else {
            return Err("a reply without :status");
        };
        if status.is_informational() {
            return Ok(None);
        }
        Ok(Some(ResponseHead {
            status,
            content_length: content_length(&self.headers)?,
            headers: self.headers,
        }))
    }

    /// The block as a request's head (RFC 9113 §8.3.1: `:method`, `:scheme` and `:path`,
    /// no `:status`).
    pub(crate) fn into_request(self) -> Result<RequestHead, &'static str> {
        if let Some(what) = self.error {
            return Err(what);
        }
        if self.status.is_some() {
            return Err("a :status in a request");
        }
        let (Some(method), Some(path), true) = (self.method, self.path, self.scheme) else {
            return Err("a request without :method, :scheme or :path");
        };
        Ok(RequestHead {
            method,
            path,
            content_length: content_length(&self.headers)?,
            headers: self.headers,
        })
    }

    /// The block as trailers: regular fields only.
    pub(crate) fn check_trailers(&self) -> Result<(), &'static str> {
        if let Some(what) = self.error {
            return Err(what);
        }
        if self.pseudo_seen {
            return Err("a pseudo-header in trailers");
        }
        Ok(())
    }
}

/// The Content-Length of a message, if it has one: every value the same number.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let parsed = std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or("a malformed content-length")?;
        if length.is_some_and(|l| l != parsed) {
            return Err("contradictory content-lengths");
        }
        length = Some(parsed);
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(&str, &str)]) -> Fields {
        let mut fields = Fields::default();
        for (name, value) in list {
            fields.add(name.as_bytes(), value.as_bytes());
        }
        fields
    }

    #[test]
    fn a_request_needs_its_pseudo_headers_first_and_once() {
        let ok = fields(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "a:1"),
            (":path", "/svc/call?x=1"),
            ("content-length", "5"),
        ]);
        let head = ok.into_request().unwrap();
        assert_eq!(head.method, Method::POST);
        assert_eq!(head.route(), "/svc/call");
        assert_eq!(head.content_length, Some(5));
        for bad in [
            &[(":method", "POST"), (":path", "/a")][..],
            &[(":method", "POST"), (":scheme", "http")],
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/a"),
                (":path", "/b"),
            ],
            &[(":method", "POST"), (":scheme", "http"), (":path", "a")],
            &[
                (":method", "POST"),
                (":scheme", "http"),
                ("x", "1"),
                (":path", "/a"),
            ],
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/a"),
                (":status", "200"),
            ],
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/a"),
                (":other", "1"),
            ],
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/a"),
                ("X-Up", "1"),
            ],
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/a"),
                ("connection", "x"),
            ],
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/a"),
                ("te", "gzip"),
            ],
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/a"),
                ("content-length", "x"),
            ],
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/a"),
                ("content-length", "1"),
                ("content-length", "2"),
            ],
        ] {
            assert!(fields(bad).into_request().is_err(), "{bad:?}");
        }
        let te = fields(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/a"),
            ("te", "trailers"),
        ]);
        assert!(te.into_request().is_ok());
    }

    #[test]
    fn a_reply_needs_its_status_and_nothing_of_a_request() {
        let head = fields(&[(":status", "404"), ("x", "1")])
            .into_response()
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::NOT_FOUND);
        assert!(fields(&[(":status", "103")])
            .into_response()
            .unwrap()
            .is_none());
        for bad in [
            &[("x", "1")][..],
            &[(":status", "20")],
            &[(":status", "200"), (":status", "200")],
            &[(":status", "200"), (":path", "/")],
        ] {
            assert!(fields(bad).into_response().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trailers_carry_no_pseudo_headers() {
        assert!(fields(&[("x-sum", "1")]).check_trailers().is_ok());
        assert!(fields(&[(":status", "200")]).check_trailers().is_err());
    }
}
