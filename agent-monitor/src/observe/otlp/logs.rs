//! One audit-log line as an OTLP log record.
//!
//! The body is the whole line as a structured value (a key-value list mirroring the JSON
//! object), so a collector can filter on any field; the fields worth indexing are also
//! attributes. Severity: INFO for an allowed action, WARN for a violation (and a `gap`
//! line: records were lost), ERROR when a process or agent was killed; an OCSF line (one
//! with `class_uid`) maps its own `severity_id`, and its attributes come from where the
//! OCSF mapping puts the agent's fields.

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value as Any},
    logs::v1::{LogRecord, SeverityNumber},
};
use serde_json::Value;

use crate::observe::record::parse_rfc3339_nanos;

pub(crate) fn string_value(s: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(Any::StringValue(s.into())),
    }
}

pub(crate) fn attribute(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(string_value(value)),
        ..Default::default()
    }
}

/// A JSON value as an OTLP value (objects become key-value lists, in their order).
fn any(v: &Value) -> AnyValue {
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(Any::BoolValue(*b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => Any::IntValue(i),
            None => Any::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Some(Any::StringValue(s.clone())),
        Value::Array(items) => Some(Any::ArrayValue(ArrayValue {
            values: items.iter().map(any).collect(),
        })),
        Value::Object(map) => Some(Any::KvlistValue(KeyValueList {
            values: map
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(any(v)),
                    ..Default::default()
                })
                .collect(),
        })),
    };
    AnyValue { value }
}

/// The record's time: an RFC 3339 string, or (OCSF) milliseconds since the epoch.
fn time_of(v: &Value) -> u64 {
    match v.get("time") {
        Some(Value::String(s)) => parse_rfc3339_nanos(s).unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().map_or(0, |ms| ms.saturating_mul(1_000_000)),
        _ => 0,
    }
}

fn severity_of(v: &Value) -> SeverityNumber {
    if v.get("class_uid").is_some() {
        // OCSF: 1 informational, 2 low, 3 medium, 4 high, 5 critical, 6 fatal.
        return match v.get("severity_id").and_then(Value::as_u64) {
            Some(1) => SeverityNumber::Info,
            Some(2) => SeverityNumber::Warn,
            Some(3) => SeverityNumber::Warn2,
            Some(4) => SeverityNumber::Error,
            Some(5) => SeverityNumber::Fatal,
            Some(6) => SeverityNumber::Fatal2,
            _ => SeverityNumber::Unspecified,
        };
    }
    let s = |key: &str| v.get(key).and_then(Value::as_str).unwrap_or("");
    let killed = |a: &str| a.starts_with("killed");
    if killed(s("action")) || killed(s("after")) {
        SeverityNumber::Error
    } else if s("verdict") == "violation" || s("kind") == "gap" {
        SeverityNumber::Warn
    } else {
        SeverityNumber::Info
    }
}

/// The attributes worth indexing: JSON pointer in the record, attribute key.
const ATTRIBUTES: &[(&str, &str)] = &[
    ("/agent/scope", "agent_monitor.scope"),
    ("/agent/task", "agent_monitor.task"),
    ("/agent/owner", "agent_monitor.owner"),
    ("/agent/identity", "agent_monitor.identity"),
    ("/kind", "agent_monitor.kind"),
    ("/verdict", "agent_monitor.verdict"),
    ("/action", "agent_monitor.action"),
    ("/after", "agent_monitor.after"),
    ("/kubernetes/namespace", "k8s.namespace.name"),
    ("/kubernetes/pod", "k8s.pod.name"),
    ("/kubernetes/pod_uid", "k8s.pod.uid"),
    ("/kubernetes/container", "k8s.container.name"),
    ("/class_name", "ocsf.class_name"),
];

/// The same attributes from an OCSF line (`--audit-format ocsf`): where the OCSF mapping
/// puts each field.
const OCSF_ATTRIBUTES: &[(&str, &str)] = &[
    ("/actor/app_name", "agent_monitor.scope"),
    ("/actor/session/uid", "agent_monitor.task"),
    ("/actor/user/name", "agent_monitor.owner"),
    ("/actor/app_uid", "agent_monitor.identity"),
    ("/unmapped/kind", "agent_monitor.kind"),
    ("/unmapped/verdict", "agent_monitor.verdict"),
    ("/unmapped/action", "agent_monitor.action"),
    ("/unmapped/after", "agent_monitor.after"),
    ("/unmapped/kubernetes/namespace", "k8s.namespace.name"),
    ("/unmapped/kubernetes/pod", "k8s.pod.name"),
    ("/unmapped/kubernetes/pod_uid", "k8s.pod.uid"),
    ("/unmapped/kubernetes/container", "k8s.container.name"),
    ("/class_name", "ocsf.class_name"),
];

