//! OpenTelemetry export end to end: a real OTLP receiver (`tests/otlp_receiver.py`, on the
//! official generated OTLP definitions and grpcio) gets every audit-log line exactly once,
//! over gRPC and HTTP/protobuf, and the daemon's metrics; stopping the receiver while agents
//! keep working loses and repeats nothing.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use agent_monitor_e2e::{Daemon, assert_exit, wait_for, workspace, workspace_root};
use serde_json::Value;

/// The backlog after an outage waits for the exporter's next retry (capped exponential
/// backoff): longer than the fixture's deadline.
const BACKLOG_DEADLINE: Duration = Duration::from_secs(90);

fn scope(ws: &Path) -> String {
    format!(
        r#"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata:
  name: otlp
  owner: otlp-team@example.org
spec:
  mode: audit
  exec:
    allow: [/bin/sh, /usr/bin/cat]
  files:
    read: ["{ws}/**"]
    write: ["{ws}/out/**"]
"#,
        ws = ws.display()
    )
}

/// An enforced scope whose violations kill the process (ERROR records).
fn kill_scope(ws: &Path) -> String {
    format!(
        r#"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {{name: otlp-kill, owner: otlp-team@example.org}}
spec:
  mode: enforce
  onViolation: kill-process
  exec:
    allow: [/bin/sh, /usr/bin/cat]
  files:
    read: ["{ws}/**"]
    deny: ["{ws}/secret.txt"]
"#,
        ws = ws.display()
    )
}

struct Receiver {
    child: Option<Child>,
    /// Extra arguments of the receiver (`--reject-each N`).
    extra: Vec<String>,
    protocol: &'static str,
    out: PathBuf,
    port_file: PathBuf,
    port: u16,
}

impl Receiver {
    fn start(protocol: &'static str, dir: &Path, extra: &[&str]) -> Self {
        let mut r = Self {
            child: None,
            extra: extra.iter().map(ToString::to_string).collect(),
            protocol,
            out: dir.join("received.jsonl"),
            port_file: dir.join("receiver.port"),
            port: 0,
        };
        r.spawn();
        r
    }

