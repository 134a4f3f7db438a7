//! A memory budget for decoding: a serde `Deserializer` adapter that charges every
//! heap allocation a decoded value can make *before* it is made.
//!
//! bincode's own limit counts the bytes of strings and the widths of the integers
//! it reads, but through serde it does not count sequence elements: a payload of
//! five-byte `Route`s (all fields `None`) becomes 72-byte structs, and growing the
//! `Vec` doubles that again, so a 4 MiB payload could make a decoder allocate about
//! 100 MiB. This adapter closes that gap. The heap of every vc-proto message is made
//! of `Vec`s and `String`s only, and both are charged:
//!
//! - **strings and byte buffers**: their length, before they are copied out of the
//!   payload (`deserialize_string` is turned into `deserialize_str`, so bincode
//!   hands out a slice of the payload instead of allocating on its own);
//! - **sequence elements**: [`ELEMENT_FACTOR`] times the element's size (at least
//!   two bytes), charged when the element has been decoded and before the visitor
//!   pushes it. The visitor is given no size hint, so a `Vec` starts empty and
//!   doubles; with `n` elements pushed it holds at most `max(2n, 4)` slots, and `3n`
//!   while it reallocates, both at most `4n`. Map entries are charged the same way
//!   for key and value (vc-proto messages have no maps).
//!
//! Structs, tuples, arrays and enum variants live inline in their parent and are
//! not charged. When the budget runs out the decode fails, and
//! [`Budget::exhausted`] tells the caller why.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// What one sequence element is charged, in multiples of its size: covers the
/// spare capacity and the reallocation of a doubling `Vec` (see the module docs).
pub(super) const ELEMENT_FACTOR: usize = 4;

/// The bytes a decode may still allocate, shared by every adapter of one decode.
#[derive(Debug)]
pub(super) struct Budget {
    remaining: Cell<usize>,
    exhausted: Cell<bool>,
}

impl Budget {
    /// A budget of `bytes`.
    pub(super) fn new(bytes: usize) -> Self {
        Self {
            remaining: Cell::new(bytes),
            exhausted: Cell::new(false),
        }
    }

    /// True once a charge was refused.
    pub(super) fn exhausted(&self) -> bool {
        self.exhausted.get()
    }

    fn charge<E: serde::de::Error>(&self, bytes: usize) -> Result<(), E> {
        match self.remaining.get().checked_sub(bytes) {
            Some(left) => {
                self.remaining.set(left);
                Ok(())
            }
            None => {
                self.exhausted.set(true);
                Err(E::custom("decoded value exceeds the memory budget"))
            }
        }
    }

    fn charge_element<T, E: serde::de::Error>(&self) -> Result<(), E> {
        self.charge(ELEMENT_FACTOR * std::mem::size_of::<T>().max(2))
    }
}

/// Decodes one `T` from the start of `bytes`, charging `budget`; returns the
/// value and the number of bytes it took.
pub(super) fn decode_from_slice<T: DeserializeOwned>(
    bytes: &[u8],
    config: impl bincode::config::Config,
    budget: &Budget,
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::seed_decode_from_slice(
        Root {
            budget,
            value: PhantomData::<T>,
        },
        bytes,
        config,
    )
}

/// The seed that starts a bounded decode of a `T`.
struct Root<'b, T> {
    budget: &'b Budget,
    value: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Root<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::deserialize(Bounded::new(d, self.budget))
    }
}

/// Whether the sequences a visitor is given own heap storage (`Vec`, maps) or
/// are the inline fields of a struct, tuple or array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    Heap,
    Inline,
}

/// A deserializer whose every allocation is charged to a [`Budget`].
struct Bounded<'b, D> {
    inner: D,
    budget: &'b Budget,
}

impl<'b, D> Bounded<'b, D> {
    fn new(inner: D, budget: &'b Budget) -> Self {
        Self { inner, budget }
    }
}

struct Watch<'b, V> {
    inner: V,
    budget: &'b Budget,
    storage: Storage,
}

impl<'b, V> Watch<'b, V> {
    fn new(inner: V, budget: &'b Budget, storage: Storage) -> Self {
        Self {
            inner,
            budget,
            storage,
        }
    }
}

struct Seed<'b, S> {
    inner: S,
    budget: &'b Budget,
}

struct Seq<'b, A> {
    inner: A,
    budget: &'b Budget,
    storage: Storage,
}

struct Map<'b, A> {
    inner: A,
    budget: &'b Budget,
}

struct Enum<'b, A> {
    inner: A,
    budget: &'b Budget,
}

