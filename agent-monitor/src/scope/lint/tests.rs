use super::*;
use crate::scope::{ScopeSource, parse_str};

fn text(spec: &str) -> String {
    format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: s, owner: o}}\nspec:\n{spec}"
    )
}

/// The warnings of the one scope in a manifest with `spec`, as `code@line:col`.
fn warnings(spec: &str) -> Vec<String> {
    let text = text(spec);
    let scopes = match parse_str(&text, ScopeSource::Inline) {
        Ok(scopes) => scopes,
        Err(e) => panic!("{e}"),
    };
    lint(&scopes[0], &text, &[])
        .iter()
        .map(|w| match w.at {
            Some((line, column)) => format!("{}@{line}:{column}", w.code),
            None => format!("{}@?", w.code),
        })
        .collect()
}

#[test]
fn a_clean_scope_has_no_warnings() {
    let spec = "  exec:\n    allow: [/usr/bin/git]\n  files:\n    read: [/workspace/**]\n    write: [/workspace/out/**]\n    deny: ['**/.env', /workspace/secrets/**]\n  network:\n    connect:\n    - {cidr: 10.0.0.0/8, ports: [443]}\n";
    assert_eq!(warnings(spec), Vec::<String>::new());
}

#[test]
fn exec_of_a_writable_path() {
    let spec = "  exec:\n    allow:\n    - /usr/bin/git\n    - /workspace/bin/*\n    - /tmp/tool\n  files:\n    write: [/workspace/**, '/tmp/*']\n";
    assert_eq!(
        warnings(spec),
        ["exec-writable@8:7", "exec-writable@9:7"],
        "the exec glob under a write glob, and the exact path a write glob matches"
    );
}

#[test]
fn read_or_write_of_everything() {
    let spec = "  files:\n    read: [/a, /**]\n    write: [/**]\n";
    let found = warnings(spec);
    assert!(
        found.contains(&"read-everything@6:16".to_owned()),
        "{found:?}"
    );
    assert!(
        found.contains(&"write-everything@7:13".to_owned()),
        "{found:?}"
    );
}

#[test]
fn deny_that_shadows_everything_or_nothing() {
    let spec = "  files:\n    baseline: false\n    read: [/workspace/**]\n    deny:\n    - /secrets/**\n    - '**/.env'\n    - /workspace/**\n";
    assert_eq!(
        warnings(spec),
        ["deny-shadows-nothing@9:7", "deny-shadows-everything@11:7"]
    );
    // The baseline makes a deny under it reachable.
    let spec = "  files:\n    deny: [/etc/passwd]\n";
    assert_eq!(warnings(spec), Vec::<String>::new());
    let spec = "  files:\n    baseline: false\n    deny: [/etc/passwd]\n";
    assert_eq!(warnings(spec), ["deny-shadows-nothing@7:12"]);
}

#[test]
fn connect_to_every_address() {
    let spec = "  network:\n    connect:\n    - {cidr: 0.0.0.0/0, ports: [443]}\n    - {cidr: '::/0'}\n    - {cidr: 10.0.0.0/8}\n";
    assert_eq!(
        warnings(spec),
        ["connect-any-address@7:7", "connect-any-address@8:7"]
    );
}

#[test]
fn udp_dns_rules_beside_host_rules_are_redirected() {
    let spec = "  network:\n    connect:\n    - {host: api.example.com, ports: [443]}\n    - {cidr: 127.0.0.53/32, ports: [53], protocol: udp}\n    - {cidr: 10.0.0.0/8, ports: [53]}\n";
    assert_eq!(warnings(spec), ["host-dns-redirected@8:7"]);
    // Without host rules the same rule is how the agent resolves.
    let spec =
        "  network:\n    connect:\n    - {cidr: 127.0.0.53/32, ports: [53], protocol: udp}\n";
    assert_eq!(warnings(spec), Vec::<String>::new());
}

#[test]
fn select_that_cannot_match() {
    assert_eq!(
        warnings("  select: {cgroup: '/agents//x*'}\n"),
        ["select-unused@5:20"]
    );
    // Covered by an earlier scope of the same file.
    let first = text("  select: {cgroup: '/agents/**'}\n");
    let second = text("  select: {cgroup: '/agents/reviewer*'}\n").replace("name: s", "name: t");
    let both = format!("{first}---\n{second}");
    let scopes = parse_str(&both, ScopeSource::Inline).expect("valid");
    assert!(lint(&scopes[0], &first, &[]).is_empty());
    let found = lint(&scopes[1], &second, &scopes[..1]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].code, "select-unused");
    assert!(found[0].message.contains("scope s"), "{}", found[0]);
}

#[test]
fn warnings_print_with_code_and_position() {
    let w = Warning {
        code: "exec-writable",
        at: Some((3, 7)),
        scope: "s".into(),
        message: "m".into(),
    };
    assert_eq!(w.to_string(), "3:7: warning[exec-writable]: scope s: m");
}

#[test]
fn samples_and_overlaps() {
    assert_eq!(sample("/usr/bin/{cat,cp}"), "/usr/bin/cat");
    assert_eq!(sample("/a/[!x]?/**"), "/a/yx/x");
    assert!(overlap("/workspace/**", "**/.env"));
    assert!(!overlap("/workspace/**", "/secrets/**"));
    assert!(overlap("/usr/lib/**", "/usr/lib/x86_64/libc.so"));
}
