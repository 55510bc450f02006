//! Hostile input to the parser (issue 21): a scope file or an inline scope nested
//! thousands of levels deep, or holding 100,000 rules, is refused at once with the limit
//! named, and parsing never stalls verdicts, records or the status socket.

use std::{
    fs,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use agent_monitor_e2e::{Daemon, assert_exit, binary, s, wait_for, workspace};
use serde_json::Value;

/// The time a violation may take to reach the audit log, reload or not.
const ON_TIME: Duration = Duration::from_secs(2);

/// An audit-mode scope: reading `/etc/shadow` is a violation, nothing is stopped.
fn steady(name: &str) -> String {
    format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: {name}\n  \
         owner: e2e@example.org\nspec:\n  mode: audit\n  exec:\n    allow: [/usr/bin/cat]\n"
    )
}

/// A scope whose `exec.allow` opens `levels` flow sequences and never closes them.
fn nested(levels: usize) -> String {
    format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: nested\n  \
         owner: e2e@example.org\nspec:\n  exec:\n    allow: {}\n",
        "[".repeat(levels)
    )
}

/// CPU time (user + system, in clock ticks) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Waits until the daemon uses less than a tenth of a CPU over half a second.
fn wait_idle(d: &Daemon) {
    let pid = d.pid();
    wait_for("the daemon's CPU to be idle", || {
        let before = cpu_ticks(pid);
        let window = Instant::now();
        thread::sleep(Duration::from_millis(500));
        let used = cpu_ticks(pid) - before;
        // Clock ticks are 1/100 s: 5 ticks in 0.5 s is a tenth of a CPU.
        (used <= 5).then_some(window.elapsed())
    });
}

#[test]
fn a_reload_of_a_deeply_nested_file_stalls_no_verdict_record_or_status() {
    let d = Daemon::start(&[("steady.yaml", &steady("steady"))]);
    // 200 KB of `[`: the release build of the previous version took minutes to read it,
    // holding the catalog's lock and a runtime worker.
    fs::write(d.scopes.join("nested.yaml"), nested(200_000)).expect("write nested scope");
    let started = Instant::now();
    // SAFETY: signalling the daemon this test started.
    unsafe {
        libc::kill(i32::try_from(d.pid()).expect("pid"), libc::SIGHUP);
    }
    // The socket answers during the reload.
    let (code, body) = d.request("GET", "/v1/status", None);
    assert_eq!(code, 200, "{body}");
    assert!(
        started.elapsed() < ON_TIME,
        "status took {:?} during a reload",
        started.elapsed()
    );
    // A violation of an agent in the other, valid scope is recorded on time.
    let out = d.exec(
        "steady",
        &["--task", "during-reload"],
        &["/usr/bin/cat", "/etc/shadow"],
    );
    let ran = Instant::now();
    assert_exit(&out, 0);
    loop {
        let found = d.records().into_iter().any(|r| {
            s(&r, "/agent/task") == "during-reload"
                && s(&r, "/file/path") == "/etc/shadow"
                && s(&r, "/verdict") == "violation"
        });
        if found {
            break;
        }
        assert!(
            ran.elapsed() < ON_TIME,
            "the violation was not recorded within {ON_TIME:?} of a reload\n{}",
            d.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    // The reload (and another one through the API) reports the file rejected, naming the
    // limit, and keeps the valid scope.
    let reload = Instant::now();
    let (code, body) = d.request("POST", "/v1/reload", None);
    assert_eq!(code, 200, "{body}");
    assert!(
        reload.elapsed() < ON_TIME,
        "reload took {:?}",
        reload.elapsed()
    );
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    let errors = answer["scope_errors"].as_array().expect("scope_errors");
    assert_eq!(errors.len(), 1, "{answer}");
    assert!(s(&errors[0], "/file").ends_with("nested.yaml"), "{answer}");
    assert!(
        s(&errors[0], "/error").contains("nest deeper than the limit of 64 levels"),
        "{answer}"
    );
    let status = d.get_json("/v1/status");
    assert_eq!(status["scopes"], serde_json::json!(["steady"]), "{status}");
    assert_eq!(status["scope_errors"], answer["scope_errors"], "{status}");
    wait_idle(&d);
}

#[test]
fn check_of_a_file_of_100k_rules_refuses_it_within_seconds_naming_the_limit() {
    let (_g, dir) = workspace();
    let head = "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {name: big, \
                owner: e2e@example.org}\nspec:\n  exec:\n    allow:";
    // One rule a line (2.4 MB): past the size limit. In one flow list (0.8 MB): past the
    // entries limit of a list.
    let lines: Vec<String> = (0..100_000)
        .map(|i| format!("    - /usr/bin/tool{i}*"))
        .collect();
    let flow: Vec<String> = (0..100_000).map(|i| format!("/t{i}")).collect();
    for (file, text, limit) in [
        (
            "lines.yaml",
            format!("{head}\n{}\n", lines.join("\n")),
            "limit of 1048576 bytes",
        ),
        (
            "flow.yaml",
            format!("{head} [{}]\n", flow.join(",")),
            "spec.exec.allow: more than the limit of 4096 entries in one list",
        ),
    ] {
        let path = dir.join(file);
        fs::write(&path, text).expect("write");
        let started = Instant::now();
        let out = Command::new(binary())
            .arg("check")
            .arg(&path)
            .output()
            .expect("check");
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(limit), "{file}: {stderr}");
        assert!(stderr.contains(file), "{stderr}");
        assert!(
            took < Duration::from_secs(5),
            "check of {file} took {took:?}"
        );
    }
}

#[test]
fn concurrent_deeply_nested_inline_scopes_get_400_at_once_and_leave_no_work() {
    let d = Daemon::start(&[("steady.yaml", &steady("steady"))]);
    let body = serde_json::json!({ "scope_yaml": nested(200_000) }).to_string();
    let answers: Vec<(u16, String, Duration)> = thread::scope(|scope| {
        let requests: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let started = Instant::now();
                    let (code, text) = d.request("POST", "/v1/tasks", Some(&body));
                    (code, text, started.elapsed())
                })
            })
            .collect();
        requests
            .into_iter()
            .map(|r| r.join().expect("request thread"))
            .collect()
    });
    for (code, text, took) in &answers {
        assert_eq!(*code, 400, "{text}");
        assert!(
            text.contains("nest deeper than the limit of 64 levels"),
            "{text}"
        );
        assert!(text.contains("<inline>"), "{text}");
        assert!(*took < ON_TIME, "an answer took {took:?}");
    }
    // No parse goes on after the answers, and no task was made.
    wait_idle(&d);
    let agents = d.get_json("/v1/agents");
    assert_eq!(agents, serde_json::json!([]), "{agents}");
    // A valid inline scope is still parsed and run.
    let (_g, dir) = workspace();
    let file = dir.join("inline.yaml");
    fs::write(&file, steady("inline")).expect("write");
    assert_exit(
        &d.exec(
            file.to_str().expect("utf-8"),
            &[],
            &["/usr/bin/cat", "/dev/null"],
        ),
        0,
    );
}
