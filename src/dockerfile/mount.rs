//! `RUN --mount` values (`instructions/commands_runmount.go` `parseMount`).

use super::{DockerfileError, MountError};

/// The `from=` of one `--mount` value: `None` if it has none (or an empty one).
pub(super) fn from(spec: &str, line: usize) -> Result<Option<String>, DockerfileError> {
    let fields = csv_record(spec).map_err(|source| DockerfileError::InvalidMount {
        line,
        spec: spec.to_owned(),
        source,
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
fn csv_record(s: &str) -> Result<Vec<String>, MountError> {
    if s.is_empty() {
        return Err(MountError::Empty);
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
                    None => return Err(MountError::ExtraneousQuote),
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
                Some(_) => return Err(MountError::ExtraneousQuote),
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
                    Some('"') => return Err(MountError::BareQuote),
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
