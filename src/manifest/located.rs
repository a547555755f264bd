//! `Located<T>`: a value with the line and column it was read from.
//!
//! Deserialising through serde-saphyr records where a node sat in the YAML, so
//! semantic errors found after parsing (a bad CID, `min > max`) can still point
//! at file:line:col. Everywhere else the wrapper is transparent: it serialises
//! as `T`, has `T`'s JSON schema, and compares by value only.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A position in a source file, 1-based. `0:0` means unknown (for example a
/// value that came from JSON rather than YAML).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// 1-based line, 0 when unknown.
    pub line: u32,
    /// 1-based column, 0 when unknown.
    pub col: u32,
}

impl Pos {
    /// A known position.
    pub const fn new(line: u32, col: u32) -> Self {
        Self { line, col }
    }
}

/// A deserialised value together with where it was written.
#[derive(Clone, Debug)]
pub struct Located<T> {
    /// The value itself.
    pub value: T,
    /// Where the value was written.
    pub pos: Pos,
}

impl<T> Located<T> {
    /// A value without a known position (built in code, not read from a file).
    pub const fn unlocated(value: T) -> Self {
        Self {
            value,
            pos: Pos { line: 0, col: 0 },
        }
    }
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        let at = spanned.referenced;
        Ok(Self {
            value: spanned.value,
            pos: Pos {
                line: u32::try_from(at.line()).unwrap_or(u32::MAX),
                col: u32::try_from(at.column()).unwrap_or(u32::MAX),
            },
        })
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
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
