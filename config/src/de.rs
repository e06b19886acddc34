//! A serde `Deserializer` over the located node tree that reports every problem and keeps going.
//!
//! serde stops at the first error. This deserializer instead reports each problem to the
//! [`Collector`] with its position and field path, then returns [`Error::Reported`], which an
//! enclosing [`Item`](crate::raw::Item) turns into an invalid item. Unknown fields are reported
//! and skipped rather than failing the struct, so the derived visitors of the raw types see only
//! fields they know.

use std::collections::HashMap;
use std::fmt;

use serde::de::value::{StrDeserializer, U64Deserializer};
use serde::de::{self, Deserialize, DeserializeSeed, IntoDeserializer, Visitor};

use crate::diag::{Collector, list, suggestion};
use crate::node::{Kind, Node};
use crate::raw::{ITEM_MARKER, ONE_OR_MANY_MARKER, TOGGLE_MARKER};

/// Deserializes `T` from the tree, reporting problems to `out`. `None` if the root itself was
/// unusable (its problems have been reported).
pub(crate) fn from_node<'a, T: Deserialize<'a>>(node: &'a Node, out: &'a Collector) -> Option<T> {
    let de = NodeDe {
        node,
        path: String::new(),
        out,
    };
    match T::deserialize(de.clone()) {
        Ok(value) => Some(value),
        Err(e) => {
            de.absorb(e);
            None
        }
    }
}

#[derive(Debug)]
pub(crate) enum Error {
    /// The problem is in the collector already; whoever can, recovers.
    Reported,
    /// Raised by a visitor or a `Deserialize` impl; reported at the node being read.
    Message(String),
    /// Raised by a derived struct visitor; reported at the mapping that lacks the field.
    MissingField(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Reported => f.write_str("already reported"),
            Error::Message(m) => f.write_str(m),
            Error::MissingField(name) => write!(f, "missing required field '{name}'"),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Message(msg.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        Error::MissingField(field)
    }
}

#[derive(Clone)]
struct NodeDe<'a> {
    node: &'a Node,
    /// `listeners[0].routes[1]`: where this node is, for messages.
    path: String,
    out: &'a Collector,
}

impl<'a> NodeDe<'a> {
    fn field(&self, key: &str, node: &'a Node) -> NodeDe<'a> {
        let path = if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        };
        NodeDe {
            node,
            path,
            out: self.out,
        }
    }

    fn index(&self, index: usize, node: &'a Node) -> NodeDe<'a> {
        NodeDe {
            node,
            path: format!("{}[{index}]", self.path),
            out: self.out,
        }
    }

    fn fail(&self, message: impl Into<String>) -> Error {
        self.out.report(self.node.pos, &self.path, message);
        Error::Reported
    }

    /// Reports `e` at this node unless it was reported already.
    fn absorb(&self, e: Error) -> Error {
        match e {
            Error::Reported => Error::Reported,
            Error::Message(m) => self.fail(m),
            Error::MissingField(name) => self.fail(format!("missing required field '{name}'")),
        }
    }

    fn settle<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        result.map_err(|e| self.absorb(e))
    }

    fn key_text(key: &Node) -> String {
        key.scalar_text()
            .map_or_else(|| key.describe(), |t| t.into_owned())
    }

    /// The mapping's entries without repeated keys, each repeat reported once.
    fn unique_entries(&self, entries: &'a [(Node, Node)]) -> Vec<&'a (Node, Node)> {
        let mut first_seen: HashMap<String, u64> = HashMap::new();
        let mut kept = Vec::with_capacity(entries.len());
        for entry in entries {
            let key = Self::key_text(&entry.0);
            if let Some(line) = first_seen.get(&key) {
                let at = self.field(&key, &entry.0);
                at.fail(format!(
                    "duplicate key '{key}' (first written on line {line})"
                ));
                continue;
            }
            first_seen.insert(key, entry.0.pos.line);
            kept.push(entry);
        }
        kept
    }

    fn unknown_field(&self, key: &'a Node, fields: &'static [&'static str]) {
        let text = Self::key_text(key);
        let at = self.field(&text, key);
        let hint = suggestion(&text, fields);
        if let Some(meant) = crate::diag::did_you_mean(&text, fields) {
            self.out.note_typo_target(self.field(meant, key).path);
        }
        at.fail(format!(
            "unknown field '{text}', expected one of: {}{hint}",
            list(fields)
        ));
    }

    fn integer(&self, expected: &str) -> Result<i128, Error> {
        if let Kind::Int(n) = self.node.kind {
            return Ok(n);
        }
        // A quoted number is still clearly a number.
        if let Kind::Str(s) = &self.node.kind
            && let Ok(n) = s.trim().parse()
        {
            return Ok(n);
        }
        let found = self.node.describe();
        Err(self.fail(format!("expected {expected}, found {found}")))
    }

    fn in_range<T: TryFrom<i128> + fmt::Display>(&self, min: T, max: T) -> Result<T, Error> {
        let expected = format!("a whole number from {min} to {max}");
        let n = self.integer(&expected)?;
        T::try_from(n)
            .map_err(|_| self.fail(format!("{n} is out of range; expected {min} to {max}")))
    }

    /// `true` / `false`, or a mapping of settings handed over as a one-element sequence (see
    /// [`Toggle`](crate::raw::Toggle)).
    fn toggle<V: Visitor<'a>>(&self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            Kind::Bool(b) => self.settle(visitor.visit_bool(*b)),
            Kind::Str(s) if s == "true" || s == "false" => {
                self.settle(visitor.visit_bool(s == "true"))
            }
            Kind::Map(_) => self.settle(visitor.visit_seq(OneElement(Some(self.clone())))),
            _ => {
                let found = self.node.describe();
                Err(self.fail(format!(
                    "expected true, false or a mapping of settings, found {found}"
                )))
            }
        }
    }

