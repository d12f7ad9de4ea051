//! [`RpcClient`]: typed calls to one service over a [`Channel`], and the [`Response`] they
//! return.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::RwLock;

use crate::metrics::{Series, CLIENT};
use crate::payload::ReadLimits;
use crate::{
    Body, Channel, DataView, Handler, Headers, Message, Payload, RequestContext, RpcService, Status,
};

/// The default largest reply body a client accepts: 64 MiB.
pub const DEFAULT_MAX_REPLY_SIZE: usize = 64 << 20;

/// A typed client of service `Svc`: `send(&msg)` calls `Svc`'s `Handler<Msg>`.
///
/// Cheap to create and clone; any number of clients share one [`Channel`].
pub struct RpcClient<Svc> {
    channel: Channel,
    timeout: Option<Duration>,
    max_reply_size: usize,
    metrics: Series,
    _service: PhantomData<fn() -> Svc>,
}

impl<Svc> Clone for RpcClient<Svc> {
    fn clone(&self) -> Self {
        Self {
            channel: self.channel.clone(),
            timeout: self.timeout,
            max_reply_size: self.max_reply_size,
            metrics: self.metrics.clone(),
            _service: PhantomData,
        }
    }
}

impl<Svc> fmt::Debug for RpcClient<Svc> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field("service", &std::any::type_name::<Svc>())
            .field("channel", &self.channel)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<Svc: RpcService> RpcClient<Svc> {
    /// A client of `Svc` over `channel`, without a deadline. Its metrics (see the crate's
    /// README) go to the `metrics` recorder installed when it is made: install the exporter
    /// before making clients.
    pub fn new(channel: Channel) -> Self {
        Self {
            channel,
            timeout: None,
            max_reply_size: DEFAULT_MAX_REPLY_SIZE,
            metrics: Series::new(&CLIENT, Svc::service_name()),
            _service: PhantomData,
        }
    }

    /// Every call fails with [`Timeout`](crate::ErrorCode::Timeout) if its reply (for a
    /// streamed `Body` reply: the reply's head) has not arrived within `timeout`.
    ///
    /// A timed-out call also makes the channel ping its connection at once: a connection
    /// that answers nothing at all (its peer vanished without closing it) is replaced when
    /// the ping goes unanswered for `timeout` (at least a second), rather than after the
    /// keep-alive interval; a peer that is only slow answers the ping and keeps it. On a link
    /// so slow that a ping queues longer than that behind the data already sent, the
    /// connection is replaced too (failing its calls in flight): keep timeouts above the
    /// link's worst delay.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = Some(timeout);
    }

    /// The largest reply body accepted; larger ones fail with
    /// [`PayloadTooLarge`](crate::ErrorCode::PayloadTooLarge).
    pub fn set_max_reply_size(&mut self, bytes: usize) {
        self.max_reply_size = bytes;
    }

    /// A client of another service over the same channel, with the same settings.
    pub fn new_client<Other: RpcService>(&self) -> RpcClient<Other> {
        RpcClient {
            channel: self.channel.clone(),
            timeout: self.timeout,
            max_reply_size: self.max_reply_size,
            metrics: Series::new(&CLIENT, Other::service_name()),
            _service: PhantomData,
        }
    }

    /// The channel the client uses.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Archives `msg` and calls `Svc`'s handler for it.
    pub async fn send<Msg>(
        &self,
        msg: &Msg,
    ) -> Result<Response<<<Svc as Handler<Msg>>::Reply as Payload>::View>, Status>
    where
        Msg: Message,
        Svc: Handler<Msg>,
    {
        let body = Body::from(msg.to_archive()?);
        self.call::<Msg>(body, None).await
    }

    /// Like [`send`](Self::send), with headers and/or a deadline from `ctx`.
    pub async fn send_with_context<Msg>(
        &self,
        msg: &Msg,
        ctx: RequestContext,
    ) -> Result<Response<<<Svc as Handler<Msg>>::Reply as Payload>::View>, Status>
    where
        Msg: Message,
        Svc: Handler<Msg>,
    {
        let body = Body::from(msg.to_archive()?);
        self.call::<Msg>(body, Some(ctx)).await
    }

    /// Sends an owned payload: a message, or a [`Body`] for handlers of `Body`.
    pub async fn send_owned<Msg>(
        &self,
        msg: Msg,
    ) -> Result<Response<<<Svc as Handler<Msg>>::Reply as Payload>::View>, Status>
    where
        Msg: Payload,
        Svc: Handler<Msg>,
    {
        self.call::<Msg>(msg.into_body()?, None).await
    }

    /// Like [`send_owned`](Self::send_owned), with headers and/or a deadline from `ctx`.
    pub async fn send_owned_with_context<Msg>(
        &self,
        msg: Msg,
        ctx: RequestContext,
    ) -> Result<Response<<<Svc as Handler<Msg>>::Reply as Payload>::View>, Status>
    where
        Msg: Payload,
        Svc: Handler<Msg>,
    {
        self.call::<Msg>(msg.into_body()?, Some(ctx)).await
    }

    async fn call<Msg>(
        &self,
        body: Body,
        ctx: Option<RequestContext>,
    ) -> Result<Response<<<Svc as Handler<Msg>>::Reply as Payload>::View>, Status>
    where
        Msg: Payload,
        Svc: Handler<Msg>,
    {
        let (headers, timeout) = match ctx {
            Some(ctx) => (ctx.headers.into_map(), ctx.timeout.or(self.timeout)),
            None => (http::HeaderMap::new(), self.timeout),
        };
        let path = request_path(Svc::service_name(), <Svc as Handler<Msg>>::path())?;
        let metrics = self.metrics.start();
        let exchange = async {
            let response = self.channel.call(path.clone(), headers, body).await?;
            let (parts, body) = response.into_parts();
            if parts.status == http::StatusCode::OK {
                let view = <Svc as Handler<Msg>>::Reply::from_body(
                    body,
                    ReadLimits::new(self.max_reply_size),
                )
                .await?;
                Ok(Response {
                    inner: view,
                    headers: Headers::from_map(parts.headers),
                })
            } else {
                let (bytes, _) = body.collect_aligned(self.max_reply_size).await?;
                Err(Status::from_reply_body(&bytes).unwrap_or_else(|e| {
                    Status::invalid_payload(format!(
                        "error reply (http {}) is not a status: {}",
                        parts.status,
                        e.message()
                    ))
                }))
            }
        };
        let result = match timeout {
            None => exchange.await,
            Some(limit) => tokio::time::timeout(limit, exchange)
                .await
                .unwrap_or_else(|_| {
                    // Silence may mean a dead connection rather than a slow handler: have
                    // the channel check, so the next call does not wait on it too.
                    self.channel.suspect(limit);
                    Err(Status::timeout(format!(
                        "no reply from {path} within {limit:?}"
                    )))
                }),
        };
        metrics.finish(&result);
        result
    }
}

