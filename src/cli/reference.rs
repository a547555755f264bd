//! `pinfleet reference cli|config`: the generated reference pages
//! (`docs/reference/cli.md`, `docs/reference/config.md`) printed as
//! Markdown. The CLI page is read off clap's `Command` tree, so every
//! command, argument, default, environment variable and possible value on
//! it is the parser's own; hidden commands and arguments are left out.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Arg, ArgAction, CommandFactory, Subcommand};
use pinfleet::markdown;

/// Which page.
#[derive(Debug, Subcommand)]
pub enum ReferenceCommand {
    /// Every command, its arguments and options (`docs/reference/cli.md`).
    Cli,
    /// Every service.toml section and key (`docs/reference/config.md`).
    Config,
}

pub fn run(command: ReferenceCommand) -> anyhow::Result<ExitCode> {
    match command {
        ReferenceCommand::Cli => print!("{}", cli_markdown()),
        ReferenceCommand::Config => print!("{}", pinfleet::config::reference_markdown()),
    }
    Ok(ExitCode::SUCCESS)
}

/// The CLI reference page.
pub fn cli_markdown() -> String {
    page(super::Cli::command())
}

/// The reference page of the command tree under `root`.
fn page(mut root: clap::Command) -> String {
    let bin = root.get_name().to_owned();
    // Sets every subcommand's full name (`pinfleet state export`) and adds
    // the help and version flags, as parsing does.
    root.build();
    let mut commands = Vec::new();
    collect(&mut root, 0, &mut commands);

    let mut md = format!("# {bin} command-line reference\n\n");
    md.push_str(
        "Generated from the code by `pinfleet reference cli`; do not edit. A test fails when it \
         drifts.\n\n\
         Every command takes `-h`/`--help` (`--help` shows the long text below) and \
         `-V`/`--version`; `pinfleet help COMMAND...` prints the same as `--help`. Exit codes: 0 success, 1 a completed run whose answer is \"no\" \
         (invalid, differs, refused; each command says when), 2 a usage or runtime error. \
         Commands that talk to a peer take `--host` (default `http://127.0.0.1:9094`) and \
         its credentials, also from the environment variables shown. The configuration file's keys \
         are in [config.md](config.md).\n\n## Contents\n\n",
    );
    for page in &commands {
        let _ = writeln!(
            md,
            "{}- [{}](#{})",
            "  ".repeat(page.depth),
            page.name,
            markdown::anchor(&page.name)
        );
    }
    for page in &commands {
        md.push('\n');
        md.push_str(&page.text);
    }
    md
}

/// One command's section.
struct Page {
    /// Its full name, `pinfleet state export`: the heading.
    name: String,
    /// Subcommand depth (0 for `pinfleet`), for the contents' indent.
    depth: usize,
    /// The section's Markdown, heading included.
    text: String,
}

/// `cmd`'s section, then its visible subcommands', depth first in
/// declaration order.
fn collect(cmd: &mut clap::Command, depth: usize, out: &mut Vec<Page>) {
    let name = cmd
        .get_bin_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned();
    let mut md = format!("## {name}\n\n");
    if let Some(about) = cmd.get_long_about().or_else(|| cmd.get_about()) {
        md.push_str(&paragraphs(&about.to_string(), ""));
        md.push_str("\n\n");
    }
    let usage = cmd.render_usage().to_string();
    let _ = write!(md, "```text\n{}\n```\n", usage.trim_end());

    let subcommands: Vec<(String, String)> = cmd
        .get_subcommands()
        .filter(|s| listed(s))
        .map(|s| {
            let full = s.get_bin_name().unwrap_or_else(|| s.get_name());
            let about = s.get_about().map(|a| a.to_string()).unwrap_or_default();
            (
                format!("[`{}`](#{})", s.get_name(), markdown::anchor(full)),
                markdown::cell(&about),
            )
        })
        .collect();
    if !subcommands.is_empty() {
        md.push_str("\n| command | what it does |\n|---|---|\n");
        for (link, about) in &subcommands {
            let _ = writeln!(md, "| {link} | {about} |");
        }
    }

    let visible: Vec<&Arg> = cmd.get_arguments().filter(|a| shown(a)).collect();
    let positionals: Vec<&Arg> = visible
        .iter()
        .copied()
        .filter(|a| a.is_positional())
        .collect();
    let options: Vec<&Arg> = visible
        .iter()
        .copied()
        .filter(|a| !a.is_positional())
        .collect();
    for (title, args) in [("Arguments", positionals), ("Options", options)] {
        if args.is_empty() {
            continue;
        }
        let _ = write!(md, "\n{title}:\n\n");
        for arg in args {
            md.push_str(&argument(arg));
        }
    }
    out.push(Page {
        name,
        depth,
        text: md,
    });
    for sub in cmd.get_subcommands_mut() {
        if listed(sub) {
            collect(sub, depth + 1, out);
        }
    }
}

/// A subcommand with a section: not hidden, and not the `help`
/// subcommand clap adds to every command with subcommands (it prints the
/// `--help` of the command it names; the page's header says so once).
fn listed(cmd: &clap::Command) -> bool {
    !cmd.is_hide_set() && cmd.get_name() != "help"
}

