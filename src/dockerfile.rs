//! Every external image a Dockerfile needs, found by BuildKit's own rules.
//!
//! [`parse`] follows moby/buildkit's Dockerfile frontend step by step:
//!
//! 1. `parser/directives.go` `DetectSyntax`: the `# syntax=` frontend image (also `//` and JSON
//!    forms, after an optional `#!` line), or the `BUILDKIT_SYNTAX` build arg.
//! 2. `parser/parser.go` `Parse`: lines, byte-order mark, parser directives (`escape`, `syntax`,
//!    `check`; only at the top, case-insensitive keys, each once), comments, line
//!    continuations with the escape token, empty continuation lines, heredocs.
//! 3. `parser/split_command.go` and `parser/line_parsers.go`: instruction words and
//!    `--flags`; `instructions/parse.go`: `FROM`, `ARG`, `COPY --from`, `RUN --mount`.
//! 4. `dockerfile2llb/convert.go` `toDispatchState`: meta `ARG`s (before the first `FROM`)
//!    with build args, BuildKit's automatic platform args, `FROM` and `--platform` expansion
//!    with `shell/lex.go`, stage names, `scratch`, `COPY --from` and `RUN --mount from=`.
//!
//! What it deliberately does not check is listed in [`parse`].

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::reference::{Reference, ReferenceError};

/// An OCI platform, `os/architecture[/variant]`, e.g. `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    /// `linux/amd64`.
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    /// containerd `platforms.Format`: `os/arch[/variant]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// A platform string that is not `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid platform `{0}`: write `os/architecture[/variant]`, e.g. `linux/amd64` or `linux/arm64/v8`"
)]
pub struct PlatformError(pub String);

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(PlatformError(s.to_owned()));
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: parts[1].to_ascii_lowercase(),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        })
    }
}

impl Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What a build is run with, as far as finding its images is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildContextArgs<'a> {
    /// `--build-arg`s. They apply to declared meta `ARG`s, override the automatic platform
    /// args, and `BUILDKIT_SYNTAX` overrides the `# syntax=` directive.
    pub build_args: &'a BTreeMap<String, String>,
    /// The platform the image is built for (`TARGETPLATFORM`); default `linux/amd64`.
    pub target_platform: Platform,
    /// The platform of the builder (`BUILDPLATFORM`); default `linux/amd64`.
    pub build_platform: Platform,
}

static NO_BUILD_ARGS: BTreeMap<String, String> = BTreeMap::new();

impl<'a> BuildContextArgs<'a> {
    /// These build args, with both platforms `linux/amd64`.
    pub fn new(build_args: &'a BTreeMap<String, String>) -> Self {
        BuildContextArgs {
            build_args,
            target_platform: Platform::default(),
            build_platform: Platform::default(),
        }
    }
}

impl Default for BuildContextArgs<'static> {
    fn default() -> Self {
        BuildContextArgs::new(&NO_BUILD_ARGS)
    }
}

/// What [`parse`] found in a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// The frontend image from `# syntax=` (or the `BUILDKIT_SYNTAX` build arg).
    pub syntax: Option<ImageUse>,
    /// The build stages, in order.
    pub stages: Vec<Stage>,
    /// Every use of an external image, in source order (the syntax image first), including
    /// `COPY --from=<image>` and `RUN --mount=from=<image>`. The same image may appear more
    /// than once: see [`Dockerfile::unique_references`].
    pub images: Vec<ImageUse>,
}

impl Dockerfile {
    /// The distinct external images, in order of first use.
    pub fn unique_references(&self) -> Vec<&Reference> {
        let mut seen = HashSet::new();
        self.images
            .iter()
            .map(|u| &u.reference)
            .filter(|r| seen.insert(*r))
            .collect()
    }
}

/// One `FROM` and what it builds on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// Position among the stages, as used by `COPY --from=<index>`.
    pub index: usize,
    /// The `AS` name, lowercased like BuildKit does.
    pub name: Option<String>,
    pub base: StageBase,
    /// 1-based line of the `FROM` instruction.
    pub line: usize,
    /// The expanded `--platform` value, if the `FROM` has one (otherwise the target platform,
    /// or for a stage built on another stage, that stage's platform).
    pub platform: Option<String>,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageBase {
    /// An external image, normalized, with the default tag applied.
    Image(Reference),
    /// An earlier stage, by index.
    Stage(usize),
    /// `FROM scratch`: nothing to pull.
    Scratch,
}

/// Where a Dockerfile uses an external image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageUse {
    /// The image, normalized, with the default tag applied.
    pub reference: Reference,
    /// The text after variable expansion, as written (e.g. `golang:1.22-alpine`).
    pub raw: String,
    /// 1-based line of the instruction, or of the `# syntax=` directive. 0 only for a
    /// frontend that comes from the `BUILDKIT_SYNTAX` build arg.
    pub line: usize,
    pub kind: UseKind,
    /// The expanded `FROM --platform` value. `None` means the build's target platform (for
    /// `FROM` without `--platform`, `COPY --from` and `RUN --mount from=`, which BuildKit
    /// resolves for the target platform) or the build platform (for the syntax frontend).
    pub platform: Option<String>,
}

