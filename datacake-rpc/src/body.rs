//! [`Body`]: a request or reply body, either whole or a stream of chunks.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use rkyv::util::AlignedVec;

use crate::http2::io::RecvBody;
use crate::limits::{Budget, Charge};
use crate::Status;

type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// Whole bodies larger than this announce their size (Content-Length), so the receiver
/// refuses an oversized one before reading it. Smaller ones are only counted as they arrive
/// (the receiver enforces its limit either way): the header costs a small call more than its
/// check is worth (encoding and parsing it, and the header map it needs, took about a tenth
/// of a 64-byte echo's instructions, counted with callgrind).
const ANNOUNCE_LENGTH_ABOVE: usize = 64 << 10;

/// The most a body's announced length (Content-Length) reserves before its bytes arrive:
/// a header costs the peer nothing, memory costs the receiver, so beyond this the buffer
/// grows only as bytes come in.
const PREALLOCATE_AT_MOST: usize = 64 << 10;

/// Sets Content-Length for a whole body of `len` bytes if it is large enough to announce.
pub(crate) fn announce_length(headers: &mut http::HeaderMap, len: usize) {
    if len > ANNOUNCE_LENGTH_ABOVE {
        headers.insert(http::header::CONTENT_LENGTH, len.into());
    }
}

/// A request or reply body: whole bytes or a stream of chunks.
///
/// A handler whose `Reply` is `Body` skips rkyv and streams whatever it likes; the client
/// receives a `Body` it reads chunk by chunk (it implements [`Stream`]) or collects.
///
/// ```
/// use bytes::Bytes;
/// use datacake_rpc::{Body, Status};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let chunks = vec![Ok::<_, Status>(Bytes::from("hello ")), Ok(Bytes::from("world"))];
/// let body = Body::from_stream(futures::stream::iter(chunks));
/// assert_eq!(body.collect(1024).await.unwrap(), "hello world");
/// # });
/// ```
pub struct Body {
    inner: Inner,
}

