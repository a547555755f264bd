//! Located errors: every problem in a load is one `Diagnostic`, and a load
//! reports all of them, sorted by place.

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
    pub fn at(file: &Path, pos: Pos, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: pos.line,
            col: pos.col,
            message: message.into(),
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
}
