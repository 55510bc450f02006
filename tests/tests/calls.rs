//! `exec --task ID --call NAME [--scope SUB] -- CMD`: a tool call that is a process of its
//! own runs in a child cgroup of the task under a scope proven a subset of the task's; its
//! records are the task's with `call`, it ends with a `call-ended` record, `report` groups
//! by call name, and a scope that widens the task's is refused naming the entry.

use std::{fs, path::Path, process::Command};

use agent_monitor_e2e::{Daemon, binary, s, wait_for, workspace};
use serde_json::Value;

fn parent_scope(ws: &Path) -> String {
    let ws = ws.display();
    format!(
        "apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {{name: parent, owner: calls@example.org}}
spec:
  mode: enforce
  onViolation: refuse
  exec:
    allow: [/bin/sh, /usr/bin/cat]
  files:
    read: [\"{ws}/**\"]
    write: [\"{ws}/**\"]
"
    )
}

fn sub_scope(ws: &Path, write: &str) -> String {
    let ws = ws.display();
    format!(
        "apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {{name: run-tests, owner: calls@example.org}}
spec:
  exec:
    allow: [/bin/sh, /usr/bin/cat]
  files:
    read: [\"{ws}/**\"]
    write: [\"{write}\"]
"
    )
}

fn call(d: &Daemon, task: &str, name: &str, scope: &Path, script: &str) -> std::process::Output {
    Command::new(binary())
        .arg("exec")
        .arg("--socket")
        .arg(&d.socket)
        .args(["--task", task, "--call", name, "--scope"])
        .arg(scope)
        .args(["--", "/bin/sh", "-c", script])
        .output()
        .expect("run agent-monitor exec --call")
}

#[test]
fn a_call_runs_under_its_subset_scope_and_its_records_name_it() {
    let (_guard, ws) = workspace();
    fs::create_dir(ws.join("out")).expect("mkdir out");
    fs::write(ws.join("in.txt"), "input\n").expect("in.txt");
    let d = Daemon::start(&[("parent.yaml", &parent_scope(&ws))]);
    let (task, _) = d.create_task("parent");
    let sub = ws.join("sub.yaml");
    fs::write(&sub, sub_scope(&ws, &format!("{}/out/**", ws.display()))).expect("sub");
    let ws_s = ws.display();
    let out = call(
        &d,
        &task,
        "run_tests",
        &sub,
        &format!("cat {ws_s}/in.txt; echo ok > {ws_s}/out/ok.txt; echo no > {ws_s}/bad.txt"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("input"),
        "the call read its input: {stdout} {stderr}"
    );
    assert!(
        !out.status.success(),
        "the refused write fails the script: {stderr}"
    );
    assert_eq!(
        fs::read_to_string(ws.join("out/ok.txt")).expect("ok.txt"),
        "ok\n"
    );
    assert!(
        !ws.join("bad.txt").exists(),
        "the task may write there, the call may not"
    );

    let of_task = |r: &Value| s(r, "/agent/task") == task;
    let read = d.wait_record("the call's read", |r| {
        of_task(r) && s(r, "/kind") == "file" && s(r, "/file/path").ends_with("/in.txt")
    });
    assert_eq!(s(&read, "/call/name"), "run_tests", "{read}");
    let call_id = s(&read, "/call/id").to_string();
    assert!(call_id.starts_with(&task), "{read}");
    let refused = d.wait_record("the refused write", |r| {
        of_task(r) && s(r, "/verdict") == "violation" && s(r, "/file/path").ends_with("/bad.txt")
    });
    assert_eq!(s(&refused, "/call/name"), "run_tests", "{refused}");
    assert_eq!(s(&refused, "/call/id"), call_id, "{refused}");
    let ended = d.wait_record("the end of the call", |r| {
        of_task(r) && s(r, "/task/event") == "call-ended"
    });
    assert_eq!(s(&ended, "/call/name"), "run_tests", "{ended}");
    assert_eq!(s(&ended, "/call/end/outcome"), "ok", "{ended}");
    assert!(
        ended["call"]["end"]["violations"].as_u64() >= Some(1),
        "{ended}"
    );
    // The task's report groups what the call used under its name.
    let report = wait_for("the report's call", || {
        let r = d.get_json(&format!("/v1/report/{task}"));
        let c = r["calls"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "run_tests")?
            .clone();
        (c["calls"] == 1).then_some(c)
    });
    assert!(report["violations"].as_u64() >= Some(1), "{report}");
}

#[test]
fn a_call_scope_that_widens_the_task_is_refused_naming_the_entry() {
    let (_guard, ws) = workspace();
    let d = Daemon::start(&[("parent.yaml", &parent_scope(&ws))]);
    let (task, _) = d.create_task("parent");
    let sub = ws.join("wide.yaml");
    fs::write(&sub, sub_scope(&ws, "/tmp/**")).expect("sub");
    let marker = ws.join("ran");
    let out = call(
        &d,
        &task,
        "run_tests",
        &sub,
        &format!("touch {}", marker.display()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("call run_tests") && stderr.contains("files.write[0]: /tmp/**"),
        "the error names the entry: {stderr}"
    );
    assert!(!marker.exists(), "the command never ran");
}
