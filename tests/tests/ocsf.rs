//! `--audit-format ocsf` end to end: an agent does one of everything (exec, file read and
//! write, connect, send, bind, a violation, an escape attempt, its task's end); every line of
//! the audit log and of `events --format ocsf` must validate against the OCSF schema
//! (`tests/ocsf/validate.py`: ocsf-json-schema's schemas, installed by `cargo xtask setup`),
//! and every class must be there.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use agent_monitor_e2e::{Daemon, Ports, assert_exit, binary, s, workspace, workspace_root};
use serde_json::Value;

const SCOPE: &str = "ocsf-e2e";

fn scope(ws: &Path, tcp: u16, udp: u16, bind: u16) -> String {
    format!(
        r#"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata:
  name: {SCOPE}
  owner: e2e-team@example.org
  identity: spiffe://example.org/agent/ocsf
spec:
  mode: audit
  exec:
    allow: [/usr/bin/python3*, /usr/bin/cat]
  files:
    read: ["{ws}/**"]
    write: ["{ws}/out/**"]
    deny: ["{ws}/secret*"]
  network:
    connect:
      - {{cidr: 127.0.0.1/32, ports: [{tcp}]}}
      - {{cidr: 127.0.0.1/32, ports: [{udp}], protocol: udp}}
    bind: [{bind}]
"#,
        ws = ws.display()
    )
}

/// One of every activity; the secret read is the violation (audit mode: recorded, not
/// stopped), unshare the escape (refused by the agent's seccomp filter).
const AGENT: &str = r#"
import ctypes, socket, subprocess, sys
ws, tcp, udp, bind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
open(f"{ws}/a.txt").read()
open(f"{ws}/out/new.txt", "w").write("x")
open(f"{ws}/secret.txt").read()
socket.create_connection(("127.0.0.1", tcp)).close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"x", ("127.0.0.1", udp))
b = socket.socket()
b.bind(("127.0.0.1", bind))
b.close()
subprocess.run(["/usr/bin/cat", f"{ws}/a.txt"], check=True, stdout=subprocess.DEVNULL)
libc = ctypes.CDLL(None, use_errno=True)
print("unshare", libc.unshare(0x10000000))
"#;

/// The classes every record kind maps to: file, exec, network, finding (violation and
/// escape), task lifecycle.
const CLASSES: [u64; 5] = [1001, 1007, 4001, 2004, 6002];

/// Runs the validator on `file`; returns its per-class counts (failing the test on any
/// invalid line).
fn validate(file: &Path) -> BTreeMap<u64, u64> {
    let python = workspace_root().join("target/tools/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask setup`",
        python.display()
    );
    let out = Command::new(&python)
        .arg(workspace_root().join("tests/ocsf/validate.py"))
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .expect("run validate.py");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_exit(&out, 0);
    assert!(text.contains("invalid: 0"), "{text}");
    text.lines()
        .filter_map(|l| {
            let (class, count) = l.strip_prefix("class ")?.split_once(": ")?;
            Some((class.parse().ok()?, count.parse().ok()?))
        })
        .collect()
}

fn assert_every_class(counts: &BTreeMap<u64, u64>, what: &str) {
    for class in CLASSES {
        assert!(
            counts.get(&class).is_some_and(|n| *n > 0),
            "{what}: no event of class {class}: {counts:?}"
        );
    }
}

fn class(e: &Value) -> u64 {
    e["class_uid"].as_u64().unwrap_or(u64::MAX)
}

fn run_agent(daemon: &Daemon, ws: &Path, ports: &Ports, task: &str) {
    let out = daemon.exec(
        SCOPE,
        &["--task", task],
        &[
            "/usr/bin/python3",
            "-c",
            AGENT,
            ws.to_str().expect("utf-8"),
            &ports.tcp_in_port().to_string(),
            &ports.udp_in_port().to_string(),
            &ports.bind_port.to_string(),
        ],
    );
    assert_exit(&out, 0);
    // The task's end is its last record: after it, the log holds everything it did.
    daemon.wait_record("the task's end", |e| {
        class(e) == 6002 && s(e, "/app/uid") == task && s(e, "/unmapped/task/event") == "ended"
    });
}

fn setup() -> (tempfile::TempDir, PathBuf, Ports) {
    let (guard, ws) = workspace();
    fs::create_dir(ws.join("out")).expect("mkdir out");
    fs::write(ws.join("a.txt"), "alpha\n").expect("write");
    fs::write(ws.join("secret.txt"), "s3cret\n").expect("write");
    (guard, ws, Ports::new())
}