    /// Starts the receiver (again, on the same port once it has one).
    fn spawn(&mut self) {
        let python = workspace_root().join("target/tools/venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run `cargo xtask setup`",
            python.display()
        );
        let _ = fs::remove_file(&self.port_file);
        let child = Command::new(python)
            .arg(workspace_root().join("tests/otlp_receiver.py"))
            .args(["--protocol", self.protocol])
            .arg("--out")
            .arg(&self.out)
            .arg("--port-file")
            .arg(&self.port_file)
            .args(["--port", &self.port.to_string()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the OTLP receiver");
        self.child = Some(child);
        let child = self.child.as_mut().expect("started");
        let port_file = &self.port_file;
        self.port = wait_for("the OTLP receiver to listen", || {
            if let Some(status) = child.try_wait().ok().flatten() {
                panic!("the OTLP receiver exited ({status})");
            }
            fs::read_to_string(port_file).ok()?.trim().parse().ok()
        });
    }

    /// SIGTERM: requests in progress are answered, then it exits.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("receiver running");
        let pid = i32::try_from(child.id()).expect("pid");
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = child.wait().expect("reap the receiver");
        assert!(status.success(), "receiver exit: {status}");
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn received(&self, signal: &str) -> Vec<Value> {
        let text = fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("receiver line"))
            .filter(|v| v["signal"] == signal)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every line of the audit log, rotated files (oldest first) then the current one.
fn audit_lines(audit: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = (1..=50)
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", audit.display())))
        .filter(|p| p.exists())
        .collect();
    files.push(audit.to_path_buf());
    files
        .iter()
        .flat_map(|f| {
            let text = fs::read_to_string(f).unwrap_or_default();
            let complete = text
                .rfind('\n')
                .map_or(String::new(), |end| text[..end].to_owned());
            complete
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("audit line"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Lines by their text (a multiset), so "exactly once" is a count of 1 each.
fn counts(values: impl Iterator<Item = Value>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for v in values {
        *m.entry(v.to_string()).or_insert(0) += 1;
    }
    m
}

/// The severity an audit record must arrive with.
fn expected_severity(r: &Value) -> u64 {
    let killed = |k: &str| r[k].as_str().is_some_and(|a| a.starts_with("killed"));
    if killed("action") || killed("after") {
        17
    } else if r["verdict"] == "violation" || r["kind"] == "gap" {
        13
    } else {
        9
    }
}

/// Runs agent work under the `otlp` scope: reads in scope and out of it, an exec outside
/// the allow list.
fn agent_work(d: &Daemon, ws: &Path, round: usize) {
    let script = format!(
        "cat {ws}/a.txt; cat /etc/hostname; echo {round} > {ws}/out/r{round}; /usr/bin/true",
        ws = ws.display()
    );
    let out = d.exec("otlp", &[], &["/bin/sh", "-c", &script]);
    assert_exit(&out, 0);
}

/// Waits until the receiver holds as many log records as the audit log has lines, the
/// exporter has nothing left, and the audit log has `tasks` ended tasks; then checks each
/// line arrived exactly once with its severity and attributes. Returns the line count.
fn assert_all_arrived(d: &Daemon, r: &Receiver, tasks: usize, deadline: Duration) -> usize {
    let until = Instant::now() + deadline;
    loop {
        let audit = audit_lines(&d.audit);
        let ended = audit
            .iter()
            .filter(|l| l["kind"] == "task" && l["task"]["event"] == "ended")
            .count();
        let got = r.received("log");
        let status = d.get_json("/v1/status");
        if ended >= tasks && got.len() >= audit.len() && status["otlp"]["backlog_bytes"] == 0 {
            break;
        }
        if Instant::now() >= until {
            let have = counts(got.iter().map(|g| g["body"].clone()));
            let missing: Vec<_> = audit
                .iter()
                .filter(|l| !have.contains_key(&l.to_string()))
                .map(|l| format!("{} {} {}", l["time"], l["kind"], l["agent"]["task"]))
                .collect();
            panic!(
                "timed out: {} of {} audit lines received ({ended} of {tasks} tasks ended); status: {}; missing: {missing:#?}\n{}",
                got.len(),
                audit.len(),
                status["otlp"],
                d.log()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    let audit = audit_lines(&d.audit);
    let got = r.received("log");
    let want = counts(audit.iter().cloned());
    let have = counts(got.iter().map(|g| g["body"].clone()));
    let missing: Vec<_> = want.keys().filter(|k| !have.contains_key(*k)).collect();
    assert!(missing.is_empty(), "lost: {missing:#?}");
    let repeated: Vec<_> = have
        .iter()
        .filter(|(k, n)| **n != want.get(*k).copied().unwrap_or(0))
        .collect();
    assert!(
        repeated.is_empty(),
        "sent more than once or never logged: {repeated:#?}"
    );
    assert_eq!(got.len(), audit.len());
    let host = fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    for g in &got {
        let body = &g["body"];
        assert_eq!(g["severity_number"], expected_severity(body), "{g}");
        assert_eq!(g["protocol"], r.protocol);
        assert_eq!(g["resource"]["service.name"], "agent-monitor", "{g}");
        assert_eq!(g["resource"]["host.name"], host.trim(), "{g}");
        assert!(g["resource"]["service.version"].is_string(), "{g}");
        assert!(g["time_unix_nano"].as_u64().is_some_and(|t| t > 0), "{g}");
        if let Some(task) = body["agent"]["task"].as_str() {
            assert_eq!(g["attributes"]["agent_monitor.task"], task, "{g}");
            assert_eq!(
                g["attributes"]["agent_monitor.scope"],
                body["agent"]["scope"]
            );
            assert_eq!(
                g["attributes"]["agent_monitor.owner"],
                "otlp-team@example.org"
            );
            assert_eq!(g["attributes"]["agent_monitor.kind"], body["kind"]);
            assert_eq!(g["attributes"]["agent_monitor.verdict"], body["verdict"]);
        }
    }
    audit.len()
}

/// Records this daemon process had acknowledged.
fn records_sent(d: &Daemon) -> u64 {
    d.get_json("/v1/status")["otlp"]["records_sent"]
        .as_u64()
        .expect("otlp.records_sent in the status")
}

fn ended_tasks(d: &Daemon) -> usize {
    audit_lines(&d.audit)
        .iter()
        .filter(|l| l["kind"] == "task" && l["task"]["event"] == "ended")
        .count()
}

/// Metrics arrive: the records counter as a sum, the evaluation time as a histogram, and
/// the exporter's own counters.
fn assert_metrics(d: &Daemon, r: &Receiver) {
    let until = Instant::now() + agent_monitor_e2e::DEADLINE;
    loop {
        let m = r.received("metric");
        let has = |name: &str, kind: &str| m.iter().any(|v| v["name"] == name && v["type"] == kind);
        if has("agent_monitor_records", "sum")
            && has("agent_monitor_policy_evaluation_seconds", "histogram")
            && has("agent_monitor_otlp_records_sent", "sum")
        {
            assert!(
                m.iter()
                    .all(|v| v["resource"]["service.name"] == "agent-monitor")
            );
            return;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for metrics; received {:?}; status {}",
            m.iter()
                .map(|v| format!("{} {}", v["name"], v["type"]))
                .collect::<Vec<_>>(),
            d.get_json("/v1/status")["otlp"]
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn setup(
    protocol: &'static str,
    receiver_args: &[&str],
    extra: &[&str],
) -> (tempfile::TempDir, PathBuf, Receiver, Daemon) {
    let (guard, ws) = workspace();
    fs::create_dir(ws.join("out")).expect("mkdir out");
    fs::write(ws.join("a.txt"), "alpha\n").expect("write");
    fs::write(ws.join("secret.txt"), "s3cret\n").expect("write");
    let receiver = Receiver::start(protocol, &ws, receiver_args);
    let endpoint = receiver.endpoint();
    let mut args = vec!["--otlp-endpoint", &endpoint, "--otlp-protocol", protocol];
    args.extend_from_slice(extra);
    let daemon = Daemon::start_with(
        &[("otlp.yaml", &scope(&ws)), ("kill.yaml", &kill_scope(&ws))],
        &args,
    );
    (guard, ws, receiver, daemon)
}

#[test]
fn grpc_export_delivers_every_line_once_with_metrics() {
    let (_guard, ws, receiver, mut daemon) = setup("grpc", &[], &[]);
    for round in 0..3 {
        agent_work(&daemon, &ws, round);
    }
    // A violation that kills: an ERROR record.
    let secret = format!("cat {}/secret.txt", ws.display());
    let out = daemon.exec("otlp-kill", &[], &["/bin/sh", "-c", &secret]);
    assert!(!out.status.success(), "{out:?}");
    let lines = assert_all_arrived(&daemon, &receiver, 4, agent_monitor_e2e::DEADLINE);
    assert_eq!(records_sent(&daemon), lines as u64);
    let audit = audit_lines(&daemon.audit);
    assert!(
        audit.iter().any(|l| l["verdict"] == "violation"),
        "the work has violations (WARN records)"
    );
    assert!(lines > 6, "{lines} lines");
    let errors: Vec<_> = receiver
        .received("log")
        .into_iter()
        .filter(|g| g["severity_number"] == 17)
        .collect();
    assert!(
        errors
            .iter()
            .any(|g| g["attributes"]["agent_monitor.scope"] == "otlp-kill"),
        "an ERROR record of the kill: {errors:?}"
    );
    assert_metrics(&daemon, &receiver);
    daemon.stop();
}

#[test]
fn http_protobuf_export_delivers_every_line_once() {
    // The receiver answers each request "2 rejected" (a partial success): counted and
    // shown, not sent again.
    let (_guard, ws, receiver, mut daemon) = setup("http", &["--reject-each", "2"], &[]);
    agent_work(&daemon, &ws, 0);
    let lines = assert_all_arrived(&daemon, &receiver, 1, agent_monitor_e2e::DEADLINE);
    assert_eq!(records_sent(&daemon), lines as u64);
    let otlp = &daemon.get_json("/v1/status")["otlp"];
    assert!(otlp["records_rejected"].as_u64() >= Some(2), "{otlp}");
    assert!(
        otlp["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("rejected by the test receiver")),
        "{otlp}"
    );
    assert_metrics(&daemon, &receiver);
    daemon.stop();
}

#[test]
fn a_receiver_outage_loses_and_repeats_nothing() {
    // A small audit log: the backlog spans rotations.
    let (_guard, ws, mut receiver, mut daemon) = setup(
        "grpc",
        &[],
        &["--audit-log-max-bytes", "4096", "--audit-log-keep", "50"],
    );
    agent_work(&daemon, &ws, 0);
    assert_all_arrived(&daemon, &receiver, 1, agent_monitor_e2e::DEADLINE);
    receiver.stop();
    let failed_before = daemon.get_json("/v1/status")["otlp"]["batches_failed"]
        .as_u64()
        .expect("batches_failed");
    for round in 1..6 {
        agent_work(&daemon, &ws, round);
    }
    // The exporter saw the collector down (and the records wait in the log).
    wait_for("a failed export while the receiver is down", || {
        let s = daemon.get_json("/v1/status");
        (s["otlp"]["batches_failed"].as_u64() > Some(failed_before)
            && s["otlp"]["backlog_bytes"].as_u64() > Some(0)
            && s["otlp"]["last_error"].is_string())
        .then_some(())
    });
    assert!(
        Path::new(&format!("{}.1", daemon.audit.display())).exists(),
        "the audit log rotated during the outage"
    );
    for round in 6..8 {
        agent_work(&daemon, &ws, round);
    }
    receiver.spawn();
    let lines = assert_all_arrived(&daemon, &receiver, 8, BACKLOG_DEADLINE);
    assert!(lines > 16, "{lines} lines");
    assert_eq!(records_sent(&daemon), lines as u64);
    daemon.stop();
}

#[test]
fn a_restarted_daemon_resumes_from_the_saved_cursor() {
    let (_guard, ws, mut receiver, mut daemon) = setup("grpc", &[], &[]);
    agent_work(&daemon, &ws, 0);
    assert_all_arrived(&daemon, &receiver, 1, agent_monitor_e2e::DEADLINE);
    let cursor = PathBuf::from(format!("{}.otlp-cursor", daemon.audit.display()));
    assert!(cursor.exists(), "the cursor is saved next to the audit log");
    // Records made while the collector is down wait in the log across a daemon restart;
    // those it acknowledged before are not sent again.
    receiver.stop();
    agent_work(&daemon, &ws, 1);
    daemon.stop();
    let acknowledged = receiver.received("log").len();
    receiver.spawn();
    daemon.restart();
    let ended = ended_tasks(&daemon);
    agent_work(&daemon, &ws, 2);
    let lines = assert_all_arrived(&daemon, &receiver, ended + 1, BACKLOG_DEADLINE);
    assert!(lines > acknowledged, "{lines} lines");
    // The new process sent only what the old one had not had acknowledged.
    assert_eq!(records_sent(&daemon), (lines - acknowledged) as u64);
    daemon.stop();
}

#[test]
fn an_unusable_endpoint_fails_the_start_before_anything_is_loaded() {
    let (_guard, ws) = workspace();
    for (endpoint, says) in [
        ("https://collector:4317", "TLS is not supported"),
        ("collector:4317", "expected http://HOST:PORT"),
    ] {
        let out = Command::new(agent_monitor_e2e::binary())
            .args(["run", "--scopes"])
            .arg(ws.join("no-such-dir"))
            .arg("--audit-log")
            .arg(ws.join("audit.jsonl"))
            .args(["--otlp-endpoint", endpoint])
            .stdin(Stdio::null())
            .output()
            .expect("run agent-monitor");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{endpoint}: {stderr}");
        assert!(stderr.contains(says), "{endpoint}: {stderr}");
        assert!(!ws.join("audit.jsonl").exists(), "nothing was opened");
    }
}

/// OCSF severity to OTLP severity number, as the exporter maps it.
fn ocsf_severity(severity_id: u64) -> u64 {
    match severity_id {
        1 => 9,
        2 => 13,
        3 => 14,
        4 => 17,
        5 => 21,
        6 => 22,
        _ => 0,
    }
}

#[test]
fn an_ocsf_audit_log_is_exported_as_ocsf_events() {
    let (_guard, ws, receiver, mut daemon) = setup("grpc", &[], &["--audit-format", "ocsf"]);
    agent_work(&daemon, &ws, 0);
    let secret = format!("cat {}/secret.txt", ws.display());
    let out = daemon.exec("otlp-kill", &[], &["/bin/sh", "-c", &secret]);
    assert!(!out.status.success(), "{out:?}");
    // Two tasks ended (Application Lifecycle, Stop) and everything sent.
    let ended = |audit: &[Value]| {
        audit
            .iter()
            .filter(|l| l["class_uid"] == 6002 && l["activity_id"] == 4)
            .count()
    };
    wait_for("every OCSF line sent", || {
        let audit = audit_lines(&daemon.audit);
        (ended(&audit) >= 2
            && receiver.received("log").len() >= audit.len()
            && daemon.get_json("/v1/status")["otlp"]["backlog_bytes"] == 0)
            .then_some(())
    });
    let audit = audit_lines(&daemon.audit);
    assert!(audit.iter().all(|l| l["class_uid"].is_u64()), "not OCSF");
    let got = receiver.received("log");
    let want = counts(audit.iter().cloned());
    let have = counts(got.iter().map(|g| g["body"].clone()));
    assert_eq!(want, have, "each OCSF line exactly once");
    for g in &got {
        let body = &g["body"];
        let sev = body["severity_id"].as_u64().expect("severity_id");
        assert_eq!(g["severity_number"], ocsf_severity(sev), "{g}");
        assert_eq!(g["attributes"]["ocsf.class_uid"], body["class_uid"], "{g}");
        if let Some(task) = body["actor"]["session"]["uid"].as_str() {
            assert_eq!(g["attributes"]["agent_monitor.task"], task, "{g}");
            assert_eq!(
                g["attributes"]["agent_monitor.scope"],
                body["actor"]["app_name"]
            );
        }
    }
    // The kill is a finding (2004) with severity Medium (3): WARN2 in OTLP.
    assert!(
        got.iter().any(|g| g["body"]["class_uid"] == 2004
            && g["attributes"]["agent_monitor.scope"] == "otlp-kill"),
        "the kill's finding: {got:?}"
    );
    daemon.stop();
}
