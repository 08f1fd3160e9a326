//! The output layer: everything a user sees goes through one [`Sink`].
//!
//! Commands build values (facts, reports) and hand them to [`Ui`], which decides on colour,
//! verbosity and format (`human` or `json`) and writes through its sink. The library itself
//! never touches stdout or stderr: the binary (`src/main.rs`) gives the sink that does; tests
//! give [`MemorySink`].

use std::sync::{Arc, Mutex};

use console::Style;
use serde::Serialize;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Tables and progress for people.
    #[default]
    Human,
    /// Machine-readable JSON on stdout.
    Json,
}

/// When to use colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

/// Where text goes: results and workflow commands (`out`, stdout for the binary), notes for
/// people (`err`, stderr).
pub trait Sink: Send + Sync {
    /// Writes `text` and a line break (unless it ends with one) to the result stream.
    fn out(&self, text: &str);
    /// Writes `text` and a line break (unless it ends with one) to the notes stream.
    fn err(&self, text: &str);
    /// Whether the notes stream is a terminal (spinners and colours make sense there).
    fn is_terminal(&self) -> bool {
        false
    }
    /// Where live progress bars draw, when the notes stream is a terminal.
    fn progress_target(&self) -> Option<indicatif::ProgressDrawTarget> {
        None
    }
    /// Writes workflow commands we mean to give the runner (annotations, groups, masks) to
    /// the result stream: the one way past an [`InertSink`].
    fn command_out(&self, text: &str) {
        self.out(text);
    }
    /// As [`Sink::command_out`], to the notes stream (when stdout carries JSON).
    fn command_err(&self, text: &str) {
        self.err(text);
    }
}

/// A zero-width space: invisible in the log, and not whitespace to the runner (.NET's
/// `TrimStart` keeps it), so it breaks a command prefix without changing what people read.
const BREAK: char = '\u{200B}';

/// `text` with no line the GitHub Actions runner would take as a workflow command: the runner
/// takes a line whose first non-blank characters are `::` (`::name::data`), and the old
/// `##[name]data` syntax anywhere in a line. Both are broken with a zero-width space
/// (`:\u{200B}:`, `#\u{200B}#[`); all other text is left as it is.
pub fn inert(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // Each `\r` may end a line for the runner too: treat the pieces alike.
        for (j, piece) in line.split('\r').enumerate() {
            if j > 0 {
                out.push('\r');
            }
            inert_piece(piece, &mut out);
        }
    }
    out
}

fn inert_piece(line: &str, out: &mut String) {
    let body = line.trim_start();
    let lead = &line[..line.len() - body.len()];
    out.push_str(lead);
    let mut rest = body;
    if let Some(after) = rest.strip_prefix("::") {
        out.push(':');
        out.push(BREAK);
        out.push(':');
        rest = after;
    }
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        // `#` followed by `#[`: break the pair (`###[` becomes `##\u{200B}#[`).
        if c == '#' && chars.peek() == Some(&'#') {
            let mut ahead = chars.clone();
            ahead.next();
            if ahead.peek() == Some(&'[') {
                out.push(BREAK);
            }
        }
    }
}

/// JSON text with the old `##[` command syntax escaped as `#\u0023[`: the same JSON value
/// (a `#` only occurs inside strings), but no line the runner takes as a command. (A JSON
/// line never starts with `::`.)
pub fn inert_json(json: &str) -> String {
    if json.contains("##[") {
        json.replace("##[", "#\\u0023[")
    } else {
        json.to_string()
    }
}

/// Makes everything written through it inert for the GitHub Actions runner ([`inert`]),
/// except the workflow commands given to [`Sink::command_out`]/[`Sink::command_err`]. In
/// Actions, every command's sink is wrapped in one, so no text from a build, a registry, a
/// file or a variable can become a workflow command wherever it is printed.
pub struct InertSink(pub Arc<dyn Sink>);

impl Sink for InertSink {
    fn out(&self, text: &str) {
        self.0.out(&inert(text));
    }

    fn err(&self, text: &str) {
        self.0.err(&inert(text));
    }

    fn is_terminal(&self) -> bool {
        self.0.is_terminal()
    }

    fn progress_target(&self) -> Option<indicatif::ProgressDrawTarget> {
        self.0.progress_target()
    }

    fn command_out(&self, text: &str) {
        self.0.command_out(text);
    }

    fn command_err(&self, text: &str) {
        self.0.command_err(text);
    }
}

/// Collects the text in memory (tests, and views rendered for files).
#[derive(Default)]
pub struct MemorySink {
    pub out: Mutex<String>,
    pub err: Mutex<String>,
}

