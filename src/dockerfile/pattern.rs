//! Shell patterns of `${V#p}`, `${V%p}` and `${V/p/r}`: `convertShellPatternToRegex` turns
//! them into a regexp of literals, `.` (for `?`) and `.*` / `.*?` (for `*`), matched with RE2's
//! leftmost-first semantics (where `.` does not match a newline). Matched here directly.

use super::ExpansionError;
use std::collections::HashSet;

/// Failed states of the matcher, shared across start positions.
type Failed = HashSet<(usize, usize)>;

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
