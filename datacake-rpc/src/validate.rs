//! Archive validation with a limit on nesting: bytecheck recurses once per subtree (each
//! pointer it follows), so without a limit a message nested deeply enough, e.g. a recursive
//! `enum List { Nil, Cons(Box<List>) }` 50,000 levels down, overflows the stack and aborts the
//! process before any check fails.
//!
//! rkyv's own `ArchiveValidator::with_max_depth` enforces such a limit, but its error is
//! opaque (a private type behind `rancor::Error`); [`DepthLimited`] wraps the validator,
//! counts the depth itself and remembers that the limit was hit, so the refusal gets its own
//! message and counter.

use std::cell::Cell;
use std::fmt;
use std::ops::Range;

use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::{self, Source, Strategy};
use rkyv::validation::archive::ArchiveValidator;
use rkyv::validation::shared::SharedValidator;
use rkyv::validation::ArchiveContext;
use rkyv::Portable;

use crate::Status;

/// The validation context messages are checked with: rkyv's high-level validator, its
/// archive part wrapped in [`DepthLimited`].
pub(crate) type Validator<'a> =
    Strategy<rkyv::validation::Validator<DepthLimited<'a>, SharedValidator>, rancor::Error>;

/// The start of a too-deep refusal's message.
const TOO_DEEP: &str = "archive nested too deeply";

/// rkyv's archive validator, refusing to enter more than `max` nested subtrees.
#[derive(Debug)]
pub(crate) struct DepthLimited<'a> {
    inner: ArchiveValidator<'a>,
    depth: usize,
    max: usize,
    /// Set when a push is refused for depth (read after validation fails).
    exceeded: &'a Cell<bool>,
}

#[derive(Debug)]
struct TooDeep(usize);

impl fmt::Display for TooDeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "more than {} nested subtrees", self.0)
    }
}

impl std::error::Error for TooDeep {}

// SAFETY: every check is rkyv's own `ArchiveValidator`'s; this wrapper only refuses some
// pushes before they reach it (refusing more never makes an invalid archive pass).
unsafe impl<E: Source> ArchiveContext<E> for DepthLimited<'_> {
    fn check_subtree_ptr(&mut self, ptr: *const u8, layout: &std::alloc::Layout) -> Result<(), E> {
        ArchiveContext::<E>::check_subtree_ptr(&mut self.inner, ptr, layout)
    }

    unsafe fn push_subtree_range(
        &mut self,
        root: *const u8,
        end: *const u8,
    ) -> Result<Range<usize>, E> {
        if self.depth >= self.max {
            self.exceeded.set(true);
            return Err(E::new(TooDeep(self.max)));
        }
        // SAFETY: the caller upholds `push_subtree_range`'s contract; passed on unchanged.
        let range = unsafe { ArchiveContext::<E>::push_subtree_range(&mut self.inner, root, end) }?;
        self.depth += 1;
        Ok(range)
    }

    unsafe fn pop_subtree_range(&mut self, range: Range<usize>) -> Result<(), E> {
        // SAFETY: as above.
        unsafe { ArchiveContext::<E>::pop_subtree_range(&mut self.inner, range) }?;
        self.depth = self.depth.saturating_sub(1);
        Ok(())
    }
}

/// Checks `bytes` as an archived `T`, entering at most `max_depth` nested subtrees (the root
/// counts as one).
pub(crate) fn check<T>(bytes: &[u8], max_depth: usize) -> Result<(), Status>
where
    T: Portable + for<'a> CheckBytes<Validator<'a>>,
{
    let exceeded = Cell::new(false);
    let mut context = rkyv::validation::Validator::new(
        DepthLimited {
            inner: ArchiveValidator::new(bytes),
            depth: 0,
            max: max_depth,
            exceeded: &exceeded,
        },
        SharedValidator::new(),
    );
    match rkyv::api::access_with_context::<T, _, rancor::Error>(bytes, &mut context) {
        Ok(_) => Ok(()),
        Err(_) if exceeded.get() => Err(Status::invalid_payload(format!(
            "{TOO_DEEP}: more than {max_depth} nested subtrees"
        ))),
        Err(e) => Err(Status::invalid_payload(format!("invalid archive: {e}"))),
    }
}

/// Whether `status`, an error of [`check`], is a refusal for depth.
pub(crate) fn is_too_deep(status: &Status) -> bool {
    status.message().starts_with(TOO_DEEP)
}
