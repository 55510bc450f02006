//! The status socket and the CLI end to end: every endpoint and client command against a
//! real daemon with real tasks; who may use the socket; hostile clients; audit log rotation
//! under load; declared-vs-used reports.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{fs::MetadataExt as _, fs::PermissionsExt as _, net::UnixStream},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Instant,
};

use agent_monitor_e2e::{
    DEADLINE, Daemon, assert_exit, binary, curl_as, parse_curl, s, wait_for, workspace,
};
use serde_json::Value;

/// `{WS}`: the test's workspace. `/srv/never-used/**` and `/usr/bin/git` are never used.
fn scope(ws: &Path) -> String {
    format!(
        r#"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata:
  name: api
  owner: api-team@example.org
  identity: spiffe://example.org/agent/api
spec:
  mode: audit
  exec:
    allow: [/usr/bin/cat, /usr/bin/git, /bin/sh, /usr/bin/sleep, /usr/bin/curl]
  files:
    read: ["{ws}/**", /srv/never-used/**]
    write: [/var/lib/am-e2e-never/**]
    deny: [/etc/shadow]
  network:
    connect:
      - {{cidr: 10.0.0.0/8, ports: [443]}}
"#,
        ws = ws.display()
    )
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn every_endpoint_and_command_answers_about_a_real_task() {
    let (_g, ws) = workspace();
    let data = ws.join("data.txt");
    fs::write(&data, "hello\n").expect("write");
    let d = Daemon::start(&[("api.yaml", &scope(&ws))]);
    let data_s = data.to_str().expect("utf-8");
    let out = d.exec(
        "api",
        &["--task", "api-t1"],
        &["/usr/bin/cat", data_s, "/etc/shadow"],
    );
    assert_exit(&out, 0);
    d.wait_record("the shadow violation", |r| {
        s(r, "/agent/task") == "api-t1" && s(r, "/file/path") == "/etc/shadow"
    });

    // GET /v1/events: recent records, filtered by task and violations. The API shows a
    // batch once it is written and synced, which may be a moment after the file has it.
    // The task's end is its last record: waiting for it, the snapshot below is the whole
    // task, and the CLI's listings further down can be compared with it.
    let (code, body) = wait_for("the task's end in /v1/events", || {
        let (code, body) = d.request("GET", "/v1/events?task=api-t1", None);
        (code != 200
            || lines(&body)
                .iter()
                .any(|r| s(r, "/kind") == "task" && s(r, "/task/event") == "ended"))
        .then_some((code, body))
    });
    assert_eq!(code, 200, "{body}");
    let all = lines(&body);
    assert!(all.iter().all(|r| s(r, "/agent/task") == "api-t1"));
    assert!(
        all.iter().any(|r| s(r, "/exec/path") == "/usr/bin/cat"),
        "{body}"
    );
    assert!(all.iter().any(|r| s(r, "/file/path") == data_s), "{body}");
    assert!(
        all.iter()
            .all(|r| s(r, "/agent/owner") == "api-team@example.org")
    );
    let (code, body) = d.request("GET", "/v1/events?task=api-t1&violations=1", None);
    assert_eq!(code, 200, "{body}");
    let violations = lines(&body);
    assert!(!violations.is_empty());
    assert!(
        violations.iter().all(|r| s(r, "/verdict") == "violation"),
        "{body}"
    );
    assert!(
        violations
            .iter()
            .any(|r| s(r, "/file/path") == "/etc/shadow")
    );
    let (code, body) = d.request("GET", "/v1/events?follow=maybe", None);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("bad_query"), "{body}");

    // `events`: JSON lines and human lines.
    let out = d.cli(&["events", "--task", "api-t1", "--violations", "--json"]);
    assert_exit(&out, 0);
    let cli = lines(&stdout(&out));
    assert_eq!(cli.len(), violations.len(), "{}", stdout(&out));
    let out = d.cli(&["events", "--task", "api-t1"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.contains("VIOLATION files.deny[0]") && l.contains("/etc/shadow")),
        "{text}"
    );
    assert_eq!(text.lines().count(), all.len(), "{text}");

    // GET /v1/report and `report`: used entries and the ones never used.
    let report = d.get_json("/v1/report/api-t1");
    assert_eq!(report["scope"], "api", "{report}");
    let unused: Vec<&str> = report["unused"]
        .as_array()
        .expect("unused")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(unused.contains(&"exec.allow[1]: /usr/bin/git"), "{report}");
    assert!(
        unused.contains(&"files.read[1]: /srv/never-used/**"),
        "{report}"
    );
    assert!(
        unused
            .iter()
            .any(|u| u.starts_with("network.connect[0]: 10.0.0.0/8")),
        "{report}"
    );
    assert!(
        !unused.iter().any(|u| u.starts_with("exec.allow[0]")),
        "{report}"
    );
    assert!(
        !unused.iter().any(|u| u.starts_with("files.read[0]")),
        "{report}"
    );
    let entry = |rule: &str| -> u64 {
        report["entries"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["rule"] == rule))
            .and_then(|e| e["uses"].as_u64())
            .unwrap_or_else(|| panic!("no entry {rule}: {report}"))
    };
    assert_eq!(entry("exec.allow[0]"), 1, "{report}");
    assert!(entry("files.read[0]") >= 1, "{report}");
    assert_eq!(entry("files.deny[0]"), 1, "{report}");
    let used_file = report["used"]["files"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["what"] == data_s))
        .unwrap_or_else(|| panic!("{data_s} not in used files: {report}"));
    assert_eq!(used_file["rules"], serde_json::json!(["files.read[0]"]));
    assert!(
        report["used"]["directories"]
            .as_array()
            .is_some_and(|a| a.iter().any(|d| d["path"] == ws.to_str().expect("utf-8"))),
        "{report}"
    );
    let out = d.cli(&["report", "--task", "api-t1"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("exec.allow[1]: /usr/bin/git"), "{text}");
    assert!(text.contains("(never used)"), "{text}");
    assert!(
        text.contains("/usr/bin/cat  x1  by exec.allow[0]"),
        "{text}"
    );
    let out = d.cli(&["report", "--task", "api-t1", "--json"]);
    assert_exit(&out, 0);
    let json: Value = serde_json::from_str(&stdout(&out)).expect("report JSON");
    assert_eq!(json["unused"], report["unused"]);
    let (code, body) = d.request("GET", "/v1/report/no-such-task", None);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("unknown_task"), "{body}");

    // The report outlives the task.
    wait_for("task api-t1 to end", || {
        let agents = d.get_json("/v1/agents");
        (!agents.to_string().contains("api-t1")).then_some(())
    });
    let report = d.get_json("/v1/report/api-t1");
    assert_eq!(report["live"], false, "{report}");
    assert!(report["records"].as_u64().unwrap_or(0) >= 3, "{report}");

    // A running task: agents, status, metrics, delete.
    let mut sleeper = d.exec_spawn("api", &["/usr/bin/sleep", "60"]);
    let task = wait_for("the sleeping task in /v1/agents", || {
        let agents = d.get_json("/v1/agents");
        agents.as_array().and_then(|a| {
            a.iter()
                .find(|t| t["pids"].as_array().is_some_and(|p| !p.is_empty()))
                .map(|t| s(t, "/id").to_string())
        })
    });
    let out = d.cli(&["agents"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.starts_with("TASK"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&task) && l.contains("api")),
        "{text}"
    );
    let out = d.cli(&["agents", "--json"]);
    assert_exit(&out, 0);
    let json: Value = serde_json::from_str(&stdout(&out)).expect("agents JSON");
    assert!(json.to_string().contains(&task));
    let report = d.get_json(&format!("/v1/report/{task}"));
    assert_eq!(report["live"], true, "{report}");

    let status = d.get_json("/v1/status");
    assert!(
        status["counters"]["records"].as_u64().unwrap_or(0) >= 3,
        "{status}"
    );
    assert!(status["counters"]["violations"].as_u64().unwrap_or(0) >= 1);
    for key in ["blocked", "killed", "held", "dropped", "emitted"] {
        assert!(status["counters"][key].is_u64(), "{key}: {status}");
    }
    assert!(status["coverage"]["attached"].as_u64().unwrap_or(0) > 0);
    assert!(
        status["coverage"]["limits"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    );
    assert!(status["degraded"].is_array(), "{status}");
    assert!(
        status["ring_buffer"]["size_bytes"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    assert!(status["ring_buffer"]["used_bytes"].is_u64(), "{status}");
    assert_eq!(status["tasks"], 1, "{status}");
    let out = d.cli(&["status"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    for want in [
        "hooks:",
        "attached",
        "BPF-LSM",
        "limit:",
        "violations",
        "degraded: none",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    let out = d.cli(&["status", "--json"]);
    assert_exit(&out, 0);
    let json: Value = serde_json::from_str(&stdout(&out)).expect("status JSON");
    assert_eq!(json["scopes"], serde_json::json!(["api"]));

    let (code, metrics) = d.request("GET", "/metrics", None);
    assert_eq!(code, 200);
    for want in [
        r#"agent_monitor_records_total{kind="exec",verdict="allowed"}"#,
        r#"agent_monitor_violations_total{kind="file",dimension="files",action="none"}"#,
        r#"agent_monitor_hook_events_total{hook="open"}"#,
        "agent_monitor_kernel_events_dropped_total ",
        "agent_monitor_blocked_total ",
        "agent_monitor_killed_total ",
        "agent_monitor_tasks_active 1",
        "agent_monitor_ring_buffer_size_bytes ",
        "agent_monitor_ring_buffer_used_bytes ",
        "agent_monitor_policy_evaluation_seconds_count ",
        "# TYPE agent_monitor_policy_evaluation_seconds histogram",
    ] {
        assert!(metrics.contains(want), "{want}:\n{metrics}");
    }

    let (code, body) = d.request("DELETE", &format!("/v1/tasks/{task}"), None);
    assert_eq!(code, 204, "{body}");
    let status = sleeper.wait().expect("wait exec");
    assert!(!status.success(), "the revoked task's command was killed");
    let (code, body) = d.request("DELETE", "/v1/tasks/no-such-task", None);
    assert_eq!((code, body.contains("unknown_task")), (404, true), "{body}");
    let (code, body) = d.request("POST", "/v1/reload", Some("{}"));
    assert_eq!(code, 200, "{body}");
    let (code, body) = d.request("GET", "/v1/nothing-here", None);
    assert_eq!((code, body.contains("not_found")), (404, true), "{body}");
}

/// Collects a child's stdout lines on a thread.
fn line_reader(out: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<String>, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line for {what}: {e}"),
        }
    }
}

#[test]
fn events_follow_streams_new_records_and_survives_a_daemon_restart() {
    let (_g, ws) = workspace();
    let mut d = Daemon::start(&[("api.yaml", &scope(&ws))]);
    let mut follower = Command::new(binary())
        .args(["events", "--follow", "--json", "--socket"])
        .arg(&d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn events --follow");
    let rx = line_reader(follower.stdout.take().expect("stdout"));
    wait_for("the follower to connect", || {
        let status = d.get_json("/v1/status");
        (status["followers"] == 1).then_some(())
    });
    assert_exit(
        &d.exec(
            "api",
            &["--task", "follow-1"],
            &["/usr/bin/cat", "/etc/hostname"],
        ),
        0,
    );
    let line = wait_line(&rx, "a follow-1 record", |l| l.contains("\"follow-1\""));
    let v: Value = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(v["agent"]["scope"], "api");

    d.stop();
    d.restart();
    // The restarted daemon read the recent records back from the audit log.
    let (code, body) = d.request("GET", "/v1/events?task=follow-1", None);
    assert_eq!(code, 200, "{body}");
    assert!(
        !lines(&body).is_empty(),
        "no follow-1 record after the restart"
    );
    wait_for("the follower to reconnect", || {
        let status = d.get_json("/v1/status");
        (status["followers"] == 1).then_some(())
    });
    assert_exit(
        &d.exec(
            "api",
            &["--task", "follow-2"],
            &["/usr/bin/cat", "/etc/hostname"],
        ),
        0,
    );
    wait_line(&rx, "a follow-2 record after the restart", |l| {
        l.contains("\"follow-2\"")
    });
    let _ = follower.kill();
    let _ = follower.wait();
    let mut stderr = String::new();
    let _ = follower
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    assert!(stderr.contains("reconnect"), "{stderr}");
}

#[test]
fn socket_refuses_agents_and_strangers_and_serves_root_and_its_group() {
    let (_g, ws) = workspace();
    // 65534: nobody / nogroup.
    let d = Daemon::start_with(&[("api.yaml", &scope(&ws))], &["--socket-group", "65534"]);
    let meta = fs::metadata(&d.socket).expect("socket");
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, 65534));
    // Let others reach the socket file itself (the test dir is 0700).
    fs::set_permissions(d.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");

    // Root: served.
    assert_eq!(d.request("GET", "/v1/status", None).0, 200);

    // An agent running as root: refused, for reads and for changes.
    let sock = d.socket.to_str().expect("utf-8");
    for (method, path) in [
        ("GET", "/v1/status"),
        ("GET", "/v1/events"),
        ("POST", "/v1/reload"),
    ] {
        let out = d.exec(
            "api",
            &[],
            &[
                "/usr/bin/curl",
                "-s",
                "-X",
                method,
                "-w",
                "\n%{http_code}",
                "--unix-socket",
                sock,
                &format!("http://agent-monitor{path}"),
            ],
        );
        let (code, body) = parse_curl(&out);
        assert_eq!(code, 403, "agent {method} {path}: {body}");
        assert!(body.contains("agent_forbidden"), "{body}");
    }

    // Not root, not in the group: the socket's mode keeps it out...
    let (code, _) = curl_as(65534, 65533, &d.socket, "GET", "/v1/status");
    assert_eq!(code, 0, "connect must fail for a stranger");
    // ...and the daemon refuses it by its credentials even when the mode is loosened.
    fs::set_permissions(&d.socket, fs::Permissions::from_mode(0o666)).expect("chmod");
    let (code, body) = curl_as(65534, 65533, &d.socket, "GET", "/v1/status");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("\"forbidden\""), "{body}");
    let (code, body) = curl_as(65534, 65533, &d.socket, "DELETE", "/v1/tasks/x");
    assert_eq!(code, 403, "{body}");
    fs::set_permissions(&d.socket, fs::Permissions::from_mode(0o660)).expect("chmod");

    // A member of the socket group: served.
    let (code, body) = curl_as(65534, 65534, &d.socket, "GET", "/v1/status");
    assert_eq!(code, 200, "{body}");
    let (code, body) = curl_as(65534, 65534, &d.socket, "DELETE", "/v1/tasks/no-such-task");
    assert_eq!(
        code, 404,
        "group members may use mutating endpoints: {body}"
    );
}

fn http_code(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn malformed_oversized_and_slow_clients_do_not_stop_the_daemon() {
    let (_g, ws) = workspace();
    let d = Daemon::start(&[("api.yaml", &scope(&ws))]);
    // Slow clients: a head that never ends, a body that never comes, an idle connection.
    let mut slow = Vec::new();
    for partial in [
        "GET /v1/status HTTP/1.1\r\nHost: x\r\n".to_string(),
        "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"sco".to_string(),
        String::new(),
    ] {
        let mut s = UnixStream::connect(&d.socket).expect("connect");
        s.write_all(partial.as_bytes()).expect("write");
        slow.push(s);
    }
    assert_eq!(d.request("GET", "/v1/status", None).0, 200);

    let garbage = d.raw(b"\x00\x01\x02 not http at all\r\n\r\n");
    assert_eq!(http_code(&garbage), 400, "{garbage:?}");
    let big_head = format!(
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = d.raw(big_head.as_bytes());
    assert_eq!(http_code(&answer), 431, "{answer:?}");
    let big_body = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
        4 * 1024 * 1024,
        "x".repeat(1024 * 1024)
    );
    let answer = d.raw(big_body.as_bytes());
    assert_eq!(http_code(&answer), 413, "{answer:?}");
    assert!(answer.contains("body_too_large"), "{answer:?}");
    let (code, body) = d.request("POST", "/v1/tasks", Some("{not json"));
    assert_eq!((code, body.contains("bad_json")), (400, true), "{body}");
    let (code, body) = d.request("POST", "/v1/tasks", Some(r#"{"scope":"api","bogus":1}"#));
    assert_eq!(
        (code, body.contains("unknown field")),
        (400, true),
        "{body}"
    );
    let (code, body) = d.request("PUT", "/v1/status", None);
    assert_eq!(
        (code, body.contains("method_not_allowed")),
        (405, true),
        "{body}"
    );

    // A follower gets the records written after it connected, line by line.
    let mut first = d.follow("/v1/events?follow=1");
    assert_eq!(first.status(), 200);
    assert_exit(
        &d.exec(
            "api",
            &["--task", "follow-cap"],
            &["/usr/bin/cat", "/etc/hostname"],
        ),
        0,
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        let line = first
            .next_line(deadline.saturating_duration_since(Instant::now()))
            .expect("the follow-cap task's records on the stream");
        let record: Option<Value> = serde_json::from_str(&line).ok();
        if record.is_some_and(|r| s(&r, "/agent/task") == "follow-cap") {
            break;
        }
    }

    // Followers are capped; the daemon still answers everyone else.
    let mut followers = vec![first];
    let refused = loop {
        let follower = d.follow("/v1/events?follow=1");
        if follower.status() == 503 {
            break followers.len();
        }
        assert_eq!(follower.status(), 200);
        followers.push(follower);
        assert!(followers.len() <= 64, "followers are not capped");
    };
    assert!(refused > 0);
    assert_eq!(d.request("GET", "/v1/status", None).0, 200);
    drop(followers);
    wait_for("follower places to be freed", || {
        (d.get_json("/v1/status")["followers"] == 0).then_some(())
    });
    // The slow clients are still held open here, and the daemon still serves.
    assert_eq!(d.request("GET", "/v1/agents", None).0, 200);
    drop(slow);
}

#[test]
fn audit_log_rotation_under_concurrent_load_loses_no_record() {
    let (_g, ws) = workspace();
    let d = Daemon::start_with(
        &[("api.yaml", &scope(&ws))],
        &[
            "--audit-log-max-bytes",
            "65536",
            "--audit-log-keep",
            "10000",
        ],
    );
    let loop_cmd = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25; \
                    do /usr/bin/cat /etc/hostname /etc/shadow > /dev/null; done";
    let agents: Vec<_> = (0..4)
        .map(|_| d.exec_spawn("api", &["/bin/sh", "-c", loop_cmd]))
        .collect();
    for mut a in agents {
        assert!(a.wait().expect("wait").success());
    }
    let count_lines = || -> (usize, usize) {
        let mut lines = 0;
        let mut files = 0;
        let dir = d.audit.parent().expect("dir");
        let name = d.audit.file_name().and_then(|n| n.to_str()).expect("name");
        for entry in fs::read_dir(dir).expect("readdir").flatten() {
            let f = entry.file_name();
            let f = f.to_string_lossy();
            if f == name || f.starts_with(&format!("{name}.")) {
                files += 1;
                let text = fs::read_to_string(entry.path()).expect("read");
                // Only whole lines: the writer may be in the middle of a batch's write (a
                // regular file's write is visible to a reader page by page).
                let whole = text.rfind('\n').map_or("", |end| &text[..=end]);
                for l in whole.lines() {
                    let _: Value = serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("torn or invalid line in {f} ({e}): {l}"));
                    lines += 1;
                }
            }
        }
        (lines, files)
    };
    // `records` counts lines the writer put in the files, so the files match it at every
    // moment; all records are in once every event was read and the count stops moving.
    let mut last = None;
    let (lines, files) = wait_for("every record to be in the audit files", || {
        let c = &d.get_json("/v1/status")["counters"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        assert_eq!(n("audit_records_dropped"), 0, "records were dropped");
        let caught_up = n("emitted") > 0 && n("read") + n("decode_errors") == n("emitted");
        let (lines, files) = count_lines();
        let settled = last.replace(n("records")) == Some(n("records"));
        (caught_up && settled && lines as u64 == n("records") && lines > 400)
            .then_some((lines, files))
    });
    // 4 agents x 25 loops x (an exec, /etc/hostname, /etc/shadow, ...): far beyond 8 KiB.
    assert!(lines > 400, "{lines} records");
    assert!(
        files > 2,
        "the log was rotated ({files} files, {lines} records)"
    );
}
