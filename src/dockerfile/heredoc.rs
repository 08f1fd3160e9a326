//! Heredoc words (`parser.go` `heredocsFromLine`, `ParseHeredoc`).

use super::ExpansionError;
use super::shell::{self, Options};

/// One heredoc an instruction opens (`parser.Heredoc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Heredoc {
    /// The terminator line, quotes removed.
    pub name: String,
    /// `<<-`: leading tabs are removed before a line is compared with the name.
    pub chomp: bool,
    /// Whether the body is subject to variable expansion (no part of the name was quoted).
    /// Only the BuildKit comparison tests read it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub expand: bool,
    /// The `3` of `3<<EOF` (0 when none is given). Only the tests read it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub file_descriptor: u64,
    /// The body, line ends kept; filled in by `lines::split`. Only the tests read it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub content: String,
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

/// RE2's `\s`: `[\t\n\f\r ]`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{0c}' | '\r' | ' ')
}

/// `ParseHeredoc`: `^(\d*)<<(-?)\s*([^<]*)$` (the `\s*` since Dockerfile frontend 1.16) and
/// a single-word name.
pub(super) fn parse(word: &str) -> Result<Option<Heredoc>, ExpansionError> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let digits = &word[..word.len() - rest.len()];
    let Some(rest) = rest.strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches(is_re_space);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let plain = Options {
        skip_unset_env: true,
        ..Options::default()
    };
    let words = shell::process(rest, &Default::default(), '\\', plain)?.words;
    let Ok([name]) = <[String; 1]>::try_from(words) else {
        return Ok(None);
    };
    // Lexed again with quotes kept: a quote that disappeared means the name was quoted, and
    // then the body is not expanded. (Upstream also errors when the two lexings give different
    // word counts; a word of a line cannot hold the unquoted blank that would need.)
    let raw = Options {
        raw_quotes: true,
        ..plain
    };
    let raw_words = shell::process(rest, &Default::default(), '\\', raw)?.words;
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    let expand = raw_words.first().map_or(0, |w| quotes(w)) == quotes(&name);
    // strconv.ParseUint, error ignored: none is 0, too large is the maximum.
    let file_descriptor = match digits {
        "" => 0,
        d => d.parse().unwrap_or(u64::MAX),
    };
    Ok(Some(Heredoc {
        name,
        chomp,
        expand,
        file_descriptor,
        content: String::new(),
    }))
}
