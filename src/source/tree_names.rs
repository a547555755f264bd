//! Checks on the entry names of a git tree before any of it is written to
//! disk (issue 13, item 8): a crafted commit can hold names that `git add`
//! would never produce (`..`, `.git`, `a/b`, an absolute path), and writing
//! such a name under the checkout directory could reach outside it.
//!
//! This module owns the rule and the tree walk that applies it; it must not
//! write anything (the checkout in `git.rs` does, after the walk passed) and
//! it does not follow links: symbolic-link entries (mode `120000`) are never
//! written by the checkout, so nothing can be read through them.

use std::fmt::Write as _;

use git2::{ObjectType, Repository, Tree};

/// Why an entry name is refused, or `None` when it is a plain file name.
///
/// Refused: the empty name, `.` and `..`, a name holding `/`, `\` or NUL
/// (one name must be one path component on every platform), and `.git` in
/// any letter case, also followed by dots or spaces (which Windows and some
/// network file systems drop) or with the invisible code points HFS+
/// ignores, so no checkout can plant a repository's control directory.
pub fn refuse_name(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        return Some("an empty name");
    }
    if name == b"." || name == b".." {
        return Some("a `.` or `..` component");
    }
    if name.contains(&0) {
        return Some("a NUL byte in a name");
    }
    if name.contains(&b'/') {
        return Some("a `/` in a name (an absolute or nested path)");
    }
    if name.contains(&b'\\') {
        return Some("a `\\` in a name");
    }
    if is_dot_git(name) {
        return Some("a `.git` component");
    }
    None
}

/// `.git` once trailing dots and spaces and HFS+-ignorable code points are
/// dropped, compared without regard to ASCII case.
fn is_dot_git(name: &[u8]) -> bool {
    let text = String::from_utf8_lossy(name);
    let folded: String = text.chars().filter(|c| !hfs_ignorable(*c)).collect();
    let trimmed = folded.trim_end_matches(['.', ' ']);
    trimmed.eq_ignore_ascii_case(".git")
}

/// Code points HFS+ leaves out when it compares names (as git's
/// `core.protectHFS` lists them).
fn hfs_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{206a}'..='\u{206f}' | '\u{feff}'
    )
}

/// The first refused entry under `tree` (whose own path in the repository is
/// `prefix`, empty for the root), as a message naming the entry's path,
/// escaped so that control bytes and quotes show as such.
pub fn check_tree(repo: &Repository, tree: &Tree<'_>, prefix: &[u8]) -> Result<(), String> {
    for entry in tree.iter() {
        let name = entry.name_bytes();
        let mut path = prefix.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        if let Some(why) = refuse_name(name) {
            return Err(format!("refused tree entry \"{}\": {why}", escape(&path)));
        }
        if entry.kind() == Some(ObjectType::Tree) {
            let sub = repo
                .find_tree(entry.id())
                .map_err(|e| format!("tree \"{}\": {}", escape(&path), e.message()))?;
            check_tree(repo, &sub, &path)?;
        }
    }
    Ok(())
}

/// `bytes` as printable text: ASCII as is except `"` and `\`, everything
/// else (control bytes, NUL, bytes of non-ASCII text) as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused_and_plain_ones_pass() {
        for bad in [
            &b""[..],
            b".",
            b"..",
            b".git",
            b".GIT",
            b".Git",
            b".git.",
            b".git ",
            b".git. . ",
            ".g\u{200c}it".as_bytes(),
            b"a/b",
            b"/etc",
            b"a\\b",
            b"a\0b",
        ] {
            assert!(refuse_name(bad).is_some(), "{}", escape(bad));
        }
        for good in [
            &b"a.yaml"[..],
            b"...",
            b".github",
            b".gitignore",
            b"git",
            b"x.git",
            b".git-x",
            "préféré.yaml".as_bytes(),
        ] {
            assert_eq!(refuse_name(good), None, "{}", escape(good));
        }
    }

    #[test]
    fn escape_shows_control_bytes_and_quotes() {
        assert_eq!(escape(b"a\0b\"c\\"), "a\\x00b\\\"c\\\\");
        assert_eq!(escape(b"../x"), "../x");
    }
}
