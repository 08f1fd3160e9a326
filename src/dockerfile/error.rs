//! Why a Dockerfile cannot be parsed: [`DockerfileError`] for the file, with the line, and
//! the smaller errors of its parts ([`ExpansionError`] of the shell lexer, ...).

use crate::reference::ReferenceError;

/// A problem in a variable substitution (`$V`, `${V:-default}`, ...), as found by BuildKit's
/// `shell/lex.go`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpansionError {
    #[error("syntax error: missing '}}': close every `${{` with `}}`")]
    MissingBrace,
    #[error("syntax error: bad substitution: `${{` must be followed by a variable name")]
    BadSubstitution,
    #[error("syntax error: missing '/' in ${{}}: write `${{NAME/pattern/replacement}}`")]
    MissingSlash,
    #[error(
        "unsupported modifier ({0}) in substitution: use one of `:-` `-` `:+` `+` `:?` `?` `#` `##` `%` `%%` `/` `//`"
    )]
    UnsupportedModifier(String),
    #[error("unexpected end of statement while looking for matching {0}: close the quote")]
    Unterminated(&'static str),
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    #[error("variable substitutions are nested more than {MAX_NESTING} levels deep")]
    TooDeep,
    /// `${NAME?message}` with NAME unset, or `${NAME:?message}` with NAME unset or empty.
    #[error("{expr}: {name} is {}{}", if *unset { "unset" } else { "empty" }, optional_message(message))]
    Required {
        expr: String,
        name: String,
        unset: bool,
        message: String,
    },
}

fn optional_message(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// A parser directive (`# escape=`, `# syntax=`, `# check=`) that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    /// The same directive twice (keys are case-insensitive).
    #[error("only one {name} parser directive can be used: remove the repeated one")]
    Repeated { name: String },
    /// `# escape=` with something other than `\` or `` ` ``.
    #[error(
        "invalid escape token '{value}' does not match ` or \\: write `# escape=\\` or `# escape=``"
    )]
    InvalidEscape { value: String },
}

/// A `RUN --mount=` value that Go's `encoding/csv` cannot read as one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("EOF: the mount is empty, write e.g. `--mount=type=cache,target=/root/.cache`")]
    Empty,
    #[error("extraneous or missing \" in quoted-field")]
    ExtraneousQuote,
    #[error("bare \" in non-quoted-field")]
    BareQuote,
}

/// How deep `${A:-${B:-...}}` may nest before [`ExpansionError::TooDeep`] (upstream has no
/// limit; this one keeps hostile input from exhausting the stack).
pub const MAX_NESTING: usize = 64;

/// Why a Dockerfile cannot be parsed. Every variant with a line points at the instruction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerfileError {
    #[error("the Dockerfile has no instructions: it needs at least `FROM <image>`")]
    NoInstructions,
    #[error("the Dockerfile has no build stage: add a `FROM <image>` instruction")]
    NoStages,
    #[error("line {line}: {source}")]
    Directive {
        line: usize,
        #[source]
        source: DirectiveError,
    },
    #[error(
        "line {line}: heredoc `<<{name}` is never terminated: add a line that is exactly `{name}`"
    )]
    UnterminatedHeredoc { line: usize, name: String },
    #[error(
        "line {line}: {instruction} before the first FROM (no build stage in current context): \
         only ARG may come before FROM"
    )]
    NoBuildStage { line: usize, instruction: String },
    #[error(
        "line {line}: FROM has no image: write `FROM [--platform=<platform>] <image> [AS <name>]`"
    )]
    FromWithoutImage { line: usize },
    #[error(
        "line {line}: FROM requires either one or three arguments, got {} ({}): write \
         `FROM [--platform=<platform>] <image> [AS <name>]` (the words are split on whitespace \
         before variables are expanded)",
        args.len(), args.join(" ")
    )]
    FromArguments { line: usize, args: Vec<String> },
    #[error(
        "line {line}: invalid name for build stage: {name:?}, name can't start with a number or \
         contain symbols: use letters, digits, `-`, `_` and `.`, starting with a letter"
    )]
    InvalidStageName { line: usize, name: String },
    #[error("line {line}: ARG names can not be blank: write `ARG NAME[=default]`")]
    BlankArgName { line: usize },
    #[error("line {line}: {instruction} flag `--{flag}` needs a value: write `--{flag}=<value>`")]
    FlagWithoutValue {
        line: usize,
        instruction: String,
        flag: String,
    },
    #[error("line {line}: {instruction} flag `--{flag}` is given more than once: keep one")]
    DuplicateFlag {
        line: usize,
        instruction: String,
        flag: String,
    },
    #[error("line {line}: cannot parse `--mount={spec}`: failed to parse csv mounts: {source}")]
    InvalidMount {
        line: usize,
        spec: String,
        #[source]
        source: MountError,
    },
    #[error(
        "line {line}: `{value}`: variable expansion is not supported for {flag}: define a stage \
         with `FROM <image> AS <alias>` (global ARGs expand there) and use the alias"
    )]
    FromFlagExpansion {
        line: usize,
        flag: &'static str,
        value: String,
    },
    #[error(
        "line {line}: invalid stage index {index} in COPY --from: the Dockerfile has {stages} \
         stage(s), numbered from 0"
    )]
    InvalidStageIndex {
        line: usize,
        index: i64,
        stages: usize,
    },
    /// `${NAME:?message}` failed (the shape the CLI shows for a missing build arg).
    #[error(
        "line {line}: {expr}: {name} is {}{} (pass --build-arg {name}=...)",
        if *unset { "unset" } else { "empty" }, optional_message(message)
    )]
    RequiredArg {
        line: usize,
        expr: String,
        name: String,
        unset: bool,
        message: String,
    },
    #[error("line {line}: cannot expand `{word}`: {source}")]
    Expansion {
        line: usize,
        word: String,
        #[source]
        source: ExpansionError,
    },
    #[error(
        "line {line}: base name ({word}) should not be blank: it expands to nothing; give the \
         ARG it uses a default or pass --build-arg"
    )]
    BlankBaseName { line: usize, word: String },
    #[error(
        "line {line}: empty platform value from expression {word}: give the ARG it uses a \
         default or pass --build-arg"
    )]
    EmptyPlatform { line: usize, word: String },
    #[error("line {line}: {source}")]
    InvalidReference {
        line: usize,
        #[source]
        source: ReferenceError,
    },
    #[error("build arg BUILDKIT_SYNTAX: {source}")]
    InvalidSyntaxArg {
        #[source]
        source: ReferenceError,
    },
}
