use std::{collections::BTreeSet, path::Path};

use super::*;
use crate::{
    lifecycle::log::Log,
    policy::{Activity, Verdict},
    scope::{ScopeSource, parse_str},
};

fn record(kind: &str, task: &str, body: &str) -> String {
    format!(
        r#"{{"time":"t","kind":"{kind}","verdict":"violation","action":"none","agent":{{"scope":"learn","task":"{task}","owner":"o"}},"process":{{"pid":4242,"tid":4242,"ppid":1,"comm":"c","exe":"/usr/bin/python3.12"}},{body}}}"#
    )
}

fn file(path: &str, access: &str) -> String {
    record(
        "file",
        "t-1",
        &format!(r#""file":{{"path":"{path}","access":"{access}"}}"#),
    )
}

fn exec(path: &str) -> String {
    record(
        "exec",
        "t-1",
        &format!(r#""exec":{{"path":"{path}","argv":[]}}"#),
    )
}

fn net(kind: &str, addr: &str, port: u16, proto: &str, host: Option<&str>) -> String {
    let host = host.map_or(String::new(), |h| format!(r#","host":"{h}""#));
    record(
        kind,
        "t-2",
        &format!(
            r#""net":{{"family":"inet","protocol":"{proto}","address":"{addr}","port":{port}{host}}}"#
        ),
    )
}

fn log(lines: &[String]) -> Log {
    let mut log = Log::default();
    log.read_from(Path::new("audit.jsonl"), lines.join("\n").as_bytes())
        .unwrap();
    assert!(log.warnings.is_empty(), "{:?}", log.warnings);
    log
}

fn options(deny: &[&str]) -> Options {
    Options {
        name: "learned".into(),
        owner: "dev@example.org".into(),
        deny: deny.iter().map(|d| (*d).to_owned()).collect(),
        what: "test".into(),
    }
}

fn work() -> Vec<String> {
    let mut lines = vec![
        exec("/usr/bin/python3.12"),
        exec("/usr/bin/git"),
        // The baseline covers these: never proposed.
        file("/usr/lib/python3.12/os.py", "read"),
        file("/etc/ld.so.cache", "read"),
        // The process's own image (the daemon allowed it as such).
        record(
            "file",
            "t-1",
            r#""verdict":"allowed","file":{"path":"/usr/bin/python3.12","access":"read"}"#,
        )
        .replace(r#""verdict":"violation","#, ""),
        // A few single reads stay exact.
        file("/etc/hostname", "read"),
        file("/workspace/repo/README.md", "read"),
        // A created output directory and what was written in it.
        file("/workspace/out", "create"),
        file("/workspace/out/a.json", "create"),
        file("/workspace/out/a.json", "write"),
        // A temporary file with a random name.
        file("/tmp/tmp.x81Hq/state", "create"),
        file("/workspace/repo/.env", "read"),
        net(
            "connect",
            "140.82.112.6",
            443,
            "tcp",
            Some("api.github.com"),
        ),
        net(
            "connect",
            "140.82.112.6",
            443,
            "tcp",
            Some("api.github.com"),
        ),
        net("send", "127.0.0.53", 53, "udp", None),
        net("bind", "0.0.0.0", 8080, "tcp", None),
        net("bind", "0.0.0.0", 0, "udp", None),
    ];
    // Many reads in one source directory.
    for f in ["a.py", "b.py", "c.py", "d.py", "e.py"] {
        lines.push(file(&format!("/workspace/repo/src/{f}"), "read"));
    }
    lines
}

#[test]
fn the_proposal_is_valid_least_and_covers_every_recorded_activity() {
    let log = log(&work());
    let proposal = propose(&log.entries, &options(&["**/.env"]), false).unwrap();
    let yaml = &proposal.yaml;
    let scopes = parse_str(yaml, ScopeSource::Inline).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let policy = &scopes[0].policy;
    let declared = policy.declared();
    assert_eq!(declared.exec_allow, ["/usr/bin/git", "/usr/bin/python3.12"]);
    assert_eq!(
        declared.files.read,
        [
            "/etc/hostname",
            "/workspace/repo/README.md",
            "/workspace/repo/src/**"
        ],
        "{yaml}"
    );
    assert_eq!(
        declared.files.write,
        ["/tmp/**", "/workspace/out/**"],
        "{yaml}"
    );
    assert_eq!(declared.files.deny, ["**/.env"]);
    assert_eq!(declared.bind, [8080]);
    assert_eq!(declared.connect.len(), 2, "{yaml}");
    assert!(yaml.contains("{host: api.github.com, ports: [443], protocol: tcp}  # 2 records"));
    assert!(yaml.contains("{cidr: 127.0.0.53/32, ports: [53], protocol: udp}"));
    assert!(yaml.contains("/workspace/repo/src/**  # 5 records, 5 paths below"));
    // Withheld, and said so.
    assert!(!declared.files.read.iter().any(|r| r.contains(".env")));
    assert_eq!(proposal.withheld.len(), 1);
    assert!(
        yaml.contains(
            "# Withheld (matches files.deny, never proposed): read of /workspace/repo/.env"
        )
    );
    // Every recorded file activity but the withheld one is allowed by the proposal.
    for entry in &log.entries {
        let Some(observed) = entry.record.observed().unwrap() else {
            continue;
        };
        if matches!(&observed, Observed::File { path, .. } if path.contains("/.env")) {
            continue;
        }
        if matches!(observed.activity(), Activity::Net { .. }) {
            continue; // host rules are judged from DNS answers, in the kernel
        }
        let verdict = policy.evaluate(&observed.activity(), Context { tgid: 4242 });
        assert!(
            matches!(verdict, Verdict::Allowed),
            "{observed:?}: {verdict:?}\n{yaml}"
        );
    }
    assert_eq!(
        proposal.tasks,
        BTreeSet::from(["t-1".to_owned(), "t-2".to_owned()])
    );
}

#[test]
fn the_same_records_give_the_same_yaml() {
    let mut lines = work();
    let a = propose(&log(&lines).entries, &options(&[]), false)
        .unwrap()
        .yaml;
    lines.reverse();
    let b = propose(&log(&lines).entries, &options(&[]), false)
        .unwrap()
        .yaml;
    assert_eq!(a, b);
}

#[test]
fn system_and_home_directories_are_never_widened() {
    let mut lines = Vec::new();
    for f in ["a", "b", "c", "d", "e"] {
        lines.push(file(&format!("/home/dev/.{f}rc"), "read"));
        lines.push(file(&format!("/etc/app/{f}.conf"), "read"));
    }
    let proposal = propose(&log(&lines).entries, &options(&[]), false).unwrap();
    let scopes = parse_str(&proposal.yaml, ScopeSource::Inline).unwrap();
    let read = &scopes[0].policy.declared().files.read;
    assert_eq!(read.len(), 10, "{}", proposal.yaml);
    assert!(read.iter().all(|r| !r.contains("**")), "{read:?}");
}

#[test]
fn writes_in_one_directory_widen_it_and_cover_its_reads() {
    let mut lines = Vec::new();
    for f in ["a", "b", "c"] {
        lines.push(file(&format!("/data/build/obj/{f}.o"), "write"));
    }
    lines.push(file("/data/build/obj/a.o", "read"));
    lines.push(file("/data/build/obj", "list"));
    let proposal = propose(&log(&lines).entries, &options(&[]), false).unwrap();
    let scopes = parse_str(&proposal.yaml, ScopeSource::Inline).unwrap();
    let files = &scopes[0].policy.declared().files;
    assert_eq!(files.write, ["/data/build/obj/**"]);
    assert!(files.read.is_empty(), "{:?}", files.read);
    assert!(files.list.is_empty(), "{:?}", files.list);
}

#[test]
fn glob_characters_of_real_paths_are_escaped() {
    let lines = vec![file("/data/odd[1]*name?", "read")];
    let proposal = propose(&log(&lines).entries, &options(&[]), false).unwrap();
    let scopes = parse_str(&proposal.yaml, ScopeSource::Inline)
        .unwrap_or_else(|e| panic!("{e}\n{}", proposal.yaml));
    let policy = &scopes[0].policy;
    let ok = |path| {
        matches!(
            policy.evaluate(
                &Activity::File {
                    path,
                    access: FileAccess::Read
                },
                Context { tgid: 1 }
            ),
            Verdict::Allowed
        )
    };
    assert!(ok("/data/odd[1]*name?"));
    assert!(
        !ok("/data/odd1xnamez"),
        "the escaped glob matched another name"
    );
}

#[test]
fn a_partial_log_is_marked_and_no_records_is_an_error() {
    let proposal = propose(&log(&work()).entries, &options(&[]), true).unwrap();
    assert!(proposal.yaml.contains("# PARTIAL"));
    let empty = Log::default();
    assert!(matches!(
        propose(&empty.entries, &options(&[]), false),
        Err(ProposeError::NoRecords { .. })
    ));
}
