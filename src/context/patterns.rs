//! `.dockerignore` matching (moby/patternmatcher `patternmatcher.go`): [`PatternMatcher`],
//! the `filepath.Match` syntax check and the pattern compiler (exact / prefix / suffix /
//! regexp), whose regexps run on [`super::goregexp`].

use super::goregexp::{self, RegexError};
use super::ignorefile::{clean, dir};

#[cfg(test)]
mod tests;

/// A pattern that cannot be used, with its index in the list given to [`PatternMatcher::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pattern {index} `{pattern}`: {reason}")]
pub struct PatternError {
    pub index: usize,
    /// The pattern as given.
    pub pattern: String,
    pub reason: PatternReason,
}

/// Why a pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternReason {
    /// A `!` with nothing after it.
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
    /// `filepath.Match` refuses it (an unclosed or empty `[...]`, a trailing `\`).
    #[error("syntax error in pattern")]
    Syntax,
    /// The regexp the pattern compiles to is not valid (e.g. the range `[z-a]`).
    #[error("syntax error in pattern ({0})")]
    Regexp(RegexError),
}

/// Paths checked against `.dockerignore` patterns: later patterns override earlier ones,
/// `!` patterns re-include. Paths are relative to the context root, `/`-separated.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: MatchKind,
}

#[derive(Debug, Clone)]
enum MatchKind {
    Exact,
    Prefix,
    Suffix,
    Regexp(goregexp::Regex),
}

/// What matching a directory found, handed to its children by
/// [`PatternMatcher::matches_using_parent_results`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

impl Pattern {
    /// The cleaned pattern, without its `!`.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// Whether this is a `!` exception.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    fn matches(&self, path: &str) -> bool {
        let cleaned = self.cleaned.as_bytes();
        let path_bytes = path.as_bytes();
        match &self.kind {
            MatchKind::Exact => path == self.cleaned,
            // strip trailing **
            MatchKind::Prefix => cleaned
                .get(..cleaned.len().saturating_sub(2))
                .is_some_and(|prefix| path_bytes.starts_with(prefix)),
            // strip leading **; "**/foo" also matches "foo"
            MatchKind::Suffix => {
                let suffix = cleaned.get(2..).unwrap_or_default();
                path_bytes.ends_with(suffix)
                    || (suffix.first() == Some(&b'/') && suffix.get(1..) == Some(path_bytes))
            }
            MatchKind::Regexp(re) => re.is_match(path),
        }
    }
}

impl PatternMatcher {
    /// `patternmatcher.New`: trims and cleans each pattern, skips empty ones, reads a leading
    /// `!` as an exception, and checks the syntax. Unlike upstream, the pattern's regexp is
    /// built here too, so a bad one is reported now rather than at the first match.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PatternMatcher, PatternError> {
        let mut matcher = PatternMatcher::default();
        for (index, raw) in patterns.iter().enumerate() {
            let raw = raw.as_ref();
            let bad = |reason: PatternReason| PatternError {
                index,
                pattern: raw.to_string(),
                reason,
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            let mut cleaned = clean(trimmed);
            let exclusion = cleaned.starts_with('!');
            if exclusion {
                if cleaned.len() == 1 {
                    return Err(bad(PatternReason::IllegalExclusion));
                }
                cleaned.remove(0);
                matcher.exclusions = true;
            }
            if !glob_syntax_ok(cleaned.as_bytes()) {
                return Err(bad(PatternReason::Syntax));
            }
            let kind = compile(&cleaned).map_err(|e| bad(PatternReason::Regexp(e)))?;
            matcher.patterns.push(Pattern {
                cleaned,
                exclusion,
                kind,
            });
        }
        Ok(matcher)
    }

