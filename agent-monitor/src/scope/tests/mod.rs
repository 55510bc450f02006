//! Manifest tests. `FULL` is the full example manifest of docs/SCOPES.md.

use std::time::Duration;

use super::*;
use crate::policy::{Activity, Context, FileAccess, NetOp, Protocol, Verdict};

mod errors;
mod files;
mod kubernetes;

pub(super) const FULL: &str = r#"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata:
  name: code-reviewer
  owner: platform-team@example.org
  identity: spiffe://example.org/agent/code-reviewer
spec:
  mode: enforce
  ttl: 30m
  onViolation: kill-agent
  select:
    cgroup: /agents/code-reviewer*
  exec:
    allow: [/usr/bin/git, /usr/bin/python3*, /bin/sh]
  files:
    baseline: true
    read:  [/workspace/**, /etc/ssl/**]
    write: [/workspace/**, /tmp/**]
    deny:  [/etc/shadow, /root/.ssh/**, "**/.env"]
  network:
    connect:
      - {cidr: 10.0.0.0/8, ports: [443]}
      - {host: api.github.com, ports: [443]}
      - {cidr: 127.0.0.53/32, ports: [53], protocol: udp}
    bind: [8080]
"#;

pub(super) const MINIMAL: &str = "apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {name: minimal, owner: ops@example.org}
spec: {}
";

pub(super) fn parse(text: &str) -> Vec<Scope> {
    parse_str(text, Path::new("test.yaml")).unwrap()
}

pub(super) fn one(text: &str) -> Scope {
    let mut scopes = parse(text);
    assert_eq!(scopes.len(), 1);
    scopes.remove(0)
}

/// A manifest with `spec` replaced (indented two spaces under `spec:`).
pub(super) fn with_spec(spec: &str) -> String {
    format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: t, owner: o}}\nspec:\n{spec}"
    )
}

const CTX: Context = Context { tgid: 7 };

// Compile-time: the traits the daemon relies on (cloned into tasks, boxed into anyhow).
const _: fn() = || {
    fn clone_debug<T: Clone + std::fmt::Debug + Send + Sync>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    clone_debug::<Scope>();
    error::<ScopeError>();
    error::<crate::policy::PolicyError>();
};

#[test]
fn full_example() {
    let scope = one(FULL);
    assert_eq!(scope.name, "code-reviewer");
    assert_eq!(scope.owner, "platform-team@example.org");
    assert_eq!(
        scope.identity.as_deref(),
        Some("spiffe://example.org/agent/code-reviewer")
    );
    assert_eq!(scope.mode, Mode::Enforce);
    assert_eq!(scope.ttl, Some(Duration::from_mins(30)));
    assert_eq!(scope.on_violation, OnViolation::KillAgent);
    assert_eq!(scope.source.path(), Some(Path::new("test.yaml")));
    assert_eq!(scope.source.to_string(), "test.yaml");
    assert_eq!(
        scope.select_cgroup.as_ref().map(|m| m.glob().glob()),
        Some("/agents/code-reviewer*")
    );
    let select = scope.select_cgroup.as_ref().unwrap();
    assert!(select.is_match("/agents/code-reviewer"));
    assert!(select.is_match("/agents/code-reviewer-42"));
    assert!(
        !select.is_match("/agents/code-reviewer/sub"),
        "`*` stays in one component"
    );
    assert!(!select.is_match("/agents/other"));

    let declared = scope.policy.declared();
    let written: Vec<&str> = scope
        .spec
        .exec
        .allow
        .iter()
        .map(super::values::PathGlob::as_str)
        .collect();
    assert_eq!(written, ["/usr/bin/git", "/usr/bin/python3*", "/bin/sh"]);
    // The compiled list is what was written plus the real paths of entries naming links.
    assert_eq!(declared.exec_allow[..3], written);
    for extra in &declared.exec_allow[3..] {
        let real = |p: &str| {
            std::fs::canonicalize(p)
                .ok()
                .map(|r| r.display().to_string())
        };
        assert!(
            written
                .iter()
                .any(|w| real(w).as_deref() == Some(extra.as_str())),
            "{extra}"
        );
    }
    assert!(declared.files.baseline);
    assert_eq!(declared.files.read, ["/workspace/**", "/etc/ssl/**"]);
    assert_eq!(declared.files.write, ["/workspace/**", "/tmp/**"]);
    assert_eq!(
        declared.files.deny,
        ["/etc/shadow", "/root/.ssh/**", "**/.env"]
    );
    assert_eq!(declared.bind, [8080]);
    let connect = serde_json::to_value(&declared.connect).unwrap();
    assert_eq!(
        connect,
        serde_json::json!([
            {"cidr": "10.0.0.0/8", "ports": [443], "protocol": "tcp"},
            {"host": "api.github.com", "ports": [443], "protocol": "tcp"},
            {"cidr": "127.0.0.53/32", "ports": [53], "protocol": "udp"},
        ])
    );
    assert_eq!(scope.policy.host_rules().count(), 1);

    // The compiled policy is the one declared.
    let judge = |activity| scope.policy.evaluate(&activity, CTX) == Verdict::Allowed;
    assert!(judge(Activity::Exec {
        path: "/usr/bin/python3.12"
    }));
    assert!(!judge(Activity::Exec {
        path: "/usr/bin/curl"
    }));
    assert!(!judge(Activity::File {
        path: "/workspace/.env",
        access: FileAccess::Read
    }));
    let udp = |port| Activity::Net {
        op: NetOp::Send,
        addr: "127.0.0.53".parse().unwrap(),
        port,
        protocol: Protocol::Udp,
    };
    assert!(judge(udp(53)));
    assert!(!judge(udp(54)));
}

