//! The executed guides (issue 20, items 2 and 4): every ```console block of
//! `docs/guides/*.md` and `docs/workshop.md` runs against a fresh 3-peer
//! testbed and its output is compared with what the document shows, so a
//! guide that no longer matches the program fails.
//!
//! The format (shared by every executed document):
//! - only blocks whose info string is `console` run; a line starting with
//!   `$ ` is a command (a trailing `\` continues it on the next line), the
//!   lines up to the next command are its output (stdout, then stderr); a
//!   last line `? N` is its expected exit code (otherwise 0);
//! - in the output, `[..]` matches any text within a line, a line `...`
//!   any number of lines, and `[CID]`, `[PEER]`, `[URL]`, `[N]`, `[TIME]`
//!   one such token; trailing whitespace is ignored;
//! - a block whose info string holds `file=REL/PATH` is written to that
//!   path when the runner reaches it;
//! - ```sh / ```bash / ```shell blocks are not run, so none may hold a
//!   line starting with `$ pinfleet` (it would escape the check).
//!
//! Commands run with `bash -c`, in order, in one fresh directory per
//! document (also `HOME`), with `PINFLEET_HOST` (peer 0's API), `TESTBED`
//! (the testbed directory), the built `pinfleet` first on `PATH` and
//! `NO_COLOR=1`; nothing else of the test's environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{embedded_testbed, repo_path};

/// Longest any one command of a document may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_guide_runs_as_written() {
    run_document("docs/guides/cli.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workshop_runs_as_written() {
    run_document("docs/workshop.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_how_it_works_guide_runs_as_written() {
    run_document("docs/guides/how-it-works.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gitops_guide_runs_as_written() {
    run_document("docs/guides/gitops.md").await;
}

// ---------------------------------------------------------------- format

/// What the runner does at one place of a document.
#[derive(Debug, PartialEq)]
enum Step {
    /// Run `command`; expect `output` (patterns) and exit code `code`.
    Command {
        /// 1-based line of the `$ ` in the document.
        line: usize,
        command: String,
        output: Vec<String>,
        code: i32,
    },
    /// Write `content` to `path` (relative to the work directory).
    File {
        line: usize,
        path: String,
        content: String,
    },
}

/// A fence line: its backticks and its info string.
fn fence(line: &str) -> Option<(usize, &str)> {
    let t = line.trim_start();
    let ticks = t.len() - t.trim_start_matches('`').len();
    (ticks >= 3).then(|| (ticks, t[ticks..].trim()))
}

/// The steps of a document, or every format error (`line: message`).
fn parse(doc: &str) -> Result<Vec<Step>, Vec<String>> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut steps = Vec::new();
    let mut errors = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some((ticks, info)) = fence(lines[i]) else {
            i += 1;
            continue;
        };
        let start = i + 1; // first line of the body (0-based)
        let mut end = start;
        while end < lines.len()
            && !fence(lines[end]).is_some_and(|(t, rest)| t >= ticks && rest.is_empty())
        {
            end += 1;
        }
        if end == lines.len() {
            errors.push(format!("{}: unclosed code block", i + 1));
        }
        let body = &lines[start..end.min(lines.len())];
        let words: Vec<&str> = info.split_whitespace().collect();
        let lang = words.first().copied().unwrap_or("");
        if let Some(path) = words.iter().find_map(|w| w.strip_prefix("file=")) {
            let inside = Path::new(path)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside {
                errors.push(format!(
                    "{}: file={path} is not a path inside the work directory",
                    i + 1
                ));
            }
            let mut content = body.join("\n");
            content.push('\n');
            steps.push(Step::File {
                line: i + 1,
                path: path.to_string(),
                content,
            });
        } else if lang == "console" {
            console_steps(body, start, &mut steps, &mut errors);
        } else if matches!(lang, "sh" | "bash" | "shell") {
            for (k, l) in body.iter().enumerate() {
                if l.trim_start().starts_with("$ pinfleet") {
                    errors.push(format!(
                        "{}: `$ pinfleet` in a ```{lang} block is never run; use ```console",
                        start + k + 1
                    ));
                }
            }
        }
        i = end + 1;
    }
    if errors.is_empty() {
        Ok(steps)
    } else {
        Err(errors)
    }
}

