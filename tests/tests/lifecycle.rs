//! The daemon's life: manifest checking, starting with a bad scope file, refusing to run
//! without root, and leaving nothing behind when it stops.

use std::{fs, os::unix::process::CommandExt as _, process::Command};

use agent_monitor_e2e::{Daemon, assert_exit, binary, s, wait_for, workspace};

const HEAD: &str = "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: bad\n  owner: o@example.org\nspec:\n";

fn good(name: &str) -> String {
    format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: {name}\n  owner: o@example.org\nspec:\n  exec:\n    allow: [/usr/bin/true]\n"
    )
}

#[test]
fn check_names_file_line_and_column_of_each_error() {
    let (_g, dir) = workspace();
    let cases = [
        ("syntax.yaml", format!("{HEAD}  exec:\n    allow: [/usr/bin/git\n  files: {{}}\n"), ":9:8: ", "':' indicator"),
        ("unknown.yaml", format!("{HEAD}  exec:\n    allow: [/usr/bin/git]\n    alow: [/bin/sh]\n"), ":9:5: ", "unknown field `alow`"),
        ("glob.yaml", format!("{HEAD}  files:\n    read:\n      - /workspace/**\n      - \"/etc/[ssl\"\n"), ":10:9: ", "unclosed character class"),
        ("cidr.yaml", format!("{HEAD}  network:\n    connect:\n      - {{cidr: 10.0.0.0/33, ports: [443]}}\n"), ":9:16: ", "invalid CIDR"),
        ("owner.yaml", "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: bad\nspec:\n  mode: audit\n".to_string(), ":4:3: ", "missing field `owner`"),
    ];
    for (name, text, position, reason) in &cases {
        let path = dir.join(name);
        fs::write(&path, text).expect("write");
        let out = Command::new(binary())
            .arg("check")
            .arg(&path)
            .output()
            .expect("check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        let expected = format!("{}{position}", path.display());
        assert!(
            stderr.starts_with(&expected),
            "{name}: want {expected}, got {stderr}"
        );
        assert!(stderr.contains(reason), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line per error: {stderr}");
    }
    let ok = dir.join("ok.yaml");
    fs::write(&ok, good("fine")).expect("write");
    let out = Command::new(binary())
        .arg("check")
        .arg(&ok)
        .output()
        .expect("check");
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("scope fine"));
    // One bad file among good ones still fails the whole check.
    let out = Command::new(binary())
        .arg("check")
        .arg(&ok)
        .arg(dir.join("cidr.yaml"))
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn daemon_runs_with_the_good_scope_and_reports_the_bad_file() {
    let bad = format!("{HEAD}  network:\n    connect:\n      - {{cidr: not-a-cidr}}\n");
    let d = Daemon::start(&[("a-bad.yaml", &bad), ("b-good.yaml", &good("good"))]);
    let status = d.get_json("/v1/status");
    assert_eq!(status["scopes"], serde_json::json!(["good"]), "{status}");
    let errors = status["scope_errors"].as_array().expect("scope_errors");
    assert_eq!(errors.len(), 1, "{status}");
    assert!(s(&errors[0], "/file").ends_with("a-bad.yaml"));
    assert!(
        s(&errors[0], "/error").contains("a-bad.yaml:9:"),
        "{status}"
    );
    assert_exit(&d.exec("good", &[], &["/usr/bin/true"]), 0);
    let out = d.exec("bad", &[], &["/usr/bin/true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown_scope"),
        "{out:?}"
    );
}

#[test]
fn reload_keeps_the_last_good_version_of_a_broken_scope() {
    let d = Daemon::start(&[("s.yaml", &good("keep"))]);
    fs::write(d.scopes.join("s.yaml"), "apiVersion: [broken").expect("write");
    let (code, body) = d.request("POST", "/v1/reload", None);
    assert_eq!(code, 200, "{body}");
    let status = d.get_json("/v1/status");
    assert_eq!(status["scopes"], serde_json::json!(["keep"]), "{status}");
    assert_eq!(
        status["scope_errors"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_exit(&d.exec("keep", &[], &["/usr/bin/true"]), 0);
}

#[test]
fn run_without_root_exits_with_one_line() {
    let (_g, dir) = workspace();
    fs::create_dir(dir.join("scopes")).expect("mkdir");
    let out = Command::new(binary())
        .arg("run")
        .arg("--scopes")
        .arg(dir.join("scopes"))
        .arg("--socket")
        .arg(dir.join("s.sock"))
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run as nobody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line, no backtrace: {stderr}"
    );
    assert!(
        stderr.starts_with("agent-monitor: ") && stderr.contains("must run as root"),
        "{stderr}"
    );
}

#[test]
fn stopping_the_daemon_ends_tasks_and_leaves_nothing_behind() {
    let mut d = Daemon::start(&[("s.yaml", &good("stay"))]);
    let sleeper = d.exec_spawn("stay", &["/usr/bin/sleep", "60"]);
    let parent = d.cgroup_parent_dir();
    let task_dir = wait_for("the task cgroup to be populated", || {
        fs::read_dir(&parent)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.is_dir()
                    && fs::read_to_string(p.join("cgroup.events"))
                        .is_ok_and(|e| e.contains("populated 1"))
            })
    });
    let status = d.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let out = sleeper.wait_with_output().expect("exec client");
    // No agent runs unwatched: the daemon killed the task before exiting.
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(!task_dir.exists(), "task cgroup removed");
    assert!(!parent.exists(), "cgroup parent removed");
    assert!(!d.socket.exists(), "socket removed");
}