/// Forwards `deserialize_*` methods that take only a visitor.
macro_rules! forward {
    ($($method:ident => $storage:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.inner
                .$method(Watch::new(visitor, self.budget, Storage::$storage))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Bounded<'_, D> {
    type Error = D::Error;

    forward! {
        deserialize_any => Inline,
        deserialize_bool => Inline,
        deserialize_i8 => Inline,
        deserialize_i16 => Inline,
        deserialize_i32 => Inline,
        deserialize_i64 => Inline,
        deserialize_i128 => Inline,
        deserialize_u8 => Inline,
        deserialize_u16 => Inline,
        deserialize_u32 => Inline,
        deserialize_u64 => Inline,
        deserialize_u128 => Inline,
        deserialize_f32 => Inline,
        deserialize_f64 => Inline,
        deserialize_char => Inline,
        deserialize_str => Inline,
        deserialize_bytes => Inline,
        deserialize_option => Inline,
        deserialize_unit => Inline,
        deserialize_seq => Heap,
        deserialize_map => Heap,
        deserialize_identifier => Inline,
        deserialize_ignored_any => Inline,
    }

    // Borrowing instead of allocating: the visitor gets a slice of the payload,
    // and the copy it makes is charged first (see `Watch::visit_borrowed_str`).
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_str(Watch::new(visitor, self.budget, Storage::Inline))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_bytes(Watch::new(visitor, self.budget, Storage::Inline))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_unit_struct(name, Watch::new(visitor, self.budget, Storage::Inline))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_newtype_struct(name, Watch::new(visitor, self.budget, Storage::Inline))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_tuple(len, Watch::new(visitor, self.budget, Storage::Inline))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple_struct(
            name,
            len,
            Watch::new(visitor, self.budget, Storage::Inline),
        )
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_struct(
            name,
            fields,
            Watch::new(visitor, self.budget, Storage::Inline),
        )
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_enum(
            name,
            variants,
            Watch::new(visitor, self.budget, Storage::Inline),
        )
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// Forwards `visit_*` methods of plain values, which allocate nothing.
macro_rules! forward_value {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: serde::de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Watch<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_value! {
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.budget.charge(v.len())?;
        self.inner.visit_str(v)
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        self.budget.charge(v.len())?;
        self.inner.visit_borrowed_str(v)
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<V::Value, E> {
        self.budget.charge(v.len())?;
        self.inner.visit_string(v)
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        self.budget.charge(v.len())?;
        self.inner.visit_bytes(v)
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<V::Value, E> {
        self.budget.charge(v.len())?;
        self.inner.visit_borrowed_bytes(v)
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<V::Value, E> {
        self.budget.charge(v.len())?;
        self.inner.visit_byte_buf(v)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Bounded::new(d, self.budget))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner
            .visit_newtype_struct(Bounded::new(d, self.budget))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(Seq {
            inner: seq,
            budget: self.budget,
            storage: self.storage,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(Map {
            inner: map,
            budget: self.budget,
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(Enum {
            inner: data,
            budget: self.budget,
        })
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Bounded::new(d, self.budget))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let element = self.inner.next_element_seed(Seed {
            inner: seed,
            budget: self.budget,
        })?;
        if element.is_some() && self.storage == Storage::Heap {
            self.budget.charge_element::<T::Value, A::Error>()?;
        }
        Ok(element)
    }

    fn size_hint(&self) -> Option<usize> {
        match self.storage {
            // A length prefix is only a claim: no preallocation from it.
            Storage::Heap => None,
            Storage::Inline => self.inner.size_hint(),
        }
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let key = self.inner.next_key_seed(Seed {
            inner: seed,
            budget: self.budget,
        })?;
        if key.is_some() {
            self.budget.charge_element::<K::Value, A::Error>()?;
        }
        Ok(key)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let value = self.inner.next_value_seed(Seed {
            inner: seed,
            budget: self.budget,
        })?;
        self.budget.charge_element::<S::Value, A::Error>()?;
        Ok(value)
    }

    fn size_hint(&self) -> Option<usize> {
        None
    }
}

impl<'de, 'b, A: EnumAccess<'de>> EnumAccess<'de> for Enum<'b, A> {
    type Error = A::Error;
    type Variant = Enum<'b, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let (value, variant) = self.inner.variant_seed(Seed {
            inner: seed,
            budget: self.budget,
        })?;
        Ok((
            value,
            Enum {
                inner: variant,
                budget: self.budget,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Enum<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.newtype_variant_seed(Seed {
            inner: seed,
            budget: self.budget,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner
            .tuple_variant(len, Watch::new(visitor, self.budget, Storage::Inline))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner
            .struct_variant(fields, Watch::new(visitor, self.budget, Storage::Inline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], budget: usize) -> (bool, bool) {
        let budget = Budget::new(budget);
        let ok = decode_from_slice::<T>(bytes, bincode::config::standard(), &budget).is_ok();
        (ok, budget.exhausted())
    }

    #[test]
    fn strings_are_charged_their_length() {
        let bytes =
            bincode::serde::encode_to_vec("abcdef", bincode::config::standard()).expect("encodes");
        assert_eq!(decode::<String>(&bytes, 6), (true, false));
        assert_eq!(decode::<String>(&bytes, 5), (false, true));
    }

    #[test]
    fn elements_are_charged_with_growth() {
        let value = vec![0u64; 10];
        let bytes =
            bincode::serde::encode_to_vec(&value, bincode::config::standard()).expect("encodes");
        let need = 10 * ELEMENT_FACTOR * 8;
        assert_eq!(decode::<Vec<u64>>(&bytes, need), (true, false));
        assert_eq!(decode::<Vec<u64>>(&bytes, need - 1), (false, true));
    }

    #[test]
    fn struct_fields_are_not_charged() {
        let bytes =
            bincode::serde::encode_to_vec((1u64, 2u64, [3u8; 6]), bincode::config::standard())
                .expect("encodes");
        assert_eq!(decode::<(u64, u64, [u8; 6])>(&bytes, 0), (true, false));
    }
}
