//! Raw value types that parse themselves: durations, sizes, percentages, status ranges,
//! on/off-or-settings switches, header maps.
//!
//! Their checks need no context, so they happen while deserializing and are reported at the
//! value. Range checks depend on the field and happen in `validate`.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::Item;
use crate::timestamp;
use crate::units::{self, DurationError, PercentError, RateError};

const NUMBER: &str = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)";
const DURATION_UNIT: &str = "(h|ms|m|s|us|µs|ns)";
const SIZE_UNIT: &str = "([bB]|[kKmMgG][iI]?[bB])";

fn duration_pattern() -> String {
    let pair = format!(r"{NUMBER}\s*{DURATION_UNIT}");
    format!(r"^\s*{pair}(\s*{pair})*\s*$")
}

fn size_pattern() -> String {
    format!(r"^\s*{NUMBER}\s*{SIZE_UNIT}?\s*$")
}

fn percent_pattern() -> String {
    format!(r"^\s*{NUMBER}\s*%\s*$")
}

fn rate_pattern() -> String {
    format!(r"^\s*{NUMBER}\s*/\s*(s|m|h)\s*$")
}

const TIMESTAMP_PATTERN: &str =
    r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.0+)?([Zz]|[+-]00:00)\s*$";

const STATUS_RANGE_PATTERN: &str = r"^\s*[0-9]+\s*(-\s*[0-9]+\s*)?$";

/// A duration written with a unit: `250ms`, `1.5s`, `2m`, `1h`, `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl Serialize for DurationValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&units::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as '250ms' or '1m30s'")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                units::parse_duration(v)
                    .map(DurationValue)
                    .map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationValue, E> {
                Err(E::custom(DurationError::NoUnit(v.to_string())))
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl JsonSchema for DurationValue {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": duration_pattern(),
            "examples": ["250ms", "1.5s", "1m30s", "1h"],
        })
    }
}

/// A size in bytes: an integer, or a number and a unit (`B`, `KB`, `MB`, `GB`, `KiB`, `MiB`,
/// `GiB`), e.g. `60KiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&units::format_size(self.0))
    }
}

struct SizeVisitor<T>(fn(u64) -> T, fn(&str) -> Option<T>);

impl<T> Visitor<'_> for SizeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as 65536 or '64KiB'")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        if let Some(special) = (self.1)(v.trim()) {
            return Ok(special);
        }
        units::parse_size(v).map(self.0).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Ok((self.0)(v))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(SizeVisitor(ByteSize, |_| None))
    }
}

impl JsonSchema for ByteSize {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["integer", "string"],
            "minimum": 0,
            "pattern": size_pattern(),
            "examples": [65536, "64KiB", "10MB"],
        })
    }
}

/// A size limit that may be switched off: a size, or `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeLimit {
    Unlimited,
    Bytes(u64),
}

impl Serialize for SizeLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SizeLimit::Unlimited => serializer.serialize_str("unlimited"),
            SizeLimit::Bytes(n) => ByteSize(*n).serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for SizeLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let unlimited = |s: &str| (s == "unlimited").then_some(SizeLimit::Unlimited);
        deserializer.deserialize_str(SizeVisitor(SizeLimit::Bytes, unlimited))
    }
}

impl JsonSchema for SizeLimit {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "SizeLimit".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let size = size_pattern();
        json_schema!({
            "type": ["integer", "string"],
            "minimum": 0,
            "pattern": format!("^(unlimited|{})$", &size[1..size.len() - 1]),
            "examples": ["unlimited", "10MiB"],
        })
    }
}

/// A share written as a percentage: `50%`, `12.5%`. Holds the share of one (`0.5`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percent(pub f64);

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&units::format_percent(self.0))
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Percent;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage such as '10%'")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Percent, E> {
                units::parse_percent(v).map(Percent).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Percent, E> {
                Err(E::custom(PercentError::NoSign(v.to_string())))
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl JsonSchema for Percent {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": percent_pattern(),
            "examples": ["10%", "50%", "12.5%"],
        })
    }
}

