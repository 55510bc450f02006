use std::path::Path;

use super::*;
use crate::scope;

fn log(text: &str) -> Log {
    let mut log = Log::default();
    log.read_from(Path::new("audit.jsonl"), text.as_bytes())
        .unwrap();
    log
}

/// A candidate named `s` with the given `spec` body (indented 2).
fn candidate(spec: &str) -> Scope {
    let text = format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: s\n  owner: o\n\
         spec:\n  mode: audit\n{spec}"
    );
    pick(
        scope::parse_str(&text, Path::new("candidate.yaml")).unwrap(),
        None,
    )
    .unwrap()
}

const ALL: Select<'static> = Select {
    scope: "s",
    task: None,
};

fn file(pid: u32, exe: &str, path: &str, access: &str, verdict: &str) -> String {
    format!(
        r#"{{"time":"t","kind":"file","verdict":"{verdict}","action":"none","agent":{{"scope":"s","task":"s-1","owner":"o"}},"process":{{"pid":{pid},"comm":"c","exe":"{exe}"}},"file":{{"path":"{path}","access":"{access}"}}}}"#
    )
}

fn exec(path: &str) -> String {
    format!(
        r#"{{"time":"t","kind":"exec","verdict":"allowed","action":"none","agent":{{"scope":"s","task":"s-1","owner":"o"}},"process":{{"pid":7,"comm":"c","exe":"{path}"}},"exec":{{"path":"{path}"}}}}"#
    )
}