/// Which instruction uses an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UseKind {
    /// The base of a stage: `FROM <image>`.
    From,
    /// `COPY --from=<image>`.
    CopyFrom,
    /// `RUN --mount=...,from=<image>`.
    MountFrom,
    /// The frontend: `# syntax=<image>`.
    Syntax,
}

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
    #[error("line {line}: {message}")]
    Directive { line: usize, message: String },
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
    #[error("line {line}: cannot parse `--mount={spec}`: {reason}")]
    InvalidMount {
        line: usize,
        spec: String,
        reason: String,
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

/// Finds every external image `content` needs when built with `args`.
///
/// Deliberately lenient where BuildKit's checks do not affect which images are needed:
/// unknown instructions (a custom `# syntax=` frontend may define its own), unknown flags,
/// argument counts of other instructions, `--mount` options other than `from`, and the
/// validity of `--platform` values (only emptiness is checked) are not checked. Stages that
/// the target does not reach are included (BuildKit parses their references too).
pub fn parse(content: &str, args: &BuildContextArgs<'_>) -> Result<Dockerfile, DockerfileError> {
    let syntax = syntax_image(content, args.build_args)?;
    let (instructions, escape) = lines::split(content)?;
    let parsed = instructions::parse(&instructions)?;
    let mut images: Vec<ImageUse> = syntax.iter().cloned().collect();
    let stages = resolve::resolve(&parsed, args, escape, &mut images)?;
    Ok(Dockerfile {
        syntax,
        stages,
        images,
    })
}

/// `DetectSyntax` (and `BUILDKIT_SYNTAX`, which dockerfile `builder/build.go` prefers).
fn syntax_image(
    content: &str,
    build_args: &BTreeMap<String, String>,
) -> Result<Option<ImageUse>, DockerfileError> {
    if let Some(value) = build_args.get("BUILDKIT_SYNTAX") {
        let raw = value.trim().split(' ').next().unwrap_or_default();
        let reference =
            Reference::parse(raw).map_err(|source| DockerfileError::InvalidSyntaxArg { source })?;
        return Ok(Some(ImageUse {
            reference: reference.with_default_tag(),
            raw: raw.to_owned(),
            line: 0,
            kind: UseKind::Syntax,
            platform: None,
        }));
    }
    let Some((raw, line)) = directives::detect_syntax(content) else {
        return Ok(None);
    };
    let reference = Reference::parse(&raw)
        .map_err(|source| DockerfileError::InvalidReference { line, source })?;
    Ok(Some(ImageUse {
        reference: reference.with_default_tag(),
        raw,
        line,
        kind: UseKind::Syntax,
        platform: None,
    }))
}

/// Go's `unicode.IsSpace`, which Rust's `char::is_whitespace` matches (Unicode White_Space).
fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Go's `strings.TrimSpace`.
fn trim_space(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// The `[\t\v\f\r ]` class of `reWhitespace` / `tokenWhitespace`.
fn is_token_space(c: char) -> bool {
    matches!(c, '\t' | '\u{0b}' | '\u{0c}' | '\r' | ' ')
}

/// Parser directives (`parser/directives.go`).
mod directives {
    use super::is_space;
    use std::collections::HashSet;

    const VALID: [&str; 3] = ["syntax", "escape", "check"];

    /// `DirectiveParser`: consecutive `# key=value` lines at the top of the file.
    pub(super) struct DirectiveParser {
        prefix: &'static str,
        done: bool,
        seen: HashSet<String>,
    }

    impl DirectiveParser {
        pub(super) fn new(prefix: &'static str) -> Self {
            DirectiveParser {
                prefix,
                done: false,
                seen: HashSet::new(),
            }
        }

        /// `ParseLine`: the directive on this line, if the directive section is still open.
        pub(super) fn parse_line(
            &mut self,
            line: &str,
        ) -> Result<Option<(String, String)>, String> {
            if self.done {
                return Ok(None);
            }
            let Some(rest) = line.strip_prefix(self.prefix) else {
                self.done = true;
                return Ok(None);
            };
            let Some((key, value)) = match_directive(rest.trim_start_matches(is_space)) else {
                self.done = true;
                return Ok(None);
            };
            let key = key.to_lowercase();
            if !VALID.contains(&key.as_str()) {
                self.done = true;
                return Ok(None);
            }
            if !self.seen.insert(key.clone()) {
                return Err(format!(
                    "only one {key} parser directive can be used: remove the repeated one"
                ));
            }
            Ok(Some((key, value)))
        }
    }

    /// RE2's `\s`: `[\t\n\f\r ]`.
    fn is_re_space(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\u{0c}' | '\r' | ' ')
    }

    /// `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, with RE2's leftmost-first preferences.
    fn match_directive(s: &str) -> Option<(String, String)> {
        let key_len = s
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
            .map_or(s.len(), |(i, _)| i);
        if key_len == 0 {
            return None;
        }
        let (key, rest) = s.split_at(key_len);
        let rest = rest.trim_start_matches(is_re_space).strip_prefix('=')?;
        if rest.contains('\n') || rest.is_empty() {
            return None;
        }
        let trimmed = rest.trim_start_matches(is_re_space);
        let value = if trimmed.is_empty() {
            // Only whitespace: `\s*` gives back one character to `(.+?)`.
            rest.chars().last().map(String::from)?
        } else {
            trimmed.trim_end_matches(is_re_space).to_owned()
        };
        Some((key.to_owned(), value))
    }

    /// `DetectSyntax`: the frontend image and the 1-based line of its directive. Tries `#`
    /// comments, then `//` comments, then a JSON object, after an optional `#!` line.
    pub(super) fn detect_syntax(content: &str) -> Option<(String, usize)> {
        let dt = content.strip_prefix('\u{feff}').unwrap_or(content);
        let (dt, offset) = match dt.split_once('\n') {
            Some((first, rest)) if first.starts_with("#!") => (rest, 1),
            None if dt.starts_with("#!") => ("", 1),
            _ => (dt, 0),
        };
        for prefix in ["#", "//"] {
            let mut parser = DirectiveParser::new(prefix);
            for (i, line) in dt.split('\n').enumerate() {
                if parser.done {
                    break;
                }
                // bufio.ScanLines drops one trailing '\r'.
                let line = line.strip_suffix('\r').unwrap_or(line);
                match parser.parse_line(line) {
                    Ok(Some((key, value))) if key == "syntax" => {
                        let image = value.split(' ').next().unwrap_or_default().to_owned();
                        return Some((image, offset + i + 1));
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        let json: serde_json::Map<String, serde_json::Value> = serde_json::from_str(dt).ok()?;
        let value = json.get("syntax")?.as_str()?;
        Some((
            value.split(' ').next().unwrap_or_default().to_owned(),
            offset.max(1),
        ))
    }
}

/// `parser/parser.go` `Parse`: logical instructions from physical lines.
mod lines {
    use super::directives::DirectiveParser;
    use super::{DockerfileError, instructions::Node, is_space};

    /// One instruction after continuation lines are joined.
    pub(super) struct RawInstruction {
        /// 1-based line where it starts.
        pub line: usize,
        pub node: Node,
    }

    struct State {
        parser: DirectiveParser,
        escape: char,
    }

    impl State {
        /// `processLine`: strip the line end (and leading space on a first line), look for a
        /// directive, and blank out comments.
        fn process<'a>(
            &mut self,
            raw: &'a str,
            strip_left: bool,
            line: usize,
        ) -> Result<&'a str, DockerfileError> {
            let mut token = trim_newline(raw);
            if strip_left {
                token = token.trim_start_matches(is_space);
            }
            let directive = self
                .parser
                .parse_line(token)
                .map_err(|message| DockerfileError::Directive { line, message })?;
            if let Some((key, value)) = directive
                && key == "escape"
            {
                self.escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(DockerfileError::Directive {
                            line,
                            message: format!(
                                "invalid escape token '{value}' does not match ` or \\: \
                                 write `# escape=\\` or `# escape=``"
                            ),
                        });
                    }
                };
            }
            Ok(if is_comment(token) { "" } else { token })
        }
    }

    fn trim_newline(s: &str) -> &str {
        s.trim_end_matches(['\r', '\n'])
    }

    fn is_comment(s: &str) -> bool {
        s.trim_start_matches(is_space).starts_with('#')
    }

    /// The continuation regexp `([^E])E[ \t]*$|^E[ \t]*$` for escape token E, replaced by
    /// `$1`: returns the line without the token and whether the instruction ends here.
    fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
        let trimmed = line.trim_end_matches([' ', '\t']);
        let Some(before) = trimmed.strip_suffix(escape) else {
            return (line, true);
        };
        if before.ends_with(escape) {
            // An escaped escape token is not a continuation.
            return (line, true);
        }
        (before, false)
    }

    /// The instructions of `content` and the escape token in effect.
    pub(super) fn split(content: &str) -> Result<(Vec<RawInstruction>, char), DockerfileError> {
        let mut state = State {
            parser: DirectiveParser::new("#"),
            escape: '\\',
        };
        let lines: Vec<&str> = content.split_inclusive('\n').collect();
        let mut out = Vec::new();
        let mut i = 0;
        let mut current = 0;
        while i < lines.len() {
            let mut raw = lines[i];
            i += 1;
            if current == 0 {
                raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
            }
            let processed = state.process(raw, true, current + 1)?;
            current += 1;
            let start = current;
            let (first, mut end) = trim_continuation(processed, state.escape);
            if end && first.is_empty() {
                continue;
            }
            let mut text = first.to_owned();
            while !end && i < lines.len() {
                let raw = lines[i];
                i += 1;
                let processed = state.process(raw, false, current + 1)?;
                current += 1;
                if is_comment(raw) || processed.trim_start_matches(is_space).is_empty() {
                    // Comments and empty lines inside a continuation are skipped.
                    continue;
                }
                let (part, e) = trim_continuation(processed, state.escape);
                text.push_str(part);
                end = e;
            }
            let node = Node::from_line(&text, state.escape);
            if node.can_contain_heredoc() && text.contains("<<") {
                let heredocs = super::heredoc::from_line(&text).map_err(|source| {
                    DockerfileError::Expansion {
                        line: start,
                        word: text.clone(),
                        source,
                    }
                })?;
                for heredoc in heredocs {
                    let mut terminated = false;
                    while i < lines.len() {
                        let body = trim_newline(lines[i]);
                        i += 1;
                        current += 1;
                        let candidate = if heredoc.chomp {
                            body.trim_start_matches('\t')
                        } else {
                            body
                        };
                        if candidate == heredoc.name {
                            terminated = true;
                            break;
                        }
                    }
                    if !terminated {
                        return Err(DockerfileError::UnterminatedHeredoc {
                            line: start,
                            name: heredoc.name,
                        });
                    }
                }
            }
            out.push(RawInstruction { line: start, node });
        }
        if out.is_empty() {
            return Err(DockerfileError::NoInstructions);
        }
        Ok((out, state.escape))
    }
}

/// Heredoc words (`parser.go` `heredocsFromLine`, `ParseHeredoc`).
mod heredoc {
    use super::ExpansionError;
    use super::shell::{self, Options};

    pub(super) struct Heredoc {
        pub name: String,
        pub chomp: bool,
    }

    /// The heredocs a line opens, in order. The line is split with a raw lexer (quotes and
    /// escapes kept, unset variables kept) whose errors are ignored, like upstream.
    pub(super) fn from_line(line: &str) -> Result<Vec<Heredoc>, ExpansionError> {
        let opts = Options {
            raw_quotes: true,
            raw_escapes: true,
            skip_unset_env: true,
        };
        let words = shell::process(line, &Default::default(), '\\', opts)
            .map(|o| o.words)
            .unwrap_or_default();
        let mut docs = Vec::new();
        for word in words {
            if let Some(doc) = parse(&word)? {
                docs.push(doc);
            }
        }
        Ok(docs)
    }

    /// `ParseHeredoc`: `^(\d*)<<(-?)([^<]*)$` and a single-word name.
    fn parse(word: &str) -> Result<Option<Heredoc>, ExpansionError> {
        let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
        let Some(rest) = rest.strip_prefix("<<") else {
            return Ok(None);
        };
        let (chomp, rest) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.is_empty() || rest.contains('<') {
            return Ok(None);
        }
        let plain = Options {
            skip_unset_env: true,
            ..Options::default()
        };
        let words = shell::process(rest, &Default::default(), '\\', plain)?.words;
        if words.len() != 1 {
            return Ok(None);
        }
        let raw = Options {
            raw_quotes: true,
            ..plain
        };
        // Upstream lexes a second time with raw quotes only to tell whether to expand the
        // content; an error there is still an error.
        shell::process(rest, &Default::default(), '\\', raw)?;
        Ok(words.into_iter().next().map(|name| Heredoc { name, chomp }))
    }
}

/// Instruction words and flags: `split_command.go`, `line_parsers.go`, `instructions/parse.go`.
mod instructions {
    use super::{DockerfileError, is_space, is_token_space, trim_space};

    /// `newNodeFromLine`: the instruction, its `--flags`, and its arguments.
    pub(super) struct Node {
        /// Lowercased instruction name.
        pub cmd: String,
        pub flags: Vec<String>,
        /// Arguments after the flags, trimmed.
        pub args: String,
        /// `parseMaybeJSON`: the arguments are a JSON array of strings.
        pub json: bool,
        /// For `ONBUILD`: the instruction it wraps.
        pub child: Option<Box<Node>>,
        pub escape: char,
    }

    impl Node {
        /// `splitCommand` + the per-instruction line parser.
        pub(super) fn from_line(line: &str, escape: char) -> Node {
            Node::parse_line(line, escape, true)
        }

        /// `with_child`: parse an `ONBUILD`'s instruction too. Only one level is needed
        /// (`canContainHeredoc` looks one level down), and stopping there keeps
        /// `ONBUILD ONBUILD ...` from recursing once per word.
        fn parse_line(line: &str, escape: char, with_child: bool) -> Node {
            let line = trim_space(line);
            let (cmd, rest) = match line.find(is_token_space) {
                Some(i) => (
                    &line[..i],
                    Some(line[i..].trim_start_matches(is_token_space)),
                ),
                None => (line, None),
            };
            let (args, flags) = match rest {
                Some(rest) => extract_builder_flags(rest),
                None => (String::new(), Vec::new()),
            };
            let cmd = cmd.to_lowercase();
            let args = trim_space(&args).to_owned();
            let json = matches!(
                cmd.as_str(),
                "run" | "copy" | "add" | "cmd" | "entrypoint" | "shell" | "volume"
            ) && is_json_string_array(&args);
            let child = (with_child && cmd == "onbuild" && !args.is_empty())
                .then(|| Box::new(Node::parse_line(&args, escape, false)));
            Node {
                cmd,
                flags,
                args,
                json,
                child,
                escape,
            }
        }

        /// `canContainHeredoc`: ADD, COPY and RUN (also under ONBUILD) in shell form.
        pub(super) fn can_contain_heredoc(&self) -> bool {
            let node = match (&self.cmd[..], &self.child) {
                ("onbuild", Some(child)) => child,
                _ => self,
            };
            matches!(node.cmd.as_str(), "add" | "copy" | "run") && !node.json
        }

        /// `parseStringsWhitespaceDelimited`.
        pub(super) fn whitespace_words(&self) -> Vec<&str> {
            self.args
                .split(is_token_space)
                .filter(|w| !w.is_empty())
                .collect()
        }

        /// `parseWords`: words of `ARG`, quotes kept (expansion removes them later).
        pub(super) fn quoted_words(&self) -> Vec<String> {
            parse_words(&self.args, self.escape)
        }

        /// The values of `--name` (`BFlags.Parse` for a string flag): `None` when given
        /// without `=`. Parsing stops at `--`.
        pub(super) fn flag(&self, name: &str) -> Vec<Option<&str>> {
            let mut out = Vec::new();
            for flag in &self.flags {
                if flag == "--" {
                    break;
                }
                let Some(body) = flag.strip_prefix("--") else {
                    continue;
                };
                match body.split_once('=') {
                    Some((n, v)) if n == name => out.push(Some(v)),
                    None if body == name => out.push(None),
                    _ => {}
                }
            }
            out
        }

        /// A single-valued string flag: errors for a missing value or a repeat.
        pub(super) fn string_flag(
            &self,
            name: &str,
            line: usize,
        ) -> Result<Option<&str>, DockerfileError> {
            let values = self.flag(name);
            if values.len() > 1 {
                return Err(DockerfileError::DuplicateFlag {
                    line,
                    instruction: self.cmd.to_uppercase(),
                    flag: name.to_owned(),
                });
            }
            match values.first() {
                Some(None) => Err(DockerfileError::FlagWithoutValue {
                    line,
                    instruction: self.cmd.to_uppercase(),
                    flag: name.to_owned(),
                }),
                Some(Some(v)) => Ok(Some(v)),
                None => Ok(None),
            }
        }
    }

    /// `parseJSON` succeeds: a JSON array whose elements are all strings.
    fn is_json_string_array(args: &str) -> bool {
        let rest = args.trim_start_matches(is_space);
        rest.starts_with('[')
            && serde_json::from_str::<Vec<serde_json::Value>>(rest)
                .is_ok_and(|v| v.iter().all(serde_json::Value::is_string))
    }

    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }

    /// `extractBuilderFlags`: leading `--flag[=value]` words (quotes and `\` processed; a flag
    /// without `=` takes the next word as its value) and the rest of the line. Upstream walks
    /// bytes and mis-splits multi-byte characters containing 0x85 or 0xA0; this walks chars.
    pub(super) fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
        let chars: Vec<(usize, char)> = line.char_indices().collect();
        let n = chars.len();
        let rest_at = |pos: usize| line[chars[pos].0..].to_owned();
        let mut words: Vec<String> = Vec::new();
        let mut phase = Phase::Spaces;
        let mut word = String::new();
        let mut quote = '\0';
        let mut blank_ok = false;
        let mut parsing_flag_arg = false;
        let mut need_flag_arg = true;
        let mut pos = 0;
        while pos <= n {
            let mut ch = chars.get(pos).map_or('\0', |c| c.1);
            if phase == Phase::Spaces {
                if pos == n {
                    break;
                }
                if is_space(ch) {
                    pos += 1;
                    continue;
                }
                let next_is_dash = chars.get(pos + 1).is_some_and(|c| c.1 == '-');
                if !parsing_flag_arg && (ch != '-' || !next_is_dash) {
                    return (rest_at(pos), words);
                }
                phase = Phase::Word;
            }
            if pos == n {
                if word != "--" && (blank_ok || !word.is_empty()) {
                    words.push(word);
                }
                break;
            }
            if phase == Phase::Word {
                if is_space(ch) {
                    phase = Phase::Spaces;
                    if parsing_flag_arg {
                        if let Some(last) = words.last_mut() {
                            last.push('=');
                            last.push_str(&word);
                        }
                        parsing_flag_arg = false;
                        need_flag_arg = true;
                    } else {
                        if word == "--" {
                            return (rest_at(pos), words);
                        }
                        if blank_ok || !word.is_empty() {
                            if need_flag_arg {
                                parsing_flag_arg = true;
                            }
                            words.push(std::mem::take(&mut word));
                        }
                    }
                    word.clear();
                    blank_ok = false;
                    pos += 1;
                    continue;
                }
                if ch == '=' && need_flag_arg {
                    need_flag_arg = false;
                }
                if ch == '\'' || ch == '"' {
                    quote = ch;
                    blank_ok = true;
                    phase = Phase::Quote;
                    pos += 1;
                    continue;
                }
                if ch == '\\' {
                    if pos + 1 == n {
                        pos += 1;
                        continue;
                    }
                    pos += 1;
                    ch = chars[pos].1;
                }
                word.push(ch);
                pos += 1;
                continue;
            }
            // Phase::Quote
            if ch == quote {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            if ch == '\\' {
                if pos + 1 == n {
                    phase = Phase::Word;
                    pos += 1;
                    continue;
                }
                pos += 1;
                ch = chars[pos].1;
            }
            word.push(ch);
            pos += 1;
        }
        (String::new(), words)
    }

    /// `parseWords`: whitespace-separated words; quotes are kept, and the escape token keeps
    /// the next character in the word (outside single quotes).
    pub(super) fn parse_words(rest: &str, escape: char) -> Vec<String> {
        let chars: Vec<char> = rest.chars().collect();
        let n = chars.len();
        let mut words = Vec::new();
        let mut phase = Phase::Spaces;
        let mut quote = '\0';
        let mut blank_ok = false;
        let mut word = String::new();
        let mut pos = 0;
        while pos <= n {
            let mut ch = chars.get(pos).copied().unwrap_or('\0');
            if phase == Phase::Spaces {
                if pos == n {
                    break;
                }
                if is_space(ch) {
                    pos += 1;
                    continue;
                }
                phase = Phase::Word;
            }
            if pos == n {
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                break;
            }
            if phase == Phase::Word {
                if is_space(ch) {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    pos += 1;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = ch;
                    blank_ok = true;
                    phase = Phase::Quote;
                }
                if ch == escape {
                    if pos + 1 == n {
                        pos += 1;
                        continue;
                    }
                    word.push(ch);
                    pos += 1;
                    ch = chars[pos];
                }
                word.push(ch);
                pos += 1;
                continue;
            }
            // Phase::Quote
            if ch == quote {
                phase = Phase::Word;
            }
            if ch == escape && quote != '\'' {
                if pos + 1 == n {
                    phase = Phase::Word;
                    pos += 1;
                    continue;
                }
                pos += 1;
                word.push(ch);
                ch = chars[pos];
            }
            word.push(ch);
            pos += 1;
        }
        words
    }

    /// What the image search needs from each instruction.
    pub(super) enum Parsed {
        /// A meta `ARG` (before the first `FROM`): `(name, default)` pairs.
        MetaArg {
            line: usize,
            args: Vec<(String, Option<String>)>,
        },
        From(From),
        CopyFrom {
            line: usize,
            from: String,
        },
        /// The `from=` values of a `RUN`'s mounts, in order (empty `from` omitted).
        RunMounts {
            line: usize,
            froms: Vec<String>,
        },
    }

    pub(super) struct From {
        pub line: usize,
        pub base: String,
        pub name: Option<String>,
        pub platform: Option<String>,
    }

    const KNOWN: [&str; 18] = [
        "add",
        "arg",
        "cmd",
        "copy",
        "entrypoint",
        "env",
        "expose",
        "from",
        "healthcheck",
        "label",
        "maintainer",
        "onbuild",
        "run",
        "shell",
        "stopsignal",
        "user",
        "volume",
        "workdir",
    ];

    /// `instructions.Parse`, keeping what matters for images.
    pub(super) fn parse(
        raw: &[super::lines::RawInstruction],
    ) -> Result<Vec<Parsed>, DockerfileError> {
        let mut out = Vec::new();
        let mut in_stage = false;
        for ins in raw {
            let (line, node) = (ins.line, &ins.node);
            match node.cmd.as_str() {
                "from" => {
                    out.push(Parsed::From(parse_from(node, line)?));
                    in_stage = true;
                }
                "arg" if !in_stage => out.push(parse_meta_arg(node, line)?),
                cmd if !in_stage && KNOWN.contains(&cmd) => {
                    return Err(DockerfileError::NoBuildStage {
                        line,
                        instruction: cmd.to_uppercase(),
                    });
                }
                "copy" => {
                    if let Some(from) = node.string_flag("from", line)?
                        && !from.is_empty()
                    {
                        out.push(Parsed::CopyFrom {
                            line,
                            from: from.to_owned(),
                        });
                    }
                }
                "run" => {
                    let mut froms = Vec::new();
                    for spec in node.flag("mount") {
                        let Some(spec) = spec else {
                            return Err(DockerfileError::FlagWithoutValue {
                                line,
                                instruction: "RUN".into(),
                                flag: "mount".into(),
                            });
                        };
                        if let Some(from) = super::mount::from(spec, line)? {
                            froms.push(from);
                        }
                    }
                    if !froms.is_empty() {
                        out.push(Parsed::RunMounts { line, froms });
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// `parseFrom` + `parseBuildStageName`.
    fn parse_from(node: &Node, line: usize) -> Result<From, DockerfileError> {
        let words = node.whitespace_words();
        let name = match words.len() {
            0 => return Err(DockerfileError::FromWithoutImage { line }),
            1 => None,
            3 if words[1].eq_ignore_ascii_case("as") => {
                let name = words[2].to_lowercase();
                let mut chars = name.chars();
                let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                    && chars.all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                    });
                if !valid {
                    return Err(DockerfileError::InvalidStageName {
                        line,
                        name: words[2].to_owned(),
                    });
                }
                Some(name)
            }
            _ => {
                return Err(DockerfileError::FromArguments {
                    line,
                    args: words.iter().map(|w| (*w).to_owned()).collect(),
                });
            }
        };
        let platform = node.string_flag("platform", line)?.map(str::to_owned);
        Ok(From {
            line,
            base: words[0].to_owned(),
            name,
            platform: platform.filter(|p| !p.is_empty()),
        })
    }

    /// `parseArg`: `ARG a`, `ARG a=1 b="two"`.
    fn parse_meta_arg(node: &Node, line: usize) -> Result<Parsed, DockerfileError> {
        let mut args = Vec::new();
        for word in node.quoted_words() {
            match word.split_once('=') {
                Some(("", _)) => return Err(DockerfileError::BlankArgName { line }),
                Some((key, value)) => args.push((key.to_owned(), Some(value.to_owned()))),
                None => args.push((word, None)),
            }
        }
        Ok(Parsed::MetaArg { line, args })
    }
}

/// `RUN --mount` values (`instructions/commands_runmount.go` `parseMount`).
mod mount {
    use super::DockerfileError;

    /// The `from=` of one `--mount` value: `None` if it has none (or an empty one).
    pub(super) fn from(spec: &str, line: usize) -> Result<Option<String>, DockerfileError> {
        let fields = csv_record(spec).map_err(|reason| DockerfileError::InvalidMount {
            line,
            spec: spec.to_owned(),
            reason: format!("failed to parse csv mounts: {reason}"),
        })?;
        let mut from = None;
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            if key.to_lowercase() != "from" {
                continue;
            }
            // Parsed without an expander: `\$.` is refused.
            let mut chars = value.chars();
            while let Some(c) = chars.next() {
                if c == '$' && chars.clone().next().is_some() {
                    return Err(DockerfileError::FromFlagExpansion {
                        line,
                        flag: "RUN --mount from",
                        value: value.to_owned(),
                    });
                }
            }
            from = Some(value.to_owned());
        }
        Ok(from.filter(|f| !f.is_empty()))
    }

    /// One record of Go's `encoding/csv` with default settings.
    fn csv_record(s: &str) -> Result<Vec<String>, String> {
        if s.is_empty() {
            return Err(
                "EOF: the mount is empty, write e.g. `--mount=type=cache,target=/root/.cache`"
                    .into(),
            );
        }
        let chars: Vec<char> = s.chars().collect();
        let mut fields = Vec::new();
        let mut i = 0;
        loop {
            let mut field = String::new();
            if chars.get(i) == Some(&'"') {
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("extraneous or missing \" in quoted-field".into()),
                        Some('"') if chars.get(i + 1) == Some(&'"') => {
                            field.push('"');
                            i += 2;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(&c) => {
                            field.push(c);
                            i += 1;
                        }
                    }
                }
                match chars.get(i) {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => i += 1,
                    Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
                }
            } else {
                loop {
                    match chars.get(i) {
                        None => {
                            fields.push(field);
                            return Ok(fields);
                        }
                        Some(',') => {
                            i += 1;
                            break;
                        }
                        Some('"') => return Err("bare \" in non-quoted-field".into()),
                        Some(&c) => {
                            field.push(c);
                            i += 1;
                        }
                    }
                }
            }
            fields.push(field);
        }
    }
}

/// `dockerfile2llb/convert.go`: meta args, expansion, stages and image references.
mod resolve {
    use super::instructions::{From, Parsed};
    use super::shell::{self, Env, Options};
    use super::{
        BuildContextArgs, DockerfileError, ExpansionError, ImageUse, Stage, StageBase, UseKind,
    };
    use crate::reference::Reference;
    use std::collections::HashMap;

    const SCRATCH: &str = "scratch";

    /// `platformArgs`: the automatic platform args, each overridable by a build arg.
    fn global_args(args: &BuildContextArgs<'_>) -> Env {
        let (b, t) = (&args.build_platform, &args.target_platform);
        let automatic = [
            ("BUILDPLATFORM", b.to_string()),
            ("BUILDOS", b.os.clone()),
            ("BUILDARCH", b.architecture.clone()),
            ("BUILDVARIANT", b.variant.clone().unwrap_or_default()),
            ("TARGETPLATFORM", t.to_string()),
            ("TARGETOS", t.os.clone()),
            ("TARGETARCH", t.architecture.clone()),
            ("TARGETVARIANT", t.variant.clone().unwrap_or_default()),
        ];
        automatic
            .into_iter()
            .map(|(k, v)| {
                let v = args.build_args.get(k).cloned().unwrap_or(v);
                (k.to_owned(), v)
            })
            .collect()
    }

    fn expand(word: &str, env: &Env, escape: char, line: usize) -> Result<String, DockerfileError> {
        shell::process(word, env, escape, Options::default())
            .map(|o| o.result)
            .map_err(|e| match e {
                ExpansionError::Required {
                    expr,
                    name,
                    unset,
                    message,
                } => DockerfileError::RequiredArg {
                    line,
                    expr,
                    name,
                    unset,
                    message,
                },
                source => DockerfileError::Expansion {
                    line,
                    word: word.to_owned(),
                    source,
                },
            })
    }

    fn image(
        raw: String,
        line: usize,
        kind: UseKind,
        platform: Option<String>,
    ) -> Result<ImageUse, DockerfileError> {
        let reference = Reference::parse(&raw)
            .map_err(|source| DockerfileError::InvalidReference { line, source })?
            .with_default_tag();
        Ok(ImageUse {
            reference,
            raw,
            line,
            kind,
            platform,
        })
    }

    /// Stages with their bases; the images they use are appended to `images`.
    pub(super) fn resolve(
        parsed: &[Parsed],
        args: &BuildContextArgs<'_>,
        escape: char,
        images: &mut Vec<ImageUse>,
    ) -> Result<Vec<Stage>, DockerfileError> {
        let froms: Vec<&From> = parsed
            .iter()
            .filter_map(|p| match p {
                Parsed::From(f) => Some(f),
                _ => None,
            })
            .collect();
        if froms.is_empty() {
            return Err(DockerfileError::NoStages);
        }

        // buildMetaArgs: a build arg applies only to a declared ARG and is taken verbatim; a
        // default is expanded with the args so far; an ARG with neither stays unset.
        let mut env = global_args(args);
        for p in parsed {
            if let Parsed::MetaArg { line, args: pairs } = p {
                for (key, default) in pairs {
                    let value = match (args.build_args.get(key), default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(d)) => Some(expand(d, &env, escape, *line)?),
                        (None, None) => None,
                    };
                    if let Some(v) = value {
                        env.insert(key.clone(), v);
                    }
                }
            }
        }

        // Stage bases: a FROM names an *earlier* stage by its lowercased name, matched
        // exactly (`dispatchStates.addState`); `scratch` is no image; anything else is one.
        let mut stages = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut from_images = Vec::new();
        for (index, from) in froms.iter().enumerate() {
            let base = expand(&from.base, &env, escape, from.line)?;
            if base.is_empty() {
                return Err(DockerfileError::BlankBaseName {
                    line: from.line,
                    word: from.base.clone(),
                });
            }
            let platform = match &from.platform {
                Some(p) => {
                    let value = expand(p, &env, escape, from.line)?;
                    if value.is_empty() {
                        return Err(DockerfileError::EmptyPlatform {
                            line: from.line,
                            word: p.clone(),
                        });
                    }
                    Some(value)
                }
                None => None,
            };
            let stage_base = match by_name.get(&base) {
                Some(&i) => StageBase::Stage(i),
                None if base == SCRATCH => StageBase::Scratch,
                // Resolved below, once every stage is known (as upstream does).
                None => {
                    from_images.push((index, base.clone()));
                    StageBase::Scratch
                }
            };
            if let Some(name) = &from.name {
                by_name.insert(name.clone(), index);
            }
            stages.push(Stage {
                index,
                name: from.name.clone(),
                base: stage_base,
                line: from.line,
                platform,
            });
        }

        // toCommand / detectRunMount: `--from` is a stage name (case-insensitive, any stage)
        // or, for COPY only, a stage index; otherwise an image.
        let mut other_uses: Vec<(usize, String, UseKind)> = Vec::new();
        for p in parsed {
            match p {
                Parsed::CopyFrom { line, from } => {
                    // PR moby/buildkit#6153: `--from` is never expanded; say so.
                    let unchanged = shell::process(from, &Env::new(), escape, Options::default())
                        .map_err(|source| DockerfileError::Expansion {
                            line: *line,
                            word: from.clone(),
                            source,
                        })?
                        .result;
                    if &unchanged != from {
                        return Err(DockerfileError::FromFlagExpansion {
                            line: *line,
                            flag: "COPY --from",
                            value: from.clone(),
                        });
                    }
                    if let Some(index) = go_atoi(from) {
                        if index < 0 || index as u64 >= stages.len() as u64 {
                            return Err(DockerfileError::InvalidStageIndex {
                                line: *line,
                                index,
                                stages: stages.len(),
                            });
                        }
                        continue;
                    }
                    if !by_name.contains_key(&from.to_lowercase()) && from != SCRATCH {
                        other_uses.push((*line, from.clone(), UseKind::CopyFrom));
                    }
                }
                Parsed::RunMounts { line, froms } => {
                    for from in froms {
                        if !by_name.contains_key(&from.to_lowercase()) && from != SCRATCH {
                            other_uses.push((*line, from.clone(), UseKind::MountFrom));
                        }
                    }
                }
                _ => {}
            }
        }

        for (index, raw) in from_images {
            let stage = &mut stages[index];
            let use_ = image(raw, stage.line, UseKind::From, stage.platform.clone())?;
            stage.base = StageBase::Image(use_.reference.clone());
            images.push(use_);
        }
        for (line, raw, kind) in other_uses {
            images.push(image(raw, line, kind, None)?);
        }
        // Source order; a RUN's mounts keep their order (the sort is stable).
        images.sort_by_key(|u| u.line);
        Ok(stages)
    }

    /// Go's `strconv.Atoi`: optional sign, ASCII digits, fits in an `int` (64 bits).
    fn go_atoi(s: &str) -> Option<i64> {
        let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<i64>().ok()
    }
}

