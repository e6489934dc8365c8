//! Manual pages, generated: `ovslab(1)` from the command line's own
//! definitions (every subcommand, its arguments, its long help and exit
//! status), and `ovslab-topology(5)` from `docs/topology.md` (compiled in),
//! so neither can drift from what `--help` and the docs say. `ovslabd(8)`
//! is the daemon's own (`ovslabd --man-page`). `make man` writes them.

use clap::{Arg, Command, CommandFactory};
use roff::{Inline, Roff, bold, italic, roman};

use crate::Cli;

/// The topology format's page, as the repository documents it.
const TOPOLOGY_MD: &str = include_str!("../../../docs/topology.md");

/// What every page starts with: man-db reads the encoding from it.
const PREAMBLE: &str = ".\\\" -*- coding: UTF-8 -*-\n";

/// `ovslab(1)`.
pub fn ovslab_page() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let mut r = Roff::new();
    title(&mut r, "OVSLAB", "1");
    r.control("SH", ["NAME"]);
    r.text([roman(format!(
        "ovslab - {}",
        cmd.get_about().map(|a| a.to_string()).unwrap_or_default()
    ))]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([
        bold("ovslab"),
        roman(" ["),
        bold("--socket"),
        roman(" "),
        italic("PATH"),
        roman("] "),
        italic("COMMAND"),
        roman(" …"),
    ]);
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(
        "ovslab builds OpenStack Neutron \"classic Open vSwitch\" labs on one Linux host: \
         the network node and each compute node are network namespaces running their own \
         Open vSwitch, instances and routers are namespaces wired as Neutron's agents wire \
         them. The daemon, ",
    ), bold("ovslabd"), roman("(8), owns every lab; this command asks it over its socket, and validates topology files ("), bold("ovslab-topology"), roman("(5)) itself.")]);
    r.control("PP", []);
    r.text([
        roman(
            "A command that takes a lab (LAB, or --lab LAB) and is given none uses the only lab \
         running; when several run it lists them and exits 2 (ui opens the first, and its page \
         lists the others); when none runs it says so and exits 1. ",
        ),
        bold("up"),
        roman(" builds the seed lab when given nothing."),
    ]);
    r.control("PP", []);
    r.text([roman(
        "Output meant for people is plain text when it is not a terminal, with no colour and \
         no progress, and never has colour when NO_COLOR is set. The commands that report (up, \
         down, status, check, trace, validate) print JSON with --json; each command's section \
         says its shape.",
    )]);
    r.control("SH", ["OPTIONS"]);
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        argument(&mut r, arg);
    }
    r.control("SH", ["COMMANDS"]);
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        subcommand(&mut r, sub, "ovslab");
    }
    r.control("SH", ["EXIT STATUS"]);
    paragraphs(
        &mut r,
        cmd.get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default()
            .as_str(),
    );
    r.control("SH", ["ENVIRONMENT"]);
    r.control("TP", []);
    r.text([bold("OVSLAB_SOCKET")]);
    r.text([roman(
        "The daemon's socket, as --socket (default /run/ovslab/ovslabd.sock).",
    )]);
    r.control("TP", []);
    r.text([bold("NO_COLOR")]);
    r.text([roman(
        "When set to anything but the empty string: no colour, even on a terminal.",
    )]);
    r.control("SH", ["FILES"]);
    r.control("TP", []);
    r.text([italic("/run/ovslab/ovslabd.sock")]);
    r.text([roman(
        "The daemon's API socket: root and members of the group ovslab may use it.",
    )]);
    r.control("TP", []);
    r.text([italic("/etc/ovslab/labs/*.yaml")]);
    r.text([roman(
        "The labs the service brings up at start and on reload.",
    )]);
    r.control("TP", []);
    r.text([italic("/usr/share/ovslab/topology.schema.json")]);
    r.text([roman(
        "The topology files' JSON Schema (what ovslab schema prints).",
    )]);
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("ovslabd"),
        roman("(8), "),
        bold("ovslab-topology"),
        roman("(5), "),
        bold("ovs-vsctl"),
        roman("(8), "),
        bold("ovs-ofctl"),
        roman("(8), "),
        bold("ip-netns"),
        roman("(8)"),
    ]);
    format!("{PREAMBLE}{}", r.render())
}

fn title(r: &mut Roff, name: &str, section: &str) {
    r.control(
        "TH",
        [
            name,
            section,
            "",
            &format!("ovslab {}", env!("CARGO_PKG_VERSION")),
            "ovslab manual",
        ],
    );
}