    fn entries(&self, entries: Vec<&'a (Node, Node)>) -> Entries<'a> {
        Entries {
            parent: self.clone(),
            entries: entries.into_iter(),
            value: None,
        }
    }
}

macro_rules! deserialize_integers {
    ($($method:ident $ty:ty => $visit:ident,)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                let n = self.in_range(<$ty>::MIN, <$ty>::MAX)?;
                self.settle(visitor.$visit(n))
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match &self.node.kind {
            Kind::Null => visitor.visit_unit(),
            Kind::Bool(b) => visitor.visit_bool(*b),
            Kind::Int(n) => match (u64::try_from(*n), i64::try_from(*n)) {
                (Ok(u), _) => visitor.visit_u64(u),
                (_, Ok(i)) => visitor.visit_i64(i),
                _ => visitor.visit_i128(*n),
            },
            Kind::Float(f) => visitor.visit_f64(*f),
            Kind::Str(s) => visitor.visit_borrowed_str(s),
            Kind::Seq(_) => return self.deserialize_seq(visitor),
            Kind::Map(_) => return self.deserialize_map(visitor),
        };
        self.settle(result)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let value = match &self.node.kind {
            Kind::Bool(b) => *b,
            Kind::Str(s) if s == "true" || s == "false" => s == "true",
            _ => {
                let found = self.node.describe();
                return Err(self.fail(format!("expected true or false, found {found}")));
            }
        };
        self.settle(visitor.visit_bool(value))
    }

    deserialize_integers! {
        deserialize_i8 i8 => visit_i8,
        deserialize_i16 i16 => visit_i16,
        deserialize_i32 i32 => visit_i32,
        deserialize_i64 i64 => visit_i64,
        deserialize_u8 u8 => visit_u8,
        deserialize_u16 u16 => visit_u16,
        deserialize_u32 u32 => visit_u32,
        deserialize_u64 u64 => visit_u64,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let value = match &self.node.kind {
            Kind::Float(f) => *f,
            Kind::Int(n) => *n as f64,
            _ => {
                let found = self.node.describe();
                return Err(self.fail(format!("expected a number, found {found}")));
            }
        };
        self.settle(visitor.visit_f64(value))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match &self.node.kind {
            Kind::Str(s) => visitor.visit_borrowed_str(s),
            Kind::Null | Kind::Seq(_) | Kind::Map(_) => {
                let found = self.node.describe();
                return Err(self.fail(format!("expected a string, found {found}")));
            }
            // YAML read `2` or `1.10` as a number; a string field takes the text as written.
            _ => visitor.visit_str(&self.node.scalar_text().unwrap_or_default()),
        };
        self.settle(result)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match self.node.kind {
            // `timeout:` with nothing after it means the same as leaving the field out.
            Kind::Null => visitor.visit_none(),
            _ => visitor.visit_some(self.clone()),
        };
        self.settle(result)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node.kind {
            Kind::Null => self.settle(visitor.visit_unit()),
            _ => Err(self.fail(format!("expected nothing, found {}", self.node.describe()))),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == ITEM_MARKER {
            let parts = ItemParts {
                de: self.clone(),
                state: 0,
            };
            return self.settle(visitor.visit_seq(parts));
        }
        if name == ONE_OR_MANY_MARKER && !matches!(self.node.kind, Kind::Seq(_)) {
            let one = OneElement(Some(self.clone()));
            return self.settle(visitor.visit_seq(one));
        }
        if name == ONE_OR_MANY_MARKER {
            return self.deserialize_seq(visitor);
        }
        if name == TOGGLE_MARKER {
            return self.toggle(visitor);
        }
        self.settle(visitor.visit_newtype_struct(self.clone()))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            Kind::Seq(items) => {
                let elements = Elements {
                    parent: self.clone(),
                    items: items.iter().enumerate(),
                };
                self.settle(visitor.visit_seq(elements))
            }
            Kind::Null | Kind::Map(_) => {
                Err(self.fail(format!("expected a list, found {}", self.node.describe())))
            }
            _ => {
                // Quoted, because a bare `[*]` would be a YAML alias, not a list of '*'.
                let text = self
                    .node
                    .scalar_text()
                    .unwrap_or_default()
                    .replace('\'', "''");
                Err(self.fail(format!(
                    "expected a list, found {}; a list of one is written ['{text}']",
                    self.node.describe()
                )))
            }
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            Kind::Map(entries) => {
                let entries = self.entries(self.unique_entries(entries));
                self.settle(visitor.visit_map(entries))
            }
            _ => Err(self.fail(format!(
                "expected a mapping, found {}",
                self.node.describe()
            ))),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let Kind::Map(entries) = &self.node.kind else {
            return Err(self.fail(format!(
                "expected a mapping with fields {}; found {}",
                list(fields),
                self.node.describe()
            )));
        };
        let mut known = Vec::with_capacity(entries.len());
        for entry in self.unique_entries(entries) {
            match entry.0.scalar_text() {
                Some(key) if fields.contains(&key.as_ref()) => known.push(entry),
                _ => self.unknown_field(&entry.0, fields),
            }
        }
        let entries = self.entries(known);
        self.settle(visitor.visit_map(entries))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let text = self.node.scalar_text();
        let Some(text) = text.as_deref() else {
            return Err(self.fail(format!(
                "expected one of: {}; found {}",
                list(variants),
                self.node.describe()
            )));
        };
        match variants.iter().find(|v| **v == text) {
            Some(variant) => self.settle(visitor.visit_enum(UnitVariant(variant))),
            None => Err(self.fail(format!(
                "unknown value '{text}', expected one of: {}{}",
                list(variants),
                suggestion(text, variants)
            ))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf tuple tuple_struct
    }
}

/// The elements of a sequence, each deserialized with its index in the path.
struct Elements<'a> {
    parent: NodeDe<'a>,
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'de> de::SeqAccess<'de> for Elements<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.items.next() {
            Some((i, node)) => seed.deserialize(self.parent.index(i, node)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// The entries of a mapping; values are deserialized with their key in the path.
struct Entries<'a> {
    parent: NodeDe<'a>,
    entries: std::vec::IntoIter<&'a (Node, Node)>,
    /// The value whose key was just handed out.
    value: Option<NodeDe<'a>>,
}

impl<'de> de::MapAccess<'de> for Entries<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let text = NodeDe::key_text(key);
        self.value = Some(self.parent.field(&text, value));
        seed.deserialize(self.parent.field(&text, key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(de) => seed.deserialize(de),
            None => Err(Error::Message(
                "a value was asked for before its key".into(),
            )),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// A lone value read as a list of one, for [`OneOrMany`](crate::raw::OneOrMany).
struct OneElement<'a>(Option<NodeDe<'a>>);

impl<'de> de::SeqAccess<'de> for OneElement<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0.take().map(|de| seed.deserialize(de)).transpose()
    }
}

/// What an [`Item`](crate::raw::Item) receives: `[line, column, value]`, with `value` left out
/// when it was invalid (and reported).
struct ItemParts<'a> {
    de: NodeDe<'a>,
    state: u8,
}

impl<'de> de::SeqAccess<'de> for ItemParts<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.state += 1;
        let pos = self.de.node.pos;
        match self.state {
            1 => seed.deserialize(U64Deserializer::new(pos.line)).map(Some),
            2 => seed.deserialize(U64Deserializer::new(pos.column)).map(Some),
            3 => match seed.deserialize(self.de.clone()) {
                Ok(value) => Ok(Some(value)),
                Err(e) => {
                    self.de.absorb(e);
                    Ok(None)
                }
            },
            _ => Ok(None),
        }
    }
}

/// A YAML scalar read as a unit enum variant (`protocol: http`).
struct UnitVariant(&'static str);

impl<'de> de::EnumAccess<'de> for UnitVariant {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let name: StrDeserializer<'_, Error> = self.0.into_deserializer();
        Ok((seed.deserialize(name)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, Error> {
        Err(Error::Message(format!("'{}' takes no value here", self.0)))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, Error> {
        Err(Error::Message(format!("'{}' takes no value here", self.0)))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(Error::Message(format!("'{}' takes no value here", self.0)))
    }
}
