//! Row schemas: typed fields with fixed offsets, and one row size shared by every member.
//!
//! A [`SchemaBuilder`] lays fields out in declaration order and hands back typed handles
//! ([`Field`], [`ArrayField`], [`BytesField`]). A handle is `Copy` and carries its byte offset
//! inside the row, so reading or writing through it costs no lookup. Every scalar and every array
//! element occupies one aligned 8-byte word, whatever its Rust type, so each is read and written
//! with a single atomic operation and is never torn. Byte areas (for the small-message ring of
//! the multicast layer) start on an 8-byte boundary and are padded to a multiple of 8 bytes. The
//! row length is rounded up to 64 bytes so that rows never share a cache line.
//!
//! The first word of every row is reserved for the failure detector's heartbeat counter
//! ([`Schema::heartbeat`]). This module knows nothing about tables or the fabric; it owns the
//! layout only.

use std::fmt;
use std::marker::PhantomData;

use crate::error::{SchemaError, SstError};

/// Row length granularity: one cache line.
pub const ROW_ALIGN: usize = 64;

/// Size of one scalar or array element in the row.
pub const WORD: usize = 8;

/// Largest row accepted (256 MiB); larger schemas are a configuration mistake.
pub const MAX_ROW_LEN: usize = 1 << 28;

mod sealed {
    pub trait Sealed {}
}

/// A plain value stored in one 8-byte row word: the integer types up to 64 bits and `bool`.
///
/// Signed values are sign-extended into the word, so a peer reading the word as the same type
/// gets the same value back.
pub trait Word: Copy + Send + Sync + fmt::Debug + sealed::Sealed + 'static {
    /// Encodes the value into a row word.
    fn to_word(self) -> u64;
    /// Decodes a row word written by [`Word::to_word`].
    fn from_word(word: u64) -> Self;
}

macro_rules! unsigned_word {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Word for $t {
            fn to_word(self) -> u64 {
                u64::from(self)
            }
            fn from_word(word: u64) -> Self {
                // Truncation is the decoding: the word was written from this type.
                word as $t
            }
        }
    )*};
}

macro_rules! signed_word {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Word for $t {
            fn to_word(self) -> u64 {
                i64::from(self) as u64
            }
            fn from_word(word: u64) -> Self {
                word as i64 as $t
            }
        }
    )*};
}

unsigned_word!(u8, u16, u32, u64);
signed_word!(i8, i16, i32, i64);

impl sealed::Sealed for bool {}
impl Word for bool {
    fn to_word(self) -> u64 {
        u64::from(self)
    }
    fn from_word(word: u64) -> Self {
        word != 0
    }
}

/// A scalar field of type `T`: one word at a fixed offset in the row.
pub struct Field<T> {
    offset: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Field<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Field<T> {}

impl<T> fmt::Debug for Field<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Field<{}>@{}", std::any::type_name::<T>(), self.offset)
    }
}

impl<T> PartialEq for Field<T> {
    fn eq(&self, other: &Self) -> bool {
        self.offset == other.offset
    }
}
impl<T> Eq for Field<T> {}

impl<T> Field<T> {
    const fn at(offset: usize) -> Self {
        Self {
            offset,
            _type: PhantomData,
        }
    }

    /// Byte offset of the field inside the row.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The row bytes the field occupies (for pushes).
    pub fn range(&self) -> RowRange {
        RowRange::new(self.offset, WORD)
    }
}

/// A fixed-length array of `len` elements of type `T`, one word per element.
pub struct ArrayField<T> {
    offset: usize,
    len: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for ArrayField<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for ArrayField<T> {}

impl<T> fmt::Debug for ArrayField<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ArrayField<{}; {}>@{}",
            std::any::type_name::<T>(),
            self.len,
            self.offset
        )
    }
}

impl<T> PartialEq for ArrayField<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.offset, self.len) == (other.offset, other.len)
    }
}
impl<T> Eq for ArrayField<T> {}

