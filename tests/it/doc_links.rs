//! Every relative link of the README and `docs/` resolves (issue 20, item
//! 6): the file it names exists, and its `#anchor`, if any, is a heading
//! of that file (GitHub's slugs). Links to other sites are not fetched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The Markdown files checked: the README and everything under `docs/`.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The lines of `text` outside fenced code blocks, with their numbers.
fn unfenced(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// [`unfenced`] lines with inline code spans blanked (a link inside one is
/// an example, not a link).
fn prose(text: &str) -> Vec<(usize, String)> {
    unfenced(text)
        .into_iter()
        .map(|(n, line)| {
            let mut in_code = false;
            let kept = line
                .chars()
                .map(|c| {
                    if c == '`' {
                        in_code = !in_code;
                        ' '
                    } else if in_code {
                        ' '
                    } else {
                        c
                    }
                })
                .collect();
            (n, kept)
        })
        .collect()
}

/// The targets of the inline links and images `[text](target)` of `line`.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        // `[a](b "title")`: the target is the first word.
        let target = after[..end].split_whitespace().next().unwrap_or("");
        out.push(target.trim_matches(|c| c == '<' || c == '>').to_string());
        rest = &after[end..];
    }
    out
}

/// GitHub's anchor of a heading (the one the reference generators use).
fn slug(heading: &str) -> String {
    pinfleet::markdown::anchor(heading)
}

/// The anchors of the headings of Markdown `text` (repeats get `-1`, `-2`…
/// as on GitHub).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, line) in unfenced(text) {
        let t = line.trim_start();
        if !t.starts_with('#') {
            continue;
        }
        let heading = t.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let mut name = base.clone();
        let mut n = 0;
        while out.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        out.insert(name);
    }
    out
}

#[test]
fn every_relative_link_and_anchor_in_the_readme_and_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = markdown_files(root);
    assert!(
        files.len() > 10,
        "only {} Markdown files found",
        files.len()
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let shown = file.strip_prefix(root).unwrap().display().to_string();
        for (line, kept) in prose(&text) {
            for target in link_targets(&kept) {
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target.as_str(), None),
                };
                let resolved = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                if !resolved.exists() {
                    broken.push(format!("{shown}:{line}: {target}: no such file"));
                    continue;
                }
                let Some(anchor) = anchor else { continue };
                if resolved.extension().is_some_and(|e| e == "md") {
                    let there = std::fs::read_to_string(&resolved).unwrap();
                    if !anchors(&there).contains(anchor) {
                        broken.push(format!("{shown}:{line}: {target}: no such heading"));
                    }
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} relative links found");
    assert!(
        broken.is_empty(),
        "{} broken links:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn slugs_follow_githubs_rules() {
    assert_eq!(slug(" Two commands"), "two-commands");
    assert_eq!(
        slug(" Scale on real processes — `cargo bench --bench scale`"),
        "scale-on-real-processes--cargo-bench---bench-scale"
    );
    assert_eq!(
        slug(" 3. Published configuration"),
        "3-published-configuration"
    );
    let a = anchors("# A\n\n## A\n```\n# not a heading\n```\n");
    assert_eq!(a, BTreeSet::from(["a".to_string(), "a-1".to_string()]));
}

/// The `.md` files `file` links to (relative links, anchors dropped).
fn linked_pages(file: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    for (_, kept) in prose(&text) {
        for target in link_targets(&kept) {
            let path = target.split('#').next().unwrap_or("");
            if path.is_empty() || target.contains("://") || !path.ends_with(".md") {
                continue;
            }
            let joined = file.parent().unwrap().join(path);
            if let Ok(found) = joined.canonicalize() {
                out.push(found);
            }
        }
    }
    out
}

#[test]
fn every_page_of_docs_is_reachable_from_the_docs_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = root.join("docs/README.md").canonicalize().unwrap();
    let mut seen = BTreeSet::from([map.clone()]);
    let mut todo = vec![map];
    while let Some(page) = todo.pop() {
        for next in linked_pages(&page) {
            if next.starts_with(root.join("docs").canonicalize().unwrap())
                && seen.insert(next.clone())
            {
                todo.push(next);
            }
        }
    }
    let unreachable: Vec<String> = markdown_files(root)
        .into_iter()
        .filter(|f| f.starts_with(root.join("docs")))
        .filter(|f| !seen.contains(&f.canonicalize().unwrap()))
        .map(|f| f.strip_prefix(root).unwrap().display().to_string())
        .collect();
    assert!(
        unreachable.is_empty(),
        "pages no link from docs/README.md leads to: {unreachable:?}"
    );
    // The README sends readers to the map.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("](docs/README.md)"),
        "README.md does not link docs/README.md"
    );
}
