//! [`Item`]: a value read from YAML together with where it was written, or the mark that it was
//! invalid and already reported.
//!
//! Every field, list element and map entry of the raw types is an `Item`. That is what lets one
//! run report every problem: a bad value becomes an invalid `Item` instead of an error that
//! stops serde, and validation later skips it silently instead of reporting it twice.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

/// Name of the private newtype struct through which `Item` asks the config deserializer for
/// its position. Any other deserializer sees an ordinary newtype struct.
pub(crate) const ITEM_MARKER: &str = "$remora::private::Item";

/// A 1-based line and column in the YAML source; `0:0` for values not read from a file (the
/// ones [`crate::to_yaml`] builds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    pub const UNKNOWN: Pos = Pos { line: 0, column: 0 };

    pub const fn new(line: u64, column: u64) -> Self {
        Pos { line, column }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A value and where it was written. `value` is `None` when the YAML there was invalid; that
/// problem has already been reported, so code reading an `Item` just skips it.
///
/// Serializes and produces JSON Schema exactly as `T` does.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<T> {
    pub pos: Pos,
    pub value: Option<T>,
}

impl<T> Item<T> {
    /// A valid value with no source position, for configs built in code.
    pub fn new(value: T) -> Self {
        Item {
            pos: Pos::UNKNOWN,
            value: Some(value),
        }
    }

    /// The value, if it was valid.
    pub fn get(&self) -> Option<&T> {
        self.value.as_ref()
    }
}

impl<T: Serialize> Serialize for Item<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.value {
            Some(value) => value.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Item<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_newtype_struct(ITEM_MARKER, ItemVisitor(PhantomData))
    }
}

struct ItemVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ItemVisitor<T> {
    type Value = Item<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }

    /// The config deserializer answers with `[line, column, value]`, where a missing `value`
    /// means it was invalid and has been reported.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item<T>, A::Error> {
        let line = seq.next_element()?.unwrap_or(0);
        let column = seq.next_element()?.unwrap_or(0);
        Ok(Item {
            pos: Pos { line, column },
            value: seq.next_element()?,
        })
    }

    /// Any other deserializer (JSON in tests, say): a plain value without a position.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Item<T>, D::Error> {
        T::deserialize(d).map(Item::new)
    }
}

impl<T: JsonSchema> JsonSchema for Item<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}
