//! What a handler receives ([`Request`]) and what a client may attach to a call
//! ([`RequestContext`]).

use std::fmt;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::{Headers, Payload, PeerIdentity, Status};

/// A call as the handler sees it: the already-validated message view (`DataView<Msg>`, or a
/// `Body` for streaming handlers), the caller's address and headers.
///
/// Derefs to the view, so `request.field` reads the archived message in place.
pub struct Request<Msg: Payload> {
    view: Msg::View,
    remote_addr: SocketAddr,
    peer: Option<Arc<PeerIdentity>>,
    headers: Headers,
    reply_headers: Arc<Mutex<Headers>>,
}

impl<Msg: Payload> Request<Msg> {
    pub(crate) fn new(
        view: Msg::View,
        remote_addr: SocketAddr,
        peer: Option<Arc<PeerIdentity>>,
        headers: Headers,
        reply_headers: Arc<Mutex<Headers>>,
    ) -> Self {
        Self {
            view,
            remote_addr,
            peer,
            headers,
            reply_headers,
        }
    }

    /// The address of the calling peer.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// The caller's verified certificate and the names in it, when the call came over TLS
    /// (see [`TlsConfig`](crate::TlsConfig)); `None` on a plaintext connection. Who the
    /// caller is comes from here, never from what its message claims.
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.peer.as_deref()
    }

    /// The headers the caller sent (see [`RequestContext`]).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Adds a header to the reply (sent whether the handler succeeds or fails).
    pub fn set_reply_header(&self, name: &str, value: &str) -> Result<(), Status> {
        self.reply_headers.lock().insert(name, value)
    }

    /// The message view (or body), consuming the request.
    pub fn into_inner(self) -> Msg::View {
        self.view
    }
}

impl<Msg: Payload> Deref for Request<Msg> {
    type Target = Msg::View;

    fn deref(&self) -> &Msg::View {
        &self.view
    }
}

impl<Msg: Payload> DerefMut for Request<Msg> {
    fn deref_mut(&mut self) -> &mut Msg::View {
        &mut self.view
    }
}

impl<Msg: Payload> fmt::Debug for Request<Msg> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("message", &std::any::type_name::<Msg>())
            .field("remote_addr", &self.remote_addr)
            .field("peer", &self.peer)
            .field("headers", &self.headers)
            .finish()
    }
}

/// Per-call options: headers to send and a deadline overriding the client's.
///
/// ```
/// use std::time::Duration;
/// use datacake_rpc::RequestContext;
///
/// let ctx = RequestContext::new()
///     .with_header("x-trace-id", "abc")
///     .unwrap()
///     .with_timeout(Duration::from_secs(1));
/// assert_eq!(ctx.headers().get("x-trace-id"), Some("abc"));
/// ```
#[derive(Debug, Default, Clone)]
pub struct RequestContext {
    pub(crate) headers: Headers,
    pub(crate) timeout: Option<Duration>,
}

impl RequestContext {
    /// No headers, the client's deadline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header; fails for names or values HTTP does not allow.
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, Status> {
        self.headers.insert(name, value)?;
        Ok(self)
    }

    /// Sets this call's deadline, overriding [`RpcClient::set_timeout`](crate::RpcClient::set_timeout).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The headers to send.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Mutable access to the headers to send.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }
}
