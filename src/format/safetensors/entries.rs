//! The header's JSON object read one entry at a time into loose records, without building a
//! JSON tree: memory is what the records hold, a shape longer than [`MAX_DIMS`] is cut off
//! where it crosses the limit, and a field of the wrong type is recorded as such (for
//! [`header`](super::header) to name) instead of failing the whole document. Pure.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::tree::MAX_DIMS;

/// The most `__metadata__` entries read.
pub const MAX_METADATA_ENTRIES: usize = 1 << 16;

/// The header's key for free-form metadata.
pub const METADATA_KEY: &str = "__metadata__";

/// A tensor's entry as written, each field `None` when missing.
#[derive(Debug, Default)]
pub struct RawEntry {
    /// The entry was not a JSON object.
    pub not_object: bool,
    pub dtype: Option<Field<String>>,
    pub shape: Option<Field<Vec<u64>>>,
    pub offsets: Option<Field<Vec<u64>>>,
}

/// A field present in an entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Field<T> {
    /// Of the expected type.
    Ok(T),
    /// A list longer than the limit.
    TooLong,
    /// Of another type.
    Wrong,
}

/// What `__metadata__` held.
#[derive(Debug)]
pub enum Metadata {
    /// A map of strings (or `null`).
    Ok(BTreeMap<String, String>),
    /// The key whose value is not a string, or `None` when the whole is not a map.
    NotStrings(Option<String>),
    /// More than [`MAX_METADATA_ENTRIES`] entries.
    TooMany,
}

/// Why reading stopped.
#[derive(Debug)]
pub enum Stop<E> {
    /// The text is not one JSON object (the parser's message).
    NotJson(String),
    /// The caller refused an entry.
    Refused(E),
}

/// Reads the header object from `json`, handing each tensor's entry to `entry` as it is read,
/// in file order; returns the metadata.
///
/// # Errors
///
/// [`Stop::NotJson`] for text that is not one JSON object; [`Stop::Refused`] with the first
/// error `entry` returned.
pub fn read<E>(
    json: &[u8],
    entry: impl FnMut(String, RawEntry) -> Result<(), E>,
) -> Result<Metadata, Stop<E>> {
    let mut refused = None;
    let mut de = serde_json::Deserializer::from_slice(json);
    let object = Object {
        entry,
        refused: &mut refused,
    };
    let result = de
        .deserialize_map(object)
        .and_then(|m| de.end().map(|()| m));
    match (result, refused) {
        (_, Some(e)) => Err(Stop::Refused(e)),
        (Ok(metadata), None) => Ok(metadata),
        (Err(e), None) => Err(Stop::NotJson(e.to_string())),
    }
}

struct Object<'r, F, E> {
    entry: F,
    refused: &'r mut Option<E>,
}

impl<'de, F, E> Visitor<'de> for Object<'_, F, E>
where
    F: FnMut(String, RawEntry) -> Result<(), E>,
{
    type Value = Metadata;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Metadata, A::Error> {
        let mut metadata = Metadata::Ok(BTreeMap::new());
        while let Some(name) = map.next_key::<String>()? {
            if name == METADATA_KEY {
                metadata = map.next_value_seed(MetadataSeed)?;
            } else {
                let raw = map.next_value_seed(EntrySeed)?;
                if let Err(e) = (self.entry)(name, raw) {
                    *self.refused = Some(e);
                    return Err(de::Error::custom("entry refused"));
                }
            }
        }
        Ok(metadata)
    }
}

struct EntrySeed;

impl<'de> DeserializeSeed<'de> for EntrySeed {
    type Value = RawEntry;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawEntry, D::Error> {
        d.deserialize_any(EntrySeed)
    }
}

