//! Located errors: every problem in a load is one `Diagnostic`, and a load
//! reports all of them, sorted by place. Also the few helpers every layer
//! uses to put a user's value into a message: [`shown`] (a value quoted,
//! truncated), [`plural`] (counts) and [`capped`] (a message cut to a byte
//! budget before it is stored or sent). Owns wording only: no I/O.

use std::fmt;
use std::path::{Path, PathBuf};

use super::located::Pos;

/// One problem at one place.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Diagnostic {
    /// File the problem is in.
    pub file: PathBuf,
    /// 1-based line; 0 when the whole file is concerned.
    pub line: u32,
    /// 1-based column; 0 when the whole file is concerned.
    pub col: u32,
    /// Lower-case message.
    pub message: String,
}

impl Diagnostic {
    /// A problem at `pos` in `file`.
    /// The message is capped at [`MAX_DIAGNOSTIC_BYTES`], so a problem
    /// never carries a whole hostile value.
    pub fn at(file: &Path, pos: Pos, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: pos.line,
            col: pos.col,
            message: capped(message.into(), MAX_DIAGNOSTIC_BYTES),
        }
    }

    /// A problem with a whole file.
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self::at(file, Pos::default(), message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.col,
                self.message
            )
        }
    }
}

/// Every problem found by one load, sorted by file, line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// How many characters of a user's value a message quotes.
pub const SHOWN_CHARS: usize = 80;

/// The most bytes one diagnostic's message holds (a backstop: values are
/// already [`shown`] truncated).
pub const MAX_DIAGNOSTIC_BYTES: usize = 512;

/// The most bytes a message stored in the cluster state holds (a PinSet
/// condition, a commit status description).
pub const MAX_STORED_MESSAGE_BYTES: usize = 1024;

/// A user's value as a message quotes it: `"value"`, or, when longer than
/// [`SHOWN_CHARS`] characters, its first ones and its length:
/// `"aaaa…"… (52428800 bytes)`.
pub fn shown(value: &str) -> Shown<'_> {
    Shown(value)
}