#[test]
fn defaults() {
    let scope = one(MINIMAL);
    assert_eq!(scope.name, "minimal");
    assert_eq!(scope.identity, None);
    assert_eq!(scope.mode, Mode::Audit);
    assert_eq!(scope.on_violation, OnViolation::KillProcess);
    assert_eq!(scope.ttl, None);
    assert!(scope.select_cgroup.is_none());
    let declared = scope.policy.declared();
    assert!(declared.files.baseline, "baseline defaults to true");
    assert!(
        declared.exec_allow.is_empty() && declared.connect.is_empty() && declared.bind.is_empty()
    );
    // An absent dimension allows nothing; the baseline still applies.
    let exec = Activity::Exec { path: "/bin/sh" };
    assert!(matches!(
        scope.policy.evaluate(&exec, CTX),
        Verdict::Violation(_)
    ));
    let lib = Activity::File {
        path: "/usr/lib/libc.so.6",
        access: FileAccess::Read,
    };
    assert_eq!(scope.policy.evaluate(&lib, CTX), Verdict::Allowed);
    // Present but empty sections and lists, and `baseline: false`.
    let scope = one(&with_spec(
        "  exec:\n  files: {baseline: false, read: }\n  network: {bind: []}\n",
    ));
    assert!(!scope.policy.declared().files.baseline);
    let Verdict::Violation(v) = scope.policy.evaluate(&lib, CTX) else {
        panic!("baseline off still allows {lib:?}");
    };
    assert_eq!(v.rule, "files.read");
}

#[test]
fn spec_serializes_back_to_the_manifest_shape() {
    let scope = one(FULL);
    let json = serde_json::to_value(&scope.spec).unwrap();
    assert_eq!(json["mode"], "enforce");
    assert_eq!(json["onViolation"], "kill-agent");
    assert_eq!(json["ttl"], "30m");
    assert_eq!(json["select"]["cgroup"], "/agents/code-reviewer*");
    assert_eq!(json["files"]["deny"][2], "**/.env");
    assert_eq!(json["network"]["bind"], serde_json::json!([8080]));
    // Round trip: the serialized spec (JSON is YAML) parses to the same spec.
    let again = one(&with_spec(&format!("  {json}\n")));
    assert_eq!(serde_json::to_value(&again.spec).unwrap(), json);
    assert_eq!(serde_json::to_value(Mode::Audit).unwrap(), "audit");
    assert_eq!(
        serde_json::to_value(OnViolation::KillProcess).unwrap(),
        "kill-process"
    );
}