/// A successful reply: the reply view (a validated [`DataView`], or a
/// [`Body`]) and the reply's headers. Derefs to the view.
pub struct Response<T> {
    inner: T,
    headers: Headers,
}

impl<T> Response<T> {
    /// The headers the handler set (see [`Request::set_reply_header`](crate::Request::set_reply_header)).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The reply view, dropping the headers.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// The reply view and the headers.
    pub fn into_parts(self) -> (T, Headers) {
        (self.inner, self.headers)
    }
}

impl<T> Deref for Response<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for Response<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

/// A reply equals a message when its view does (see [`DataView`]'s
/// `PartialEq<T>`), so a reply is compared with the value expected without unwrapping it:
/// `assert_eq!(client.send(&msg).await?, 5)`.
impl<T> PartialEq<T> for Response<DataView<T>>
where
    T: Message,
    rkyv::Archived<T>: PartialEq<T>,
{
    fn eq(&self, other: &T) -> bool {
        self.inner == *other
    }
}

/// Two replies are equal when their views are (headers are not compared), so a whole call
/// result compares with an expected one: `assert_eq!(result, Err(Status::internal("..")))`.
impl<T: PartialEq> PartialEq for Response<T> {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl<T: fmt::Debug> fmt::Debug for Response<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("inner", &self.inner)
            .field("headers", &self.headers)
            .finish()
    }
}

/// The request path `/{service}/{handler}`, parsed once per pair and then cloned (a cheap
/// clone of shared bytes), instead of formatted and parsed on every call.
fn request_path(
    service: &'static str,
    handler: &'static str,
) -> Result<http::uri::PathAndQuery, Status> {
    // Keys are names compiled into the program, not a peer's input: a fixed-seed fast hash
    // is enough (SipHash cost ~250 instructions a call).
    type Paths =
        HashMap<(&'static str, &'static str), http::uri::PathAndQuery, foldhash::fast::FixedState>;
    static PATHS: OnceLock<RwLock<Paths>> = OnceLock::new();
    let paths = PATHS.get_or_init(RwLock::default);
    if let Some(path) = paths.read().get(&(service, handler)) {
        return Ok(path.clone());
    }
    let text = format!("/{service}/{handler}");
    let path = http::uri::PathAndQuery::try_from(text.as_str())
        .map_err(|e| Status::internal(format!("invalid path {text:?}: {e}")))?;
    paths.write().insert((service, handler), path.clone());
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::request_path;
    use crate::ErrorCode;

    #[test]
    fn request_paths_are_parsed_once_and_bad_names_refused() {
        let path = request_path("svc", "handler").unwrap();
        assert_eq!(path.as_str(), "/svc/handler");
        assert_eq!(request_path("svc", "handler").unwrap(), path);
        let refused = request_path("bad svc", "handler").unwrap_err();
        assert_eq!(refused.code(), ErrorCode::Internal, "{refused}");
    }
}