impl<T> ArrayField<T> {
    /// Byte offset of element 0 inside the row.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i` as a scalar field, or `None` if `i` is out of bounds.
    pub fn elem(&self, i: usize) -> Option<Field<T>> {
        (i < self.len).then(|| Field::at(self.offset + i * WORD))
    }

    /// The row bytes of the whole array (for pushes).
    pub fn range(&self) -> RowRange {
        RowRange::new(self.offset, self.len * WORD)
    }

    /// The row bytes of elements `[start, start + count)`, or `None` if out of bounds.
    pub fn elems_range(&self, start: usize, count: usize) -> Option<RowRange> {
        let end = start.checked_add(count)?;
        (end <= self.len).then(|| RowRange::new(self.offset + start * WORD, count * WORD))
    }
}

/// A raw byte area of `len` bytes starting on an 8-byte boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BytesField {
    offset: usize,
    len: usize,
}

impl BytesField {
    /// Byte offset of the area inside the row.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Length of the area in bytes (as declared; the row reserves it rounded up to 8).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the area is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The row bytes of the whole area (for pushes).
    pub fn range(&self) -> RowRange {
        RowRange::new(self.offset, self.len)
    }

    /// The row bytes `[at, at + len)` of the area, or `None` if out of bounds.
    pub fn sub_range(&self, at: usize, len: usize) -> Option<RowRange> {
        let end = at.checked_add(len)?;
        (end <= self.len).then(|| RowRange::new(self.offset + at, len))
    }
}

/// A contiguous byte range of a row: what a push sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RowRange {
    /// Start, relative to the start of the row.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

impl RowRange {
    /// The range `[offset, offset + len)` of a row.
    pub const fn new(offset: usize, len: usize) -> Self {
        Self { offset, len }
    }
}

impl<T> From<Field<T>> for RowRange {
    fn from(f: Field<T>) -> Self {
        f.range()
    }
}

impl<T> From<ArrayField<T>> for RowRange {
    fn from(f: ArrayField<T>) -> Self {
        f.range()
    }
}

impl From<BytesField> for RowRange {
    fn from(f: BytesField) -> Self {
        f.range()
    }
}

/// What kind of data a declared field holds (for [`Schema::fields`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// One word.
    Scalar,
    /// `n` words.
    Array(usize),
    /// A raw byte area.
    Bytes,
}

/// One declared field, as listed by [`Schema::fields`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldInfo {
    /// The name given when it was declared.
    pub name: String,
    /// Its kind.
    pub kind: FieldKind,
    /// Byte offset inside the row.
    pub offset: usize,
    /// Bytes reserved in the row.
    pub len: usize,
}

/// Declares the fields of a row, in order. See the module docs.
#[derive(Debug)]
pub struct SchemaBuilder {
    next: usize,
    fields: Vec<FieldInfo>,
    error: Option<SchemaError>,
}

impl Default for SchemaBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The reserved heartbeat counter at the start of every row.
const HEARTBEAT: Field<u64> = Field::at(0);

impl SchemaBuilder {
    /// A builder whose row starts with the reserved heartbeat word.
    pub fn new() -> Self {
        Self {
            next: WORD,
            fields: vec![FieldInfo {
                name: "heartbeat".into(),
                kind: FieldKind::Scalar,
                offset: HEARTBEAT.offset,
                len: WORD,
            }],
            error: None,
        }
    }

    fn reserve(&mut self, name: String, kind: FieldKind, len: usize) -> usize {
        let offset = self.next;
        let padded = len.checked_next_multiple_of(WORD);
        match padded.and_then(|p| offset.checked_add(p)) {
            Some(end) if end <= MAX_ROW_LEN => self.next = end,
            _ => {
                if self.error.is_none() {
                    self.error = Some(SchemaError::FieldTooLarge { name, len });
                }
                return offset;
            }
        }
        self.fields.push(FieldInfo {
            name,
            kind,
            offset,
            len: padded.unwrap_or(0),
        });
        offset
    }

    /// Declares a scalar field.
    pub fn field<T: Word>(&mut self, name: impl Into<String>) -> Field<T> {
        Field::at(self.reserve(name.into(), FieldKind::Scalar, WORD))
    }

