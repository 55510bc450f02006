use super::*;
use crate::{
    observe::record::{
        Action, EscapeObject, ExecObject, FileObject, Gap, Kind, KubernetesRef, NetObject, Record,
        Verdict,
    },
    policy::{Dimension, FileAccess, Violation},
};

fn ctx() -> Context {
    Context {
        hostname: "node-1".into(),
    }
}

fn ocsf(r: &Record) -> Value {
    event(&serde_json::to_value(r).unwrap(), &ctx())
}

fn file(access: FileAccess) -> Record {
    let mut r = Record::sample(Kind::File, Verdict::Allowed);
    r.time = "2026-12-03T06:09:40.123456789Z".into();
    r.file = Some(FileObject {
        path: "/work/notes.txt".into(),
        access,
        new_path: None,
        unresolved: false,
    });
    r
}

fn net(kind: Kind, address: &str) -> Record {
    let mut r = Record::sample(kind, Verdict::Allowed);
    r.net = Some(NetObject {
        family: "inet",
        protocol: "tcp".into(),
        address: address.into(),
        port: 443,
        host: Some("api.example.test".into()),
    });
    r
}

fn exec() -> Record {
    let mut r = Record::sample(Kind::Exec, Verdict::Allowed);
    r.exec = Some(ExecObject {
        path: "/usr/bin/git".into(),
        argv: vec!["git".into(), "status".into()],
        script: None,
    });
    r
}

fn violated(mut r: Record, rule: &str) -> Record {
    r.verdict = Verdict::Violation;
    r.action = Action::Blocked;
    r.violation = Some(Violation {
        dimension: Dimension::Files,
        rule: rule.into(),
        reason: "read of /etc/shadow is not in files.read".into(),
    });
    r
}

fn uid(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} in {v}"))
}

#[test]
fn every_kind_has_its_class_and_activity() {
    let mut escape = Record::sample(Kind::Escape, Verdict::Violation);
    escape.escape = Some(Box::new(EscapeObject {
        technique: "syscall",
        syscall: Some("unshare".into()),
        args: Some(vec![0x2000_0000]),
        result: Some(-1),
        cgroup: None,
        moved_pid: None,
    }));
    let mut ended = Record::lifecycle(r_agent(), "ended", "finished", Action::None);
    ended.time = "2026-12-03T06:09:40Z".into();
    let degraded = Record::lifecycle(r_agent(), "degraded", "lost", Action::None);
    let mut refused_exec = file(FileAccess::Read);
    refused_exec.exec = exec().exec;
    let cases: [(Record, u64, u64); 11] = [
        (file(FileAccess::Read), 1001, 2),
        (file(FileAccess::Create), 1001, 1),
        (file(FileAccess::Unlink), 1001, 4),
        (file(FileAccess::Link), 1001, 99),
        (exec(), 1007, 1),
        (refused_exec, 1007, 1),
        (net(Kind::Connect, "10.0.0.1"), 4001, 1),
        (net(Kind::Send, "10.0.0.1"), 4001, 6),
        (net(Kind::Bind, "::"), 4001, 7),
        (escape, 2004, 1),
        (ended, 6002, 4),
    ];
    for (record, class, activity) in cases {
        let e = ocsf(&record);
        assert_eq!(uid(&e, "/class_uid"), class, "{e}");
        assert_eq!(uid(&e, "/activity_id"), activity, "{e}");
        assert_eq!(uid(&e, "/type_uid"), class * 100 + activity, "{e}");
        assert_eq!(e["unmapped"]["kind"], record.kind.name(), "{e}");
    }
    let mut escape = Record::sample(Kind::Escape, Verdict::Violation);
    escape.escape = Some(Box::new(EscapeObject {
        technique: "cgroup-move",
        syscall: None,
        args: None,
        result: None,
        cgroup: Some("/elsewhere".into()),
        moved_pid: Some(1),
    }));
    escape.violation = Some(Violation {
        dimension: Dimension::Escape,
        rule: "escape.cgroup-move".into(),
        reason: "moved out".into(),
    });
    let e = ocsf(&escape);
    assert_eq!(e["finding_info"]["types"], json!(["escape", "cgroup-move"]));
    assert_eq!(e["unmapped"]["escape"]["cgroup"], "/elsewhere");
    assert_eq!(e["severity_id"], 4);
    let d = ocsf(&degraded);
    assert_eq!((uid(&d, "/class_uid"), uid(&d, "/activity_id")), (6002, 99));
    assert_eq!(d["activity_name"], "Degraded");
    assert_eq!(d["status"], "Failure");
}

