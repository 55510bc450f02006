//! The hand-written line against serde's, byte for byte, on records of every kind.

use super::*;
use crate::observe::record::{
    AgentNames, AgentRef, ApprovalObject, CallEnd, CallRef, EscapeObject, Kind, KubernetesRef,
    ProcessNames, ProcessRef, TaskEvent,
};
use crate::policy::FileAccess;
use std::sync::Arc;

/// Strings a path, a name or an argument may hold: quotes, backslashes, every control
/// byte, DEL, non-ASCII, and what a non-UTF-8 name becomes once made a String (U+FFFD).
fn odd() -> Vec<String> {
    let controls: String = (0u8..0x20).map(char::from).collect();
    vec![
        String::new(),
        "/plain/path.txt".into(),
        "/a \"quoted\" name".into(),
        "C:\\back\\slash\\".into(),
        controls,
        "tab\there\nnewline\rcr\u{8}bs\u{c}ff".into(),
        "del\u{7f}and é ü 中文 🦀".into(),
        String::from_utf8_lossy(b"/tmp/bad-\xff\xfe-name").into_owned(),
        "\\u0000 is not a NUL".into(),
        "ends with a quote\"".into(),
    ]
}

/// The line is serde's, whether its agent and process text is made now or was kept from
/// an earlier record with the same strings.
fn assert_same(r: &Record) {
    let old = serde_json::to_vec(r).expect("serde writes a record");
    let mut shared = Shared::default();
    for made in ["made", "kept"] {
        let mut new = Vec::new();
        write_record(&mut new, r, &mut shared).expect("the writer writes a record");
        assert_eq!(
            String::from_utf8_lossy(&new),
            String::from_utf8_lossy(&old),
            "the line differs from serde's ({made})"
        );
        assert_eq!(new, old);
    }
}

fn violation_of(text: &str, dimension: Dimension) -> Violation {
    Violation {
        dimension,
        rule: format!("files.deny[2]: {text}"),
        reason: format!("not in scope: {text}"),
    }
}

#[test]
fn every_kind_verdict_action_and_layer_is_written_as_serde_writes_it() {
    let kinds = [
        Kind::Exec,
        Kind::File,
        Kind::Connect,
        Kind::Send,
        Kind::Bind,
        Kind::Escape,
        Kind::Task,
        Kind::Approval,
    ];
    let actions = [
        Action::None,
        Action::Blocked,
        Action::Refused,
        Action::KilledProcess,
        Action::KilledAgent,
        Action::Held,
    ];
    let layers = [
        None,
        Some(Layer::Landlock),
        Some(Layer::Seccomp),
        Some(Layer::CgroupHook),
        Some(Layer::Ebpf),
        Some(Layer::Daemon),
    ];
    for kind in kinds {
        for verdict in [Verdict::Allowed, Verdict::Violation] {
            for (i, action) in actions.into_iter().enumerate() {
                let mut r = Record::sample(kind, verdict);
                r.action = action;
                r.layer = layers[i % layers.len()];
                r.after = (i % 2 == 1).then_some(actions[(i + 3) % actions.len()]);
                r.time = "2027-01-15T08:00:00.123456789Z".into();
                assert_same(&r);
            }
        }
    }
}

#[test]
fn file_records_with_odd_paths() {
    let accesses = FileAccess::ALL;
    for (i, path) in odd().into_iter().enumerate() {
        let mut r = Record::sample(Kind::File, Verdict::Violation);
        r.file = Some(FileObject {
            path: path.clone(),
            access: accesses[i % accesses.len()],
            new_path: (i % 2 == 0).then(|| format!("{path}.new")),
            unresolved: i % 3 == 0,
        });
        r.violation = Some(violation_of(&path, Dimension::Files));
        r.truncated = i % 2 == 1;
        r.process = Some(ProcessRef {
            pid: u32::MAX,
            tid: 0,
            ppid: 1_234_567,
            names: Arc::new(ProcessNames {
                comm: path.as_str().into(),
                exe: (i % 2 == 0).then(|| path.as_str().into()),
                cgroup: (i % 3 != 0).then(|| format!("/agent-monitor/{path}").into()),
            }),
        });
        r.agent = AgentRef::new(AgentNames {
            scope: path.as_str().into(),
            task: format!("t-{i}").into(),
            owner: path.as_str().into(),
            identity: (i % 2 == 1).then(|| path.as_str().into()),
        });
        assert_same(&r);
    }
    let mut none = Record::sample(Kind::File, Verdict::Allowed);
    none.process = None;
    assert_same(&none);
}

#[test]
fn net_records() {
    for (i, host) in odd().into_iter().enumerate() {
        let mut r = Record::sample(Kind::Connect, Verdict::Allowed);
        r.net = Some(NetObject {
            family: if i % 2 == 0 { "inet" } else { "inet6" },
            protocol: match i % 3 {
                0 => "tcp".into(),
                1 => "132".into(),
                // An unnamed protocol's number, made per record.
                _ => (100 + i).to_string().into(),
            },
            address: if i % 2 == 0 {
                "10.0.0.1".into()
            } else {
                "fe80::1".into()
            },
            port: [0, 1, 443, 9, 65535][i % 5],
            host: (i % 2 == 1).then(|| host.clone()),
        });
        r.count = (i % 3 == 1).then_some(u64::MAX - i as u64);
        r.violation = (i % 2 == 0).then(|| violation_of(&host, Dimension::Network));
        assert_same(&r);
    }
}