    /// Declares an array of `len` elements.
    pub fn array<T: Word>(&mut self, name: impl Into<String>, len: usize) -> ArrayField<T> {
        let bytes = len.saturating_mul(WORD);
        let offset = self.reserve(name.into(), FieldKind::Array(len), bytes);
        ArrayField {
            offset,
            len,
            _type: PhantomData,
        }
    }

    /// Declares a raw byte area of `len` bytes.
    pub fn bytes(&mut self, name: impl Into<String>, len: usize) -> BytesField {
        let offset = self.reserve(name.into(), FieldKind::Bytes, len);
        BytesField { offset, len }
    }

    /// Finishes the layout. Fails if a field did not fit under [`MAX_ROW_LEN`].
    pub fn build(self) -> Result<Schema, SstError> {
        if let Some(e) = self.error {
            return Err(SstError::Schema(e));
        }
        let row_len = self
            .next
            .checked_next_multiple_of(ROW_ALIGN)
            .filter(|l| *l <= MAX_ROW_LEN)
            .ok_or(SstError::Schema(SchemaError::RowTooLarge {
                len: self.next,
            }))?;
        Ok(Schema {
            row_len,
            fields: self.fields,
        })
    }
}

/// A finished row layout: the same in every member's process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    row_len: usize,
    fields: Vec<FieldInfo>,
}

impl Schema {
    /// Bytes per row (a multiple of [`ROW_ALIGN`]).
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// Every field in row order, starting with the reserved heartbeat word.
    pub fn fields(&self) -> &[FieldInfo] {
        &self.fields
    }

    /// The reserved heartbeat counter (the first word of every row).
    pub fn heartbeat(&self) -> Field<u64> {
        HEARTBEAT
    }

    /// The whole row as a range.
    pub fn row_range(&self) -> RowRange {
        RowRange::new(0, self.row_len)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn fields_are_word_aligned_and_rows_cache_line_sized() {
        let mut b = SchemaBuilder::new();
        let a = b.field::<bool>("a");
        let v = b.array::<i32>("v", 3);
        let s = b.bytes("slots", 13);
        let c = b.field::<i64>("c");
        let schema = b.build().unwrap();
        assert_eq!(a.offset(), 8);
        assert_eq!(v.offset(), 16);
        assert_eq!(v.elem(2).unwrap().offset(), 32);
        assert_eq!(v.elem(3), None);
        assert_eq!(s.offset(), 40);
        assert_eq!(c.offset(), 56);
        assert_eq!(schema.row_len(), 64);
        assert_eq!(schema.fields().len(), 5);
        assert_eq!(schema.heartbeat().offset(), 0);
        assert_eq!(s.sub_range(10, 3), Some(RowRange::new(50, 3)));
        assert_eq!(s.sub_range(10, 4), None);
        assert_eq!(v.elems_range(1, 2), Some(RowRange::new(24, 16)));
    }

    #[test]
    fn words_round_trip_with_sign() {
        assert_eq!(i32::from_word((-5i32).to_word()), -5);
        assert_eq!((-1i8).to_word(), u64::MAX);
        assert_eq!(u16::from_word(65535u16.to_word()), 65535);
        assert!(bool::from_word(true.to_word()));
        assert!(!bool::from_word(0));
    }

    #[test]
    fn oversized_rows_are_refused() {
        let mut b = SchemaBuilder::new();
        b.bytes("huge", MAX_ROW_LEN);
        b.field::<u64>("after");
        assert!(matches!(
            b.build(),
            Err(SstError::Schema(SchemaError::FieldTooLarge { name, len }))
                if name == "huge" && len == MAX_ROW_LEN
        ));
        let mut b = SchemaBuilder::new();
        b.array::<u64>("huge", usize::MAX / 2);
        assert!(matches!(
            b.build(),
            Err(SstError::Schema(SchemaError::FieldTooLarge {
                len: usize::MAX,
                ..
            }))
        ));
    }
}