/// One audit-log line (without its newline). A line that is not JSON is sent as a string
/// body, unspecified severity.
pub(crate) fn record(line: &[u8], observed_nanos: u64) -> LogRecord {
    let Ok(v) = serde_json::from_slice::<Value>(line) else {
        return LogRecord {
            observed_time_unix_nano: observed_nanos,
            body: Some(string_value(String::from_utf8_lossy(line))),
            ..Default::default()
        };
    };
    let severity = severity_of(&v);
    let table = if v.get("class_uid").is_some() {
        OCSF_ATTRIBUTES
    } else {
        ATTRIBUTES
    };
    let mut attributes: Vec<KeyValue> = table
        .iter()
        .filter_map(|(pointer, key)| {
            v.pointer(pointer)
                .and_then(Value::as_str)
                .map(|s| attribute(key, s))
        })
        .collect();
    if let Some(uid) = v.get("class_uid") {
        attributes.push(KeyValue {
            key: "ocsf.class_uid".to_owned(),
            value: Some(any(uid)),
            ..Default::default()
        });
    }
    LogRecord {
        time_unix_nano: time_of(&v),
        observed_time_unix_nano: observed_nanos,
        severity_number: severity as i32,
        severity_text: severity_text(severity).to_owned(),
        body: Some(any(&v)),
        attributes,
        ..Default::default()
    }
}

fn severity_text(s: SeverityNumber) -> &'static str {
    match s {
        SeverityNumber::Info => "INFO",
        SeverityNumber::Warn | SeverityNumber::Warn2 => "WARN",
        SeverityNumber::Error => "ERROR",
        SeverityNumber::Fatal | SeverityNumber::Fatal2 => "FATAL",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a str> {
        r.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
            match kv.value.as_ref()?.value.as_ref()? {
                Any::StringValue(s) => Some(s.as_str()),
                _ => None,
            }
        })
    }

    #[test]
    fn severity_follows_the_verdict_and_the_action() {
        let line = |verdict: &str, action: &str| {
            format!(
                r#"{{"time":"2026-01-02T03:04:05.000000006Z","kind":"file","verdict":"{verdict}","action":"{action}","agent":{{"scope":"s","task":"t-1","owner":"o"}}}}"#
            )
        };
        let r = record(line("allowed", "none").as_bytes(), 7);
        assert_eq!(r.severity_number, SeverityNumber::Info as i32);
        assert_eq!(r.time_unix_nano, 1_767_323_045_000_000_006);
        assert_eq!(attr(&r, "agent_monitor.task"), Some("t-1"));
        assert_eq!(attr(&r, "k8s.pod.name"), None);
        let r = record(line("violation", "blocked").as_bytes(), 7);
        assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
        let r = record(line("violation", "killed-agent").as_bytes(), 7);
        assert_eq!(r.severity_number, SeverityNumber::Error as i32);
        assert_eq!(r.severity_text, "ERROR");
    }

    #[test]
    fn ocsf_lines_carry_the_agent_attributes_from_their_ocsf_places() {
        let r = record(
            br#"{"class_uid":1001,"class_name":"File System Activity","severity_id":1,"time":1,"actor":{"app_name":"s","session":{"uid":"t-1"},"user":{"name":"o"}},"unmapped":{"kind":"file","verdict":"allowed","action":"none","kubernetes":{"pod":"p"}}}"#,
            1,
        );
        assert_eq!(attr(&r, "agent_monitor.scope"), Some("s"));
        assert_eq!(attr(&r, "agent_monitor.task"), Some("t-1"));
        assert_eq!(attr(&r, "agent_monitor.owner"), Some("o"));
        assert_eq!(attr(&r, "agent_monitor.kind"), Some("file"));
        assert_eq!(attr(&r, "agent_monitor.verdict"), Some("allowed"));
        assert_eq!(attr(&r, "k8s.pod.name"), Some("p"));
        assert_eq!(attr(&r, "ocsf.class_name"), Some("File System Activity"));
        // A native record's pointers do not apply to it.
        assert_eq!(attr(&r, "agent_monitor.identity"), None);
    }

    #[test]
    fn ocsf_lines_keep_their_severity_and_epoch_millis() {
        let r = record(
            br#"{"class_uid":1007,"severity_id":4,"time":1767323045123}"#,
            1,
        );
        assert_eq!(r.severity_number, SeverityNumber::Error as i32);
        assert_eq!(r.time_unix_nano, 1_767_323_045_123_000_000);
    }

    #[test]
    fn the_body_mirrors_the_json_object() {
        let r = record(br#"{"kind":"gap","lost":3}"#, 1);
        assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
        let Some(Any::KvlistValue(kv)) = r.body.and_then(|b| b.value) else {
            panic!("kvlist body");
        };
        assert_eq!(kv.values[1].key, "lost");
        assert_eq!(
            kv.values[1].value.as_ref().and_then(|v| v.value.clone()),
            Some(Any::IntValue(3))
        );
    }

    #[test]
    fn a_line_that_is_not_json_is_a_string_body() {
        let r = record(b"not json", 1);
        assert_eq!(r.body, Some(string_value("not json")));
    }
}