    /// Whether any pattern is a `!` exception.
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    /// The patterns in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// `MatchesExact`: whether `file` itself is excluded; parents are not considered.
    pub fn matches_exact(&self, file: &str) -> bool {
        let mut matched = false;
        for pattern in &self.patterns {
            // Skip an inclusion once matched, and an exception until matched.
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches(file) {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// `MatchesOrParentMatches`: whether `file` is excluded, a pattern matching one of its
    /// parent directories counting as matching `file`.
    pub fn matches_or_parent_matches(&self, file: &str) -> bool {
        let parent = dir(file);
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches(file) || (parent != "." && matches_a_parent(pattern, &parent)) {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// `MatchesUsingParentResults`: like [`Self::matches_or_parent_matches`], but a pattern
    /// that matched the parent directory (per `parent`, from this call on the parent) counts
    /// as matched without being evaluated again. With `MatchInfo::default()` the parents are
    /// checked by name. A `parent` from another matcher is treated as the default (upstream
    /// returns an error).
    pub fn matches_using_parent_results(
        &self,
        file: &str,
        parent: &MatchInfo,
    ) -> (bool, MatchInfo) {
        let parent_matched: &[bool] = if parent.parent_matched.len() == self.patterns.len() {
            &parent.parent_matched
        } else {
            &[]
        };
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut hit = parent_matched.get(i).copied().unwrap_or(false);
            if !hit {
                if pattern.exclusion != matched {
                    continue;
                }
                hit = pattern.matches(file);
                if !hit && parent_matched.is_empty() {
                    let parent = dir(file);
                    hit = parent != "." && matches_a_parent(pattern, &parent);
                }
            }
            if let Some(slot) = info.parent_matched.get_mut(i) {
                *slot = hit;
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        (matched, info)
    }
}

/// Whether `pattern` matches `parent` or one of its ancestors ("a", "a/b", "a/b/c").
fn matches_a_parent(pattern: &Pattern, parent: &str) -> bool {
    parent
        .match_indices('/')
        .map(|(i, _)| parent.get(..i).unwrap_or_default())
        .chain(std::iter::once(parent))
        .any(|prefix| pattern.matches(prefix))
}

/// The error check of Go's `filepath.Match(pattern, ".")` on Unix: every chunk between
/// stars must be well formed (classes closed and non-empty, ranges complete, no trailing `\`).
fn glob_syntax_ok(pattern: &[u8]) -> bool {
    let mut rest = pattern;
    while !rest.is_empty() {
        // scanChunk
        while rest.first() == Some(&b'*') {
            rest = rest.get(1..).unwrap_or_default();
        }
        let mut in_range = false;
        let mut i = 0;
        while let Some(&b) = rest.get(i) {
            match b {
                b'\\' if i + 1 < rest.len() => i += 1,
                b'[' => in_range = true,
                b']' => in_range = false,
                b'*' if !in_range => break,
                _ => {}
            }
            i += 1;
        }
        let (chunk, tail) = rest.split_at(i.min(rest.len()));
        if !chunk_syntax_ok(chunk) {
            return false;
        }
        rest = tail;
    }
    true
}

/// matchChunk's syntax checks.
fn chunk_syntax_ok(mut chunk: &[u8]) -> bool {
    while let Some(&b) = chunk.first() {
        chunk = chunk.get(1..).unwrap_or_default();
        match b {
            b'[' => {
                if chunk.first() == Some(&b'^') {
                    chunk = chunk.get(1..).unwrap_or_default();
                }
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = chunk.get(1..).unwrap_or_default();
                        break;
                    }
                    let Some(after_lo) = get_esc(chunk) else {
                        return false;
                    };
                    chunk = after_lo;
                    if chunk.first() == Some(&b'-') {
                        let Some(after_hi) = get_esc(chunk.get(1..).unwrap_or_default()) else {
                            return false;
                        };
                        chunk = after_hi;
                    }
                    ranges += 1;
                }
            }
            b'\\' => {
                if chunk.is_empty() {
                    return false;
                }
                chunk = chunk.get(1..).unwrap_or_default();
            }
            _ => {}
        }
    }
    true
}

/// getEsc: one possibly escaped character of a class; `None` for a syntax error, including
/// a class that ends right after it.
fn get_esc(chunk: &[u8]) -> Option<&[u8]> {
    let mut chunk = chunk;
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return None,
        Some(b'\\') => chunk = chunk.get(1..).filter(|c| !c.is_empty())?,
        Some(_) => {}
    }
    let first = *chunk.first()?;
    let width = match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return None,
    };
    std::str::from_utf8(chunk.get(..width)?).ok()?;
    chunk.get(width..).filter(|rest| !rest.is_empty())
}

/// The match type `Pattern.compile` detects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detected {
    Exact,
    Prefix,
    Suffix,
    Regexp,
}

/// `Pattern.compile`: the pattern's match type and, for [`Detected::Regexp`], the regexp.
fn compile(pattern: &str) -> Result<MatchKind, RegexError> {
    Ok(match regexp_source(pattern) {
        (Detected::Exact, _) => MatchKind::Exact,
        (Detected::Prefix, _) => MatchKind::Prefix,
        (Detected::Suffix, _) => MatchKind::Suffix,
        (Detected::Regexp, source) => MatchKind::Regexp(goregexp::Regex::new(&source)?),
    })
}

/// The match type and regexp source `Pattern.compile` builds, exactly as upstream builds
/// them (with `/` as the separator). The source is only meaningful for a regexp match.
fn regexp_source(pattern: &str) -> (Detected, String) {
    let mut source = String::from("^");
    let mut detected = Detected::Exact;
    let mut chars = pattern.chars().peekable();
    // text/scanner skips a byte order mark at the start.
    if chars.peek() == Some(&'\u{feff}') {
        chars.next();
    }
    let mut i = 0usize;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // Treat **/ as **
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    // "**" at the end: like .gitignore, accept everything
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        source.push_str(".*");
                        detected = Detected::Regexp;
                    }
                } else {
                    // any number of directories, even none
                    source.push_str("(.*/)?");
                    detected = Detected::Regexp;
                }
                if i == 0 {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                source.push_str("[^/]*");
                detected = Detected::Regexp;
            }
            '?' => {
                source.push_str("[^/]");
                detected = Detected::Regexp;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                source.push('\\');
                source.push(ch);
            }
            '\\' => match chars.next() {
                Some(next) => {
                    source.push('\\');
                    source.push(next);
                    detected = Detected::Regexp;
                }
                None => source.push('\\'),
            },
            '[' | ']' => {
                source.push(ch);
                detected = Detected::Regexp;
            }
            other => source.push(other),
        }
        i += 1;
    }
    if detected == Detected::Regexp {
        source.push('$');
    }
    (detected, source)
}
