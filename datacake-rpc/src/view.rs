//! [`DataView`]: a validated, zero-copy view of an archived message.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use rkyv::util::AlignedVec;
use rkyv::Archived;

use crate::limits::Charge;
use crate::{Message, Status, DEFAULT_MAX_DEPTH};

/// An archived `T`, validated once when the view was built and read in place afterwards.
///
/// Derefs to `Archived<T>`, so fields are read without deserialising; call
/// [`deserialize_view`](Self::deserialize_view) for an owned `T`.
///
/// ```
/// use datacake_rpc::DataView;
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
/// struct Greeting {
///     text: String,
/// }
///
/// let view = DataView::<Greeting>::from_message(&Greeting { text: "hi".into() }).unwrap();
/// assert_eq!(view.text, "hi");
/// assert_eq!(view.deserialize_view().unwrap(), Greeting { text: "hi".into() });
/// ```
pub struct DataView<T> {
    bytes: AlignedVec,
    /// The bytes counted against a server's buffer budget, given back with the view.
    _charge: Option<Charge>,
    _message: PhantomData<fn() -> T>,
}

impl<T: Message> DataView<T> {
    /// Validates `bytes` as an archived `T` (bytecheck), nested at most
    /// [`DEFAULT_MAX_DEPTH`] subtrees deep; the only way a view is built from outside data.
    pub fn from_aligned(bytes: AlignedVec) -> Result<Self, Status> {
        Self::checked(bytes, None, DEFAULT_MAX_DEPTH)
    }

    /// Validates `bytes`, nested at most `max_depth` subtrees deep; `charge` (the bytes'
    /// place in a buffer budget) is held as long as the view.
    pub(crate) fn checked(
        bytes: AlignedVec,
        charge: Option<Charge>,
        max_depth: usize,
    ) -> Result<Self, Status> {
        T::check_archive(&bytes, max_depth)?;
        Ok(Self {
            bytes,
            _charge: charge,
            _message: PhantomData,
        })
    }

    /// Validates a copy of `bytes` as an archived `T`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Status> {
        let mut aligned = AlignedVec::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        Self::from_aligned(aligned)
    }

    /// Archives `message` and views it (useful for tests and local calls).
    pub fn from_message(message: &T) -> Result<Self, Status> {
        Self::from_aligned(message.to_archive()?)
    }

    /// Deserialises the archived message into an owned `T`.
    pub fn deserialize_view(&self) -> Result<T, Status> {
        T::from_archived(self)
    }

    /// The same as [`deserialize_view`](Self::deserialize_view), under the name datacake 0.x
    /// used (it returns a `Status` rather than `InvalidView` on failure).
    pub fn to_owned(&self) -> Result<T, Status> {
        self.deserialize_view()
    }

    /// The archived bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The aligned archived bytes, e.g. to forward them without re-archiving. (On a server,
    /// the bytes stop counting against its buffer budget.)
    pub fn into_bytes(self) -> AlignedVec {
        self.bytes
    }
}

impl<T: Message> Deref for DataView<T> {
    type Target = rkyv::Archived<T>;

    fn deref(&self) -> &Archived<T> {
        // SAFETY: `self.bytes` was validated as an `Archived<T>` with bytecheck when this
        // view was built (`from_aligned` is the only constructor), and it is never mutated
        // afterwards: the field is private and no method hands out `&mut`. The buffer is an
        // `AlignedVec`, so the root has the alignment the validation checked.
        unsafe { rkyv::access_unchecked::<Archived<T>>(&self.bytes) }
    }
}

/// A view equals a message when the archived fields equal the message's, compared in place
/// (no deserialising). The archived type must compare with `T`: rkyv derives that with
/// `#[rkyv(compare(PartialEq))]` on the message; archived primitives, strings and vectors
/// compare with their native types already.
///
/// ```
/// use datacake_rpc::DataView;
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
/// #[rkyv(compare(PartialEq))]
/// struct Greeting {
///     text: String,
/// }
///
/// let hi = Greeting { text: "hi".into() };
/// assert_eq!(DataView::from_message(&hi).unwrap(), hi);
/// assert_ne!(DataView::from_message(&hi).unwrap(), Greeting { text: "bye".into() });
/// assert_eq!(DataView::<u64>::from_message(&5).unwrap(), 5);
/// // Two views compare when the archived type compares with itself (for a message:
/// // `#[rkyv(derive(PartialEq))]`).
/// let five = DataView::<u64>::from_message(&5).unwrap();
/// assert_eq!(five, DataView::<u64>::from_message(&5).unwrap());
/// ```
impl<T> PartialEq<T> for DataView<T>
where
    T: Message,
    Archived<T>: PartialEq<T>,
{
    fn eq(&self, other: &T) -> bool {
        **self == *other
    }
}

/// Two views are equal when their archived messages are (compared in place).
impl<T> PartialEq for DataView<T>
where
    T: Message,
    Archived<T>: PartialEq,
{
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T> fmt::Debug for DataView<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataView")
            .field("message", &std::any::type_name::<T>())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    struct Pair {
        name: String,
        values: Vec<u64>,
    }

    #[test]
    fn reads_fields_in_place() {
        let pair = Pair {
            name: "a".into(),
            values: vec![1, 2, 3],
        };
        let view = DataView::<Pair>::from_message(&pair).unwrap();
        assert_eq!(view.name, "a");
        assert_eq!(view.values.len(), 3);
        assert_eq!(view.deserialize_view().unwrap(), pair);
        assert!(!view.as_bytes().is_empty());
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        let pair = Pair {
            name: "abc".into(),
            values: vec![7; 16],
        };
        let bytes = DataView::<Pair>::from_message(&pair).unwrap().into_bytes();
        for len in 0..bytes.len() {
            let err = DataView::<Pair>::from_bytes(&bytes[..len]).unwrap_err();
            assert_eq!(
                err.code(),
                ErrorCode::InvalidPayload,
                "prefix of {len} bytes"
            );
        }
        let err = DataView::<Pair>::from_bytes(&[0xff; 64]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidPayload);
    }
}
