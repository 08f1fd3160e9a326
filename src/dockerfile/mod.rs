//! Every external image a Dockerfile needs, found by BuildKit's own rules.
//!
//! [`parse`] follows moby/buildkit's Dockerfile frontend step by step:
//!
//! 1. `parser/directives.go` `DetectSyntax`: the `# syntax=` frontend image (also `//` and JSON
//!    forms, after an optional `#!` line), or the `BUILDKIT_SYNTAX` build arg.
//! 2. `parser/parser.go` `Parse`: lines, byte-order mark, parser directives (`escape`, `syntax`,
//!    `check`; only at the top, case-insensitive keys, each once), comments, line
//!    continuations with the escape token, empty continuation lines, heredocs (also with
//!    blanks after `<<`, as Dockerfile frontend 1.16 reads them: `RUN << EOF`).
//! 3. `parser/split_command.go` and `parser/line_parsers.go`: instruction words and
//!    `--flags`; `instructions/parse.go`: `FROM`, `ARG`, `COPY --from`, `RUN --mount`.
//! 4. `dockerfile2llb/convert.go` `toDispatchState`: meta `ARG`s (before the first `FROM`)
//!    with build args, BuildKit's automatic platform args, `FROM` and `--platform` expansion
//!    with `shell/lex.go`, stage names, `scratch`, `COPY --from` and `RUN --mount from=`.
//!
//! What it deliberately does not check is listed in [`parse`]. `buildkit_cases.rs` compares
//! the parser with BuildKit's own parser test data (last run against moby/buildkit
//! `73ed6825c4b7`; the data is not in this repository, see there how to run it).

#[cfg(test)]
mod buildkit_cases;
mod directives;
mod error;
mod heredoc;
mod instructions;
mod lines;
mod model;
mod mount;
mod pattern;
mod resolve;
mod shell;
#[cfg(test)]
mod tests;

pub use error::{DirectiveError, DockerfileError, ExpansionError, MAX_NESTING, MountError};
pub use model::{
    BuildContextArgs, Dockerfile, ImageUse, Platform, PlatformError, Stage, StageBase, UseKind,
};

use std::collections::BTreeMap;

use crate::reference::Reference;

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
    let parsed = instructions::parse(instructions.iter().map(|i| (i.line, &i.node)))?;
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
            stage: None,
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
        stage: None,
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