/// One event for each thing the agent did, with its objects in place.
fn assert_activities(mine: &[&Value], ws: &Path, ports: &Ports) {
    let has = |what: &str, pred: &dyn Fn(&Value) -> bool| {
        assert!(
            mine.iter().any(|e| pred(e)),
            "no event for {what} among:\n{}",
            mine.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    let a = ws.join("a.txt");
    let a = a.to_str().unwrap_or_default();
    has("the read of a.txt", &|e| {
        class(e) == 1001 && s(e, "/file/path") == a && e["activity_id"] == 2
    });
    has("the write of out/new.txt", &|e| {
        class(e) == 1001 && s(e, "/file/name") == "new.txt"
    });
    has("the exec of cat", &|e| {
        class(e) == 1007 && s(e, "/process/file/path") == "/usr/bin/cat"
    });
    has("the connect", &|e| {
        class(e) == 4001
            && e["activity_id"] == 1
            && e["dst_endpoint"]["port"] == ports.tcp_in_port()
    });
    has("the send", &|e| class(e) == 4001 && e["activity_id"] == 6);
    has("the bind", &|e| {
        class(e) == 4001 && e["activity_id"] == 7 && e["src_endpoint"]["port"] == ports.bind_port
    });
    has("the secret read", &|e| {
        class(e) == 2004
            && s(e, "/finding_info/analytic/name").starts_with("files.deny")
            && s(e, "/unmapped/verdict") == "violation"
            && s(e, "/evidences/0/file/name") == "secret.txt"
    });
    has("the escape attempt", &|e| {
        class(e) == 2004
            && s(e, "/unmapped/kind") == "escape"
            && s(e, "/unmapped/escape/syscall") == "unshare"
    });
}

#[test]
fn every_record_kind_is_a_valid_ocsf_event() {
    let (_guard, ws, ports) = setup();
    let yaml = scope(
        &ws,
        ports.tcp_in_port(),
        ports.udp_in_port(),
        ports.bind_port,
    );
    let daemon = Daemon::start_with(&[("ocsf.yaml", &yaml)], &["--audit-format", "ocsf"]);
    let task = "ocsf-1";
    run_agent(&daemon, &ws, &ports, task);

    let events = daemon.records();
    assert_every_class(&validate(&daemon.audit), "audit log");
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| s(e, "/actor/session/uid") == task)
        .collect();
    for e in &mine {
        assert_eq!(s(e, "/actor/app_name"), SCOPE, "{e}");
        assert_eq!(s(e, "/actor/user/name"), "e2e-team@example.org", "{e}");
        assert_eq!(
            s(e, "/actor/app_uid"),
            "spiffe://example.org/agent/ocsf",
            "{e}"
        );
        assert_eq!(s(e, "/metadata/product/name"), "agent-monitor", "{e}");
        assert!(!s(e, "/unmapped/verdict").is_empty(), "{e}");
    }
    assert_activities(&mine, &ws, &ports);

    // `events --format ocsf`: the same mapping, from the API's native records.
    let out = daemon.cli(&["events", "--format", "ocsf", "--task", task]);
    assert_exit(&out, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let listed = dir.path().join("events.jsonl");
    fs::write(&listed, &out.stdout).expect("write");
    let counts = validate(&listed);
    assert_every_class(&counts, "events --format ocsf");
    assert_eq!(
        counts.values().sum::<u64>(),
        mine.len() as u64,
        "events lists the task's records"
    );
    // The API itself stays native: `events --format json` is agent-monitor's records.
    let out = daemon.cli(&["events", "--format", "json", "--task", task]);
    assert_exit(&out, 0);
    let native: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(native.len(), mine.len());
    assert!(native.iter().all(|r| r.get("kind").is_some()), "{native:?}");

    // The lifecycle tools read native logs only, and say so.
    let manifest = dir.path().join("scope.yaml");
    fs::write(&manifest, &yaml).expect("write");
    let out = Command::new(binary())
        .args(["scope", "replay"])
        .arg(&manifest)
        .arg("--log")
        .arg(&daemon.audit)
        .stdin(Stdio::null())
        .output()
        .expect("run scope replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:1: written with --audit-format ocsf",
            daemon.audit.display()
        )),
        "{stderr}"
    );
}

#[test]
fn the_config_file_sets_the_audit_format() {
    let (_guard, ws, ports) = setup();
    let yaml = scope(
        &ws,
        ports.tcp_in_port(),
        ports.udp_in_port(),
        ports.bind_port,
    );
    let daemon = Daemon::start_with_config(&[("ocsf.yaml", &yaml)], "audit-format: ocsf\n");
    run_agent(&daemon, &ws, &ports, "ocsf-2");
    let records = daemon.records();
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|e| e.get("class_uid").is_some()),
        "{records:?}"
    );
    assert_every_class(&validate(&daemon.audit), "audit log");
}