/// One subcommand: `.SS` with its usage, its long help, its arguments and
/// its after-help (exit status, examples); nested subcommands after it.
fn subcommand(r: &mut Roff, cmd: &Command, parent: &str) {
    let name = format!("{parent} {}", cmd.get_name());
    if cmd.has_subcommands() {
        r.control("SS", [name.as_str()]);
        paragraphs(r, &long_about(cmd));
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            subcommand(r, sub, &name);
        }
        if let Some(after) = cmd.get_after_long_help().or(cmd.get_after_help()) {
            paragraphs(r, &after.to_string());
        }
        return;
    }
    r.control("SS", [name.as_str()]);
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage);
    r.control("nf", []);
    for line in usage.lines() {
        r.text([bold(line.trim())]);
    }
    r.control("fi", []);
    r.control("PP", []);
    paragraphs(r, &long_about(cmd));
    let args: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|a| {
            !a.is_hide_set()
                && !a.is_global_set()
                && !matches!(a.get_id().as_str(), "help" | "version")
        })
        .collect();
    if !args.is_empty() {
        r.control("RS", ["4"]);
        for arg in args {
            argument(r, arg);
        }
        r.control("RE", []);
    }
    if let Some(after) = cmd.get_after_long_help().or(cmd.get_after_help()) {
        r.control("PP", []);
        paragraphs(r, &after.to_string());
    }
}

fn long_about(cmd: &Command) -> String {
    cmd.get_long_about()
        .or(cmd.get_about())
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// One option or positional argument as a tagged paragraph.
fn argument(r: &mut Roff, arg: &Arg) {
    let value = arg
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    let mut tag: Vec<Inline> = Vec::new();
    if arg.is_positional() {
        tag.push(italic(value));
    } else {
        if let Some(short) = arg.get_short() {
            tag.push(bold(format!("-{short}")));
            if arg.get_long().is_some() {
                tag.push(roman(", "));
            }
        }
        if let Some(long) = arg.get_long() {
            tag.push(bold(format!("--{long}")));
        }
        if arg.get_action().takes_values() {
            tag.push(roman(" "));
            tag.push(italic(value));
        }
    }
    r.control("TP", []);
    r.text(tag);
    let mut help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_string())
        .collect();
    if !possible.is_empty() && !matches!(arg.get_action(), clap::ArgAction::SetTrue) {
        help.push_str(&format!(" One of: {}.", possible.join(", ")));
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && arg.get_action().takes_values() {
        help.push_str(&format!(" Default: {}.", defaults.join(", ")));
    }
    if let Some(env) = arg.get_env() {
        help.push_str(&format!(" Environment: {}.", env.to_string_lossy()));
    }
    let help = end_sentence(help.trim());
    paragraphs(r, &help);
}

/// A help text as a sentence: clap's one-line helps have no full stop.
fn end_sentence(help: &str) -> String {
    let mut help = help.to_string();
    if let Some(first) = help
        .find(" One of: ")
        .or(help.find(" Default: "))
        .or(help.find(" Environment: "))
    {
        if !help[..first].ends_with(['.', ':', ')']) {
            help.insert(first, '.');
        }
    } else if !help.is_empty() && !help.ends_with(['.', ':', ')']) {
        help.push('.');
    }
    help
}

/// Text from a help string: paragraphs apart by blank lines; within one,
/// lines indented by two spaces (examples, exit codes) kept as they are.
fn paragraphs(r: &mut Roff, text: &str) {
    let mut first = true;
    for paragraph in text.split("\n\n") {
        if paragraph.trim().is_empty() {
            continue;
        }
        if !first {
            r.control("PP", []);
        }
        first = false;
        let mut literal = false;
        for line in paragraph.lines() {
            let indented = line.starts_with("  ");
            if indented && !literal {
                r.control("RS", ["2"]);
                r.control("nf", []);
                literal = true;
            } else if !indented && literal {
                r.control("fi", []);
                r.control("RE", []);
                literal = false;
            }
            r.text([roman(if indented { line.trim_start() } else { line })]);
        }
        if literal {
            r.control("fi", []);
            r.control("RE", []);
        }
    }
}

/// `ovslab-topology(5)`: docs/topology.md as a manual page.
pub fn topology_page() -> String {
    markdown_page(
        "OVSLAB-TOPOLOGY",
        "5",
        "ovslab-topology - the topology file of an ovslab lab",
        TOPOLOGY_MD,
    )
}

/// A Markdown document as a manual page: `#` is the page's title (left
/// out), `##` sections, `###` subsections, paragraphs, `-` lists, fenced
/// code kept as it is, and tables as one tagged paragraph per row (the
/// first cell the tag). Inline `code` and **strong** are bold; links keep
/// their text.
fn markdown_page(name: &str, section: &str, what: &str, markdown: &str) -> String {
    let mut r = Roff::new();
    title(&mut r, name, section);
    r.control("SH", ["NAME"]);
    r.text([roman(what)]);
    r.control("SH", ["DESCRIPTION"]);
    let mut lines = markdown.lines().peekable();
    let mut paragraph: Vec<String> = Vec::new();
    let flush = |r: &mut Roff, paragraph: &mut Vec<String>| {
        if !paragraph.is_empty() {
            r.text(inline(&paragraph.join(" ")));
            paragraph.clear();
        }
    };
    let mut in_list = false;
    while let Some(line) = lines.next() {
        if line.starts_with("# ") {
            continue;
        }
        if let Some(heading) = line.strip_prefix("## ") {
            flush(&mut r, &mut paragraph);
            in_list = false;
            r.control("SH", [heading.to_uppercase().as_str()]);
            continue;
        }
        if let Some(heading) = line.strip_prefix("### ") {
            flush(&mut r, &mut paragraph);
            in_list = false;
            r.control("SS", [heading]);
            continue;
        }
        if line.starts_with("```") {
            flush(&mut r, &mut paragraph);
            in_list = false;
            r.control("PP", []);
            r.control("RS", ["2"]);
            r.control("nf", []);
            for code in lines.by_ref() {
                if code.starts_with("```") {
                    break;
                }
                r.text([roman(code)]);
            }
            r.control("fi", []);
            r.control("RE", []);
            continue;
        }
        if line.starts_with('|') {
            flush(&mut r, &mut paragraph);
            in_list = false;
            let mut rows = vec![line];
            while let Some(next) = lines.next_if(|l| l.starts_with('|')) {
                rows.push(next);
            }
            table(&mut r, &rows);
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut r, &mut paragraph);
            continue;
        }
        if let Some(item) = line.strip_prefix("- ") {
            flush(&mut r, &mut paragraph);
            r.control("IP", ["\\(bu", "2"]);
            paragraph.push(item.to_string());
            in_list = true;
            continue;
        }
        if !in_list && paragraph.is_empty() {
            r.control("PP", []);
        }
        paragraph.push(line.trim().to_string());
    }
    flush(&mut r, &mut paragraph);
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("ovslab"),
        roman("(1), "),
        bold("ovslabd"),
        roman("(8)"),
    ]);
    format!("{PREAMBLE}{}", r.render())
}

