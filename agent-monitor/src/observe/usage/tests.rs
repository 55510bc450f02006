use std::path::Path;

use super::*;
use crate::observe::record::{ExecObject, FileObject};

const SCOPE: &str = "apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata:
  name: rev
  owner: o@example.org
spec:
  exec:
    allow: [/usr/bin/git, /usr/bin/cat]
  files:
    read: [/etc/hostname, /srv/never/**]
    write: [/tmp/**]
    deny: [/etc/shadow]
  network:
    connect:
      - {cidr: 127.0.0.0/8, ports: [80]}
      - {cidr: 10.0.0.0/8}
    bind: [8080]
";

fn scope() -> Arc<Scope> {
    let mut s = crate::scope::parse_str(SCOPE, Path::new("t.yaml")).expect("scope");
    Arc::new(s.remove(0))
}

fn base(verdict: Verdict) -> Record {
    let mut r = Record::sample(Kind::File, verdict);
    r.time = "2026-01-01T00:00:00Z".into();
    r.agent.scope = "rev".into();
    r.agent.task = "t1".into();
    r.agent.owner = "o@example.org".into();
    r
}

fn file(path: &str, access: FileAccess, verdict: Verdict) -> Record {
    Record {
        file: Some(FileObject {
            path: path.into(),
            access,
            new_path: None,
            unresolved: false,
        }),
        ..base(verdict)
    }
}

fn net(kind: Kind, addr: &str, port: u16) -> Record {
    Record {
        kind,
        net: Some(NetObject {
            family: "inet",
            protocol: "tcp".into(),
            address: addr.into(),
            port,
            host: None,
        }),
        ..base(Verdict::Allowed)
    }
}

#[test]
fn report_attributes_uses_and_lists_unused_entries() {
    let mut u = TaskUsage::new(scope());
    let exec = Record {
        kind: Kind::Exec,
        exec: Some(ExecObject {
            path: "/usr/bin/cat".into(),
            argv: vec!["cat".into()],
            script: None,
        }),
        ..base(Verdict::Allowed)
    };
    u.observe(&exec);
    u.observe(&exec);
    u.observe(&file("/etc/hostname", FileAccess::Read, Verdict::Allowed));
    u.observe(&file("/tmp/x", FileAccess::Create, Verdict::Allowed));
    u.observe(&file("/tmp", FileAccess::Read, Verdict::Allowed));
    u.observe(&file("/etc/shadow", FileAccess::Read, Verdict::Violation));
    u.observe(&file(
        "/usr/lib/libc.so.6",
        FileAccess::Read,
        Verdict::Allowed,
    ));
    u.observe(&net(Kind::Connect, "127.0.0.1", 80));
    u.observe(&net(Kind::Connect, "::ffff:127.0.0.1", 80));
    let r = build("t1", &u, true);
    let uses = |rule: &str| {
        r.entries
            .iter()
            .find(|e| e.rule == rule)
            .map_or_else(|| panic!("no entry {rule}"), |e| e.uses)
    };
    assert_eq!(uses("exec.allow[0]"), 0);
    assert_eq!(uses("exec.allow[1]"), 2);
    assert_eq!(uses("files.read[0]"), 1);
    assert_eq!(uses("files.read[1]"), 0);
    // `/tmp/**` covers /tmp itself; write entries also allow reads.
    assert_eq!(uses("files.write[0]"), 2);
    assert_eq!(uses("files.deny[0]"), 1);
    assert_eq!(uses("network.connect[0]"), 2);
    assert_eq!(uses("network.connect[1]"), 0);
    assert_eq!(uses("network.bind[0]"), 0);
    assert_eq!(
        r.unused,
        vec![
            "exec.allow[0]: /usr/bin/git",
            "files.read[1]: /srv/never/**",
            "network.connect[1]: 10.0.0.0/8 tcp any port",
            "network.bind[0]: 8080",
        ]
    );
    assert_eq!(r.records, 9);
    assert_eq!(r.violations, 1);
    assert_eq!(r.used.exec.len(), 1);
    assert_eq!(r.used.exec[0].count, 2);
    let libc = r
        .used
        .files
        .iter()
        .find(|f| f.what == "/usr/lib/libc.so.6")
        .expect("baseline file listed");
    assert!(libc.rules.is_empty());
    assert!(
        r.used
            .directories
            .iter()
            .any(|d| d.path == "/etc" && d.count == 2)
    );
    assert_eq!(r.used.network.len(), 2);
}

#[test]
fn distinct_items_are_bounded_but_uses_still_counted() {
    let mut u = TaskUsage::new(scope());
    for i in 0..MAX_ITEMS + 10 {
        u.observe(&file(
            &format!("/tmp/f{i}"),
            FileAccess::Write,
            Verdict::Allowed,
        ));
    }
    let r = build("t1", &u, false);
    assert_eq!(r.used.files.len(), MAX_ITEMS);
    assert_eq!(r.unlisted, 10);
    let write = r
        .entries
        .iter()
        .find(|e| e.rule == "files.write[0]")
        .expect("entry");
    assert_eq!(write.uses, (MAX_ITEMS + 10) as u64);
}
