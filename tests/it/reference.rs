//! The generated reference pages (issue 20, item 1): `docs/reference/cli.md`
//! and `docs/reference/config.md` are exactly what `pinfleet reference cli`
//! and `pinfleet reference config` print now, so a changed command, option,
//! default or config key fails here until the page is regenerated.

use std::process::Command;

use crate::support::repo_path;

/// What `pinfleet reference <page>` prints.
fn generated(page: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .args(["reference", page])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pinfleet reference {page}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Fails naming the first differing line and the command that fixes it.
fn assert_committed_is_generated(page: &str) {
    let path = format!("docs/reference/{page}.md");
    let committed = std::fs::read_to_string(repo_path(&path)).unwrap_or_default();
    let now = generated(page);
    if committed == now {
        return;
    }
    let line = committed
        .lines()
        .zip(now.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| committed.lines().count().min(now.lines().count()));
    panic!(
        "{path} is stale (first difference at line {}: committed {:?}, generated {:?}): \
         run `cargo run -- reference {page} > {path}`",
        line + 1,
        committed.lines().nth(line).unwrap_or("<end>"),
        now.lines().nth(line).unwrap_or("<end>"),
    );
}

#[test]
fn committed_cli_reference_is_what_the_command_tree_generates() {
    assert_committed_is_generated("cli");
}

#[test]
fn committed_config_reference_is_what_the_config_types_generate() {
    assert_committed_is_generated("config");
    assert_eq!(generated("config"), pinfleet::config::reference_markdown());
}

#[test]
fn cli_reference_has_a_section_for_every_visible_command_and_no_help_or_hidden_ones() {
    let md = generated("cli");
    for heading in [
        "## pinfleet\n",
        "## pinfleet init\n",
        "## pinfleet state export\n",
        "## pinfleet cluster publish\n",
        "## pinfleet reference config\n",
    ] {
        assert!(md.contains(heading), "{heading:?} missing");
        let name = heading.trim_start_matches("## ").trim_end();
        let anchor = name.replace(' ', "-");
        assert!(
            md.contains(&format!("- [{name}](#{anchor})")),
            "{name} not in the contents"
        );
    }
    assert!(
        !md.contains(" help\n"),
        "clap's help subcommands are listed"
    );
    // `add -r` is hidden (accepted for ipfs-cluster-ctl, does nothing).
    assert!(
        !md.contains("Directories are always added recursively"),
        "a hidden argument is listed"
    );
    // Defaults and environment variables come from the parser.
    assert!(md.contains("Default: `http://127.0.0.1:9094`. Environment: `PINFLEET_HOST`."));
}
