use std::path::Path;

use super::*;
use crate::observe::record::{Action, ExecObject, FileObject, NetObject};

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
    r.agent.names_mut().scope = "rev".into();
    r.agent.names_mut().task = "t1".into();
    r.agent.names_mut().owner = "o@example.org".into();
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
fn network_items_are_named_by_operation_family_protocol_address_and_port() {
    let mut u = TaskUsage::new(scope());
    for port in [0, 7, 80, 65535] {
        u.observe(&net(Kind::Connect, "127.0.0.1", port));
    }
    u.observe(&net(Kind::Send, "10.0.0.1", 53));
    let mut named = net(Kind::Connect, "10.0.0.2", 443);
    if let Some(n) = named.net.as_mut() {
        n.protocol = "udp".into();
        n.host = Some("example.com".into());
    }
    u.observe(&named);
    u.observe(&named);
    let r = build("t1", &u, true);
    let listed: Vec<(&str, u64)> = r
        .used
        .network
        .iter()
        .map(|i| (i.what.as_str(), i.count))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("connect inet/tcp 127.0.0.1:0", 1),
            ("connect inet/tcp 127.0.0.1:65535", 1),
            ("connect inet/tcp 127.0.0.1:7", 1),
            ("connect inet/tcp 127.0.0.1:80", 1),
            ("connect inet/udp 10.0.0.2:443 (example.com)", 2),
            ("send inet/tcp 10.0.0.1:53", 1),
        ]
    );
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

#[test]
fn the_report_groups_what_tool_calls_used_by_tool_name() {
    let mut u = TaskUsage::new(scope());
    let call = |name: &str| crate::observe::record::CallRef {
        id: "1".into(),
        name: name.into(),
        digest: None,
        end: None,
    };
    let mut read = file("/etc/hostname", FileAccess::Read, Verdict::Allowed);
    read.call = Some(Box::new(call("read_text_file")));
    u.observe(&read);
    u.observe(&read);
    let mut write = file("/etc/passwd", FileAccess::Write, Verdict::Violation);
    write.call = Some(Box::new(call("write_file")));
    u.observe(&write);
    let agent = base(Verdict::Allowed).agent;
    let mut ended = Record::lifecycle(agent.clone(), "call-ended", "ok", Action::None);
    ended.call = Some(Box::new(call("read_text_file")));
    u.observe(&ended);
    let mut refused = Record::lifecycle(agent, "call-refused", "no", Action::Blocked);
    refused.call = Some(Box::new(call("move_file")));
    u.observe(&refused);
    // Outside any call: not grouped.
    u.observe(&file("/tmp/x", FileAccess::Write, Verdict::Allowed));
    let r = build("t1", &u, true);
    let names: Vec<&str> = r.calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["move_file", "read_text_file", "write_file"]);
    let by = |n: &str| r.calls.iter().find(|c| c.name == n).expect(n);
    let reads = by("read_text_file");
    assert_eq!((reads.calls, reads.records, reads.violations), (1, 2, 0));
    assert_eq!(
        reads.used.iter().collect::<Vec<_>>(),
        ["read /etc/hostname"]
    );
    let writes = by("write_file");
    assert_eq!((writes.calls, writes.records, writes.violations), (0, 1, 1));
    assert_eq!(by("move_file").refused, 1);
    assert_eq!(
        r.records, 4,
        "the task's own totals still count every activity"
    );
}
