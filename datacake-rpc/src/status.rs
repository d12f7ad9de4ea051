//! The error type of every call: a code and a message, sent over the wire as an rkyv archive.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use rkyv::rancor;

/// Why a call failed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The service or handler path is not registered on the server (or the server is going away).
    Unavailable,
    /// The server failed while handling the call, e.g. the handler panicked.
    Internal,
    /// A request or reply body was not a valid archive of the expected type.
    InvalidPayload,
    /// A request or reply body was larger than the configured limit.
    PayloadTooLarge,
    /// The connection could not be established or broke during the call.
    Connection,
    /// The call's deadline passed before the reply arrived.
    Timeout,
    /// An error of the handler's own, with a code the application chooses.
    Custom(u16),
    /// The caller is not allowed to make this call: e.g. its verified certificate names
    /// another node than the one its message claims to come from.
    PermissionDenied,
    /// The server is holding as much as its limits allow (e.g. request bodies buffered on
    /// the connection or in the whole server); the same call may succeed later. Declared
    /// last so the wire form of the older codes is unchanged.
    ResourceExhausted,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable => f.write_str("unavailable"),
            Self::Internal => f.write_str("internal"),
            Self::InvalidPayload => f.write_str("invalid payload"),
            Self::PayloadTooLarge => f.write_str("payload too large"),
            Self::Connection => f.write_str("connection"),
            Self::Timeout => f.write_str("timeout"),
            Self::PermissionDenied => f.write_str("permission denied"),
            Self::Custom(code) => write!(f, "custom({code})"),
            Self::ResourceExhausted => f.write_str("resource exhausted"),
        }
    }
}

/// The outcome of a failed call: what went wrong ([`ErrorCode`]), a message for humans, and
/// on the side that produced it, the local error that caused it
/// ([`source`](std::error::Error::source)).
///
/// A handler's own `Status` reaches the client with its code and message; a source never
/// travels (it is this process's error value, and may say more than a peer should learn).
/// Two statuses are equal when their codes and messages are.
///
/// ```
/// use std::error::Error;
/// use datacake_rpc::{ErrorCode, Status};
///
/// let status = Status::custom(7, "no such key");
/// assert_eq!(status.code(), ErrorCode::Custom(7));
/// assert_eq!(status.to_string(), "custom(7): no such key");
///
/// let io = std::io::Error::other("disk full");
/// let status = Status::internal("cannot store the batch").with_source(io);
/// assert_eq!(status.source().unwrap().to_string(), "disk full");
/// assert_eq!(datacake_rpc::error_chain(&status), "internal: cannot store the batch: disk full");
/// ```
#[derive(Clone)]
pub struct Status {
    code: ErrorCode,
    message: String,
    source: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

/// A status as it travels: its code and message.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct WireStatus {
    code: ErrorCode,
    message: String,
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Status");
        debug
            .field("code", &self.code)
            .field("message", &self.message);
        if let Some(source) = &self.source {
            debug.field("source", source);
        }
        debug.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl Error for Status {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

impl PartialEq for Status {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code && self.message == other.message
    }
}

impl Eq for Status {}

impl Status {
    /// A status with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// What kind of failure this is.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The description of the failure.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The status with `source` as its cause (kept in this process; see the type docs).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// [`ErrorCode::Unavailable`]: unknown service or handler.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// [`ErrorCode::Internal`]: the server failed while handling the call.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// [`ErrorCode::InvalidPayload`] with a generic message.
    pub fn invalid() -> Self {
        Self::invalid_payload("the body is not a valid archive of the expected type")
    }

    /// [`ErrorCode::InvalidPayload`] with a message.
    pub fn invalid_payload(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidPayload, message)
    }

    /// [`ErrorCode::PayloadTooLarge`]: a body of (at least) `size` bytes exceeds `limit`.
    pub fn payload_too_large(size: usize, limit: usize) -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("body of at least {size} bytes exceeds the limit of {limit} bytes"),
        )
    }

    /// [`ErrorCode::Connection`]: the connection failed or broke.
    pub fn connection(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Connection, message)
    }

    /// [`ErrorCode::Timeout`]: the deadline passed.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Timeout, message)
    }

    /// [`ErrorCode::PermissionDenied`]: the caller may not make this call.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }

    /// [`ErrorCode::ResourceExhausted`]: a server limit is reached for now.
    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceExhausted, message)
    }

    /// [`ErrorCode::Custom`]: an application error with its own code.
    pub fn custom(code: u16, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Custom(code), message)
    }

    /// The archived form sent in an error reply.
    pub(crate) fn to_wire(&self) -> Bytes {
        let wire = WireStatus {
            code: self.code,
            message: self.message.clone(),
        };
        match rkyv::to_bytes::<rancor::Error>(&wire) {
            Ok(bytes) => Bytes::from_owner(bytes),
            // Serialising a plain struct of an enum and a string into memory cannot fail
            // short of allocation failure; send an empty body, which the client reports
            // as an invalid payload rather than hanging.
            Err(_) => Bytes::new(),
        }
    }

    /// Reads the status an error reply's body carries (the wire form: a validated rkyv
    /// archive of the code and the message), e.g. for a client written without
    /// [`RpcClient`](crate::RpcClient). `bytes` must be 16-byte aligned (as rkyv's
    /// `AlignedVec` is); anything else, or anything but a status, is an
    /// [`InvalidPayload`](ErrorCode::InvalidPayload) error.
    pub fn from_reply_body(bytes: &[u8]) -> Result<Self, Status> {
        let archived = rkyv::access::<ArchivedWireStatus, rancor::Error>(bytes)
            .map_err(|e| Status::invalid_payload(format!("malformed error reply: {e}")))?;
        let wire = rkyv::deserialize::<WireStatus, rancor::Error>(archived)
            .map_err(|e| Status::invalid_payload(format!("malformed error reply: {e}")))?;
        Ok(Self::new(wire.code, wire.message))
    }

    /// The HTTP status code an error reply carries.
    pub(crate) fn http_code(&self) -> u16 {
        match self.code {
            ErrorCode::Unavailable => 404,
            ErrorCode::InvalidPayload => 400,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Timeout => 504,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::Connection => 502,
            ErrorCode::ResourceExhausted => 503,
            ErrorCode::Internal | ErrorCode::Custom(_) => 500,
        }
    }
}

/// `error` and its sources, joined with `: `: one line for a log or a [`Status`] message.
///
/// ```
/// let io = std::io::Error::other("disk full");
/// assert_eq!(datacake_rpc::error_chain(&io), "disk full");
/// ```
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_wire_form() {
        for status in [
            Status::unavailable("/a/b"),
            Status::custom(u16::MAX, "x"),
            Status::payload_too_large(10, 5),
            Status::permission_denied("node 3 is not node 7"),
            Status::resource_exhausted("full"),
        ] {
            let bytes = status.to_wire();
            let mut aligned = rkyv::util::AlignedVec::<16>::new();
            aligned.extend_from_slice(&bytes);
            assert_eq!(Status::from_reply_body(&aligned).unwrap(), status);
        }
    }

    #[test]
    fn garbage_is_an_invalid_payload() {
        let err = Status::from_reply_body(&[1, 2, 3]).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPayload);
    }
}
