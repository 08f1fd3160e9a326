//! Parser directives (`parser/directives.go`).

use super::{DirectiveError, is_space};
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
    ) -> Result<Option<(String, String)>, DirectiveError> {
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
            return Err(DirectiveError::Repeated { name: key });
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