#[test]
fn exec_records() {
    let odd = odd();
    for argc in [0, 1, odd.len()] {
        for (i, path) in odd.iter().enumerate() {
            let mut r = Record::sample(Kind::Exec, Verdict::Violation);
            r.exec = Some(ExecObject {
                path: path.clone(),
                argv: odd.iter().take(argc).cloned().collect(),
                script: (i % 2 == 0).then(|| format!("{path}.py")),
            });
            r.violation = Some(violation_of(path, Dimension::Exec));
            assert_same(&r);
        }
    }
}

#[test]
fn rare_objects_go_through_serde_in_place() {
    for (i, text) in odd().into_iter().enumerate() {
        let mut r = Record::sample(Kind::Escape, Verdict::Violation);
        r.escape = Some(Box::new(EscapeObject {
            technique: "syscall",
            syscall: Some(text.clone()),
            args: (i % 2 == 0).then(|| vec![0, 1, u64::MAX]),
            result: Some(-1),
            cgroup: (i % 2 == 1).then(|| text.clone()),
            moved_pid: (i % 3 == 0).then_some(42),
        }));
        r.violation = Some(violation_of(&text, Dimension::Escape));
        r.call = Some(Box::new(CallRef {
            id: text.clone(),
            name: "read_text_file".into(),
            digest: (i % 2 == 0).then(|| "ab".repeat(32)),
            end: (i % 2 == 1).then(|| CallEnd {
                outcome: "ok".into(),
                duration_ms: 12,
                events: 3,
                violations: 1,
                error: Some(text.clone()),
            }),
        }));
        r.kubernetes = (i % 2 == 0).then(|| {
            Box::new(KubernetesRef {
                namespace: "ns".into(),
                pod: text.clone(),
                container: "c".into(),
                pod_uid: "uid".into(),
                container_id: "cid".into(),
            })
        });
        assert_same(&r);

        let mut t = Record::sample(Kind::Task, Verdict::Allowed);
        t.process = None;
        t.task = Some(Box::new(TaskEvent {
            event: "revoked",
            reason: text.clone(),
        }));
        assert_same(&t);

        let mut a = Record::sample(Kind::Approval, Verdict::Violation);
        a.approval = Some(Box::new(ApprovalObject {
            id: 7,
            decision: "approved",
            rule: Some(text.clone()),
            for_task: i % 2 == 0,
            approver_uid: Some(0),
            approver: Some(text.clone()),
            note: (i % 2 == 1).then(|| text.clone()),
            waited_ms: Some(1500),
            grant: Some(format!("files.read {text}")),
        }));
        assert_same(&a);
    }
}

#[test]
fn the_lifecycle_record_is_written_as_serde_writes_it() {
    let agent = AgentRef::new(AgentNames {
        scope: "s".into(),
        task: "t".into(),
        owner: "o".into(),
        identity: Some("spiffe://x".into()),
    });
    let r = Record::lifecycle(agent, "degraded", "a \"reason\"\n", Action::None);
    assert_same(&r);
}

#[test]
fn numbers_are_written_as_serde_writes_them() {
    for n in [0, 1, 9, 10, 99, 100, 4_294_967_295, u64::MAX] {
        let mut out = Vec::new();
        number(&mut out, n);
        assert_eq!(out, serde_json::to_vec(&n).expect("a number"), "{n}");
    }
}

#[test]
fn kept_text_is_only_reused_for_the_same_strings() {
    // More processes and agents than are kept, interleaved, some sharing a scope or a
    // name's allocation with another: every line is still serde's.
    let scope: Arc<str> = "shared-scope".into();
    let comm: Arc<str> = "python3".into();
    // Threads of one process share its names; a thread's numbers are its own.
    let threads = Arc::new(ProcessNames {
        comm: Arc::clone(&comm),
        exe: Some("/usr/bin/python3".into()),
        cgroup: Some("/agent-monitor/t".into()),
    });
    let procs: Vec<ProcessRef> = (0..40)
        .map(|i| ProcessRef {
            pid: if i % 4 == 0 { 7 } else { i },
            tid: i + 1,
            ppid: 1,
            names: if i % 4 == 0 {
                Arc::clone(&threads)
            } else {
                Arc::new(ProcessNames {
                    comm: if i % 2 == 0 {
                        Arc::clone(&comm)
                    } else {
                        format!("p{i}").into()
                    },
                    exe: (i % 3 != 0).then(|| format!("/usr/bin/p{}", i % 7).into()),
                    cgroup: Some(format!("/agent-monitor/t-{}", i % 5).into()),
                })
            },
        })
        .collect();
    let agents: Vec<AgentRef> = (0..10)
        .map(|i| {
            AgentRef::new(AgentNames {
                scope: if i % 2 == 0 {
                    Arc::clone(&scope)
                } else {
                    format!("scope-{i}").into()
                },
                task: format!("t-{i}").into(),
                owner: "team".into(),
                identity: (i % 3 == 0).then(|| "id".into()),
            })
        })
        .collect();
    let mut shared = Shared::default();
    for round in 0..3 {
        for (i, p) in procs.iter().enumerate() {
            let mut r = Record::sample(Kind::Connect, Verdict::Allowed);
            r.process = Some(p.clone());
            r.agent = agents[(i * 7 + round) % agents.len()].clone();
            let mut new = Vec::new();
            write_record(&mut new, &r, &mut shared).expect("the writer writes a record");
            assert_eq!(
                String::from_utf8_lossy(&new),
                String::from_utf8_lossy(&serde_json::to_vec(&r).expect("serde")),
                "round {round}, process {i}"
            );
        }
    }
}
