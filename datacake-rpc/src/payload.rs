//! What may travel in a request or reply: rkyv [`Message`]s and raw [`Body`]s.

use std::future::Future;
use std::sync::Arc;

use rkyv::api::high::{HighDeserializer, HighSerializer};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::limits::Counters;
use crate::validate::{self, Validator};
use crate::{Body, DataView, Status};

/// The default deepest nesting of an archive accepted, counted in subtrees (each pointer a
/// message follows: a `Box`, a `Vec`, a `String`, ...): 256. Deeper archives are refused as
/// [`InvalidPayload`](crate::ErrorCode::InvalidPayload) before validation recurses that far,
/// so a hostile message cannot overflow the stack.
pub const DEFAULT_MAX_DEPTH: usize = 256;

/// The buffer a message is archived into starts this large (it doubles from there as
/// needed).
const FIRST_ARCHIVE_CAPACITY: usize = 256;

/// How a received body is read: its largest size, its deepest nesting, when it must be
/// complete, and where refusals are counted. Built by the crate only.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct ReadLimits {
    pub(crate) max_size: usize,
    pub(crate) max_depth: usize,
    pub(crate) deadline: Option<tokio::time::Instant>,
    pub(crate) counters: Option<Arc<Counters>>,
}

impl ReadLimits {
    /// At most `max_size` bytes, [`DEFAULT_MAX_DEPTH`], no deadline, not counted.
    pub(crate) fn new(max_size: usize) -> Self {
        Self {
            max_size,
            max_depth: DEFAULT_MAX_DEPTH,
            deadline: None,
            counters: None,
        }
    }

    fn count(&self, counter: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64) {
        if let Some(counters) = &self.counters {
            Counters::bump(counter(counters));
        }
    }
}

/// Seals [`Message`] and [`Payload`]: a received message is read in place after
/// [`Message::check_archive`] validated it (an `unsafe` access relies on that), so only this
/// crate's implementations, whose validation is bytecheck's, may exist.
mod sealed {
    /// Implemented by exactly the types [`Message`](super::Message) and
    /// [`Payload`](super::Payload) are implemented for.
    pub trait Sealed {}
}

// The same bounds as `Message`'s blanket implementation below, spelled out again: the seal
// must hold for exactly the types that implementation covers (Rust has no trait aliases to
// name them once).
impl<T> sealed::Sealed for T
where
    T: Archive
        + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + Send
        + Sync
        + 'static,
    T::Archived:
        for<'a> CheckBytes<Validator<'a>> + Deserialize<T, HighDeserializer<rancor::Error>>,
{
}

impl sealed::Sealed for Body {}

/// A type sent as a validated rkyv archive.
///
/// Implemented for every type that derives `rkyv::Archive`, `rkyv::Serialize` and
/// `rkyv::Deserialize` (with rkyv's `bytecheck` feature, the archived type is checkable);
/// there is nothing to implement by hand, and nothing may be: the trait is sealed, because
/// a received message is read in place once its validation passed.
///
/// ```compile_fail
/// // A hand-written implementation (which could skip validation) does not compile.
/// #[derive(rkyv::Archive)]
/// struct Unchecked(u32);
///
/// impl datacake_rpc::Message for Unchecked {
///     fn to_archive(&self) -> Result<rkyv::util::AlignedVec, datacake_rpc::Status> {
///         unimplemented!()
///     }
///     fn check_archive(_: &[u8], _: usize) -> Result<(), datacake_rpc::Status> {
///         Ok(())
///     }
///     fn from_archived(_: &ArchivedUnchecked) -> Result<Self, datacake_rpc::Status> {
///         unimplemented!()
///     }
/// }
/// ```
pub trait Message: sealed::Sealed + Archive + Send + Sync + Sized + 'static {
    /// Archives `self`.
    #[doc(hidden)]
    fn to_archive(&self) -> Result<AlignedVec, Status>;

    /// Validates `bytes` as an archived `Self` with bytecheck, nested at most `max_depth`
    /// subtrees deep.
    #[doc(hidden)]
    fn check_archive(bytes: &[u8], max_depth: usize) -> Result<(), Status>;

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
    T::Archived:
        for<'a> CheckBytes<Validator<'a>> + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    fn to_archive(&self) -> Result<AlignedVec, Status> {
        // A small message fits the first allocation (rkyv's default starts empty and grows
        // it twice: an allocation and a reallocation, about 650 instructions per message).
        let buffer = AlignedVec::with_capacity(FIRST_ARCHIVE_CAPACITY);
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, buffer)
            .map_err(|e| Status::internal(format!("cannot archive message: {e}")))
    }

    fn check_archive(bytes: &[u8], max_depth: usize) -> Result<(), Status> {
        validate::check::<T::Archived>(bytes, max_depth)
    }

    fn from_archived(archived: &Self::Archived) -> Result<Self, Status> {
        rkyv::deserialize::<T, rancor::Error>(archived)
            .map_err(|e| Status::invalid_payload(format!("cannot deserialise archive: {e}")))
    }
}

/// Anything that can be a request or a reply: every [`Message`] (received as a
/// [`DataView`]) and [`Body`] (received as a `Body`, streamed, bypassing rkyv). Sealed, like
/// [`Message`].
pub trait Payload: sealed::Sealed + Send + Sized + 'static {
    /// What the receiving side gets: `DataView<Self>` for messages, `Body` for `Body`.
    type View: Send + 'static;

    /// Turns the payload into a body to send.
    #[doc(hidden)]
    fn into_body(self) -> Result<Body, Status>;

    /// Reads a received body, enforcing `limits` and validating archives.
    #[doc(hidden)]
    fn from_body(
        body: Body,
        limits: ReadLimits,
    ) -> impl Future<Output = Result<Self::View, Status>> + Send;
}

impl<T: Message> Payload for T {
    type View = DataView<T>;

    fn into_body(self) -> Result<Body, Status> {
        Ok(Body::from(self.to_archive()?))
    }

    async fn from_body(body: Body, limits: ReadLimits) -> Result<DataView<T>, Status> {
        let collect = body.collect_aligned(limits.max_size);
        let collected = match limits.deadline {
            None => collect.await,
            Some(deadline) => tokio::time::timeout_at(deadline, collect)
                .await
                .unwrap_or_else(|_| {
                    limits.count(|c| &c.bodies_timed_out);
                    Err(Status::timeout(
                        "the request body did not arrive completely within the server's body timeout",
                    ))
                }),
        };
        let (bytes, charge) = collected.inspect_err(|status| {
            if status.code() == crate::ErrorCode::ResourceExhausted {
                limits.count(|c| &c.bodies_over_budget);
            }
        })?;
        DataView::checked(bytes, charge, limits.max_depth).inspect_err(|status| {
            if validate::is_too_deep(status) {
                limits.count(|c| &c.payloads_too_deep);
            }
        })
    }
}

impl Payload for Body {
    type View = Body;

    fn into_body(self) -> Result<Body, Status> {
        Ok(self)
    }

    async fn from_body(body: Body, _limits: ReadLimits) -> Result<Body, Status> {
        Ok(body)
    }
}
