//! `.env` files as Compose reads them (compose-go `dotenv`): `KEY=value` lines, an optional
//! `export ` prefix, `#` comments, single quotes (literal), double quotes (escapes, several
//! lines), unquoted values with a trailing ` # comment` dropped, and `${VAR}` interpolation
//! in unquoted and double-quoted values (earlier keys of the file first, then `lookup`).

use std::collections::BTreeMap;

use super::interpolate::{InterpolationError, interpolate};

/// Why a `.env` file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DotenvError {
    #[error("line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    #[error("line {line}: {source}")]
    Interpolation {
        line: usize,
        #[source]
        source: InterpolationError,
    },
}

/// The variables of a `.env` file, in order. A bare `KEY` line takes KEY from `lookup` (and is
/// skipped when it is not set there).
pub fn parse(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, DotenvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').collect();
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let number = i + 1;
        let line = lines[i].trim_end_matches('\r');
        i += 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed
            .strip_prefix("export ")
            .unwrap_or(trimmed)
            .trim_start();
        let split = trimmed.find(['=', ':']);
        let (key, raw) = match split {
            Some(at) => (trimmed[..at].trim(), Some(&trimmed[at + 1..])),
            None => (trimmed.trim(), None),
        };
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-[]".contains(c))
        {
            return Err(DotenvError::Syntax {
                line: number,
                reason: format!("unexpected character in the variable name {key:?}"),
            });
        }
        let known = |k: &str| -> Option<String> {
            vars.iter()
                .rev()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
                .or_else(|| lookup(k))
        };
        let Some(raw) = raw else {
            if let Some(v) = lookup(key) {
                vars.push((key.to_string(), v));
            }
            continue;
        };
        let raw = raw.trim_start_matches([' ', '\t']);
        let value = if let Some(body) = raw.strip_prefix('\'') {
            let (content, _) = quoted(body, '\'', &lines, &mut i).ok_or(DotenvError::Syntax {
                line: number,
                reason: "a single quote is never closed".into(),
            })?;
            content
        } else if let Some(body) = raw.strip_prefix('"') {
            let (content, _) = quoted(body, '"', &lines, &mut i).ok_or(DotenvError::Syntax {
                line: number,
                reason: "a double quote is never closed".into(),
            })?;
            let unescaped = unescape(&content);
            interpolate(&unescaped, &known)
                .map_err(|source| DotenvError::Interpolation {
                    line: number,
                    source,
                })?
                .value
        } else {
            let value = match raw.find(" #").or_else(|| raw.find("\t#")) {
                Some(at) => &raw[..at],
                None => raw,
            };
            interpolate(value.trim(), &known)
                .map_err(|source| DotenvError::Interpolation {
                    line: number,
                    source,
                })?
                .value
        };
        vars.push((key.to_string(), value));
    }
    Ok(vars)
}

/// The text up to the closing `quote` (which may be on a later line), and what follows it.
fn quoted(first: &str, quote: char, lines: &[&str], next: &mut usize) -> Option<(String, String)> {
    let mut content = String::new();
    let mut current = first.trim_end_matches('\r').to_string();
    loop {
        if let Some(end) = find_closing(&current, quote) {
            content.push_str(&current[..end]);
            return Some((content, current[end + 1..].to_string()));
        }
        content.push_str(&current);
        content.push('\n');
        let line = lines.get(*next)?;
        *next += 1;
        current = line.trim_end_matches('\r').to_string();
    }
}

fn find_closing(s: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if quote == '"' && c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        if c == quote && !escaped {
            return Some(i);
        }
        escaped = false;
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('$') => out.push_str("$$"),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The variables as a map (a later key wins).
pub fn to_map(vars: Vec<(String, String)>) -> BTreeMap<String, String> {
    vars.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> BTreeMap<String, String> {
        to_map(parse(text, &|k| (k == "HOME").then(|| "/home/me".to_string())).unwrap())
    }

    #[test]
    fn the_dotenv_forms() {
        let env = read(
            "# a comment\n\
             A=1\n\
             export B=two words\n\
             C = spaced \n\
             D='single ${A} $x'\n\
             E=\"double ${A}\\n\"\n\
             F=unquoted # comment\n\
             G=${A}-${HOME}\n\
             H=\n\
             I=\"multi\nline\"\n\
             J: colon\n\
             HOME\n\
             K=a#b\n",
        );
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "two words");
        assert_eq!(env["C"], "spaced");
        assert_eq!(env["D"], "single ${A} $x");
        assert_eq!(env["E"], "double 1\n");
        assert_eq!(env["F"], "unquoted");
        assert_eq!(env["G"], "1-/home/me");
        assert_eq!(env["H"], "");
        assert_eq!(env["I"], "multi\nline");
        assert_eq!(env["J"], "colon");
        assert_eq!(env["HOME"], "/home/me");
        assert_eq!(env["K"], "a#b");
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("A=1\nB=\"open\n", &|_| None).unwrap_err();
        assert!(matches!(err, DotenvError::Syntax { line: 2, .. }), "{err}");
        let err = parse("A=1\nBAD KEY=1\n", &|_| None).unwrap_err();
        assert!(matches!(err, DotenvError::Syntax { line: 2, .. }), "{err}");
        let err = parse("A=${X:?needed}\n", &|_| None).unwrap_err();
        assert!(err.to_string().contains("needed"), "{err}");
    }
}