/// BuildKit's `shell/lex.go`: quotes, escapes and `$VAR` / `${VAR...}` substitution.
mod shell {
    use super::{ExpansionError, MAX_NESTING};
    use std::collections::{BTreeMap, HashSet};

    /// Variables in scope. A missing key is unset; an empty value is set but empty.
    pub(super) type Env = BTreeMap<String, String>;

    /// `Lex` switches used by the Dockerfile frontend.
    #[derive(Debug, Clone, Copy, Default)]
    pub(super) struct Options {
        /// Keep quote characters in the output.
        pub raw_quotes: bool,
        /// Keep escape tokens in the output.
        pub raw_escapes: bool,
        /// Leave references to unset variables as written.
        pub skip_unset_env: bool,
    }

    pub(super) struct Output {
        /// `ProcessWord`: the whole word.
        pub result: String,
        /// `ProcessWords`: split on unquoted whitespace.
        pub words: Vec<String>,
    }

    /// Processes `word` like `Lex.process`.
    pub(super) fn process(
        word: &str,
        env: &Env,
        escape: char,
        opts: Options,
    ) -> Result<Output, ExpansionError> {
        // text/scanner skips a byte-order mark at the start.
        let word = word.strip_prefix('\u{feff}').unwrap_or(word);
        let mut lexer = Lexer {
            chars: word.chars().collect(),
            pos: 0,
            env,
            escape,
            opts,
            raw_escapes: opts.raw_escapes,
            word_buf: String::new(),
            depth: 0,
        };
        let (result, words) = lexer.process_stop_on(None, opts.raw_escapes)?;
        Ok(Output { result, words })
    }

