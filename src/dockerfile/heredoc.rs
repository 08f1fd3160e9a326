//! Heredoc words (`parser.go` `heredocsFromLine`, `ParseHeredoc`).

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
