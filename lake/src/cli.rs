//! Command-line errors on one line (SPEC §6: "a one-line error and non-zero exit on bad
//! input"): clap's multi-line usage errors are folded into one line for every binary.

/// Whether log lines may carry ANSI colours: only when standard error is a terminal and
/// `NO_COLOR` is unset or empty (https://no-color.org). Logs piped to a file, journald or
/// CI stay plain text.
pub fn log_ansi() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Parses the command line of a binary; bad input is a one-line error and exit code 2
/// (help and version print as usual).
pub fn parse<T: clap::Parser>() -> T {
    use clap::error::ErrorKind;
    T::try_parse().unwrap_or_else(|e| match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => e.exit(),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("{}", missing_subcommand(&e.render().to_string()));
            std::process::exit(2)
        }
        _ => {
            eprintln!("{}", one_line(&e.render().to_string()));
            std::process::exit(2)
        }
    })
}

/// Folds a rendered clap error into one line: its message lines joined, without the
/// `Usage:` block and the `--help` hint (which is appended once, short).
pub fn one_line(rendered: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let mut in_usage = false;
    for line in rendered.lines() {
        let t = line.trim();
        if t.starts_with("Usage:") {
            in_usage = true;
            continue;
        }
        if t.is_empty() {
            in_usage = false;
            continue;
        }
        if in_usage || t.starts_with("For more information") {
            continue;
        }
        parts.push(t);
    }
    let mut out = parts.join(" ");
    if !out.starts_with("error:") {
        out = format!("error: {out}");
    }
    out.push_str(" (see --help)");
    out
}

/// The message for a missing subcommand, from the help clap would print instead: the
/// command path of its `Usage:` line and the names under `Commands:`.
pub fn missing_subcommand(rendered_help: &str) -> String {
    let path = rendered_help
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(|u| u.split(" [").next().unwrap_or(u).split(" <").next().unwrap_or(u).to_string())
        .unwrap_or_default();
    let subs: Vec<&str> = rendered_help
        .lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .collect();
    format!("error: {path} needs a subcommand: {} (see --help)", subs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_usage_errors() {
        let rendered = "error: the following required arguments were not provided:\n  --date <DATE>\n\nUsage: pipeline run --date <DATE>\n\nFor more information, try '--help'.\n";
        assert_eq!(one_line(rendered), "error: the following required arguments were not provided: --date <DATE> (see --help)");
        let help = "Manage offers\n\nUsage: collector offers <COMMAND>\n\nCommands:\n  add   Add an offer\n  list  List offers\n  help  Print this\n\nOptions:\n  -h\n";
        assert_eq!(missing_subcommand(help), "error: collector offers needs a subcommand: add, list (see --help)");
        assert_eq!(one_line("error: unexpected argument '--x' found\n\n  tip: to pass '--x' as a value, use '-- --x'\n\nUsage: q\n"), "error: unexpected argument '--x' found tip: to pass '--x' as a value, use '-- --x' (see --help)");
    }
}
