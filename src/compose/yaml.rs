//! YAML reading for compose files: anchors, aliases and merge keys as YAML defines them,
//! with serde-saphyr's absolute limits against alias bombs ("billion laughs": events, nodes,
//! replayed alias events, depth) but without its alias-to-anchor ratio check, which rejects
//! real compose files that reuse a few anchors many times. Errors are sentences, never a
//! debug struct.

use serde_saphyr::budget::BudgetBreach;

/// The most nodes (mappings, sequences, scalars; aliases expanded) a compose file may have.
pub const MAX_NODES: usize = 50_000;

/// Reads one YAML document into a JSON value.
pub fn parse(text: &str) -> Result<serde_json::Value, YamlError> {
    let mut options = serde_saphyr::Options::default();
    let mut budget = serde_saphyr::Budget::default();
    budget.enforce_alias_anchor_ratio = false;
    // The largest compose file of the corpus (getsentry/self-hosted: 19 services merging big
    // anchors) has under 12,000 nodes with aliases expanded; these limits keep a hostile
    // file's cost far below a second.
    budget.max_nodes = MAX_NODES;
    budget.max_events = 4 * MAX_NODES;
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = 2 * MAX_NODES;
    serde_saphyr::from_str_with_options::<Option<serde_json::Value>>(text, options)
        .map(|v| v.unwrap_or(serde_json::Value::Null))
        .map_err(YamlError::from)
}

/// Why a compose file's YAML could not be read.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// Over one of the limits against alias bombs: `at` is " (line N)" or empty.
    #[error(
        "the YAML is too large or too deeply aliased to read{at}: {limit}; a compose file this size is not expected (is it an alias bomb?)"
    )]
    TooLarge { at: String, limit: String },
    /// Not YAML, or not one document.
    #[error("{0}")]
    Syntax(serde_saphyr::Error),
}

impl From<serde_saphyr::Error> for YamlError {
    fn from(err: serde_saphyr::Error) -> YamlError {
        describe(err)
    }
}

/// A serde-saphyr error as a sentence: a budget breach never shows its debug struct.
fn describe(err: serde_saphyr::Error) -> YamlError {
    let mut inner = &err;
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = inner
    {
        inner = error;
    }
    if let serde_saphyr::Error::Budget { breach, location } = inner {
        let at = if location.line() > 0 {
            format!(" (line {})", location.line())
        } else {
            String::new()
        };
        return YamlError::TooLarge {
            at,
            limit: breach_text(breach),
        };
    }
    YamlError::Syntax(err)
}

fn breach_text(breach: &BudgetBreach) -> String {
    match breach {
        BudgetBreach::Events { .. } => format!("more than {} parser events", 4 * MAX_NODES),
        BudgetBreach::Aliases { .. } => "more aliases than the limit".into(),
        BudgetBreach::Anchors { .. } => "more anchors than the limit".into(),
        BudgetBreach::Depth { .. } => "nested deeper than the limit".into(),
        BudgetBreach::Nodes { .. } => {
            format!("more than {MAX_NODES} nodes with aliases expanded")
        }
        BudgetBreach::ScalarBytes { .. } => "more text than the limit".into(),
        BudgetBreach::MergeKeys { .. } => "more merge keys than the limit".into(),
        BudgetBreach::Documents { .. } => "more documents than the limit".into(),
        BudgetBreach::RecordedAnchorEvents { .. } | BudgetBreach::RecordedAnchorBytes { .. } => {
            "anchors hold more than the limit".into()
        }
        _ => "a size limit was exceeded".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_aliases_of_few_anchors_are_read() {
        let mut text = String::from("x-a: &a {k: v}\nlist:\n");
        for _ in 0..200 {
            text.push_str("  - *a\n");
        }
        let value = parse(&text).unwrap();
        assert_eq!(value["list"].as_array().unwrap().len(), 200);
    }

    #[test]
    fn merge_keys_are_expanded() {
        let value = parse("x: &d {a: 1, b: 2}\ny:\n  <<: *d\n  b: 3\n").unwrap();
        assert_eq!(value["y"], serde_json::json!({"a": 1, "b": 3}));
    }

    #[test]
    fn an_alias_bomb_is_refused_quickly_with_a_sentence() {
        let mut text = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut prev = 'a';
        for name in 'b'..='j' {
            text.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 9].join(",")
            ));
            prev = name;
        }
        let started = std::time::Instant::now();
        let err = parse(&text).unwrap_err().to_string();
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
        assert!(err.contains("too large or too deeply aliased"), "{err}");
        assert!(!err.contains('{') && !err.contains("Breach"), "{err}");
    }

    #[test]
    fn an_empty_file_is_null() {
        assert_eq!(parse("").unwrap(), serde_json::Value::Null);
    }
}