/// See [`shown`].
#[derive(Clone, Copy, Debug)]
pub struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(SHOWN_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// `n` and the noun, in the plural when `n` is not 1: `1 problem`,
/// `2 problems`. `noun` is a regular English noun (`PinSet`, `pin`, `file`).
pub fn plural<N: fmt::Display + Copy + TryInto<u8>>(n: N, noun: &str) -> String {
    if matches!(n.try_into(), Ok(1u8)) {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `message` cut to at most `max` bytes on a character boundary, ending in
/// `…` when cut.
pub fn capped(mut message: String, max: usize) -> String {
    const MORE: &str = "…";
    if message.len() <= max {
        return message;
    }
    let mut cut = max.saturating_sub(MORE.len());
    while !message.is_char_boundary(cut) {
        cut -= 1; // 0 is a boundary, so this ends
    }
    message.truncate(cut);
    message.push_str(MORE);
    message
}

/// A serde-saphyr error (without its snippet) in pinfleet's words: no
/// library option or Rust type names, values [`shown`], no location (`pos`
/// is where the caller puts it).
pub(crate) fn yaml_message(e: &serde_saphyr::Error, pos: Pos) -> String {
    use serde_saphyr::Error as E;
    match e {
        E::SerdeUnknownField {
            field, expected, ..
        } => unknown_message("field", field, expected),
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => unknown_message("value", variant, expected),
        E::DuplicateMappingKey { key: Some(k), .. } => format!("duplicate key {}", shown(k)),
        E::DuplicateMappingKey { key: None, .. } => "duplicate key".into(),
        E::SerdeMissingField { field, .. } => format!("missing field {field:?}"),
        E::NullIntoString { .. } => "expected a string, found null".into(),
        E::Unexpected { expected, .. } => format!("expected {}", expected_words(expected)),
        E::InvalidScalar { ty, .. } => format!("expected {}", type_words(ty)),
        E::InvalidBooleanStrict { .. } => "expected true or false".into(),
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | E::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => format!(
            "expected {}, found {}",
            type_words(expected),
            found_words(unexpected)
        ),
        E::AliasError { error, .. } => yaml_message(error, pos),
        E::Budget { .. } => {
            "the document is too large or too deeply nested (split it into smaller files)".into()
        }
        other => {
            let text = other.to_string();
            let suffix = format!(" at line {}, column {}", pos.line, pos.col);
            let text = text.strip_suffix(&suffix).unwrap_or(&text);
            if text.starts_with("tabs disallowed") {
                "tabs cannot indent YAML; indent with spaces".into()
            } else {
                text.to_string()
            }
        }
    }
}

/// `unknown field "nmae", did you mean "name"?`
fn unknown_message(what: &str, got: &str, expected: &[&str]) -> String {
    match suggest(got, expected) {
        Some(s) => format!("unknown {what} {}, did you mean {s:?}?", shown(got)),
        None if expected.is_empty() => format!("unknown {what} {}", shown(got)),
        None => format!(
            "unknown {what} {}, expected one of: {}",
            shown(got),
            expected.join(", ")
        ),
    }
}

/// The parser's `expected` token in words.
fn expected_words(expected: &str) -> &str {
    match expected {
        "sequence start" => "a list",
        "mapping start" => "a mapping (key: value)",
        "string scalar" => "a string",
        "scalar" => "a single value",
        other => other,
    }
}

/// A Rust type name or serde's expectation in words.
fn type_words(ty: &str) -> String {
    match ty {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".into(),
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more".into(),
        "f32" | "f64" | "floating point" => "a number".into(),
        "bool" | "boolean" => "true or false".into(),
        "a string" | "string" | "str" | "char" => "a string".into(),
        other => {
            let other = other.strip_prefix("struct ").unwrap_or(other);
            capped(other.to_string(), SHOWN_CHARS)
        }
    }
}

/// serde's description of what it found (`string "…"`, `integer `5``),
/// with any quoted value cut.
fn found_words(unexpected: &str) -> String {
    match unexpected.split_once(' ') {
        Some((kind, value)) => {
            let value = value.trim_matches(|c| c == '"' || c == '`');
            format!("{kind} {}", shown(value))
        }
        None => shown(unexpected).to_string(),
    }
}

/// The known name closest to `unknown`, if one is close enough to be a typo.
/// Case, `_` and `-` are ignored first (`pins_from` → `pinsFrom`), then edit
/// distance decides.
pub fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let folded = fold(unknown);
    if let Some(k) = known.iter().find(|k| fold(k) == folded) {
        return Some(k);
    }
    let limit = (unknown.chars().count() / 3).max(2);
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&folded, &fold(k)), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_typos_and_case_slips() {
        let known = ["cid", "name", "replication", "pinsFrom", "expireAfter"];
        assert_eq!(suggest("nmae", &known), Some("name"));
        assert_eq!(suggest("pins_from", &known), Some("pinsFrom"));
        assert_eq!(suggest("replicaton", &known), Some("replication"));
        assert_eq!(suggest("expire_after", &known), Some("expireAfter"));
        assert_eq!(suggest("zzzzzz", &known), None);
    }

    #[test]
    fn shown_quotes_short_values_whole_and_long_ones_cut_with_their_length() {
        assert_eq!(shown("web").to_string(), "\"web\"");
        let exactly = "a".repeat(SHOWN_CHARS);
        assert_eq!(shown(&exactly).to_string(), format!("{exactly:?}"));
        let long = "é".repeat(1000);
        let s = shown(&long).to_string();
        assert_eq!(s, format!("{:?}… (2000 bytes)", "é".repeat(SHOWN_CHARS)));
    }

    #[test]
    fn plural_agrees_with_the_count() {
        assert_eq!(plural(0, "problem"), "0 problems");
        assert_eq!(plural(1, "problem"), "1 problem");
        assert_eq!(plural(2, "PinSet"), "2 PinSets");
    }

    #[test]
    fn capped_cuts_on_a_char_boundary_and_marks_the_cut() {
        assert_eq!(capped("short".into(), 10), "short");
        let cut = capped("ééééé".into(), 8);
        assert!(cut.len() <= 8, "{cut}");
        assert_eq!(cut, "éé…");
        let d = Diagnostic::file(Path::new("f"), "x".repeat(10_000));
        assert!(d.message.len() <= MAX_DIAGNOSTIC_BYTES);
        assert!(d.message.ends_with('…'));
    }
}
