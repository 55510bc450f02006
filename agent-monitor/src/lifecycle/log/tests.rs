use std::path::Path;

use super::*;

fn read(text: &str) -> Log {
    let mut log = Log::default();
    log.read_from(Path::new("audit.jsonl"), text.as_bytes())
        .unwrap();
    log
}

const OPEN: &str = r#"{"time":"2026-12-02T10:00:00Z","kind":"file","verdict":"allowed","action":"none","agent":{"scope":"s","task":"s-1","owner":"o","identity":null},"process":{"pid":7,"tid":7,"ppid":1,"comm":"cat","exe":"/usr/bin/cat","cgroup":"/x"},"file":{"path":"/etc/hostname","access":"read"}}"#;
const CONNECT: &str = r#"{"time":"2026-12-02T10:00:01Z","kind":"connect","verdict":"allowed","action":"none","agent":{"scope":"s","task":"s-2","owner":"o"},"net":{"family":"inet","protocol":"tcp","address":"10.1.2.3","port":443,"host":"API.Example.TEST."}}"#;

#[test]
fn records_become_activities_with_their_line() {
    let log = read(&format!("{OPEN}\n\n{CONNECT}\n"));
    assert!(log.warnings.is_empty(), "{:?}", log.warnings);
    assert_eq!(log.entries.len(), 2);
    assert_eq!(log.entries[1].at.to_string(), "audit.jsonl:3");
    assert_eq!(
        log.entries[0].record.observed().unwrap(),
        Some(Observed::File {
            path: "/etc/hostname".into(),
            access: FileAccessName::parse("read").unwrap()
        })
    );
    let Some(Observed::Net { host, port, .. }) = log.entries[1].record.observed().unwrap() else {
        panic!("not a net activity");
    };
    assert_eq!((host.as_deref(), port), (Some("api.example.test"), 443));
    assert_eq!(log.select(Some("s"), Some("s-2")).count(), 1);
    assert_eq!(log.select(Some("other"), None).count(), 0);
}

#[test]
fn a_cut_last_line_and_a_gap_make_the_log_partial() {
    let gap = r#"{"time":"t","kind":"gap","lost":3,"since":"t0","reason":"r"}"#;
    let log = read(&format!("{gap}\n{OPEN}\n{}", &OPEN[..40]));
    assert_eq!(log.entries.len(), 1);
    assert!(log.partial());
    assert_eq!(log.warnings.len(), 2, "{:?}", log.warnings);
    assert_eq!(log.warnings[0].at.line, 1);
    assert!(log.warnings[0].message.contains("lost 3"));
    assert_eq!(log.warnings[1].at.line, 3);
    assert!(log.warnings[1].message.contains("cut short"));
}

#[test]
fn garbage_and_unknown_kinds_are_named_and_skipped() {
    let other = OPEN.replace(r#""kind":"file""#, r#""kind":"teleport""#);
    let log = read(&format!("not json\n{other}\n{OPEN}\n"));
    assert_eq!(log.entries.len(), 1);
    assert_eq!(log.warnings.len(), 2);
    assert!(log.warnings[0].message.contains("not a record"));
    assert!(
        log.warnings[1].message.contains("teleport"),
        "{}",
        log.warnings[1]
    );
}

#[test]
fn unresolved_paths_and_escapes_are_no_activity() {
    let unresolved = OPEN.replace(r#""access":"read""#, r#""access":"read","unresolved":true"#);
    let log = read(&format!("{unresolved}\n"));
    assert_eq!(log.entries[0].record.observed().unwrap(), None);
}

#[test]
fn renames_and_links_keep_both_paths() {
    let rename = OPEN.replace(
        r#""access":"read""#,
        r#""access":"rename","new_path":"/w/b""#,
    );
    let link = OPEN.replace(r#""access":"read""#, r#""access":"link","new_path":"/w/c""#);
    let log = read(&format!("{rename}\n{link}\n"));
    assert!(matches!(
        log.entries[0].record.observed().unwrap(),
        Some(Observed::Rename { ref to, .. }) if to == "/w/b"
    ));
    assert!(matches!(
        log.entries[1].record.observed().unwrap(),
        Some(Observed::Link { ref to, .. }) if to == "/w/c"
    ));
}

#[test]
fn an_ocsf_log_is_refused_naming_its_file_and_line() {
    let ctx = crate::observe::ocsf::Context {
        hostname: "h".into(),
    };
    let native: serde_json::Value = serde_json::from_str(OPEN).unwrap();
    let event = crate::observe::ocsf::event(&native, &ctx);
    // A native line first: what was read before the OCSF line is no result either.
    let text = format!("{OPEN}\n{event}\n{OPEN}\n");
    let mut log = Log::default();
    let err = log
        .read_from(Path::new("/var/log/audit.jsonl"), text.as_bytes())
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("/var/log/audit.jsonl:2: written with --audit-format ocsf"),
        "{message}"
    );
    assert!(message.contains("need json"), "{message}");
    assert!(matches!(err, LogError::Ocsf { line: 2, .. }));
}