/// Listed: not hidden, and not the help and version flags every command
/// has (the page's header names them once).
fn shown(arg: &Arg) -> bool {
    !arg.is_hide_set()
        && !matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        )
}

/// One list item: the flag or value as in `--help`, its long help, then
/// its default, possible values and environment variable.
fn argument(arg: &Arg) -> String {
    let mut flag = arg.to_string();
    if let (Some(short), Some(_)) = (arg.get_short(), arg.get_long()) {
        flag = format!("-{short}, {flag}");
    }
    let mut item = format!("- `{flag}`");
    let help = arg
        .get_long_help()
        .or_else(|| arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    if !help.is_empty() {
        let _ = write!(item, ": {}", paragraphs(&help, "  "));
    }
    let mut facts = Vec::new();
    if arg.is_required_set() && !arg.is_positional() {
        facts.push("Required.".to_owned());
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| markdown::code(&v.to_string_lossy()))
        .collect();
    if !defaults.is_empty() && !arg.is_hide_default_value_set() && takes_value(arg) {
        facts.push(format!("Default: {}.", defaults.join(", ")));
    }
    if !arg.is_hide_possible_values_set() && takes_value(arg) {
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| match v.get_help() {
                Some(help) => format!(
                    "{} ({})",
                    markdown::code(v.get_name()),
                    markdown::text(&help.to_string())
                ),
                None => markdown::code(v.get_name()),
            })
            .collect();
        if !values.is_empty() {
            facts.push(format!("Possible values: {}.", values.join(", ")));
        }
    }
    if let Some(env) = arg.get_env().filter(|_| !arg.is_hide_env_set()) {
        facts.push(format!(
            "Environment: {}.",
            markdown::code(&env.to_string_lossy())
        ));
    }
    if !facts.is_empty() {
        let sep = if help.is_empty() { ": " } else { " " };
        let _ = write!(item, "{sep}{}", facts.join(" "));
    }
    item.push('\n');
    item
}

/// Whether `arg` takes a value (a flag's `false` default is not shown).
fn takes_value(arg: &Arg) -> bool {
    arg.get_action().takes_values()
}

/// Help text (paragraphs separated by blank lines) as Markdown, each line
/// after the first indented by `indent` (to stay inside a list item), the
/// last sentence ended with the full stop clap drops from one-paragraph
/// help.
fn paragraphs(text: &str, indent: &str) -> String {
    let mut text = text.trim().to_owned();
    if text.ends_with(|c: char| c.is_alphanumeric() || c == ')' || c == '`') {
        text.push('.');
    }
    text.split("\n\n")
        .map(|p| {
            p.lines()
                .map(|l| markdown::text(l.trim()))
                .collect::<Vec<_>>()
                .join(&format!("\n{indent}"))
        })
        .collect::<Vec<_>>()
        .join(&format!("\n\n{indent}"))
}

#[cfg(test)]
mod tests {
    use clap::{Arg, ArgAction, Command};

    use super::*;

    fn tool() -> Command {
        Command::new("tool").about("A tool.").subcommand(
            Command::new("run")
                .about("Run it")
                .long_about("Run it.\n\nTwice if <N> is *2*.")
                .arg(
                    Arg::new("mode")
                        .long("mode")
                        .short('m')
                        .help("How to run")
                        .value_parser(["fast", "slow"])
                        .default_value("fast")
                        .env("TOOL_MODE"),
                )
                .arg(
                    Arg::new("quiet")
                        .long("quiet")
                        .action(ArgAction::SetTrue)
                        .help("Say less"),
                )
                .arg(Arg::new("secret").long("secret").hide(true))
                .arg(
                    Arg::new("paths")
                        .value_name("PATH")
                        .num_args(1..)
                        .required(true)
                        .help("Inputs"),
                )
                .subcommand(Command::new("later").hide(true))
                .subcommand(Command::new("now").about("Now")),
        )
    }

    #[test]
    fn a_command_tree_becomes_contents_and_one_section_per_visible_command() {
        let md = page(tool());
        assert!(md.starts_with("# tool command-line reference\n"), "{md}");
        assert!(
            md.contains("\n- [tool](#tool)\n  - [tool run](#tool-run)\n    - [tool run now](#tool-run-now)\n"),
            "{md}"
        );
        assert!(
            md.contains("## tool run\n\nRun it.\n\nTwice if &lt;N&gt; is \\*2\\*.\n\n```text\nUsage: tool run [OPTIONS] <PATH>... [COMMAND]\n```\n"),
            "{md}"
        );
        assert!(md.contains("| [`now`](#tool-run-now) | Now |"), "{md}");
        assert!(
            md.contains("Arguments:\n\n- `<PATH>...`: Inputs.\n"),
            "{md}"
        );
        assert!(
            md.contains(
                "- `-m, --mode <mode>`: How to run. Default: `fast`. \
                 Possible values: `fast`, `slow`. Environment: `TOOL_MODE`.\n"
            ),
            "{md}"
        );
        // A flag's implicit `false` default is not shown.
        assert!(md.contains("- `--quiet`: Say less.\n"), "{md}");
        for absent in [
            "secret",
            "later",
            "## tool help",
            "## tool run help",
            "- `-h, --help`",
        ] {
            assert!(!md.contains(absent), "{absent} listed:\n{md}");
        }
    }
}
