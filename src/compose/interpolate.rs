//! Compose's variable interpolation (compose-go `template`): `$$`, `$VAR`, `${VAR}`,
//! `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+replacement}`
//! and `${VAR+replacement}`, where defaults, errors and replacements may themselves hold
//! substitutions.

use std::collections::BTreeSet;

/// Why a value cannot be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    /// A `$` not followed by `$`, a name or `{name...}` (compose: "Invalid template").
    #[error("invalid template: write `$$` for a literal `$`, `$NAME` or `${{NAME}}`")]
    Invalid,
    /// `${` without its `}`.
    #[error("invalid template: a `${{` is never closed with `}}`")]
    Unclosed,
    /// `${NAME:?message}` with NAME unset or empty, `${NAME?message}` with NAME unset.
    #[error("required variable {name} is {}{}", if *unset { "missing" } else { "empty" }, if message.is_empty() { String::new() } else { format!(": {message}") })]
    Required {
        name: String,
        unset: bool,
        message: String,
    },
    #[error("substitutions are nested more than {MAX_DEPTH} levels deep")]
    TooDeep,
}

/// How deep `${A:-${B:-...}}` may nest.
pub const MAX_DEPTH: usize = 32;

/// The result of interpolating one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpolated {
    pub value: String,
    /// Variables used without a default that are not set (each becomes empty, with a warning).
    pub unset: BTreeSet<String>,
}

/// Interpolates `text` with `lookup` (a variable that `lookup` does not know is unset).
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Interpolated, InterpolationError> {
    let mut unset = BTreeSet::new();
    let value = substitute(text, lookup, &mut unset, 0)?;
    Ok(Interpolated { value, unset })
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut BTreeSet<String>,
    depth: usize,
) -> Result<String, InterpolationError> {
    if depth > MAX_DEPTH {
        return Err(InterpolationError::TooDeep);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let mut chars = after.chars();
        match chars.next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some(c) if is_name_start(c) => {
                let len = after
                    .find(|c: char| !is_name_char(c))
                    .unwrap_or(after.len());
                let name = &after[..len];
                match lookup(name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        unset.insert(name.to_string());
                    }
                }
                rest = &after[len..];
            }
            Some('{') => {
                let body_start = &after[1..];
                let end = closing_brace(body_start).ok_or(InterpolationError::Unclosed)?;
                let body = &body_start[..end];
                out.push_str(&braced(body, lookup, unset, depth)?);
                rest = &body_start[end + 1..];
            }
            _ => return Err(InterpolationError::Invalid),
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The index of the `}` that closes a `${` whose body starts `s`, counting nested `${`.
fn closing_brace(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// `NAME`, `NAME:-x`, `NAME-x`, `NAME:?x`, `NAME?x`, `NAME:+x`, `NAME+x`.
fn braced(
    body: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut BTreeSet<String>,
    depth: usize,
) -> Result<String, InterpolationError> {
    let len = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
    let name = &body[..len];
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(InterpolationError::Invalid);
    }
    let op = &body[len..];
    let value = lookup(name);
    let nested = |s: &str, unset: &mut BTreeSet<String>| substitute(s, lookup, unset, depth + 1);
    let (colon, op) = match op.strip_prefix(':') {
        Some(rest) => (true, rest),
        None => (false, op),
    };
    // With `:`, an empty value counts as unset.
    let present = value.as_ref().is_some_and(|v| !colon || !v.is_empty());
    if op.is_empty() && !colon {
        return Ok(match value {
            Some(v) => v,
            None => {
                unset.insert(name.to_string());
                String::new()
            }
        });
    }
    let Some(kind) = op.chars().next() else {
        return Err(InterpolationError::Invalid);
    };
    let arg = &op[1..];
    match kind {
        '-' => {
            if present {
                Ok(value.unwrap_or_default())
            } else {
                nested(arg, unset)
            }
        }
        '+' => {
            if present {
                nested(arg, unset)
            } else {
                Ok(String::new())
            }
        }
        '?' => {
            if present {
                Ok(value.unwrap_or_default())
            } else {
                Err(InterpolationError::Required {
                    name: name.to_string(),
                    unset: value.is_none(),
                    message: nested(arg, unset)?,
                })
            }
        }
        _ => Err(InterpolationError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn run(text: &str) -> Result<String, InterpolationError> {
        let env: BTreeMap<&str, &str> = [("SET", "value"), ("EMPTY", ""), ("TAG", "1.2")]
            .into_iter()
            .collect();
        interpolate(text, &|k| env.get(k).map(|v| v.to_string())).map(|i| i.value)
    }

    #[test]
    fn the_compose_forms() {
        let cases = [
            ("plain", "plain"),
            ("$SET", "value"),
            ("${SET}", "value"),
            ("a-${SET}-b", "a-value-b"),
            ("$SET.x", "value.x"),
            ("$$SET", "$SET"),
            ("$${SET}", "${SET}"),
            ("${UNSET}", ""),
            ("$UNSET", ""),
            ("${UNSET:-d}", "d"),
            ("${UNSET-d}", "d"),
            ("${EMPTY:-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${SET:-d}", "value"),
            ("${SET:+r}", "r"),
            ("${EMPTY:+r}", ""),
            ("${EMPTY+r}", "r"),
            ("${UNSET+r}", ""),
            ("${UNSET:-${TAG}}", "1.2"),
            ("${UNSET:-${ALSO:-x}-y}", "x-y"),
            ("${UNSET:-a:b}", "a:b"),
            ("img:${TAG:-latest}", "img:1.2"),
            ("${SET?oops}", "value"),
            ("${EMPTY?oops}", ""),
        ];
        for (input, want) in cases {
            assert_eq!(run(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn required_variables_fail_with_their_message() {
        assert_eq!(
            run("${UNSET:?set UNSET first}"),
            Err(InterpolationError::Required {
                name: "UNSET".into(),
                unset: true,
                message: "set UNSET first".into()
            })
        );
        assert!(matches!(
            run("${EMPTY:?x}"),
            Err(InterpolationError::Required { unset: false, .. })
        ));
        assert!(matches!(
            run("${UNSET?}"),
            Err(InterpolationError::Required { unset: true, .. })
        ));
    }

    #[test]
    fn bad_templates_are_errors() {
        for bad in [
            "$", "a $ b", "$1", "${", "${SET", "${}", "${1A}", "${SET:x}", "${SET%x}",
        ] {
            assert!(run(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unset_names_are_reported() {
        let r = interpolate("${A}-$B-${C:-x}", &|_| None).unwrap();
        assert_eq!(r.value, "--x");
        assert_eq!(r.unset, ["A", "B"].into_iter().map(String::from).collect());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}x{}", "${A:-".repeat(100), "}".repeat(100));
        assert_eq!(run(&text), Err(InterpolationError::TooDeep));
    }
}
