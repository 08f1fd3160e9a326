//! The output layer: the only place that writes to the terminal.
//!
//! Commands build values (facts, reports) and hand them here; `Ui` decides on colour,
//! verbosity and format (`human` or `json`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::IsTerminal;

use console::Style;
use serde::Serialize;

use crate::cli::{ColorChoice, GlobalArgs, OutputFormat};
use crate::error::{Chain, Error};

/// Where and how to show things to the user.
#[derive(Debug, Clone)]
pub struct Ui {
    pub format: OutputFormat,
    pub color: bool,
    pub quiet: bool,
    pub verbose: u8,
}

impl Ui {
    pub fn from_cli(args: &GlobalArgs) -> Ui {
        let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Ui {
            format: args.output,
            color: use_color(args.color, no_color_env, std::io::stderr().is_terminal()),
            quiet: args.quiet,
            verbose: args.verbose,
        }
    }

    /// Prints a result (the command's main output) on stdout.
    pub fn result(&self, text: &str) {
        println!("{text}");
    }

    /// A progress note on stderr (not with --quiet).
    pub fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("{}", self.dim(text));
        }
    }

    /// Prints a value as pretty JSON on stdout.
    pub fn json<T: Serialize>(&self, value: &T) {
        match serde_json::to_string_pretty(value) {
            Ok(text) => println!("{text}"),
            Err(err) => eprintln!("error: cannot serialize the result as JSON: {err}"),
        }
    }

    /// Prints an error, with its causes on the same line and a `help:` line when there is one.
    pub fn error(&self, err: &Error) {
        eprintln!(
            "{} {}",
            self.paint(&Style::new().red().bold(), "error:"),
            Chain(err)
        );
        if let Some(help) = err.help() {
            eprintln!(
                "{} {help}",
                self.paint(&Style::new().cyan().bold(), "help:")
            );
        }
    }

    /// Applies a style when colours are on.
    pub fn paint(&self, style: &Style, text: &str) -> String {
        if self.color {
            style.clone().force_styling(true).apply_to(text).to_string()
        } else {
            text.to_string()
        }
    }

    pub fn good(&self, text: &str) -> String {
        self.paint(&Style::new().green(), text)
    }

    pub fn bad(&self, text: &str) -> String {
        self.paint(&Style::new().red(), text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint(&Style::new().dim(), text)
    }
}

/// Colour decision: `always`/`never` win; `auto` means a terminal and no NO_COLOR
/// (<https://no-color.org>: any non-empty value disables colour).
pub fn use_color(choice: ColorChoice, no_color_env: bool, is_terminal: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => is_terminal && !no_color_env,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_choice_follows_flag_then_no_color_then_terminal() {
        assert!(use_color(ColorChoice::Always, true, false));
        assert!(!use_color(ColorChoice::Never, false, true));
        assert!(use_color(ColorChoice::Auto, false, true));
        assert!(!use_color(ColorChoice::Auto, true, true));
        assert!(!use_color(ColorChoice::Auto, false, false));
    }

    #[test]
    fn paint_is_plain_without_colour() {
        let ui = Ui {
            format: OutputFormat::Human,
            color: false,
            quiet: false,
            verbose: 0,
        };
        assert_eq!(ui.bad("x"), "x");
        let ui = Ui { color: true, ..ui };
        assert_ne!(ui.bad("x"), "x");
        assert!(ui.bad("x").contains('x'));
    }
}