/// A rate per second, minute or hour: `100/s`, `2.5/s`, `600/m`, `1/h`. Holds the rate per
/// second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub f64);

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&units::format_rate(self.0))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Rate;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate such as '100/s'")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Rate, E> {
                units::parse_rate(v).map(Rate).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Rate, E> {
                Err(E::custom(RateError::NoUnit(v.to_string())))
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl JsonSchema for Rate {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Rate".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": rate_pattern(),
            "examples": ["100/s", "2.5/s", "600/m"],
        })
    }
}

/// A moment as an RFC 3339 date and time in UTC: `2026-12-01T00:00:00Z`. Holds seconds since
/// the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub u64);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&timestamp::format_timestamp(self.0))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Timestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a UTC date and time such as '2026-12-01T00:00:00Z'")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                timestamp::parse_timestamp(v)
                    .map(Timestamp)
                    .map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl JsonSchema for Timestamp {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "examples": ["2026-12-01T00:00:00Z"],
        })
    }
}

/// HTTP status codes: one (`404`) or an inclusive range (`"200-299"`). Only the syntax is
/// checked here; that the codes exist and the range is in order is checked in `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub first: u32,
    pub last: u32,
}

impl Serialize for StatusRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            serializer.serialize_u32(self.first)
        } else {
            serializer.serialize_str(&format!("{}-{}", self.first, self.last))
        }
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusRange;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status such as 200, or a range such as '200-299'")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusRange, E> {
                let code = |s: &str| s.trim().parse::<u32>().ok();
                let parsed = match v.split_once('-') {
                    None => code(v).map(|c| (c, c)),
                    Some((first, last)) => code(first).zip(code(last)),
                };
                parsed
                    .map(|(first, last)| StatusRange { first, last })
                    .ok_or_else(|| {
                        E::custom(format!(
                            "'{v}' is not a status or a range of statuses; write e.g. 200 or \
                             '200-299'"
                        ))
                    })
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusRange, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl JsonSchema for StatusRange {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "StatusRange".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["integer", "string"],
            "minimum": 100,
            "maximum": 599,
            "pattern": STATUS_RANGE_PATTERN,
            "examples": [200, "200-299"],
        })
    }
}

/// Name of the private newtype struct through which [`Toggle`] asks the config deserializer
/// for either a boolean or the settings.
pub(crate) const TOGGLE_MARKER: &str = "$remora::private::Toggle";

/// A feature switched with `true` / `false`, or switched on with settings:
/// `peak_ewma: true`, `peak_ewma: { decay: 5s }`.
#[derive(Debug, Clone, PartialEq)]
pub enum Toggle<T> {
    Flag(bool),
    Settings(T),
}

impl<T: Serialize> Serialize for Toggle<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Toggle::Flag(on) => serializer.serialize_bool(*on),
            Toggle::Settings(settings) => settings.serialize(serializer),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Toggle<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Toggle<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or a mapping of settings")
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Toggle<T>, E> {
                Ok(Toggle::Flag(v))
            }

            /// The config deserializer: a one-element sequence holding the settings, so that
            /// they are read with positions and the usual unknown-field reports.
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Toggle<T>, A::Error> {
                let settings = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("settings expected"))?;
                Ok(Toggle::Settings(settings))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Toggle<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Toggle::Settings)
            }

            /// Any other deserializer (JSON in tests, say): a boolean or a mapping.
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Toggle<T>, D::Error> {
                d.deserialize_any(self)
            }
        }
        deserializer.deserialize_newtype_struct(TOGGLE_MARKER, V(PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for Toggle<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Toggle_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let settings = generator.subschema_for::<T>();
        json_schema!({
            "anyOf": [{ "type": "boolean" }, settings],
        })
    }
}

/// Name of the private newtype struct through which [`OneOrMany`] asks the config
/// deserializer to read a lone value as a list of one.
pub(crate) const ONE_OR_MANY_MARKER: &str = "$remora::private::OneOrMany";