enum Inner {
    Full(Option<Bytes>),
    Stream(ChunkStream),
    /// A body arriving from the peer; `len` is its announced Content-Length. Collecting it
    /// charges `budget` (on a server: the connection's, inside the server's).
    Received {
        stream: RecvBody,
        len: Option<u64>,
        budget: Option<Arc<Budget>>,
    },
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner {
            Inner::Full(Some(b)) => return write!(f, "Body::Full({} bytes)", b.len()),
            Inner::Full(None) => "Body::Empty",
            Inner::Stream(_) => "Body::Stream",
            Inner::Received { .. } => "Body::Received",
        };
        f.write_str(kind)
    }
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
        }
    }

    /// A body sent chunk by chunk as `stream` yields them. An `Err` item aborts the body: the
    /// peer sees a broken stream.
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, Status>> + Send + 'static,
    {
        Self {
            inner: Inner::Stream(Box::pin(stream)),
        }
    }

    /// A body arriving from the peer, `len` its announced Content-Length.
    pub(crate) fn received(stream: RecvBody, len: Option<u64>) -> Self {
        Self {
            inner: Inner::Received {
                stream,
                len,
                budget: None,
            },
        }
    }

    /// Charges the bytes of this received body to `budget` while it is collected (and, for
    /// a message, while its view lives).
    pub(crate) fn charged_to(mut self, budget: Arc<Budget>) -> Self {
        if let Inner::Received { budget: slot, .. } = &mut self.inner {
            *slot = Some(budget);
        }
        self
    }

    /// The whole body, if it is already in memory.
    pub(crate) fn as_full(&mut self) -> Option<Bytes> {
        match &mut self.inner {
            Inner::Full(bytes) => Some(bytes.take().unwrap_or_default()),
            _ => None,
        }
    }

    /// The next chunk, `None` at the end of the body.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, Status>> {
        self.next().await
    }

    /// Reads the whole body into one buffer, failing with
    /// [`PayloadTooLarge`](crate::ErrorCode::PayloadTooLarge) once more than `limit` bytes
    /// arrive.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, Status> {
        if let Inner::Full(bytes) = &mut self.inner {
            let bytes = bytes.take().unwrap_or_default();
            return if bytes.len() > limit {
                Err(Status::payload_too_large(bytes.len(), limit))
            } else {
                Ok(bytes)
            };
        }
        // Only received bodies get here (whole ones returned above): reserve little up front.
        let mut buf = BytesMut::with_capacity(self.expected_len(limit)?.min(PREALLOCATE_AT_MOST));
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            if buf.len() + chunk.len() > limit {
                return Err(Status::payload_too_large(buf.len() + chunk.len(), limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// Reads the whole body into an aligned buffer (rkyv needs alignment), checking the
    /// announced length up front and counting while collecting.
    ///
    /// A received body charged to a budget charges the buffer's capacity before it grows,
    /// and fails with [`ResourceExhausted`](crate::ErrorCode::ResourceExhausted) (giving
    /// back what it held) if the budget cannot hold it; the returned charge holds the bytes
    /// until it is dropped.
    pub(crate) async fn collect_aligned(
        mut self,
        limit: usize,
    ) -> Result<(AlignedVec, Option<Charge>), Status> {
        let announced = self.expected_len(limit)?;
        let mut charge = match &self.inner {
            Inner::Received {
                budget: Some(budget),
                ..
            } => Some(Charge::new(budget.clone())),
            _ => None,
        };
        let preallocate = match &self.inner {
            // A length read off the wire only reserves so much before bytes back it.
            Inner::Received { .. } => announced.min(PREALLOCATE_AT_MOST),
            _ => announced,
        };
        let mut buf = AlignedVec::<16>::new();
        grow(&mut buf, &mut charge, preallocate)?;
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            let needed = buf.len() + chunk.len();
            if needed > limit {
                return Err(Status::payload_too_large(needed, limit));
            }
            if needed > buf.capacity() {
                // Doubling keeps copies amortised; never past the limit.
                let capacity = needed.max(buf.capacity() * 2).min(limit);
                grow(&mut buf, &mut charge, capacity)?;
            }
            buf.extend_from_slice(&chunk);
        }
        Ok((buf, charge))
    }

    /// The announced size (e.g. Content-Length), refused if it exceeds `limit`.
    fn expected_len(&self, limit: usize) -> Result<usize, Status> {
        let announced = match &self.inner {
            Inner::Full(bytes) => bytes.as_ref().map_or(0, |b| b.len() as u64),
            Inner::Stream(_) => 0,
            Inner::Received { len, .. } => len.unwrap_or(0),
        };
        let announced = usize::try_from(announced).unwrap_or(usize::MAX);
        if announced > limit {
            return Err(Status::payload_too_large(announced, limit));
        }
        Ok(announced)
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
        match &mut self.inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(Ok)),
            Inner::Stream(stream) => stream.as_mut().poll_next(cx),
            Inner::Received { stream, .. } => match std::task::ready!(stream.poll_data(cx)) {
                None => Poll::Ready(None),
                Some(Ok(data)) => Poll::Ready(Some(Ok(data))),
                Some(Err(e)) => Poll::Ready(Some(Err(Status::connection(format!(
                    "body interrupted: {e}"
                ))))),
            },
        }
    }
}

/// Grows `buf` to hold `capacity` bytes, charging them first.
fn grow(buf: &mut AlignedVec, charge: &mut Option<Charge>, capacity: usize) -> Result<(), Status> {
    if capacity <= buf.capacity() {
        return Ok(());
    }
    if let Some(charge) = charge {
        charge.grow_to(capacity)?;
    }
    buf.reserve_exact(capacity - buf.len());
    if let Some(charge) = charge {
        // The allocator may round up; what is held is what counts.
        charge.force_to(buf.capacity());
    }
    Ok(())
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl Stream for Body {
    type Item = Result<Bytes, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_chunk(cx)
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self {
            inner: Inner::Full(Some(bytes)),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes::from(bytes).into()
    }
}

impl From<&'static [u8]> for Body {
    fn from(bytes: &'static [u8]) -> Self {
        Bytes::from_static(bytes).into()
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl From<AlignedVec> for Body {
    fn from(bytes: AlignedVec) -> Self {
        Bytes::from_owner(bytes).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[tokio::test]
    async fn collect_enforces_the_limit_on_streams() {
        let chunks = (0..10).map(|_| Ok(Bytes::from_static(&[0u8; 100])));
        let body = Body::from_stream(futures::stream::iter(chunks));
        let err = body.collect_aligned(999).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::PayloadTooLarge);
    }

    #[tokio::test]
    async fn collect_refuses_announced_oversize_up_front() {
        let body = Body::from(vec![0u8; 100]);
        let err = body.collect(99).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::PayloadTooLarge);
        let body = Body::from(vec![0u8; 100]);
        assert_eq!(body.collect_aligned(100).await.unwrap().0.len(), 100);
    }
}