impl<'de> Visitor<'de> for EntrySeed {
    type Value = RawEntry;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tensor entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntry, A::Error> {
        let mut entry = RawEntry::default();
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                "dtype" => entry.dtype = Some(map.next_value_seed(Loose(Kind::Str))?.string()),
                "shape" => {
                    entry.shape = Some(map.next_value_seed(Loose(Kind::Ints(MAX_DIMS)))?.ints());
                }
                "data_offsets" => {
                    entry.offsets = Some(map.next_value_seed(Loose(Kind::Ints(2)))?.ints());
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(entry)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawEntry, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(not_object())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawEntry, E> {
        Ok(not_object())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawEntry, E> {
        Ok(not_object())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawEntry, E> {
        Ok(not_object())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawEntry, E> {
        Ok(not_object())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawEntry, E> {
        Ok(not_object())
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawEntry, E> {
        Ok(not_object())
    }
}

fn not_object() -> RawEntry {
    RawEntry {
        not_object: true,
        ..RawEntry::default()
    }
}

/// What a field should hold.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    /// Non-negative integers, at most this many.
    Ints(usize),
}

/// A field's value, accepted whatever its type.
enum Value {
    Str(String),
    Ints(Vec<u64>),
    TooLong,
    Wrong,
}

impl Value {
    fn string(self) -> Field<String> {
        match self {
            Self::Str(s) => Field::Ok(s),
            _ => Field::Wrong,
        }
    }

    fn ints(self) -> Field<Vec<u64>> {
        match self {
            Self::Ints(v) => Field::Ok(v),
            Self::TooLong => Field::TooLong,
            _ => Field::Wrong,
        }
    }
}

/// Reads any JSON value, keeping it only if it is of the expected kind.
struct Loose(Kind);

impl<'de> DeserializeSeed<'de> for Loose {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Loose {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(match self.0 {
            Kind::Str => Value::Str(s.to_owned()),
            Kind::Ints(_) => Value::Wrong,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let Kind::Ints(limit) = self.0 else {
            IgnoredAny.visit_seq(seq)?;
            return Ok(Value::Wrong);
        };
        let mut ints = Vec::new();
        let mut wrong = false;
        while let Some(Int(item)) = seq.next_element()? {
            if ints.len() == limit {
                IgnoredAny.visit_seq(seq)?;
                return Ok(Value::TooLong);
            }
            match item {
                Some(v) => ints.push(v),
                None => wrong = true,
            }
        }
        Ok(if wrong {
            Value::Wrong
        } else {
            Value::Ints(ints)
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Value::Wrong)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Wrong)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Wrong)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Wrong)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Wrong)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Wrong)
    }
}

/// A list item that should be a non-negative integer: `None` if it is anything else.
struct Int(Option<u64>);

impl<'de> de::Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IntVisitor)
    }
}

struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = Int;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
        Ok(Int(Some(v)))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Int, E> {
        Ok(Int(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Int, E> {
        Ok(Int(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Int, E> {
        Ok(Int(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Int, E> {
        Ok(Int(None))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Int, E> {
        Ok(Int(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Int, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Int(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Int, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Int(None))
    }
}

struct MetadataSeed;

impl<'de> DeserializeSeed<'de> for MetadataSeed {
    type Value = Metadata;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Metadata, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed {
    type Value = Metadata;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of strings")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Metadata, E> {
        Ok(Metadata::Ok(BTreeMap::new()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.len() >= MAX_METADATA_ENTRIES {
                map.next_value::<IgnoredAny>()?;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(Metadata::TooMany);
            }
            match map.next_value_seed(Loose(Kind::Str))? {
                Value::Str(value) => {
                    out.insert(key, value);
                }
                _ => {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    return Ok(Metadata::NotStrings(Some(key)));
                }
            }
        }
        Ok(Metadata::Ok(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Metadata, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Metadata::NotStrings(None))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Metadata, E> {
        Ok(Metadata::NotStrings(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Metadata, E> {
        Ok(Metadata::NotStrings(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Metadata, E> {
        Ok(Metadata::NotStrings(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Metadata, E> {
        Ok(Metadata::NotStrings(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Metadata, E> {
        Ok(Metadata::NotStrings(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(json: &[u8]) -> Vec<(String, RawEntry)> {
        let mut out = Vec::new();
        read(json, |name, raw| {
            out.push((name, raw));
            Ok::<_, ()>(())
        })
        .unwrap();
        out
    }

    fn metadata(json: &[u8]) -> Metadata {
        read(json, |_, _| Ok::<_, ()>(())).unwrap()
    }

    #[test]
    fn fields_of_the_wrong_type_are_recorded_not_fatal() {
        let e = entries(br#"{"a":{"dtype":3,"shape":"x","data_offsets":[0,-1]},"b":7}"#);
        let (name, a) = &e[0];
        assert_eq!(name, "a");
        assert_eq!(a.dtype, Some(Field::Wrong));
        assert_eq!(a.shape, Some(Field::Wrong));
        assert_eq!(a.offsets, Some(Field::Wrong));
        assert!(e[1].1.not_object);
    }

    #[test]
    fn a_shape_past_the_limit_is_cut_off_where_it_crosses_it() {
        let dims = vec!["0"; 10_000].join(",");
        let json = format!(r#"{{"a":{{"dtype":"U8","shape":[{dims}],"data_offsets":[0,0]}}}}"#);
        assert_eq!(entries(json.as_bytes())[0].1.shape, Some(Field::TooLong));
    }

    #[test]
    fn metadata_must_be_a_bounded_map_of_strings() {
        let m = metadata(br#"{"__metadata__":{"format":"pt","n":1}}"#);
        assert!(matches!(m, Metadata::NotStrings(Some(ref k)) if k == "n"));
        let many: Vec<String> = (0..=MAX_METADATA_ENTRIES)
            .map(|i| format!(r#""{i}":"""#))
            .collect();
        let json = format!(r#"{{"__metadata__":{{{}}}}}"#, many.join(","));
        assert!(matches!(metadata(json.as_bytes()), Metadata::TooMany));
    }

    #[test]
    fn text_that_is_not_one_object_is_an_error() {
        for json in [&b"[1]"[..], br#"{"a": "#, b"{} {}"] {
            let err = read(json, |_, _| Ok::<_, ()>(())).unwrap_err();
            assert!(matches!(err, Stop::NotJson(_)), "{err:?}");
        }
    }

    #[test]
    fn the_first_refused_entry_stops_the_reading() {
        let mut seen = 0;
        let err = read(br#"{"a":{},"b":{},"c":{}}"#, |name, _| {
            seen += 1;
            if name == "b" { Err(name) } else { Ok(()) }
        });
        assert!(matches!(err, Err(Stop::Refused(ref n)) if n == "b"));
        assert_eq!(seen, 2);
    }
}