/// The commands of one console block whose body starts at 0-based line
/// `first`.
fn console_steps(body: &[&str], first: usize, steps: &mut Vec<Step>, errors: &mut Vec<String>) {
    let mut k = 0;
    while k < body.len() {
        let Some(cmd) = body[k].strip_prefix("$ ") else {
            if !body[k].trim().is_empty() {
                errors.push(format!(
                    "{}: output before the first `$ ` command of a console block",
                    first + k + 1
                ));
            }
            k += 1;
            continue;
        };
        let line = first + k + 1;
        let mut command = cmd.to_string();
        while command.ends_with('\\') && k + 1 < body.len() {
            k += 1;
            command.push('\n');
            command.push_str(body[k]);
        }
        k += 1;
        let mut output = Vec::new();
        while k < body.len() && !body[k].starts_with("$ ") {
            output.push(body[k].trim_end().to_string());
            k += 1;
        }
        while output.last().is_some_and(String::is_empty) {
            output.pop();
        }
        let mut code = 0;
        if let Some(n) = output.last().and_then(|l| l.strip_prefix("? ")) {
            match n.trim().parse() {
                Ok(n) => {
                    code = n;
                    output.pop();
                }
                Err(_) => errors.push(format!("{line}: `? {n}` is not an exit code")),
            }
        }
        steps.push(Step::Command {
            line,
            command,
            output,
            code,
        });
    }
}

/// One piece of an expected line.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    /// `[..]`
    Any,
    /// `[CID]`, `[PEER]`, `[URL]`, `[N]`, `[TIME]`
    Token(&'static str),
}

const TOKENS: [&str; 5] = ["CID", "PEER", "URL", "N", "TIME"];

fn pieces(pattern: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = pattern;
    'outer: while !rest.is_empty() {
        let mut from = 0;
        while let Some(open) = rest[from..].find('[').map(|o| o + from) {
            let after = &rest[open..];
            let hit = if after.starts_with("[..]") {
                Some((Piece::Any, 4))
            } else {
                TOKENS
                    .iter()
                    .find(|t| after[1..].starts_with(**t) && after[1 + t.len()..].starts_with(']'))
                    .map(|t| (Piece::Token(t), t.len() + 2))
            };
            if let Some((piece, len)) = hit {
                if open > 0 {
                    out.push(Piece::Text(&rest[..open]));
                }
                out.push(piece);
                rest = &rest[open + len..];
                continue 'outer;
            }
            from = open + 1;
        }
        out.push(Piece::Text(rest));
        break;
    }
    out
}

fn is_token(kind: &str, s: &str) -> bool {
    match kind {
        "CID" => s.parse::<cid::Cid>().is_ok(),
        "PEER" => {
            (s.starts_with("12D3KooW") || s.starts_with("Qm"))
                && s.parse::<libp2p::PeerId>().is_ok()
        }
        "URL" => s
            .strip_prefix("http://127.0.0.1:")
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        "N" => is_number(s),
        "TIME" => is_duration(s) || chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        _ => false,
    }
}

