//! Block-style YAML of a JSON value, for the generated CRD and the manifests rendered from
//! objects. Strings that YAML could read as anything else are written JSON-quoted (a JSON
//! string is a YAML double-quoted scalar).

use serde_json::Value;

#[must_use]
pub(crate) fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => mapping(map, 0, &mut out),
        Value::Array(items) if !items.is_empty() => sequence(items, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn mapping(map: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&string(key));
        out.push(':');
        nested(value, indent, out);
    }
}

fn sequence(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        // The item as if it were indented by two, its first two spaces then made "- ".
        let mut inner = String::new();
        match item {
            Value::Object(map) if !map.is_empty() => mapping(map, indent + 2, &mut inner),
            Value::Array(items) if !items.is_empty() => sequence(items, indent + 2, &mut inner),
            other => {
                inner.push_str(&" ".repeat(indent + 2));
                inner.push_str(&scalar(other));
                inner.push('\n');
            }
        }
        out.push_str(&" ".repeat(indent));
        out.push_str("- ");
        out.push_str(&inner[indent + 2..]);
    }
}

/// What follows `key:`.
fn nested(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            mapping(map, indent + 2, out);
        }
        // As `kubectl get -o yaml` writes them: the items at the key's indentation.
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            sequence(items, indent, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// Plain when it can only be read back as this string, JSON-quoted otherwise.
fn string(s: &str) -> String {
    const WORDS: [&str; 11] = [
        "true", "false", "null", "yes", "no", "on", "off", "y", "n", "~", "",
    ];
    let plain = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'/' || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'))
        && !WORDS.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_owned()
    } else {
        Value::String(s.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::to_yaml;

    #[test]
    fn nested_mappings_sequences_and_quoting() {
        let v = json!({
            "a": {"b": [1, "x y", {"c": true, "d": []}], "e": {}},
            "f": ["yes", "/usr/bin/*", "10.0.0.0/8", "app.kubernetes.io/name"],
            "g": [[1, 2]],
        });
        assert_eq!(
            to_yaml(&v),
            "a:\n  b:\n  - 1\n  - \"x y\"\n  - c: true\n    d: []\n  e: {}\n\
             f:\n- \"yes\"\n- \"/usr/bin/*\"\n- \"10.0.0.0/8\"\n- app.kubernetes.io/name\n\
             g:\n- - 1\n  - 2\n"
        );
    }
}
