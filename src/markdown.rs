//! Writing generated Markdown reference pages (`docs/reference/`): prose
//! from doc comments made safe for GitHub's renderer, table cells, and
//! heading anchors as GitHub computes them.
//!
//! Plain string functions; the pages themselves are written by their
//! owners (`config::reference_markdown`, the binary's `reference cli`).

/// `text` (one or more paragraphs of a doc comment) as Markdown prose that
/// renders as written: outside `code spans`, `<`, `>` and `&` become
/// entities (so `<peer id>` is not swallowed as an HTML tag) and `*` is
/// escaped (so `*.yaml, *.yml` is not emphasis).
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_code = false;
    for c in text.chars() {
        match c {
            '`' => {
                in_code = !in_code;
                out.push(c);
            }
            _ if in_code => out.push(c),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '*' => out.push_str("\\*"),
            _ => out.push(c),
        }
    }
    out
}

/// [`text`] for a table cell: on one line, `|` escaped (also inside code
/// spans, where GitHub requires it too).
pub fn cell(s: &str) -> String {
    text(s)
        .replace('|', "\\|")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` as an inline code span (for a table cell: `|` escaped).
pub fn code(s: &str) -> String {
    let fence = if s.contains('`') { "``" } else { "`" };
    format!("{fence}{}{fence}", s.replace('|', "\\|"))
}

/// GitHub's anchor of a heading: lower case, punctuation dropped but `-`
/// and `_`, spaces to `-` (repeated headings, which get `-1`, `-2`…, are
/// the caller's to avoid).
pub fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_keeps_code_spans_and_escapes_what_would_vanish_or_emphasise() {
        assert_eq!(
            text("ends in /p2p/<peer id>; `a <b> *c*` & *.yaml, *.yml"),
            "ends in /p2p/&lt;peer id&gt;; `a <b> *c*` &amp; \\*.yaml, \\*.yml"
        );
    }

    #[test]
    fn cells_are_one_line_with_pipes_escaped() {
        assert_eq!(cell("a | b\n\nc `x|y`"), "a \\| b c `x\\|y`");
        assert_eq!(code("a|b"), "`a\\|b`");
        assert_eq!(code("a`b"), "``a`b``");
    }

    #[test]
    fn anchors_follow_githubs_rules() {
        assert_eq!(anchor("pinfleet state export"), "pinfleet-state-export");
        assert_eq!(anchor("[cluster]"), "cluster");
        assert_eq!(
            anchor("follow.json: the published follower config"),
            "followjson-the-published-follower-config"
        );
    }
}