fn connect(address: &str, port: u16, host: Option<&str>) -> String {
    let host = host
        .map(|h| format!(r#","host":"{h}""#))
        .unwrap_or_default();
    format!(
        r#"{{"time":"t","kind":"connect","verdict":"allowed","action":"none","agent":{{"scope":"s","task":"s-1","owner":"o"}},"process":{{"pid":7,"comm":"c"}},"net":{{"family":"inet","protocol":"tcp","address":"{address}","port":{port}{host}}}}}"#
    )
}

/// The activity of a small run: git, a workspace read (twice) and write, an HTTPS connect.
fn run() -> String {
    [
        exec("/usr/bin/git"),
        file(7, "/usr/bin/git", "/w/a.txt", "read", "allowed"),
        file(7, "/usr/bin/git", "/w/a.txt", "read", "allowed"),
        file(7, "/usr/bin/git", "/w/out", "write", "allowed"),
        connect("10.1.2.3", 443, None),
    ]
    .join("\n")
}

const COVERING: &str = "  exec:\n    allow: [/usr/bin/git]\n  files:\n    baseline: false\n    \
                        read: [/w/**]\n    write: [/w/out]\n  network:\n    connect:\n      \
                        - {cidr: 10.0.0.0/8, ports: [443]}\n";

#[test]
fn the_covering_candidate_replays_clean_and_uses_every_grant() {
    let report = replay(&candidate(COVERING), &log(&run()), ALL).unwrap();
    assert!(!report.failed(), "{report}");
    assert_eq!((report.records, report.replayed, report.files), (5, 5, 1));
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    assert!(!report.partial);
    assert!(report.to_string().contains("would be violations: none"));
}

#[test]
fn a_dropped_entry_is_a_violation_under_its_rule_counted_by_records() {
    let narrower = COVERING.replace("read: [/w/**]", "read: [/w/docs/**]");
    let report = replay(&candidate(&narrower), &log(&run()), ALL).unwrap();
    assert!(report.failed());
    assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    let v = &report.violations[0];
    assert_eq!(v.rule, "files.read");
    assert_eq!(v.dimension, Dimension::Files);
    assert_eq!(v.activity, "read /w/a.txt");
    assert_eq!(v.count, 2);
    assert_eq!(v.first_seen, "audit.jsonl:2");
    // The narrowed entry allowed nothing the run did.
    assert_eq!(
        report.unused,
        vec![Unused {
            rule: "files.read[0]".into(),
            entry: "/w/docs/**".into()
        }]
    );
    let text = report.to_string();
    assert!(
        text.contains("would be violations:\n  files.read (files): 2 actions\n"),
        "{text}"
    );
    assert!(
        text.contains("read /w/a.txt x2 (first audit.jsonl:2)"),
        "{text}"
    );
}

#[test]
fn grants_no_record_used_are_listed() {
    let wider = COVERING
        .replace(
            "allow: [/usr/bin/git]",
            "allow: [/usr/bin/git, /usr/bin/curl]",
        )
        .replace(
            "      - {cidr",
            "      - {host: api.example.test}\n      - {cidr",
        );
    let report = replay(&candidate(&wider), &log(&run()), ALL).unwrap();
    assert!(!report.failed());
    let rules: Vec<_> = report.unused.iter().map(|u| u.rule.as_str()).collect();
    assert_eq!(rules, ["exec.allow[1]", "network.connect[0]"]);
    assert!(report.unused[1].entry.starts_with("api.example.test"));
    assert!(
        report
            .to_string()
            .contains("grants nothing used:\n  exec.allow[1]: /usr/bin/curl\n")
    );
}

#[test]
fn a_learned_host_is_judged_by_the_host_rules() {
    let text = connect("192.0.2.9", 443, Some("api.example.test"));
    let allows =
        candidate("  network:\n    connect:\n      - {host: \"*.example.test\", ports: [443]}\n");
    let report = replay(&allows, &log(&text), ALL).unwrap();
    assert!(!report.failed(), "{report}");
    assert!(report.unused.is_empty());
    // The same name on another port only: refused.
    let other_port =
        candidate("  network:\n    connect:\n      - {host: \"*.example.test\", ports: [8443]}\n");
    let report = replay(&other_port, &log(&text), ALL).unwrap();
    assert_eq!(report.violations.len(), 1);
    assert_eq!(report.violations[0].rule, "network.connect");
    assert_eq!(
        report.violations[0].activity,
        "connect 192.0.2.9:443 tcp (api.example.test)"
    );
    assert!(
        report.violations[0]
            .reason
            .contains("learned as api.example.test")
    );
}

#[test]
fn refused_dns_questions_are_judged_by_name() {
    let question = r#"{"time":"t","kind":"send","verdict":"violation","action":"none","agent":{"scope":"s","task":"s-1","owner":"o"},"net":{"family":"inet","protocol":"udp","address":"127.0.0.53","port":53,"host":"evil.test"},"count":3}"#;
    let none = candidate("  network:\n    connect:\n      - {host: api.example.test}\n");
    let report = replay(&none, &log(question), ALL).unwrap();
    assert_eq!(report.violations.len(), 1);
    assert_eq!(report.violations[0].activity, "DNS question for evil.test");
    assert_eq!(report.violations[0].count, 3);
    let named = candidate("  network:\n    connect:\n      - {host: evil.test, ports: [443]}\n");
    assert!(!replay(&named, &log(question), ALL).unwrap().failed());
}

#[test]
fn baseline_presets_count_only_with_the_baseline_on() {
    let text = [
        file(
            7,
            "/opt/node/bin/node",
            "/opt/node/bin/node",
            "read",
            "allowed",
        ),
        file(
            7,
            "/opt/node/bin/node",
            "/sys/fs/cgroup/agents/s-1/memory.max",
            "read",
            "allowed",
        ),
        file(
            7,
            "/opt/node/bin/node",
            "/home/me/project",
            "list",
            "allowed",
        ),
    ]
    .join("\n");
    let on = candidate("  files:\n    baseline: true\n");
    let report = replay(&on, &log(&text), ALL).unwrap();
    assert!(!report.failed(), "{report}");
    let off = candidate("  files:\n    baseline: false\n");
    let report = replay(&off, &log(&text), ALL).unwrap();
    assert_eq!(report.violations.len(), 3, "{report}");
    // A record the daemon called a violation is not taken for a preset.
    let refused = file(
        7,
        "/opt/node/bin/node",
        "/home/me/project",
        "list",
        "violation",
    );
    let report = replay(&on, &log(&refused), ALL).unwrap();
    assert!(report.failed());
    // Nor is a read of another program's image.
    let other = file(
        7,
        "/opt/node/bin/node",
        "/usr/bin/python3",
        "read",
        "allowed",
    );
    assert!(replay(&on, &log(&other), ALL).unwrap().failed());
}

#[test]
fn a_gap_makes_the_result_partial_and_is_reported() {
    let gap = r#"{"time":"t","kind":"gap","lost":4,"since":"t0","reason":"r"}"#;
    let report = replay(
        &candidate(COVERING),
        &log(&format!("{gap}\n{}", run())),
        ALL,
    )
    .unwrap();
    assert!(report.partial);
    assert!(!report.failed());
    assert_eq!(report.warnings.len(), 1);
    assert_eq!(report.warnings[0].at, "audit.jsonl:1");
    let text = report.to_string();
    assert!(
        text.contains("audit.jsonl:1: warning: the daemon lost 4 records"),
        "{text}"
    );
    assert!(text.contains("the result is partial"), "{text}");
}

#[test]
fn unresolved_paths_and_escapes_are_counted_not_replayed() {
    let unresolved = file(7, "/usr/bin/git", "/gone/x", "read", "allowed")
        .replace(r#""access":"read""#, r#""access":"read","unresolved":true"#);
    let escape = r#"{"time":"t","kind":"escape","verdict":"violation","action":"none","agent":{"scope":"s","task":"s-1","owner":"o"},"process":{"pid":7,"comm":"c"}}"#;
    let report = replay(
        &candidate(COVERING),
        &log(&format!("{unresolved}\n{escape}\n{}", run())),
        ALL,
    )
    .unwrap();
    assert_eq!((report.records, report.replayed), (7, 5));
    assert!(!report.failed());
    assert_eq!(report.not_replayed.len(), 2);
    assert!(
        report
            .to_string()
            .contains("2 records could not be replayed:")
    );
}

#[test]
fn records_are_selected_by_scope_and_task() {
    let report = replay(
        &candidate(COVERING),
        &log(&run()),
        Select {
            scope: "s",
            task: Some("s-1"),
        },
    );
    assert_eq!(report.unwrap().records, 5);
    let none = replay(
        &candidate(COVERING),
        &log(&run()),
        Select {
            scope: "other",
            task: None,
        },
    );
    let Err(e) = none else {
        panic!("records of another scope replayed");
    };
    assert!(e.to_string().ends_with("(they hold records of: s)"), "{e}");
}

#[test]
fn the_candidate_is_picked_by_name_when_it_holds_several() {
    let one = "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: NAME\n  \
               owner: o\nspec:\n  mode: audit\n";
    let text = format!(
        "{}---\n{}",
        one.replace("NAME", "a"),
        one.replace("NAME", "b")
    );
    let scopes = || scope::parse_str(&text, Path::new("c.yaml")).unwrap();
    assert_eq!(pick(scopes(), Some("b")).unwrap().name, "b");
    assert!(matches!(
        pick(scopes(), None),
        Err(ReplayError::SeveralScopes { .. })
    ));
    assert!(matches!(
        pick(scopes(), Some("c")),
        Err(ReplayError::NoSuchScope { .. })
    ));
}

#[test]
fn json_has_the_documented_fields() {
    let narrower = COVERING.replace("/usr/bin/git", "/usr/bin/hg");
    let report = replay(&candidate(&narrower), &log(&run()), ALL).unwrap();
    let json = serde_json::to_value(&report).unwrap();
    for field in [
        "candidate",
        "scope",
        "records",
        "replayed",
        "partial",
        "unused",
        "warnings",
    ] {
        assert!(json.get(field).is_some(), "{field}: {json}");
    }
    let v = &json["violations"][0];
    assert_eq!(v["rule"], "exec.allow");
    assert_eq!(v["dimension"], "exec");
    assert_eq!(v["activity"], "exec /usr/bin/git");
    assert_eq!(v["count"], 1);
    assert_eq!(v["first_seen"], "audit.jsonl:1");
    assert!(v["reason"].as_str().unwrap().contains("/usr/bin/git"));
}
