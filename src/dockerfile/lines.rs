//! `parser/parser.go` `Parse`: logical instructions from physical lines.

use super::directives::DirectiveParser;
use super::heredoc::Heredoc;
use super::instructions::Node;
use super::{DirectiveError, DockerfileError, is_space};

/// One instruction after continuation lines are joined.
pub(super) struct RawInstruction {
    /// 1-based line where it starts.
    pub line: usize,
    /// 1-based line where it ends (its last continuation line or heredoc terminator). Only
    /// the BuildKit comparison tests read it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub end_line: usize,
    pub node: Node,
    /// The heredocs it opens, with their bodies.
    #[cfg_attr(not(test), allow(dead_code))]
    pub heredocs: Vec<Heredoc>,
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
            .map_err(|source| DockerfileError::Directive { line, source })?;
        if let Some((key, value)) = directive
            && key == "escape"
        {
            self.escape = match value.as_str() {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    return Err(DockerfileError::Directive {
                        line,
                        source: DirectiveError::InvalidEscape { value },
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
        let mut heredocs = Vec::new();
        if node.can_contain_heredoc() && text.contains("<<") {
            heredocs =
                super::heredoc::from_line(&text).map_err(|source| DockerfileError::Expansion {
                    line: start,
                    word: text.clone(),
                    source,
                })?;
            for heredoc in &mut heredocs {
                let mut terminated = false;
                while i < lines.len() {
                    let raw = lines[i];
                    i += 1;
                    current += 1;
                    let body = trim_newline(raw);
                    let candidate = if heredoc.chomp {
                        body.trim_start_matches('\t')
                    } else {
                        body
                    };
                    if candidate == heredoc.name {
                        terminated = true;
                        break;
                    }
                    heredoc.content.push_str(raw);
                }
                if !terminated {
                    return Err(DockerfileError::UnterminatedHeredoc {
                        line: start,
                        name: std::mem::take(&mut heredoc.name),
                    });
                }
            }
        }
        out.push(RawInstruction {
            line: start,
            end_line: current,
            node,
            heredocs,
        });
    }
    if out.is_empty() {
        return Err(DockerfileError::NoInstructions);
    }
    Ok((out, state.escape))
}