/// A Markdown table: the header names the columns; each row becomes a
/// tagged paragraph, its first cell the tag, the others `column: text`.
fn table(r: &mut Roff, rows: &[&str]) {
    let cells = |row: &str| -> Vec<String> {
        row.trim()
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().trim_matches('|').trim().to_string())
            .collect()
    };
    let header = cells(rows[0]);
    for row in rows.iter().skip(2) {
        let row = cells(row);
        r.control("TP", []);
        r.text(inline(&row[0]));
        let mut text = Vec::new();
        for (i, cell) in row.iter().enumerate().skip(1) {
            if cell.is_empty() || cell == "—" {
                continue;
            }
            if !text.is_empty() {
                text.push(roman("; "));
            }
            if header.len() > 2 {
                text.push(italic(format!(
                    "{}: ",
                    header.get(i).map_or("", |h| h.as_str())
                )));
            }
            text.extend(inline(cell));
        }
        r.text(text);
    }
}

/// Markdown inline text: `code` and **strong** bold, `[text](link)` its
/// text, the rest roman.
fn inline(text: &str) -> Vec<Inline> {
    let mut out = Vec::new();
    let mut plain = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '`'
            && let Some(end) = rest[1..].find('`')
        {
            out.push(roman(std::mem::take(&mut plain)));
            out.push(bold(&rest[1..1 + end]));
            rest = &rest[end + 2..];
            continue;
        }
        if rest.starts_with("**")
            && let Some(end) = rest[2..].find("**")
        {
            out.push(roman(std::mem::take(&mut plain)));
            out.push(bold(&rest[2..2 + end]));
            rest = &rest[end + 4..];
            continue;
        }
        if c == '['
            && let Some(close) = rest.find("](")
            && let Some(end) = rest[close..].find(')')
        {
            out.push(roman(std::mem::take(&mut plain)));
            out.extend(inline(&rest[1..close]));
            rest = &rest[close + end + 1..];
            continue;
        }
        plain.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.push(roman(plain));
    out.retain(|i| !matches!(i, Inline::Roman(s) if s.is_empty()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_its_section() {
        let page = ovslab_page();
        for sub in [
            "up",
            "down",
            "status",
            "exec",
            "check",
            "trace",
            "ui",
            "capture",
            "validate",
            "generate",
            "graph",
            "node fail",
            "node recover",
            "schema",
            "completions",
        ] {
            assert!(
                page.contains(&format!(".SS \"ovslab {sub}\"")),
                "{sub} missing"
            );
        }
        assert!(
            !page.contains("__complete"),
            "a hidden command is documented"
        );
        assert!(page.contains("Exit status"));
    }

    #[test]
    fn markdown_becomes_roff() {
        assert_eq!(
            inline("a `b-c` **d** [e](f.md) g"),
            [
                roman("a "),
                bold("b-c"),
                roman(" "),
                bold("d"),
                roman(" "),
                roman("e"),
                roman(" g")
            ]
        );
        let page = topology_page();
        assert!(page.contains(".SH \"A COMPLETE EXAMPLE\""), "{page}");
        assert!(page.contains("lab: seed"), "{page}");
    }
}