/// One value, or a list of them: `via: remora`, `set-cookie: [a=1, b=2]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T: Serialize> Serialize for OneOrMany<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(serializer),
            many => many.serialize(serializer),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value or a list of values")
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }

            /// Other deserializers: a plain list.
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Self::Value, D::Error> {
                Vec::deserialize(d).map(OneOrMany)
            }
        }
        deserializer.deserialize_newtype_struct(ONE_OR_MANY_MARKER, V(PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for OneOrMany<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let one = generator.subschema_for::<T>();
        json_schema!({
            "anyOf": [one, { "type": "array", "items": one }],
        })
    }
}

/// Header names and values, in the order written: `{ x-env: prod, x-team: payments }`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderMap<V>(pub Vec<(Item<String>, Item<V>)>);

/// `set:` takes one value per header: setting replaces.
pub type HeaderValues = HeaderMap<String>;

/// `add:` takes one value or several per header: adding appends.
pub type HeaderAppends = HeaderMap<OneOrMany<Item<String>>>;

impl<V: Serialize> Serialize for HeaderMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for HeaderMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Vis<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = HeaderMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of header names to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(HeaderMap(pairs))
            }
        }
        deserializer.deserialize_map(Vis(PhantomData))
    }
}

impl<V: JsonSchema> JsonSchema for HeaderMap<V> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("HeaderMap_{}", V::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let value = generator.subschema_for::<V>();
        json_schema!({
            "type": "object",
            "additionalProperties": value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_patterns_accept_what_the_parsers_accept() {
        let duration = regex::Regex::new(&duration_pattern()).unwrap();
        for ok in ["250ms", "1.5s", "1m30s", "1m 30s", "1h", "5µs", ".5s"] {
            assert!(duration.is_match(ok), "{ok}");
            assert!(units::parse_duration(ok).is_ok(), "{ok}");
        }
        for bad in ["10", "5x", "", "-1s"] {
            assert!(!duration.is_match(bad), "{bad}");
        }
        let size = regex::Regex::new(&size_pattern()).unwrap();
        for ok in ["1024", "60KiB", "60 kib", "10MB", "1.5MiB", "512B"] {
            assert!(size.is_match(ok), "{ok}");
            assert!(units::parse_size(ok).is_ok(), "{ok}");
        }
        for bad in ["10kbit", "", "KiB", "-1"] {
            assert!(!size.is_match(bad), "{bad}");
        }
        let percent = regex::Regex::new(&percent_pattern()).unwrap();
        for ok in ["10%", "12.5%", "0%", "100 %", ".5%"] {
            assert!(percent.is_match(ok), "{ok}");
            assert!(units::parse_percent(ok).is_ok(), "{ok}");
        }
        for bad in ["10", "0.5", "%", "-1%", "10%%"] {
            assert!(!percent.is_match(bad), "{bad}");
        }
        let rate = regex::Regex::new(&rate_pattern()).unwrap();
        for ok in ["100/s", "2.5/s", " 30 / m ", ".5/h"] {
            assert!(rate.is_match(ok), "{ok}");
            assert!(units::parse_rate(ok).is_ok(), "{ok}");
        }
        for bad in ["100", "100/d", "/s", "-1/s", "1e3/s"] {
            assert!(!rate.is_match(bad), "{bad}");
        }
        let time = regex::Regex::new(TIMESTAMP_PATTERN).unwrap();
        for ok in [
            "2026-12-01T00:00:00Z",
            "2026-12-01t00:00:00.000z",
            "2026-12-01 00:00:00+00:00",
        ] {
            assert!(time.is_match(ok), "{ok}");
            assert!(timestamp::parse_timestamp(ok).is_ok(), "{ok}");
        }
        for bad in [
            "2026-12-01",
            "2026-12-01T00:00:00",
            "2026-12-01T01:00:00+01:00",
        ] {
            assert!(!time.is_match(bad), "{bad}");
        }
        let status = regex::Regex::new(STATUS_RANGE_PATTERN).unwrap();
        for ok in ["200", "200-299", "200 - 299"] {
            assert!(status.is_match(ok), "{ok}");
        }
        for bad in ["2xx", "200-", "-299", ""] {
            assert!(!status.is_match(bad), "{bad}");
        }
    }
}