#[test]
fn ttl_forms() {
    let ttl = |text: &str| {
        one(&with_spec(&format!("  ttl: {text}\n")))
            .ttl
            .unwrap()
            .as_secs()
    };
    assert_eq!(ttl("90s"), 90);
    assert_eq!(ttl("1h30m"), 5400);
    assert_eq!(ttl("2d"), 2 * 86_400);
    assert_eq!(ttl("1d2h3m4s"), 86_400 + 7200 + 180 + 4);
    assert_eq!(ttl("90m"), 5400);
    let spec = one(&with_spec("  ttl: 90m\n")).spec;
    assert_eq!(
        spec.ttl.unwrap().to_string(),
        "1h30m",
        "serialized in canonical form"
    );
}

#[test]
fn network_values_are_normalised() {
    let scope = one(&with_spec(
        "  network:\n    connect:\n      - {host: API.GitHub.com., protocol: any}\n      - {host: '*.Example.org'}\n      - {cidr: 10.1.2.3}\n      - {cidr: '2001:db8::/32', ports: [443, 8443]}\n      - {cidr: '::1'}\n",
    ));
    let connect = serde_json::to_value(&scope.policy.declared().connect).unwrap();
    assert_eq!(
        connect,
        serde_json::json!([
            {"host": "api.github.com", "protocol": "any"},
            {"host": "*.example.org", "protocol": "tcp"},
            {"cidr": "10.1.2.3/32", "protocol": "tcp"},
            {"cidr": "2001:db8::/32", "ports": [443, 8443], "protocol": "tcp"},
            {"cidr": "::1/128", "protocol": "tcp"},
        ])
    );
}

#[test]
fn exec_entries_naming_symlinks_also_allow_their_target() {
    use crate::policy::{Activity, Context, Verdict};
    let dir = tempfile::tempdir().expect("tempdir");
    let real = std::fs::canonicalize(dir.path()).expect("canon");
    std::fs::create_dir(real.join("bin-real")).expect("mkdir");
    std::fs::write(real.join("bin-real/tool"), "").expect("write");
    std::os::unix::fs::symlink(real.join("bin-real"), real.join("bin")).expect("symlink");
    std::os::unix::fs::symlink(real.join("bin-real/tool"), real.join("tool-link"))
        .expect("symlink");
    let yaml = format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: s, owner: o}}\nspec:\n  exec:\n    allow: [\"{r}/tool-link\", \"{r}/bin/to*\"]\n",
        r = real.display()
    );
    let scopes = super::parse_str(&yaml, std::path::Path::new("t.yaml")).expect("parses");
    let ctx = Context { tgid: 1 };
    let target = real.join("bin-real/tool");
    let verdict = scopes[0].policy.evaluate(
        &Activity::Exec {
            path: target.to_str().expect("utf8"),
        },
        ctx,
    );
    assert!(matches!(verdict, Verdict::Allowed), "{verdict:?}");
    let other = real.join("bin-real/other");
    let verdict = scopes[0].policy.evaluate(
        &Activity::Exec {
            path: other.to_str().expect("utf8"),
        },
        ctx,
    );
    assert!(matches!(verdict, Verdict::Violation(_)), "{verdict:?}");
}

#[test]
fn ask_and_its_approval_settings() {
    let scope = one(MINIMAL);
    assert!(!scope.asks());
    assert_eq!(scope.approval().timeout(), Duration::from_mins(1));
    assert_eq!(scope.approval().max_pending(), 8);
    let scope = one(&with_spec(
        "  mode: enforce\n  onViolation: ask\n  approval: {timeout: 2s, maxPending: 20}\n",
    ));
    assert!(scope.asks());
    assert_eq!(scope.on_violation, OnViolation::Ask);
    assert_eq!(scope.approval().timeout(), Duration::from_secs(2));
    assert_eq!(scope.approval().max_pending(), 20);
    let audit = one(&with_spec("  onViolation: ask\n"));
    assert!(!audit.asks(), "nothing is held in audit mode");
    for bad in [
        "  approval: {timeout: soon}\n",
        "  approval: {maxPending: -1}\n",
        "  approval: {other: 1}\n",
    ] {
        assert!(
            parse_str(&with_spec(bad), Path::new("t.yaml")).is_err(),
            "{bad}"
        );
    }
}