fn r_agent() -> crate::observe::record::AgentRef {
    Record::sample(Kind::Task, Verdict::Allowed).agent
}

#[test]
fn a_violation_of_any_kind_is_a_finding_with_its_rule_and_evidence() {
    for (record, evidence) in [
        (violated(file(FileAccess::Read), "files.deny[0]"), "file"),
        (violated(exec(), "exec.allow"), "process"),
        (
            violated(net(Kind::Connect, "10.0.0.1"), "network.allow"),
            "dst_endpoint",
        ),
    ] {
        let e = ocsf(&record);
        assert_eq!(uid(&e, "/class_uid"), 2004, "{e}");
        let rule = record.violation.as_ref().map(|v| v.rule.clone());
        assert_eq!(e["finding_info"]["analytic"]["name"], json!(rule), "{e}");
        assert_eq!(e["finding_info"]["types"], json!(["files"]), "{e}");
        assert!(e["evidences"][0].get(evidence).is_some(), "{e}");
        assert_eq!(e["unmapped"]["violation"]["rule"], json!(rule));
        assert_eq!((uid(&e, "/action_id"), uid(&e, "/disposition_id")), (2, 2));
        assert_eq!(e["is_alert"], true);
    }
}

#[test]
fn agent_fields_have_fixed_places() {
    let mut r = violated(file(FileAccess::Write), "files.write");
    r.action = Action::None;
    r.agent.names_mut().identity = Some("spiffe://example.test/agent".into());
    r.kubernetes = Some(Box::new(KubernetesRef {
        namespace: "ns".into(),
        pod: "pod-a".into(),
        container: "main".into(),
        pod_uid: "0b5e4c4a-1111-2222-3333-444455556666".into(),
        container_id: "containerd://abc".into(),
    }));
    let e = ocsf(&r);
    assert_eq!(e["actor"]["app_name"], "s");
    assert_eq!(e["actor"]["session"]["uid"], "t");
    assert_eq!(e["actor"]["user"]["name"], "o");
    assert_eq!(e["actor"]["app_uid"], "spiffe://example.test/agent");
    assert_eq!(e["actor"]["process"]["pid"], 1);
    assert_eq!(e["actor"]["process"]["name"], "c");
    let container = &e["actor"]["process"]["container"];
    assert_eq!(container, &e["evidences"][0]["container"]);
    assert_eq!(container["name"], "main");
    assert_eq!(
        container["pod_uuid"],
        "0b5e4c4a-1111-2222-3333-444455556666"
    );
    assert_eq!(e["unmapped"]["kubernetes"]["pod"], "pod-a");
    assert_eq!(e["unmapped"]["verdict"], "violation");
    assert_eq!(e["unmapped"]["action"], "none");
    // Recorded, not stopped (audit mode).
    assert_eq!((uid(&e, "/action_id"), uid(&e, "/disposition_id")), (3, 15));
    assert_eq!(e["device"]["hostname"], "node-1");
    assert_eq!(e["metadata"]["version"], OCSF_VERSION);
    assert_eq!(e["metadata"]["product"]["name"], "agent-monitor");
    assert_eq!(
        e["metadata"]["product"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    // A pod uid that is no UUID stays out of `pod_uuid` (the schema's pattern).
    if let Some(k) = &mut r.kubernetes {
        k.pod_uid = "not-a-uuid".into();
    }
    let e = ocsf(&r);
    assert!(
        e["evidences"][0]["container"].get("pod_uuid").is_none(),
        "{e}"
    );
    assert_eq!(e["unmapped"]["kubernetes"]["pod_uid"], "not-a-uuid");
}

#[test]
fn activity_objects_follow_the_record() {
    let e = ocsf(&exec());
    assert_eq!(e["process"]["cmd_line"], "git status");
    assert_eq!(e["process"]["file"]["path"], "/usr/bin/git");
    assert_eq!(e["process"]["name"], "git");
    assert!(
        e["process"].get("parent_process").is_none(),
        "ppid 0 is unknown: {e}"
    );
    let mut child = exec();
    if let Some(p) = &mut child.process {
        p.ppid = 42;
    }
    assert_eq!(ocsf(&child)["process"]["parent_process"]["pid"], 42);
    let mut rename = file(FileAccess::Rename);
    if let Some(f) = &mut rename.file {
        f.new_path = Some("/work/b.txt".into());
    }
    let e = ocsf(&rename);
    assert_eq!(e["file"]["name"], "notes.txt");
    assert_eq!(e["file_result"]["path"], "/work/b.txt");
    let e = ocsf(&net(Kind::Connect, "10.0.0.1"));
    assert_eq!(e["dst_endpoint"], json!({ "ip": "10.0.0.1", "port": 443 }));
    assert_eq!(e["connection_info"]["protocol_num"], 6);
    assert_eq!(e["unmapped"]["net"]["host"], "api.example.test");
    let e = ocsf(&net(Kind::Bind, "/run/agent.sock"));
    assert_eq!(e["src_endpoint"]["name"], "/run/agent.sock");
    assert!(e["src_endpoint"].get("ip").is_none());
}

#[test]
fn times_keep_milliseconds_and_nanoseconds() {
    let e = ocsf(&file(FileAccess::Read));
    assert_eq!(e["time"], 1_796_278_180_123_i64);
    assert_eq!(e["time_dt"], "2026-12-03T06:09:40.123456789Z");
    assert_eq!(epoch_ms("1970-01-01T00:00:01Z"), Some(1000));
    assert_eq!(epoch_ms("1970-01-01T00:00:00.5Z"), Some(500));
    assert_eq!(epoch_ms("t1"), None);
    assert_eq!(epoch_ms("2026-13-03T06:09:40Z"), None);
}

#[test]
fn a_gap_and_an_unknown_kind_still_map() {
    let now = std::time::SystemTime::now();
    let gap = serde_json::to_value(Gap::new(5, now, now)).unwrap();
    let e = event(&gap, &ctx());
    assert_eq!(uid(&e, "/class_uid"), 1008);
    assert_eq!(e["unmapped"]["lost"], 5);
    assert!(e.get("actor").is_none());
    let odd = json!({ "time": "1970-01-01T00:00:01Z", "kind": "teleport", "x": 1 });
    let e = event(&odd, &ctx());
    assert_eq!(uid(&e, "/class_uid"), 0);
    assert_eq!(e["unmapped"]["record"], odd);
}

#[test]
fn ocsf_lines_are_told_from_native_ones() {
    let native = serde_json::to_value(file(FileAccess::Read)).unwrap();
    assert!(!is_ocsf(&native));
    assert!(is_ocsf(&event(&native, &ctx())));
}

#[test]
fn the_sink_writes_ocsf_and_publishes_native_records() {
    use crate::observe::sink::{Rotation, Sinks, StdoutFormat};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut sinks = Sinks::open(&path, StdoutFormat::None, Rotation::default())
        .unwrap()
        .with_format(AuditFormat::Ocsf);
    let now = std::time::SystemTime::now();
    let records = [file(FileAccess::Read), violated(exec(), "exec.allow")];
    sinks.write(Some(&Gap::new(2, now, now)), &records).unwrap();
    assert_eq!(sinks.appended(), 2);
    assert!(sinks.gap_appended());
    let text = std::fs::read_to_string(&path).unwrap();
    let classes: Vec<u64> = text
        .lines()
        .map(|l| uid(&serde_json::from_str(l).unwrap(), "/class_uid"))
        .collect();
    assert_eq!(classes, [1008, 1001, 2004]);
    let published: Vec<Value> = std::str::from_utf8(sinks.last_batch())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(published.len(), 2);
    assert!(published.iter().all(|v| !is_ocsf(v)), "{published:?}");
    assert_eq!(published[1]["kind"], "exec");
}