fn is_number(s: &str) -> bool {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

/// `1.2s`, `340ms`, `1m30s`, `2h`, `15µs`.
fn is_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 || !is_number(&rest[..n]) {
            return false;
        }
        rest = &rest[n..];
        let unit = ["ns", "µs", "us", "ms", "s", "m", "h", "d"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

fn line_matches(pattern: &[Piece], actual: &str) -> bool {
    let Some((first, rest)) = pattern.split_first() else {
        return actual.is_empty();
    };
    let ends = || (1..=actual.len()).filter(|e| actual.is_char_boundary(*e));
    match first {
        Piece::Text(t) => actual
            .strip_prefix(t)
            .is_some_and(|a| line_matches(rest, a)),
        Piece::Any => std::iter::once(0)
            .chain(ends())
            .any(|e| line_matches(rest, &actual[e..])),
        Piece::Token(kind) => {
            ends().any(|e| is_token(kind, &actual[..e]) && line_matches(rest, &actual[e..]))
        }
    }
}

/// Whether `actual` lines match the `expected` patterns (`...` lines
/// matching any number of lines).
fn output_matches(expected: &[String], actual: &[&str]) -> bool {
    let Some((first, rest)) = expected.split_first() else {
        return actual.is_empty();
    };
    if first == "..." {
        return (0..=actual.len()).any(|skip| output_matches(rest, &actual[skip..]));
    }
    match actual.split_first() {
        Some((a, more)) => line_matches(&pieces(first), a.trim_end()) && output_matches(rest, more),
        None => false,
    }
}

// ---------------------------------------------------------------- runner

/// Peers that the document started itself (`pinfleet testbed start`) are
/// no children of the test: killed by their pid in `testbed.json` when the
/// document ends, whether it passed or not.
struct StrayPeers(PathBuf);

impl Drop for StrayPeers {
    fn drop(&mut self) {
        let Ok(file) = pinfleet::testbed::read_testbed_file(&self.0) else {
            return;
        };
        for peer in file.peers {
            // Only a process that still runs this peer's daemon (not a
            // reused pid).
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", peer.pid)).unwrap_or_default();
            let dir = peer.dir.display().to_string();
            if String::from_utf8_lossy(&cmdline).contains(&dir) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(peer.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Runs every step of the document at `rel` (from the repository root)
/// against a fresh testbed; panics at the first step whose output or exit
/// code differs, naming the document's line.
async fn run_document(rel: &str) {
    let doc = std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let steps =
        parse(&doc).unwrap_or_else(|errors| panic!("{rel}: bad format:\n{}", errors.join("\n")));
    assert!(
        steps.iter().any(|s| matches!(s, Step::Command { .. })),
        "{rel} runs no command"
    );
    let work = tempfile::tempdir().unwrap();
    let tb_dir = tempfile::tempdir().unwrap();
    let tb = embedded_testbed(tb_dir.path(), false).await;
    let strays = StrayPeers(tb_dir.path().to_path_buf());
    let exe = Path::new(env!("CARGO_BIN_EXE_pinfleet"));
    let path = format!(
        "{}:{}",
        exe.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("PATH", path),
        ("HOME", work.path().display().to_string()),
        ("NO_COLOR", "1".to_string()),
        ("PINFLEET_HOST", tb.file.peers[0].api.clone()),
        ("TESTBED", tb_dir.path().display().to_string()),
        ("LANG", "C.UTF-8".to_string()),
    ];
    for step in &steps {
        match step {
            Step::File {
                line,
                path,
                content,
            } => {
                let target = work.path().join(path);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).unwrap();
                }
                std::fs::write(&target, content)
                    .unwrap_or_else(|e| panic!("{rel}:{line}: {path}: {e}"));
            }
            Step::Command {
                line,
                command,
                output,
                code,
            } => {
                run_command(rel, *line, command, output, *code, work.path(), &env).await;
            }
        }
    }
    tb.stop().await;
    drop(strays);
}

async fn run_command(
    rel: &str,
    line: usize,
    command: &str,
    expected: &[String],
    code: i32,
    dir: &Path,
    env: &[(&str, String)],
) {
    let child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!("{rel}:{line}: `{command}` did not finish within {COMMAND_TIMEOUT:?}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut actual: Vec<&str> = text.lines().map(str::trim_end).collect();
    while actual.last().is_some_and(|l| l.is_empty()) {
        actual.pop();
    }
    let got = out.status.code().unwrap_or(-1);
    if got != code || !output_matches(expected, &actual) {
        panic!(
            "{rel}:{line}: `{command}` differs from the document\n{}",
            report(expected, code, &actual, got)
        );
    }
}

/// Expected and actual output side by side, the first differing line
/// marked.
fn report(expected: &[String], code: i32, actual: &[&str], got: i32) -> String {
    let first = expected
        .iter()
        .zip(actual)
        .position(|(e, a)| e == "..." || !line_matches(&pieces(e), a))
        .unwrap_or(expected.len().min(actual.len()));
    let mut s = format!("exit code: expected {code}, got {got}\n--- expected\n");
    for (i, e) in expected.iter().enumerate() {
        s.push_str(&format!("{} {e}\n", if i == first { ">" } else { " " }));
    }
    s.push_str("+++ actual\n");
    for (i, a) in actual.iter().enumerate() {
        s.push_str(&format!("{} {a}\n", if i == first { ">" } else { " " }));
    }
    s
}

// ---------------------------------------------------------------- tests of the format

#[test]
fn the_guide_format_parses_commands_outputs_exit_codes_and_files() {
    let doc = "\
Prose.

```console
$ pinfleet pin add \\
    QmX --wait
pinned [CID]
...
$ pinfleet validate bad.yaml
bad.yaml:1:1: oops
? 1
```

```yaml file=pins/site.yaml
kind: PinSet
```

```sh
pinfleet testbed up
```
";
    let steps = parse(doc).unwrap();
    assert_eq!(
        steps,
        vec![
            Step::Command {
                line: 4,
                command: "pinfleet pin add \\\n    QmX --wait".into(),
                output: vec!["pinned [CID]".into(), "...".into()],
                code: 0,
            },
            Step::Command {
                line: 8,
                command: "pinfleet validate bad.yaml".into(),
                output: vec!["bad.yaml:1:1: oops".into()],
                code: 1,
            },
            Step::File {
                line: 13,
                path: "pins/site.yaml".into(),
                content: "kind: PinSet\n".into(),
            },
        ]
    );
}

#[test]
fn a_pinfleet_command_outside_a_console_block_or_a_file_outside_the_work_dir_is_a_format_error() {
    let errors = parse(
        "```sh\n$ pinfleet status\n```\n```console\nstray output\n```\n```yaml file=../x.yaml\n```\n",
    )
    .unwrap_err();
    assert_eq!(
        errors,
        vec![
            "2: `$ pinfleet` in a ```sh block is never run; use ```console".to_string(),
            "5: output before the first `$ ` command of a console block".to_string(),
            "7: file=../x.yaml is not a path inside the work directory".to_string(),
        ]
    );
}

#[test]
fn placeholders_match_one_token_and_dots_match_any_lines() {
    let cid = "QmbGPCwBXGbfPiC585pgH26ZbvUSLfHvV3GojRLDD82yag";
    let peer = "12D3KooWLAHLMUMkwwe2pv3JhYbGxZK1ciKy5b6aD7h84xBaNmXf";
    let m = |p: &str, a: &str| line_matches(&pieces(p), a);
    assert!(m("added [CID] site", &format!("added {cid} site")));
    assert!(!m("added [CID] site", "added QmNotACid site"));
    assert!(m(
        "> [PEER] (peer-[N]) : PINNED | [TIME]",
        &format!("> {peer} (peer-2) : PINNED | 2026-12-07T08:43:27.944Z")
    ));
    assert!(m("api [URL]/ui/", "api http://127.0.0.1:34929/ui/"));
    assert!(
        m("took [TIME]", "took 1.2s")
            && m("took [TIME]", "took 340ms")
            && m("took [TIME]", "took 1m30s")
    );
    assert!(!m("took [TIME]", "took soon"));
    assert!(m("a [..] z", "a  z") && m("a [..] z", "a b c z") && !m("a [..] z", "a b c"));
    assert!(m("list[0] stays [literal]", "list[0] stays [literal]"));
    let lines = |s: &[&str]| s.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert!(output_matches(&lines(&["a", "...", "z"]), &["a", "z"]));
    assert!(output_matches(
        &lines(&["a", "...", "z"]),
        &["a", "b", "c", "z"]
    ));
    assert!(!output_matches(&lines(&["a", "...", "z"]), &["a", "b"]));
    assert!(
        !output_matches(&lines(&["a"]), &["a", "b"]),
        "extra output is a difference"
    );
}