impl MemorySink {
    pub fn out_text(&self) -> String {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn err_text(&self) -> String {
        self.err.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn push_line(buf: &Mutex<String>, text: &str) {
    let mut buf = buf.lock().unwrap_or_else(|e| e.into_inner());
    buf.push_str(text);
    if !text.ends_with('\n') {
        buf.push('\n');
    }
}

impl Sink for MemorySink {
    fn out(&self, text: &str) {
        push_line(&self.out, text);
    }

    fn err(&self, text: &str) {
        push_line(&self.err, text);
    }
}

/// Discards everything.
pub struct NullSink;

impl Sink for NullSink {
    fn out(&self, _: &str) {}
    fn err(&self, _: &str) {}
}

/// Where and how to show things to the user.
#[derive(Clone)]
pub struct Ui {
    pub format: OutputFormat,
    pub color: bool,
    pub quiet: bool,
    pub verbose: u8,
    pub sink: Arc<dyn Sink>,
}

impl std::fmt::Debug for Ui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ui")
            .field("format", &self.format)
            .field("color", &self.color)
            .field("quiet", &self.quiet)
            .field("verbose", &self.verbose)
            .finish_non_exhaustive()
    }
}

impl Default for Ui {
    /// Human output without colour into a [`NullSink`] (for rendering only).
    fn default() -> Ui {
        Ui {
            format: OutputFormat::Human,
            color: false,
            quiet: false,
            verbose: 0,
            sink: Arc::new(NullSink),
        }
    }
}

impl Ui {
    /// A `Ui` writing to `sink`; `color` is decided from `choice`, `NO_COLOR` and whether the
    /// sink is a terminal.
    pub fn new(
        sink: Arc<dyn Sink>,
        format: OutputFormat,
        choice: ColorChoice,
        no_color_env: bool,
        quiet: bool,
        verbose: u8,
    ) -> Ui {
        Ui {
            format,
            color: use_color(choice, no_color_env, sink.is_terminal()),
            quiet,
            verbose,
            sink,
        }
    }

    /// Prints a result (the command's main output) on stdout.
    pub fn result(&self, text: &str) {
        self.sink.out(text);
    }

    /// A progress note on stderr (not with --quiet).
    pub fn note(&self, text: &str) {
        if !self.quiet {
            self.sink.err(&self.dim(text));
        }
    }

    /// A warning on stderr (not with --quiet).
    pub fn warn(&self, text: &str) {
        self.note(&format!("warning: {text}"));
    }

    /// A detail shown only with `-v`.
    pub fn detail(&self, text: &str) {
        if self.verbose > 0 && !self.quiet {
            self.sink.err(&self.dim(text));
        }
    }

    /// Prints a value as pretty JSON on stdout.
    pub fn json<T: Serialize>(&self, value: &T) {
        match serde_json::to_string_pretty(value) {
            Ok(text) => self.sink.out(&inert_json(&text)),
            Err(err) => self.sink.err(&format!(
                "error: cannot serialize the result as JSON: {err}"
            )),
        }
    }

    /// Prints an error, with its causes on the same line and a `help:` line when there is one.
    pub fn error(&self, err: &(dyn std::error::Error + 'static), help: Option<&str>) {
        self.sink.err(&format!(
            "{} {}",
            self.paint(&Style::new().red().bold(), "error:"),
            Chain(err)
        ));
        if let Some(help) = help {
            self.sink.err(&format!(
                "{} {help}",
                self.paint(&Style::new().cyan().bold(), "help:")
            ));
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

/// Formats an error chain on one line: "outer: inner: innermost".
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            let text = err.to_string();
            if !self.0.to_string().contains(&text) {
                write!(f, ": {text}")?;
            }
            source = err.source();
        }
        Ok(())
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
        let ui = Ui::default();
        assert_eq!(ui.bad("x"), "x");
        let ui = Ui { color: true, ..ui };
        assert_ne!(ui.bad("x"), "x");
        assert!(ui.bad("x").contains('x'));
    }

    #[test]
    fn issue17_inert_breaks_both_command_syntaxes_and_nothing_else() {
        assert_eq!(inert("::error::x"), ":\u{200B}:error::x");
        assert_eq!(inert("  \t::warning::x"), "  \t:\u{200B}:warning::x");
        assert_eq!(inert("a ##[error]x"), "a #\u{200B}#[error]x");
        assert_eq!(inert("###[x]"), "##\u{200B}#[x]");
        assert_eq!(
            inert("ok\r::error::x\n##[y]"),
            "ok\r:\u{200B}:error::x\n#\u{200B}#[y]"
        );
        for plain in [
            "warning: a::b",
            "# title",
            "#[attr]",
            "x::y",
            "  │ line",
            "",
        ] {
            assert_eq!(inert(plain), plain);
        }
        let json = serde_json::to_string(&serde_json::json!({"m": "##[set-output]x"})).unwrap();
        let escaped = inert_json(&json);
        assert!(!escaped.contains("##["), "{escaped}");
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["m"], "##[set-output]x");
    }

    #[test]
    fn issue17_inert_sink_lets_only_commands_through() {
        let mem = Arc::new(MemorySink::default());
        let sink = InertSink(mem.clone());
        sink.out("::error::from a build");
        sink.command_out("::error title=t::ours");
        sink.err("##[warning]from a registry");
        sink.command_err("::debug::ours");
        assert_eq!(
            mem.out_text(),
            ":\u{200B}:error::from a build\n::error title=t::ours\n"
        );
        assert_eq!(
            mem.err_text(),
            "#\u{200B}#[warning]from a registry\n::debug::ours\n"
        );
    }

    #[test]
    fn notes_respect_quiet_and_results_do_not() {
        let sink = Arc::new(MemorySink::default());
        let ui = Ui {
            quiet: true,
            sink: sink.clone(),
            ..Ui::default()
        };
        ui.note("hidden");
        ui.result("shown");
        assert_eq!(sink.out_text(), "shown\n");
        assert_eq!(sink.err_text(), "");
    }
}
