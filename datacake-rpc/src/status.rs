//! The error type of every call: a code and a message, sent over the wire as an rkyv archive.

use std::fmt;

use bytes::Bytes;
use rkyv::rancor;

/// Why a call failed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
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

/// The outcome of a failed call: what went wrong ([`ErrorCode`]) and a message for humans.
///
/// A handler's own `Status` reaches the client unchanged.
///
/// ```
/// use datacake_rpc::{ErrorCode, Status};
///
/// let status = Status::custom(7, "no such key");
/// assert_eq!(status.code, ErrorCode::Custom(7));
/// assert_eq!(status.to_string(), "custom(7): no such key");
/// ```
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    thiserror::Error,
)]
#[error("{code}: {message}")]
pub struct Status {
    /// What kind of failure this is.
    pub code: ErrorCode,
    /// A description of the failure.
    pub message: String,
}

impl Status {
    /// A status with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
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
        match rkyv::to_bytes::<rancor::Error>(self) {
            Ok(bytes) => Bytes::from_owner(bytes),
            // Serialising a plain struct of an enum and a string into memory cannot fail
            // short of allocation failure; send an empty body, which the client reports
            // as an invalid payload rather than hanging.
            Err(_) => Bytes::new(),
        }
    }

    /// Reads a status from a validated-on-the-spot archive.
    pub(crate) fn from_wire(bytes: &[u8]) -> Result<Self, Status> {
        let archived = rkyv::access::<ArchivedStatus, rancor::Error>(bytes)
            .map_err(|e| Status::invalid_payload(format!("malformed error reply: {e}")))?;
        rkyv::deserialize::<Status, rancor::Error>(archived)
            .map_err(|e| Status::invalid_payload(format!("malformed error reply: {e}")))
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
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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
            assert_eq!(Status::from_wire(&aligned).unwrap(), status);
        }
    }

    #[test]
    fn garbage_is_an_invalid_payload() {
        let err = Status::from_wire(&[1, 2, 3]).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPayload);
    }
}