    struct Lexer<'a> {
        chars: Vec<char>,
        pos: usize,
        env: &'a Env,
        escape: char,
        opts: Options,
        raw_escapes: bool,
        /// Upstream shares one word buffer across nested calls (`sw.wordsBuffer`), which a
        /// nested `${...}` resets; kept so word splitting matches.
        word_buf: String,
        depth: usize,
    }

    #[derive(Default)]
    struct Words {
        words: Vec<String>,
        in_word: bool,
    }

    impl Lexer<'_> {
        fn peek(&self) -> Option<char> {
            self.chars.get(self.pos).copied()
        }

        fn next(&mut self) -> Option<char> {
            let c = self.peek();
            if c.is_some() {
                self.pos += 1;
            }
            c
        }

        fn add_char(&mut self, w: &mut Words, ch: char) {
            if ch.is_whitespace() && w.in_word {
                if !self.word_buf.is_empty() {
                    w.words.push(std::mem::take(&mut self.word_buf));
                    w.in_word = false;
                }
            } else if !ch.is_whitespace() {
                self.add_raw_char(w, ch);
            }
        }

        fn add_raw_char(&mut self, w: &mut Words, ch: char) {
            self.word_buf.push(ch);
            w.in_word = true;
        }

        fn add_string(&mut self, w: &mut Words, s: &str) {
            for ch in s.chars() {
                self.add_char(w, ch);
            }
        }

        fn add_raw_string(&mut self, w: &mut Words, s: &str) {
            self.word_buf.push_str(s);
            w.in_word = true;
        }

        fn get_words(&mut self, mut w: Words) -> Vec<String> {
            if !self.word_buf.is_empty() {
                w.words.push(std::mem::take(&mut self.word_buf));
            }
            w.words
        }

        /// `processStopOn`: up to `stop` (consumed) or the end.
        fn process_stop_on(
            &mut self,
            stop: Option<char>,
            raw_escapes: bool,
        ) -> Result<(String, Vec<String>), ExpansionError> {
            if self.depth >= MAX_NESTING {
                return Err(ExpansionError::TooDeep);
            }
            self.depth += 1;
            let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
            let out = self.stop_on(stop);
            self.raw_escapes = saved;
            self.depth -= 1;
            out
        }

        fn stop_on(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), ExpansionError> {
            let mut result = String::new();
            self.word_buf.clear();
            let mut words = Words::default();
            while let Some(ch) = self.peek() {
                if stop == Some(ch) {
                    self.pos += 1;
                    return Ok((result, self.get_words(words)));
                }
                match ch {
                    '$' => {
                        let tmp = self.process_dollar()?;
                        result.push_str(&tmp);
                        self.add_string(&mut words, &tmp);
                        continue;
                    }
                    '\'' | '"' => {
                        let tmp = if ch == '\'' {
                            self.process_single_quote()?
                        } else {
                            self.process_double_quote()?
                        };
                        result.push_str(&tmp);
                        self.add_raw_string(&mut words, &tmp);
                        continue;
                    }
                    _ => {}
                }
                self.pos += 1;
                let mut ch = ch;
                if ch == self.escape {
                    if self.raw_escapes {
                        self.add_raw_char(&mut words, ch);
                        result.push(ch);
                    }
                    // The escape token escapes the next character, except at the end.
                    match self.next() {
                        Some(c) => ch = c,
                        None => break,
                    }
                    self.add_raw_char(&mut words, ch);
                } else {
                    self.add_char(&mut words, ch);
                }
                result.push(ch);
            }
            if let Some(stop) = stop {
                return Err(ExpansionError::Unterminated(match stop {
                    '}' => "}",
                    '/' => "/",
                    _ => "character",
                }));
            }
            Ok((result, self.get_words(words)))
        }

        /// Everything up to the next `'` is literal.
        fn process_single_quote(&mut self) -> Result<String, ExpansionError> {
            let mut result = String::new();
            self.pos += 1;
            if self.opts.raw_quotes {
                result.push('\'');
            }
            loop {
                match self.next() {
                    None => return Err(ExpansionError::Unterminated("single-quote")),
                    Some('\'') => {
                        if self.opts.raw_quotes {
                            result.push('\'');
                        }
                        return Ok(result);
                    }
                    Some(c) => result.push(c),
                }
            }
        }

        /// Literal except `$`; the escape token escapes only `"`, `$` and itself.
        fn process_double_quote(&mut self) -> Result<String, ExpansionError> {
            let mut result = String::new();
            self.pos += 1;
            if self.opts.raw_quotes {
                result.push('"');
            }
            loop {
                match self.peek() {
                    None => return Err(ExpansionError::Unterminated("double-quote")),
                    Some('"') => {
                        self.pos += 1;
                        if self.opts.raw_quotes {
                            result.push('"');
                        }
                        return Ok(result);
                    }
                    Some('$') => {
                        let value = self.process_dollar()?;
                        result.push_str(&value);
                    }
                    Some(mut ch) => {
                        self.pos += 1;
                        if ch == self.escape {
                            if self.raw_escapes {
                                result.push(ch);
                            }
                            match self.peek() {
                                None => continue,
                                Some(c) if c == '"' || c == '$' || c == self.escape => {
                                    self.pos += 1;
                                    ch = c;
                                }
                                Some(_) => {}
                            }
                        }
                        result.push(ch);
                    }
                }
            }
        }

        fn lookup(&self, name: &str) -> Option<String> {
            self.env.get(name).cloned()
        }

        /// `$NAME`, `${NAME}` and `${NAME<modifier>word}`.
        fn process_dollar(&mut self) -> Result<String, ExpansionError> {
            let start = self.pos;
            self.pos += 1;
            if self.peek() != Some('{') {
                let name = self.process_name();
                if name.is_empty() {
                    return Ok("$".into());
                }
                return Ok(match self.lookup(&name) {
                    Some(v) => v,
                    None if self.opts.skip_unset_env => format!("${name}"),
                    None => String::new(),
                });
            }
            self.pos += 1;
            match self.peek() {
                None => return Err(ExpansionError::MissingBrace),
                Some('{' | '}' | ':') => return Err(ExpansionError::BadSubstitution),
                Some(_) => {}
            }
            let name = self.process_name();
            // Upstream reports "unsupported modifier (\u{fffd})" for `${NAME` at the end.
            let ch = self.next().ok_or(ExpansionError::MissingBrace)?;
            let mut chs = ch.to_string();
            let mut null_is_unset = false;
            let op = match ch {
                '}' => {
                    return Ok(match self.lookup(&name) {
                        Some(v) => v,
                        None if self.opts.skip_unset_env => format!("${{{name}}}"),
                        None => String::new(),
                    });
                }
                ':' => {
                    null_is_unset = true;
                    let op = self.next().ok_or(ExpansionError::MissingBrace)?;
                    chs.push(op);
                    op
                }
                '+' | '-' | '?' | '#' | '%' => ch,
                '/' => return self.process_replace(&name),
                _ => return Err(ExpansionError::UnsupportedModifier(chs)),
            };
            let raw_escapes = op == '#' || op == '%';
            if null_is_unset && raw_escapes {
                return Err(ExpansionError::UnsupportedModifier(chs));
            }
            let word = self.stop_on_brace('}', raw_escapes, ExpansionError::MissingBrace)?;
            let value = self.lookup(&name);
            if self.opts.skip_unset_env && value.is_none() {
                return Ok(format!("${{{name}{chs}{word}}}"));
            }
            let set_and_usable = |v: &String| !(null_is_unset && v.is_empty());
            match op {
                '-' => Ok(value.filter(set_and_usable).unwrap_or(word)),
                '+' => Ok(if value.as_ref().is_some_and(set_and_usable) {
                    word
                } else {
                    String::new()
                }),
                '?' => match value {
                    Some(v) if set_and_usable(&v) => Ok(v),
                    other => Err(ExpansionError::Required {
                        expr: self.chars[start..self.pos].iter().collect(),
                        name,
                        unset: other.is_none(),
                        message: word,
                    }),
                },
                '%' | '#' => {
                    let (pattern, greedy) = match word.strip_prefix(op) {
                        Some(p) => (p.to_owned(), true),
                        None => (word, false),
                    };
                    let value = value.unwrap_or_default();
                    if op == '%' {
                        super::pattern::trim_suffix(&pattern, &value, greedy)
                    } else {
                        super::pattern::trim_prefix(&pattern, &value, greedy)
                    }
                }
                _ => Err(ExpansionError::UnsupportedModifier(chs)),
            }
        }

        /// A nested word up to `stop`; an error at the end of input is reported as `at_end`.
        fn stop_on_brace(
            &mut self,
            stop: char,
            raw_escapes: bool,
            at_end: ExpansionError,
        ) -> Result<String, ExpansionError> {
            match self.process_stop_on(Some(stop), raw_escapes) {
                Ok((word, _)) => Ok(word),
                Err(ExpansionError::TooDeep) => Err(ExpansionError::TooDeep),
                Err(_) if self.peek().is_none() => Err(at_end),
                Err(e) => Err(e),
            }
        }

        /// `${NAME/pattern/replacement}` and `${NAME//pattern/replacement}`.
        fn process_replace(&mut self, name: &str) -> Result<String, ExpansionError> {
            let all = self.peek() == Some('/');
            if all {
                self.pos += 1;
            }
            let pattern = self.stop_on_brace('/', true, ExpansionError::MissingSlash)?;
            let replacement = self.stop_on_brace('}', true, ExpansionError::MissingBrace)?;
            let Some(value) = self
                .lookup(name)
                .or_else(|| (!self.opts.skip_unset_env).then(String::new))
            else {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            };
            super::pattern::replace(&pattern, &value, &replacement, all)
        }

        /// A variable name: letters, digits and `_`; or digits only; or one special
        /// parameter character.
        fn process_name(&mut self) -> String {
            let mut name = String::new();
            while let Some(ch) = self.peek() {
                if name.is_empty() && ch.is_numeric() {
                    while let Some(d) = self.peek().filter(|c| c.is_numeric()) {
                        name.push(d);
                        self.pos += 1;
                    }
                    return name;
                }
                if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                    self.pos += 1;
                    return ch.to_string();
                }
                if !(ch.is_alphabetic() || ch.is_numeric() || ch == '_') {
                    break;
                }
                name.push(ch);
                self.pos += 1;
            }
            name
        }
    }

    /// Failed states of the pattern matcher, shared across start positions.
    pub(super) type Failed = HashSet<(usize, usize)>;
}

