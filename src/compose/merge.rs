//! Normalizing service definitions to one shape and merging them as the Compose
//! specification's merge rules say (`-f` files, override files, `extends`): mappings merge
//! key by key, scalars are replaced, sequences are appended without duplicates, except the
//! ones a later file replaces (`command`, `entrypoint`, `healthcheck.test`).

use serde_json::{Map, Value};

/// Sequences that a later definition replaces instead of extending.
const REPLACED: [&str; 4] = ["command", "entrypoint", "test", "profiles"];

/// Merges `over` into `base`. `key` is the key `base` sits under (for the sequence rule).
pub fn merge(base: &mut Value, over: Value, key: &str) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if !v.is_null() => merge(existing, v, &k),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if !REPLACED.contains(&key) => {
            for v in o {
                if !b.contains(&v) {
                    b.push(v);
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// `["K=V", "K"]` or `{K: V}` as a mapping (`K` alone maps to null: "from the environment").
pub fn list_to_map(value: &Value, separator: char) -> Option<Map<String, Value>> {
    match value {
        Value::Object(m) => Some(m.clone()),
        Value::Array(items) => {
            let mut m = Map::new();
            for item in items {
                let text = match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                match text.split_once(separator) {
                    Some((k, v)) => m.insert(k.trim().to_string(), Value::String(v.to_string())),
                    None => m.insert(text.trim().to_string(), Value::Null),
                };
            }
            Some(m)
        }
        _ => None,
    }
}

/// A scalar as Compose reads it into a string (numbers and booleans as written).
pub fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mappings_merge_scalars_replace_sequences_append() {
        let mut base = json!({
            "image": "a",
            "build": {"context": ".", "args": {"A": "1", "B": "2"}, "tags": ["x"]},
            "command": ["run", "a"],
        });
        merge(
            &mut base,
            json!({
                "image": "b",
                "build": {"args": {"B": "3", "C": "4"}, "tags": ["x", "y"], "target": "prod"},
                "command": ["run", "b"],
            }),
            "",
        );
        assert_eq!(
            base,
            json!({
                "image": "b",
                "build": {"context": ".", "args": {"A": "1", "B": "3", "C": "4"}, "tags": ["x", "y"], "target": "prod"},
                "command": ["run", "b"],
            })
        );
    }

    #[test]
    fn lists_become_maps() {
        let m = list_to_map(&json!(["A=1", "B", "C=x=y"]), '=').unwrap();
        assert_eq!(Value::Object(m), json!({"A": "1", "B": null, "C": "x=y"}));
    }
}
