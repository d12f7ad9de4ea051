//! What may travel in a request or reply: rkyv [`Message`]s and raw [`Body`]s.

use std::future::Future;

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::{Body, DataView, Status};

/// A type sent as a validated rkyv archive.
///
/// Implemented for every type that derives `rkyv::Archive`, `rkyv::Serialize` and
/// `rkyv::Deserialize` (with rkyv's `bytecheck` feature, the archived type is checkable);
/// there is nothing to implement by hand.
pub trait Message: Archive + Send + Sync + Sized + 'static {
    /// Archives `self`.
    #[doc(hidden)]
    fn to_archive(&self) -> Result<AlignedVec, Status>;

    /// Validates `bytes` as an archived `Self` with bytecheck.
    #[doc(hidden)]
    fn check_archive(bytes: &[u8]) -> Result<(), Status>;

    /// Deserialises an archived `Self`.
    #[doc(hidden)]
    fn from_archived(archived: &Self::Archived) -> Result<Self, Status>;
}

impl<T> Message for T
where
    T: Archive
        + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + Send
        + Sync
        + 'static,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    fn to_archive(&self) -> Result<AlignedVec, Status> {
        rkyv::to_bytes::<rancor::Error>(self)
            .map_err(|e| Status::internal(format!("cannot archive message: {e}")))
    }

    fn check_archive(bytes: &[u8]) -> Result<(), Status> {
        rkyv::access::<T::Archived, rancor::Error>(bytes)
            .map(|_| ())
            .map_err(|e| Status::invalid_payload(format!("invalid archive: {e}")))
    }

    fn from_archived(archived: &Self::Archived) -> Result<Self, Status> {
        rkyv::deserialize::<T, rancor::Error>(archived)
            .map_err(|e| Status::invalid_payload(format!("cannot deserialise archive: {e}")))
    }
}

/// Anything that can be a request or a reply: every [`Message`] (received as a
/// [`DataView`]) and [`Body`] (received as a `Body`, streamed, bypassing rkyv).
pub trait Payload: Send + Sized + 'static {
    /// What the receiving side gets: `DataView<Self>` for messages, `Body` for `Body`.
    type View: Send + 'static;

    /// Turns the payload into a body to send.
    #[doc(hidden)]
    fn into_body(self) -> Result<Body, Status>;

    /// Reads a received body, enforcing `limit` and validating archives.
    #[doc(hidden)]
    fn from_body(
        body: Body,
        limit: usize,
    ) -> impl Future<Output = Result<Self::View, Status>> + Send;
}

impl<T: Message> Payload for T {
    type View = DataView<T>;

    fn into_body(self) -> Result<Body, Status> {
        Ok(Body::from(self.to_archive()?))
    }

    async fn from_body(body: Body, limit: usize) -> Result<DataView<T>, Status> {
        DataView::from_aligned(body.collect_aligned(limit).await?)
    }
}

impl Payload for Body {
    type View = Body;

    fn into_body(self) -> Result<Body, Status> {
        Ok(self)
    }

    async fn from_body(body: Body, _limit: usize) -> Result<Body, Status> {
        Ok(body)
    }
}