/// Shell patterns of `${V#p}`, `${V%p}` and `${V/p/r}`: `convertShellPatternToRegex` turns
/// them into a regexp of literals, `.` (for `?`) and `.*` / `.*?` (for `*`), matched with RE2's
/// leftmost-first semantics (where `.` does not match a newline). Matched here directly.
mod pattern {
    use super::ExpansionError;
    use super::shell::Failed;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Tok {
        Star,
        Any,
        Lit(char),
    }

    fn compile(pattern: &str) -> Result<Vec<Tok>, ExpansionError> {
        let pattern_chars: Vec<char> = pattern
            .strip_prefix('\u{feff}')
            .unwrap_or(pattern)
            .chars()
            .collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < pattern_chars.len() {
            let c = pattern_chars[i];
            i += 1;
            match c {
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::Any),
                '\\' => {
                    // `\}` and `\/` were needed inside `${}`; the escape is not part of it.
                    if matches!(pattern_chars.get(i), Some('}' | '/')) {
                        continue;
                    }
                    match pattern_chars.get(i) {
                        Some(&e @ ('*' | '?' | '\\')) => {
                            toks.push(Tok::Lit(e));
                            i += 1;
                        }
                        other => {
                            return Err(ExpansionError::InvalidPattern {
                                pattern: pattern.to_owned(),
                                reason: match other {
                                    Some(e) => format!("invalid escape '\\{e}'"),
                                    None => "the pattern ends with '\\'".to_owned(),
                                },
                            });
                        }
                    }
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(toks)
    }

    /// Leftmost-first match of `toks` starting exactly at `start`: the end a backtracking
    /// matcher would find first, preferring longer (`greedy`) or shorter stars.
    fn match_at(
        toks: &[Tok],
        text: &[char],
        start: usize,
        greedy: bool,
        failed: &mut Failed,
    ) -> Option<usize> {
        let mut stack: Vec<(usize, usize, u8)> = vec![(0, start, 0)];
        while let Some(top) = stack.last_mut() {
            let (pi, ti, opt) = *top;
            if pi == toks.len() {
                return Some(ti);
            }
            top.2 += 1;
            let consumable = text.get(ti).is_some_and(|&c| c != '\n');
            let candidate = match toks[pi] {
                Tok::Lit(c) => (opt == 0 && text.get(ti) == Some(&c)).then_some((pi + 1, ti + 1)),
                Tok::Any => (opt == 0 && consumable).then_some((pi + 1, ti + 1)),
                Tok::Star => {
                    let take = consumable.then_some((pi, ti + 1));
                    let skip = Some((pi + 1, ti));
                    match (opt, greedy) {
                        (0, true) | (1, false) => take,
                        (1, true) | (0, false) => skip,
                        _ => None,
                    }
                }
            };
            let exhausted = match toks[pi] {
                Tok::Star => opt >= 1,
                _ => true,
            };
            if let Some(state) = candidate
                && !failed.contains(&state)
            {
                stack.push((state.0, state.1, 0));
                continue;
            }
            if exhausted {
                failed.insert((pi, ti));
                stack.pop();
            }
        }
        None
    }

    /// The leftmost match at or after `from`.
    fn find(
        toks: &[Tok],
        text: &[char],
        from: usize,
        greedy: bool,
        failed: &mut Failed,
    ) -> Option<(usize, usize)> {
        (from..=text.len()).find_map(|s| match_at(toks, text, s, greedy, failed).map(|e| (s, e)))
    }

    /// `trimPrefix`: remove the shortest (or longest) prefix matching `pattern`.
    pub(super) fn trim_prefix(
        pattern: &str,
        value: &str,
        greedy: bool,
    ) -> Result<String, ExpansionError> {
        let toks = compile(pattern)?;
        let text: Vec<char> = value.chars().collect();
        Ok(
            match match_at(&toks, &text, 0, greedy, &mut Failed::new()) {
                Some(end) => text[end..].iter().collect(),
                None => value.to_owned(),
            },
        )
    }

    /// `trimSuffix`: `trimPrefix` on the reversed pattern and value.
    pub(super) fn trim_suffix(
        pattern: &str,
        value: &str,
        greedy: bool,
    ) -> Result<String, ExpansionError> {
        let reversed: String = value.chars().rev().collect();
        let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
        Ok(trimmed.chars().rev().collect())
    }

    /// `reversePattern`: reverses the pattern but keeps each `\x` pair in order.
    fn reverse_pattern(pattern: &str) -> String {
        let p: Vec<char> = pattern.chars().collect();
        let mut out = p.clone();
        let mut i = 0;
        while i < p.len() {
            let out_idx = p.len() - 1 - i;
            if p[i] == '\\' && i + 1 < p.len() {
                out[out_idx - 1] = '\\';
                out[out_idx] = p[i + 1];
                i += 2;
            } else {
                out[out_idx] = p[i];
                i += 1;
            }
        }
        out.into_iter().collect()
    }

    /// `${V/p/r}` (first match, literal replacement) and `${V//p/r}` (Go's
    /// `ReplaceAllString`, whose replacement is a template: `$0` is the match, `$$` a `$`).
    pub(super) fn replace(
        pattern: &str,
        value: &str,
        replacement: &str,
        all: bool,
    ) -> Result<String, ExpansionError> {
        let toks = compile(pattern)?;
        let text: Vec<char> = value.chars().collect();
        let mut failed = Failed::new();
        if !all {
            return Ok(match find(&toks, &text, 0, true, &mut failed) {
                Some((a, b)) => {
                    let mut out: String = text[..a].iter().collect();
                    out.push_str(replacement);
                    out.extend(&text[b..]);
                    out
                }
                None => value.to_owned(),
            });
        }
        let mut out = String::new();
        let (mut last_end, mut search) = (0, 0);
        while search <= text.len() {
            let Some((a, b)) = find(&toks, &text, search, true, &mut failed) else {
                break;
            };
            out.extend(&text[last_end..a]);
            if b > last_end || a == 0 {
                let matched: String = text[a..b].iter().collect();
                expand_template(replacement, &matched, &mut out);
            }
            last_end = b;
            search = if search + 1 > b { search + 1 } else { b };
        }
        out.extend(&text[last_end.min(text.len())..]);
        Ok(out)
    }

    /// Go's `Regexp.expand` for a regexp without capture groups.
    fn expand_template(template: &str, matched: &str, out: &mut String) {
        let mut rest = template;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('$') {
                out.push('$');
                rest = r;
                continue;
            }
            let (brace, body) = match rest.strip_prefix('{') {
                Some(b) => (true, b),
                None => (false, rest),
            };
            let len = body
                .char_indices()
                .find(|&(_, c)| !(c.is_alphabetic() || c.is_numeric() || c == '_'))
                .map_or(body.len(), |(i, _)| i);
            let name = &body[..len];
            let after = &body[len..];
            let after = if brace {
                after.strip_prefix('}')
            } else {
                Some(after)
            };
            match after {
                Some(after) if !name.is_empty() => {
                    if name == "0" {
                        out.push_str(matched);
                    }
                    rest = after;
                }
                _ => out.push('$'),
            }
        }
        out.push_str(rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn parse_with(
        content: &str,
        build_args: &[(&str, &str)],
    ) -> Result<Dockerfile, DockerfileError> {
        let map = args(build_args);
        parse(content, &BuildContextArgs::new(&map))
    }

    fn ok(content: &str) -> Dockerfile {
        parse_with(content, &[]).unwrap_or_else(|e| panic!("should parse: {e}\n{content}"))
    }

    fn err(content: &str) -> DockerfileError {
        parse_with(content, &[]).expect_err(content)
    }

    /// The canonical references of `images`, with their lines.
    fn uses(d: &Dockerfile) -> Vec<(String, usize)> {
        d.images
            .iter()
            .map(|u| (u.reference.to_string(), u.line))
            .collect()
    }

    fn expand(word: &str, env: &[(&str, &str)]) -> Result<String, ExpansionError> {
        shell::process(word, &args(env), '\\', shell::Options::default()).map(|o| o.result)
    }

    fn words(word: &str, env: &[(&str, &str)]) -> Vec<String> {
        shell::process(word, &args(env), '\\', shell::Options::default())
            .map(|o| o.words)
            .unwrap_or_default()
    }

    // ---- shell/lex.go (ported from lex_test.go and envVarTest) ----

    #[test]
    fn lex_plain_and_braced_variables() {
        let env = [("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어")];
        assert_eq!(expand("hello", &env).unwrap(), "hello");
        assert_eq!(expand("he'll'o", &env).unwrap(), "hello");
        assert_eq!(expand("he\"ll\"o", &env).unwrap(), "hello");
        assert_eq!(expand("$PWD", &env).unwrap(), "/home");
        assert_eq!(expand("${PWD}", &env).unwrap(), "/home");
        assert_eq!(expand("'$PWD'", &env).unwrap(), "$PWD");
        assert_eq!(expand("\"$PWD\"", &env).unwrap(), "/home");
        assert_eq!(expand("he\\$PWD", &env).unwrap(), "he$PWD");
        assert_eq!(expand("\\${PWD}", &env).unwrap(), "${PWD}");
        assert_eq!(expand("$KOREAN", &env).unwrap(), "한국어");
        assert_eq!(expand("${KOREAN}x", &env).unwrap(), "한국어x");
        assert_eq!(expand("$PWD-x", &env).unwrap(), "/home-x");
        assert_eq!(expand("$UNSET", &env).unwrap(), "");
        assert_eq!(expand("a$", &env).unwrap(), "a$");
        assert_eq!(expand("$.x", &env).unwrap(), "$.x");
    }

    #[test]
    fn lex_default_and_alternative_distinguish_unset_and_empty() {
        let env = [("EMPTY", ""), ("SET", "v")];
        assert_eq!(expand("${SET:-d}", &env).unwrap(), "v");
        assert_eq!(expand("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(expand("${UNSET:-d}", &env).unwrap(), "d");
        assert_eq!(expand("${SET-d}", &env).unwrap(), "v");
        assert_eq!(expand("${EMPTY-d}", &env).unwrap(), "");
        assert_eq!(expand("${UNSET-d}", &env).unwrap(), "d");
        assert_eq!(expand("${SET:+a}", &env).unwrap(), "a");
        assert_eq!(expand("${EMPTY:+a}", &env).unwrap(), "");
        assert_eq!(expand("${UNSET:+a}", &env).unwrap(), "");
        assert_eq!(expand("${SET+a}", &env).unwrap(), "a");
        assert_eq!(expand("${EMPTY+a}", &env).unwrap(), "a");
        assert_eq!(expand("${UNSET+a}", &env).unwrap(), "");
    }

    #[test]
    fn lex_required_variables() {
        let env = [("EMPTY", ""), ("SET", "v")];
        assert_eq!(expand("${SET:?e}", &env).unwrap(), "v");
        assert_eq!(expand("${EMPTY?e}", &env).unwrap(), "");
        let e = expand("x${UNSET:?must be set}y", &env).unwrap_err();
        assert_eq!(
            e,
            ExpansionError::Required {
                expr: "${UNSET:?must be set}".into(),
                name: "UNSET".into(),
                unset: true,
                message: "must be set".into(),
            }
        );
        match expand("${EMPTY:?}", &env).unwrap_err() {
            ExpansionError::Required { unset, message, .. } => {
                assert!(!unset);
                assert_eq!(message, "");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            expand("${UNSET?}", &env),
            Err(ExpansionError::Required { unset: true, .. })
        ));
    }

    #[test]
    fn lex_nested_words_in_defaults() {
        let env = [("A", "a"), ("B", "")];
        assert_eq!(expand("${X:-${A}}", &env).unwrap(), "a");
        assert_eq!(expand("${X:-${B:-${A}-z}}", &env).unwrap(), "a-z");
        assert_eq!(expand("${A:+pre-${A}}", &env).unwrap(), "pre-a");
        assert_eq!(expand("${X:-'quoted }'}", &env).unwrap(), "quoted }");
        assert_eq!(expand("${X:-a\\}b}", &env).unwrap(), "a}b");
    }

    #[test]
    fn lex_syntax_errors() {
        assert_eq!(expand("${", &[]), Err(ExpansionError::MissingBrace));
        assert_eq!(expand("${A", &[]), Err(ExpansionError::MissingBrace));
        assert_eq!(expand("${A:-x", &[]), Err(ExpansionError::MissingBrace));
        assert_eq!(expand("${}", &[]), Err(ExpansionError::BadSubstitution));
        assert_eq!(expand("${:x}", &[]), Err(ExpansionError::BadSubstitution));
        assert_eq!(expand("${{x}", &[]), Err(ExpansionError::BadSubstitution));
        assert_eq!(
            expand("${A:x}", &[]),
            Err(ExpansionError::UnsupportedModifier(":x".into()))
        );
        assert_eq!(
            expand("${A:#x}", &[]),
            Err(ExpansionError::UnsupportedModifier(":#".into()))
        );
        assert_eq!(
            expand("'abc", &[]),
            Err(ExpansionError::Unterminated("single-quote"))
        );
        assert_eq!(
            expand("\"abc", &[]),
            Err(ExpansionError::Unterminated("double-quote"))
        );
        assert_eq!(expand("${A/x", &[]), Err(ExpansionError::MissingSlash));
    }

    #[test]
    fn lex_nesting_is_bounded() {
        let deep = format!("{}x{}", "${A:-".repeat(200), "}".repeat(200));
        assert_eq!(expand(&deep, &[]), Err(ExpansionError::TooDeep));
        let fine = format!("{}x{}", "${A:-".repeat(10), "}".repeat(10));
        assert_eq!(expand(&fine, &[]).unwrap(), "x");
    }

    #[test]
    fn lex_escapes_inside_double_quotes() {
        assert_eq!(expand("\"a\\\"b\"", &[]).unwrap(), "a\"b");
        assert_eq!(expand("\"a\\nb\"", &[]).unwrap(), "a\\nb");
        assert_eq!(expand("\"\\$X\"", &[("X", "1")]).unwrap(), "$X");
        assert_eq!(expand("a\\", &[]).unwrap(), "a");
        // The backtick escape token.
        let out = shell::process("a`$X", &args(&[("X", "1")]), '`', shell::Options::default());
        assert_eq!(out.unwrap().result, "a$X");
    }

    #[test]
    fn lex_prefix_and_suffix_removal() {
        let env = [("V", "abc.def.ghi")];
        assert_eq!(expand("${V#*.}", &env).unwrap(), "def.ghi");
        assert_eq!(expand("${V##*.}", &env).unwrap(), "ghi");
        assert_eq!(expand("${V%.*}", &env).unwrap(), "abc.def");
        assert_eq!(expand("${V%%.*}", &env).unwrap(), "abc");
        assert_eq!(expand("${V#x}", &env).unwrap(), "abc.def.ghi");
        assert_eq!(expand("${V#a?c}", &env).unwrap(), ".def.ghi");
        assert_eq!(expand("${V%\\*}", &[("V", "a*")]).unwrap(), "a");
        assert!(matches!(
            expand("${V%\\x}", &env),
            Err(ExpansionError::InvalidPattern { .. })
        ));
    }

    #[test]
    fn lex_pattern_replacement() {
        let env = [("V", "a-b-c")];
        assert_eq!(expand("${V/-/_}", &env).unwrap(), "a_b-c");
        assert_eq!(expand("${V//-/_}", &env).unwrap(), "a_b_c");
        assert_eq!(expand("${V/-*/}", &env).unwrap(), "a");
        assert_eq!(expand("${V//?/x}", &env).unwrap(), "xxxxx");
        assert_eq!(expand("${V/x/y}", &env).unwrap(), "a-b-c");
        // Go's ReplaceAllString: an empty pattern matches between every character.
        assert_eq!(expand("${V///.}", &[("V", "ab")]).unwrap(), ".a.b.");
        assert_eq!(expand("${UNSET//a/b}", &env).unwrap(), "");
    }

    #[test]
    fn lex_word_splitting() {
        assert_eq!(words("a b  c", &[]), ["a", "b", "c"]);
        assert_eq!(words("'a b' c", &[]), ["a b", "c"]);
        assert_eq!(words("$X c", &[("X", "1 2")]), ["1", "2", "c"]);
        assert_eq!(words("\"$X\" c", &[("X", "1 2")]), ["1 2", "c"]);
    }

    // ---- parser.go: lines, directives, comments, continuations, heredocs ----

    #[test]
    fn simple_from() {
        let d = ok("FROM ubuntu:22.04\nRUN echo hi\n");
        assert_eq!(uses(&d), [("docker.io/library/ubuntu:22.04".to_owned(), 1)]);
        assert_eq!(d.stages.len(), 1);
        assert_eq!(d.images[0].raw, "ubuntu:22.04");
        assert_eq!(d.images[0].kind, UseKind::From);
    }

    #[test]
    fn default_tag_is_applied() {
        let d = ok("FROM alpine");
        assert_eq!(
            d.images[0].reference.to_string(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(d.images[0].raw, "alpine");
    }

    #[test]
    fn instructions_are_case_insensitive() {
        let d = ok("from alpine AS Build\nFrOm build\ncopy --from=BUILD /a /b\n");
        assert_eq!(d.stages[0].name.as_deref(), Some("build"));
        assert_eq!(d.stages[1].base, StageBase::Stage(0));
        assert_eq!(d.images.len(), 1);
    }

    #[test]
    fn comments_and_blank_lines_count_for_line_numbers() {
        let d = ok("# a comment\n\n   # indented comment\nFROM alpine\n\nFROM debian:12\n");
        assert_eq!(
            uses(&d),
            [
                ("docker.io/library/alpine:latest".to_owned(), 4),
                ("docker.io/library/debian:12".to_owned(), 6),
            ]
        );
    }

    #[test]
    fn line_continuation_joins_and_keeps_the_start_line() {
        let d = ok("FROM \\\n  alpine:3.20 \\\n  AS base\nFROM base\n");
        assert_eq!(d.stages[0].line, 1);
        assert_eq!(d.stages[0].name.as_deref(), Some("base"));
        assert_eq!(d.stages[1].line, 4);
        assert_eq!(d.stages[1].base, StageBase::Stage(0));
    }

    #[test]
    fn continuation_skips_comments_and_empty_lines() {
        let d = ok("FROM \\\n# comment inside\n\n  alpine\nRUN x\n");
        assert_eq!(
            uses(&d),
            [("docker.io/library/alpine:latest".to_owned(), 1)]
        );
    }

    #[test]
    fn escaped_escape_token_is_not_a_continuation() {
        // `RUN echo \\` ends the instruction; the FROM on the next line is its own.
        let d = ok("FROM alpine\nRUN echo \\\\\nFROM debian\n");
        assert_eq!(d.stages.len(), 2);
        assert_eq!(d.stages[1].line, 3);
    }

    #[test]
    fn backtick_escape_directive() {
        let d = ok(
            "# escape=`\nFROM `\n  mcr.microsoft.com/windows/servercore:ltsc2022\nRUN dir c:\\\nFROM alpine\n",
        );
        assert_eq!(
            uses(&d),
            [
                (
                    "mcr.microsoft.com/windows/servercore:ltsc2022".to_owned(),
                    2
                ),
                ("docker.io/library/alpine:latest".to_owned(), 5),
            ]
        );
    }

    #[test]
    fn directives_only_at_the_top_and_keys_case_insensitive() {
        // After a comment, `# escape=` is just a comment: `\` stays the escape token.
        let d = ok("# hello\n# escape=`\nFROM alpine\nRUN a `\nFROM debian\n");
        assert_eq!(d.stages.len(), 2);
        let d = ok("# ESCAPE = `\nFROM `\nalpine\n");
        assert_eq!(d.stages.len(), 1);
        let d = ok("#Syntax=docker/dockerfile:1.7\nFROM alpine\n");
        assert_eq!(
            d.syntax.unwrap().reference.to_string(),
            "docker.io/docker/dockerfile:1.7"
        );
    }

    #[test]
    fn directive_errors() {
        assert!(matches!(
            err("# escape=x\nFROM alpine"),
            DockerfileError::Directive { line: 1, .. }
        ));
        let e = err("# escape=\\\n# escape=`\nFROM alpine");
        assert!(
            matches!(e, DockerfileError::Directive { line: 2, .. }),
            "{e}"
        );
        assert!(
            e.to_string().contains("only one escape parser directive"),
            "{e}"
        );
    }

    #[test]
    fn syntax_directive_is_an_image_use() {
        let d = ok("# syntax=docker/dockerfile:1\nFROM alpine\n");
        let s = d.syntax.clone().unwrap();
        assert_eq!(s.kind, UseKind::Syntax);
        assert_eq!(s.line, 1);
        assert_eq!(s.reference.to_string(), "docker.io/docker/dockerfile:1");
        assert_eq!(d.images[0], s);
        assert_eq!(d.images.len(), 2);
    }

    #[test]
    fn syntax_directive_forms() {
        let d = ok(
            "#!/usr/bin/env buildx\n# syntax = docker/dockerfile:1.4 --some-flag\nFROM alpine\n",
        );
        let s = d.syntax.unwrap();
        assert_eq!((s.raw.as_str(), s.line), ("docker/dockerfile:1.4", 2));
        let d = ok("// syntax=docker/dockerfile-upstream:master\nFROM alpine\n");
        assert_eq!(d.syntax.unwrap().raw, "docker/dockerfile-upstream:master");
        // Not at the top: a plain comment.
        assert!(
            ok("FROM alpine\n# syntax=docker/dockerfile:1\n")
                .syntax
                .is_none()
        );
        assert!(
            ok("\n# syntax=docker/dockerfile:1\nFROM alpine\n")
                .syntax
                .is_none()
        );
    }

    #[test]
    fn buildkit_syntax_build_arg_overrides_the_directive() {
        let d = parse_with(
            "# syntax=docker/dockerfile:1\nFROM alpine\n",
            &[("BUILDKIT_SYNTAX", "docker/dockerfile:1.9 extra")],
        )
        .unwrap();
        let s = d.syntax.unwrap();
        assert_eq!((s.raw.as_str(), s.line), ("docker/dockerfile:1.9", 0));
    }

    #[test]
    fn invalid_syntax_reference_is_an_error_with_line() {
        let e = err("# syntax=Docker/Dockerfile\nFROM alpine\n");
        assert!(
            matches!(e, DockerfileError::InvalidReference { line: 1, .. }),
            "{e}"
        );
    }

    #[test]
    fn byte_order_mark_and_crlf() {
        let d = ok("\u{feff}# escape=`\r\nFROM `\r\n  alpine\r\nFROM debian\r\n");
        assert_eq!(
            uses(&d),
            [
                ("docker.io/library/alpine:latest".to_owned(), 2),
                ("docker.io/library/debian:latest".to_owned(), 4),
            ]
        );
    }

    #[test]
    fn heredoc_bodies_are_not_instructions() {
        let content = "FROM alpine\nRUN <<EOF\nFROM evil:latest\nEOF\nCOPY <<-EOT /x\n\tFROM worse\n\tEOT\nFROM debian\n";
        let d = ok(content);
        assert_eq!(
            uses(&d),
            [
                ("docker.io/library/alpine:latest".to_owned(), 1),
                ("docker.io/library/debian:latest".to_owned(), 8),
            ]
        );
    }

    #[test]
    fn heredoc_quoted_names_and_several_per_line() {
        let d = ok("FROM alpine\nRUN <<'A' cat - <<\"B\"\nx\nA\ny\nB\nFROM debian\n");
        assert_eq!(d.stages[1].line, 7);
    }

    #[test]
    fn heredoc_json_form_and_other_instructions_do_not_open_heredocs() {
        let d = ok(
            "FROM alpine\nRUN [\"sh\", \"-c\", \"cat <<EOF\"]\nFROM debian\nENV X=<<EOF\nFROM busybox\n",
        );
        assert_eq!(d.stages.len(), 3);
    }

    #[test]
    fn unterminated_heredoc() {
        let e = err("FROM alpine\nRUN <<EOF\necho hi\n");
        assert_eq!(
            e,
            DockerfileError::UnterminatedHeredoc {
                line: 2,
                name: "EOF".into()
            }
        );
    }

    #[test]
    fn deeply_nested_onbuild_does_not_recurse() {
        let content = format!("FROM alpine\n{}RUN x\n", "ONBUILD ".repeat(200_000));
        assert_eq!(ok(&content).stages.len(), 1);
    }

    #[test]
    fn onbuild_heredoc_and_onbuild_from_are_ignored() {
        let d = ok(
            "FROM alpine\nONBUILD RUN <<EOF\nFROM nope\nEOF\nONBUILD COPY --from=golang /a /b\n",
        );
        assert_eq!(d.images.len(), 1);
    }

    // ---- instructions/parse.go: FROM ----

    #[test]
    fn from_argument_errors() {
        assert_eq!(err("FROM\n"), DockerfileError::FromWithoutImage { line: 1 });
        assert_eq!(
            err("FROM --platform=linux/amd64\n"),
            DockerfileError::FromWithoutImage { line: 1 }
        );
        assert!(matches!(
            err("FROM a b\n"),
            DockerfileError::FromArguments { line: 1, .. }
        ));
        assert!(matches!(
            err("FROM a to b\n"),
            DockerfileError::FromArguments { .. }
        ));
        assert!(matches!(
            err("FROM a AS 1b\n"),
            DockerfileError::InvalidStageName { .. }
        ));
        assert!(matches!(
            err("FROM a AS b/c\n"),
            DockerfileError::InvalidStageName { .. }
        ));
        let d = ok("FROM a as B.c-d_e\n");
        assert_eq!(d.stages[0].name.as_deref(), Some("b.c-d_e"));
    }

    #[test]
    fn stage_references_and_scratch() {
        let d = ok("FROM golang:1.22 AS build\nFROM scratch\nFROM build AS test\nFROM test\n");
        assert_eq!(
            d.stages[0].base,
            StageBase::Image(Reference::parse("golang:1.22").unwrap())
        );
        assert_eq!(d.stages[1].base, StageBase::Scratch);
        assert_eq!(d.stages[2].base, StageBase::Stage(0));
        assert_eq!(d.stages[3].base, StageBase::Stage(2));
        assert_eq!(uses(&d), [("docker.io/library/golang:1.22".to_owned(), 1)]);
    }

    #[test]
    fn from_names_only_earlier_stages_exactly() {
        // A later stage's name is an image; FROM matches the lowercased name exactly.
        let d = ok("FROM app\nFROM alpine AS app\nFROM app\n");
        assert_eq!(
            d.stages[0].base,
            StageBase::Image(Reference::parse("app").unwrap().with_default_tag())
        );
        assert_eq!(d.stages[2].base, StageBase::Stage(1));
        let e = err("FROM alpine AS app\nFROM App\n");
        assert!(
            matches!(
                e,
                DockerfileError::InvalidReference {
                    line: 2,
                    source: ReferenceError::Uppercase { .. }
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn registries_with_ports_and_digests() {
        let sha = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
        let d = ok(&format!(
            "FROM localhost:5000/x\nFROM 127.0.0.1:5000/x:tag\nFROM alpine@{sha}\nFROM ghcr.io/o/r:1@{sha}\n"
        ));
        assert_eq!(
            uses(&d).into_iter().map(|u| u.0).collect::<Vec<_>>(),
            [
                "localhost:5000/x:latest".to_owned(),
                "127.0.0.1:5000/x:tag".to_owned(),
                format!("docker.io/library/alpine@{sha}"),
                format!("ghcr.io/o/r:1@{sha}"),
            ]
        );
    }

    #[test]
    fn invalid_reference_names_the_line_and_input() {
        let e = err("FROM alpine\n\nFROM Ubuntu:22.04\n");
        assert!(matches!(
            e,
            DockerfileError::InvalidReference { line: 3, .. }
        ));
        assert!(e.to_string().starts_with("line 3: "), "{e}");
        assert!(e.to_string().contains("Ubuntu:22.04"), "{e}");
    }

    #[test]
    fn instruction_before_from() {
        assert_eq!(
            err("RUN echo\nFROM alpine\n"),
            DockerfileError::NoBuildStage {
                line: 1,
                instruction: "RUN".into()
            }
        );
        // Unknown instructions are not judged (a custom frontend may define them).
        assert_eq!(ok("FOO bar\nFROM alpine\n").stages.len(), 1);
    }

    #[test]
    fn empty_and_stageless_files() {
        assert_eq!(err(""), DockerfileError::NoInstructions);
        assert_eq!(err("# only a comment\n\n"), DockerfileError::NoInstructions);
        assert_eq!(err("ARG A=1\n"), DockerfileError::NoStages);
    }

    // ---- convert.go: meta ARGs, build args, platform args ----

    #[test]
    fn meta_arg_defaults_and_build_args() {
        let content = "ARG BASE=alpine\nARG VERSION=3.20\nFROM ${BASE}:${VERSION}\n";
        assert_eq!(uses(&ok(content))[0].0, "docker.io/library/alpine:3.20");
        let d = parse_with(content, &[("VERSION", "3.19")]).unwrap();
        assert_eq!(d.images[0].raw, "alpine:3.19");
    }

    #[test]
    fn build_arg_applies_only_to_declared_args() {
        let content = "ARG VERSION=1\nFROM app:${VERSION}${SUFFIX}\n";
        let d = parse_with(content, &[("VERSION", "2"), ("SUFFIX", "-x")]).unwrap();
        assert_eq!(d.images[0].raw, "app:2");
    }

    #[test]
    fn arg_without_default_is_unset() {
        let content = "ARG TAG\nFROM app:${TAG-unset}${TAG:-}x\n";
        assert_eq!(ok(content).images[0].raw, "app:unsetx");
        let d = parse_with(content, &[("TAG", "")]).unwrap();
        assert_eq!(d.images[0].raw, "app:x");
    }

    #[test]
    fn meta_args_expand_earlier_args_and_build_args_are_verbatim() {
        let content = "ARG REGISTRY=ghcr.io\nARG IMAGE=${REGISTRY}/org/app\nFROM $IMAGE\n";
        assert_eq!(ok(content).images[0].raw, "ghcr.io/org/app");
        let d = parse_with(content, &[("IMAGE", "quay.io/x/$y")]);
        assert!(matches!(
            d,
            Err(DockerfileError::InvalidReference { line: 3, .. })
        ));
    }

    #[test]
    fn several_args_per_line_and_quotes() {
        let content = "ARG A=\"my app\" B='x' C\nFROM alpine:${B}${C:-c}\n";
        assert_eq!(ok(content).images[0].raw, "alpine:xc");
        assert_eq!(
            err("ARG =1\nFROM a\n"),
            DockerfileError::BlankArgName { line: 1 }
        );
    }

    #[test]
    fn args_after_from_do_not_affect_later_froms() {
        let d = ok("ARG V=1\nFROM a:$V\nARG V=2\nFROM b:$V\n");
        assert_eq!(d.images[1].raw, "b:1");
    }

    #[test]
    fn automatic_platform_args_need_no_declaration() {
        let map = BTreeMap::new();
        let ctx = BuildContextArgs {
            build_args: &map,
            target_platform: "linux/arm64/v8".parse().unwrap(),
            build_platform: Platform::default(),
        };
        let d = parse(
            "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\nFROM app-${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-}${TARGETVARIANT}:${TARGETPLATFORM//\\//_}\n",
            &ctx,
        )
        .unwrap();
        assert_eq!(d.stages[0].platform.as_deref(), Some("linux/amd64"));
        assert_eq!(d.images[0].platform.as_deref(), Some("linux/amd64"));
        assert_eq!(d.images[1].raw, "app-linux-arm64-v8:linux_arm64_v8");
        assert_eq!(d.images[1].platform, None);
    }

    #[test]
    fn platform_args_are_overridden_by_build_args_and_meta_args() {
        let d = parse_with("FROM x:$TARGETARCH\n", &[("TARGETARCH", "riscv64")]).unwrap();
        assert_eq!(d.images[0].raw, "x:riscv64");
        let d = ok("ARG TARGETARCH\nFROM x:$TARGETARCH\n");
        assert_eq!(d.images[0].raw, "x:amd64");
        let d = ok("ARG TARGETARCH=s390x\nFROM x:$TARGETARCH\n");
        assert_eq!(d.images[0].raw, "x:s390x");
    }

    #[test]
    fn required_arg_error_says_what_to_pass() {
        let e = err("FROM alpine\nARG X\nFROM ${BASE:?must_be_set}\n");
        assert_eq!(
            e.to_string(),
            "line 3: ${BASE:?must_be_set}: BASE is unset: must_be_set (pass --build-arg BASE=...)"
        );
        // In a quoted ARG default the message may have spaces...
        let e = err("ARG IMAGE=\"${BASE:?must be set}\"\nFROM $IMAGE\n");
        assert_eq!(
            e.to_string(),
            "line 1: ${BASE:?must be set}: BASE is unset: must be set (pass --build-arg BASE=...)"
        );
        // ...but FROM splits its words on whitespace before expanding, as BuildKit does.
        assert!(matches!(
            err("FROM ${BASE:?must be set}\n"),
            DockerfileError::FromArguments { line: 1, .. }
        ));
        let e = parse_with("ARG BASE\nFROM ${BASE:?}\n", &[("BASE", "")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: ${BASE:?}: BASE is empty (pass --build-arg BASE=...)"
        );
    }

    #[test]
    fn expansion_errors_carry_the_line() {
        let e = err("ARG A=1\n\nFROM ${A\n");
        assert!(
            matches!(
                e,
                DockerfileError::Expansion {
                    line: 3,
                    source: ExpansionError::MissingBrace,
                    ..
                }
            ),
            "{e}"
        );
        let e = err("ARG A=${B\nFROM a\n");
        assert!(
            matches!(e, DockerfileError::Expansion { line: 1, .. }),
            "{e}"
        );
    }

    #[test]
    fn blank_base_and_platform() {
        assert_eq!(
            err("ARG BASE\nFROM $BASE\n"),
            DockerfileError::BlankBaseName {
                line: 2,
                word: "$BASE".into()
            }
        );
        assert!(matches!(
            err("FROM --platform=$NOPE alpine\n"),
            DockerfileError::EmptyPlatform { line: 1, .. }
        ));
        assert!(matches!(
            err("FROM --platform alpine\n"),
            DockerfileError::FromWithoutImage { .. }
        ));
        assert!(matches!(
            err("FROM --platform=a --platform=b alpine\n"),
            DockerfileError::DuplicateFlag { .. }
        ));
    }

    #[test]
    fn escaped_dollar_is_literal() {
        let e = err("FROM app:\\$TAG\n");
        assert!(matches!(e, DockerfileError::InvalidReference { .. }), "{e}");
        assert!(e.to_string().contains("app:$TAG"), "{e}");
    }

    // ---- toCommand: COPY --from, RUN --mount from= ----

    #[test]
    fn copy_from_stage_index_and_image() {
        let d = ok(
            "FROM golang:1.22 AS build\nFROM alpine\nCOPY --from=build /a /a\nCOPY --from=0 /b /b\nCOPY --from=nginx:1.27 /c /c\nCOPY --from=scratch /d /d\n",
        );
        assert_eq!(
            uses(&d),
            [
                ("docker.io/library/golang:1.22".to_owned(), 1),
                ("docker.io/library/alpine:latest".to_owned(), 2),
                ("docker.io/library/nginx:1.27".to_owned(), 5),
            ]
        );
        assert_eq!(d.images[2].kind, UseKind::CopyFrom);
        assert_eq!(d.images[2].platform, None);
    }

    #[test]
    fn copy_from_any_stage_case_insensitive() {
        // toCommand looks names up among all stages, lowercased.
        let d = ok("FROM alpine\nCOPY --from=Later /a /a\nFROM debian AS later\n");
        assert_eq!(d.images.len(), 2);
    }

    #[test]
    fn copy_from_variables_are_refused_like_buildkit() {
        let e = err("ARG IMG=nginx\nFROM alpine\nCOPY --from=${IMG} /a /b\n");
        assert!(
            matches!(e, DockerfileError::FromFlagExpansion { line: 3, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("FROM <image> AS <alias>"), "{e}");
    }

    #[test]
    fn copy_from_index_out_of_range() {
        assert_eq!(
            err("FROM alpine\nCOPY --from=1 /a /b\n"),
            DockerfileError::InvalidStageIndex {
                line: 2,
                index: 1,
                stages: 1
            }
        );
        assert!(matches!(
            err("FROM alpine\nCOPY --from=-1 /a /b\n"),
            DockerfileError::InvalidStageIndex { .. }
        ));
    }

    #[test]
    fn copy_flag_forms() {
        // `--from value` (no `=`) takes the next word, like extractBuilderFlags...
        let d = ok("FROM alpine\nCOPY --from python:3.12 --chown=1:1 /a /b\n");
        assert_eq!(d.images[1].raw, "python:3.12");
        // ...but only until a flag with `=` was seen (upstream quirk).
        assert!(matches!(
            err("FROM alpine\nCOPY --chown=1:1 --from python:3.12 /a /b\n"),
            DockerfileError::FlagWithoutValue { line: 2, .. }
        ));
        let d = ok("FROM alpine\nCOPY --from=\"redis:7\" /a /b\n");
        assert_eq!(d.images[1].raw, "redis:7");
        assert!(matches!(
            err("FROM alpine\nCOPY --from=a --from=b /x /y\n"),
            DockerfileError::DuplicateFlag { .. }
        ));
    }

    #[test]
    fn run_mount_from() {
        let d = ok(
            "FROM alpine AS deps\nFROM alpine\nRUN --mount=type=cache,target=/c --mount=from=DEPS,target=/d \\\n    --mount=type=bind,from=busybox:1.36,source=/bin,target=/b make\n",
        );
        assert_eq!(
            uses(&d).into_iter().map(|u| u.0).collect::<Vec<_>>(),
            [
                "docker.io/library/alpine:latest",
                "docker.io/library/alpine:latest",
                "docker.io/library/busybox:1.36",
            ]
        );
        assert_eq!(d.images[2].kind, UseKind::MountFrom);
        assert_eq!(d.images[2].line, 3);
    }

    #[test]
    fn run_mount_from_quoted_csv_and_errors() {
        // Quotes of the flag word are removed before the CSV is read.
        let d = ok("FROM alpine\nRUN --mount=\"type=bind,from=node:20\",target=/n x\n");
        assert_eq!(d.images[1].raw, "node:20");
        let d = ok("FROM alpine\nRUN --mount='\"from=node:20\",target=/n' x\n");
        assert_eq!(d.images[1].raw, "node:20");
        assert!(matches!(
            err("FROM alpine\nRUN --mount=type=bind,from=$IMG x\n"),
            DockerfileError::FromFlagExpansion { line: 2, .. }
        ));
        assert!(matches!(
            err("FROM alpine\nRUN --mount=from=a\\\"b x\n"),
            DockerfileError::InvalidMount { .. }
        ));
        assert!(matches!(
            err("FROM alpine\nRUN --mount\n"),
            DockerfileError::FlagWithoutValue { .. }
        ));
    }

    #[test]
    fn unique_references_dedups_in_order() {
        let d = ok("FROM alpine\nFROM debian\nCOPY --from=alpine /a /b\n");
        let refs: Vec<String> = d.unique_references().iter().map(|r| r.familiar()).collect();
        assert_eq!(refs, ["alpine:latest", "debian:latest"]);
        assert_eq!(d.images.len(), 3);
    }

    #[test]
    fn realistic_multi_stage_file() {
        let content = r#"# syntax=docker/dockerfile:1.7
# escape=\
ARG GO_VERSION=1.22
ARG ALPINE_VERSION=3.20

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-alpine${ALPINE_VERSION} AS build
WORKDIR /src
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=bind,source=go.mod,target=go.mod \
    go mod download
COPY <<EOF /src/main.go
package main
FROM this-is-not-an-instruction
EOF
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/app .

FROM gcr.io/distroless/static-debian12:nonroot AS final
COPY --from=build /out/app /app
COPY --from=docker.io/library/busybox:1.36 /bin/busybox /busybox
ENTRYPOINT ["/app"]
"#;
        let d = ok(content);
        assert_eq!(
            uses(&d),
            [
                ("docker.io/docker/dockerfile:1.7".to_owned(), 1),
                ("docker.io/library/golang:1.22-alpine3.20".to_owned(), 6),
                ("gcr.io/distroless/static-debian12:nonroot".to_owned(), 17),
                ("docker.io/library/busybox:1.36".to_owned(), 19),
            ]
        );
        assert_eq!(d.stages[1].name.as_deref(), Some("final"));
    }

    #[test]
    fn platform_parsing_and_display() {
        let p: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert_eq!(Platform::default().to_string(), "linux/amd64");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//x".parse::<Platform>().is_err());
    }

    #[test]
    fn extract_builder_flags_like_upstream() {
        let f = |s: &str| instructions::extract_builder_flags(s);
        assert_eq!(f("--a=b rest"), ("rest".into(), vec!["--a=b".into()]));
        assert_eq!(f("--a b rest"), ("rest".into(), vec!["--a=b".into()]));
        assert_eq!(
            f("--a=\"x y\" rest"),
            ("rest".into(), vec!["--a=x y".into()])
        );
        assert_eq!(f("-- --a=b"), (" --a=b".into(), vec![]));
        assert_eq!(f("--a"), (String::new(), vec!["--a".into()]));
        assert_eq!(f("plain --a=b"), ("plain --a=b".into(), vec![]));
    }

    // parser_test.go TestParseWords.
    #[test]
    fn upstream_parse_words() {
        let w = |s: &str| instructions::parse_words(s, '\\');
        assert_eq!(w("foo"), ["foo"]);
        assert_eq!(w("foo bar"), ["foo", "bar"]);
        assert_eq!(w("foo\\ bar"), ["foo\\ bar"]);
        assert_eq!(w("foo=bar"), ["foo=bar"]);
        assert_eq!(w("foo bar 'abc xyz'"), ["foo", "bar", "'abc xyz'"]);
        assert_eq!(w("foo bar \"abc xyz\""), ["foo", "bar", "\"abc xyz\""]);
        assert_eq!(w("àöû"), ["àöû"]);
        assert_eq!(w("föo bàr \"âbc xÿz\""), ["föo", "bàr", "\"âbc xÿz\""]);
    }

    // parser_test.go TestParseWarnsOnEmptyContinutationLine, with FROM so the joined words
    // are visible: empty lines and comments inside a continuation are skipped.
    #[test]
    fn upstream_empty_continuation_lines() {
        let content = "\nFROM alpine:3.6\n\nFROM something \\\n\n    following \\\n\n    more\n";
        match err(content) {
            DockerfileError::FromArguments { line, args } => {
                assert_eq!(line, 4);
                assert_eq!(args, ["something", "following", "more"]);
            }
            other => panic!("{other}"),
        }
        let content = "FROM non-indented \\\n# this is a comment\n   AS after-comment\nFROM indented \\\n    # an indented comment\n    AS comment\nFROM after-comment\n";
        let d = ok(content);
        assert_eq!(d.stages[0].name.as_deref(), Some("after-comment"));
        assert_eq!(d.stages[1].name.as_deref(), Some("comment"));
        assert_eq!(
            (d.stages[2].line, &d.stages[2].base),
            (7, &StageBase::Stage(0))
        );
    }

    #[test]
    fn lex_special_parameters() {
        // `$$` is the (never set) special parameter `$`, not a literal dollar.
        assert_eq!(expand("a$$b", &[]).unwrap(), "ab");
        assert_eq!(expand("$1x", &[]).unwrap(), "x");
        assert_eq!(expand("${#}", &[]).unwrap(), "");
    }

    #[test]
    fn syntax_in_json_form() {
        let d = parse_with("{\"syntax\": \"example/frontend:2\", \"steps\": []}", &[]);
        // A JSON file is not a Dockerfile, but its frontend is still found first.
        assert_eq!(d, Err(DockerfileError::NoStages));
        assert_eq!(
            directives::detect_syntax("{\"syntax\": \"example/frontend:2 arg\"}"),
            Some(("example/frontend:2".to_owned(), 1))
        );
    }

    // ---- never panics ----

    fn dockerfile_token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("FROM ".to_owned()),
            Just("from ".to_owned()),
            Just("ARG ".to_owned()),
            Just("COPY --from=".to_owned()),
            Just("RUN --mount=".to_owned()),
            Just("ONBUILD ".to_owned()),
            Just(" AS ".to_owned()),
            Just("--platform=".to_owned()),
            Just("# syntax=".to_owned()),
            Just("# escape=`".to_owned()),
            Just("\\\n".to_owned()),
            Just("`\n".to_owned()),
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just("<<EOF".to_owned()),
            Just("<<-'X'".to_owned()),
            Just("EOF".to_owned()),
            Just("${".to_owned()),
            Just("}".to_owned()),
            Just("$V".to_owned()),
            Just(":-".to_owned()),
            Just(":?".to_owned()),
            Just("##*".to_owned()),
            Just("%%".to_owned()),
            Just("//".to_owned()),
            Just("\"".to_owned()),
            Just("'".to_owned()),
            Just(",from=".to_owned()),
            Just("=".to_owned()),
            Just("scratch".to_owned()),
            Just("alpine:3.20".to_owned()),
            Just("@sha256:".to_owned()),
            Just("localhost:5000/x".to_owned()),
            Just("0".to_owned()),
            Just("\u{feff}".to_owned()),
            "[a-zA-Z0-9 ._:/@$-]{1,6}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_never_panics_on_arbitrary_text(s in "\\PC{0,200}") {
            let _ = parse_with(&s, &[]);
        }

        #[test]
        fn parse_never_panics_on_dockerfile_like_tokens(
            tokens in proptest::collection::vec(dockerfile_token(), 0..40),
            build_args in proptest::collection::btree_map("[A-Z]{1,3}", "[a-z0-9:$/{}]{0,6}", 0..3),
        ) {
            let content: String = tokens.concat();
            let ctx = BuildContextArgs::new(&build_args);
            if let Ok(d) = parse(&content, &ctx) {
                // Whatever is found is consistent.
                for u in &d.images {
                    prop_assert!(u.line <= content.lines().count() + 1);
                }
                for (i, s) in d.stages.iter().enumerate() {
                    prop_assert_eq!(s.index, i);
                    if let StageBase::Stage(b) = s.base {
                        prop_assert!(b < i);
                    }
                }
            }
        }

        #[test]
        fn lexer_never_panics(s in "[-a-zA-Z0-9${}:?#%/*\\\\'\" ]{0,60}") {
            let env = args(&[("A", "a.b.c"), ("E", "")]);
            for escape in ['\\', '`'] {
                let _ = shell::process(&s, &env, escape, shell::Options::default());
                let _ = shell::process(&s, &env, escape, shell::Options { raw_quotes: true, raw_escapes: true, skip_unset_env: true });
            }
        }
    }
}
