//! `onViolation: ask` end to end: an out-of-scope open is held (the process stopped) until
//! a person approves (it goes on), denies or lets the request time out (it is killed);
//! every decision is a `kind: approval` record; an agent cannot decide on its own hold, and
//! a sibling's SIGCONT does not resume it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use agent_monitor_e2e::{Daemon, s, wait_for, workspace};
use serde_json::Value;

const PY: &str = "/usr/bin/python3";

fn scope(name: &str, ws: &Path, approval: &str) -> String {
    format!(
        r#"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {{name: {name}, owner: approvals@example.org}}
spec:
  mode: enforce
  onViolation: ask
  approval: {approval}
  exec:
    allow: [/bin/sh, /usr/bin/sh, /usr/bin/dash, /usr/bin/cat, /usr/bin/sleep, /usr/bin/python3*]
  files:
    read: ["{ws}/**"]
    write: ["{ws}/**"]
    deny: ["{ws}/secret.txt"]
"#,
        ws = ws.display()
    )
}

struct Fixture {
    _ws_guard: tempfile::TempDir,
    ws: PathBuf,
    _outside_guard: tempfile::TempDir,
    /// Files outside the scope: opening one is held.
    outside: PathBuf,
    daemon: Daemon,
}

fn fixture(approval: &str) -> Fixture {
    let (ws_guard, ws) = workspace();
    let (outside_guard, outside) = workspace();
    fs::write(ws.join("secret.txt"), "TOPSECRET\n").expect("write");
    for i in 0..25 {
        fs::write(outside.join(format!("f{i}.txt")), format!("outside {i}\n")).expect("write");
    }
    let yaml = scope("ask", &ws, approval);
    let daemon = Daemon::start(&[("ask.yaml", &yaml)]);
    Fixture {
        _ws_guard: ws_guard,
        ws,
        _outside_guard: outside_guard,
        outside,
        daemon,
    }
}

fn holds(d: &Daemon) -> Vec<Value> {
    d.get_json("/v1/holds")
        .as_array()
        .cloned()
        .expect("a list of holds")
}

/// Waits until `n` requests are pending and returns them.
fn wait_holds(d: &Daemon, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} pending requests"), || {
        let h = holds(d);
        (h.len() == n).then_some(h)
    })
}

/// The state letter of /proc/PID/stat (`T`: stopped).
fn state(pid: u64) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

fn finish(child: Child) -> (Option<i32>, String) {
    let out = wait_child(child);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Waits for `exec` with a deadline (a process left stopped would hang the test).
fn wait_child(mut child: Child) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("exec did not finish: {:?}", child.wait_with_output());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn approval_record(d: &Daemon, id: u64, decision: &str) -> Value {
    d.wait_record(&format!("approval {id} {decision}"), |r| {
        s(r, "/kind") == "approval"
            && r["approval"]["id"].as_u64() == Some(id)
            && s(r, "/approval/decision") == decision
    })
}

fn id_of(hold: &Value) -> u64 {
    hold["id"].as_u64().expect("id")
}

/// Starts an agent that prints the file `file` (stripped), then runs `tail` (Python), and
/// waits until its open is held: the agent and its one pending request.
fn held_read(d: &Daemon, file: &Path, tail: &str) -> (Child, Value) {
    let script = format!(
        "print(open({:?}).read().strip()){tail}",
        file.display().to_string()
    );
    let child = d.exec_spawn("ask", &[PY, "-I", "-c", &script]);
    (child, wait_holds(d, 1).remove(0))
}

#[test]
fn approve_once_the_read_goes_on_and_is_recorded() {
    let f = fixture("{timeout: 60s}");
    let file = f.outside.join("f0.txt");
    let (child, hold) = held_read(&f.daemon, &file, "; print('after')");
    let pid = hold["pid"].as_u64().expect("pid");
    assert_eq!(s(&hold, "/rule"), "files.read", "{hold}");
    assert!(s(&hold, "/what").contains("f0.txt"), "{hold}");
    assert_eq!(state(pid), Some('T'), "the held process is stopped");
    let opened = f.daemon.wait_record("the held open", |r| {
        s(r, "/action") == "held" && s(r, "/file/path") == file.to_str().unwrap_or_default()
    });
    assert_eq!(opened["approval"]["id"], hold["id"]);
    assert_eq!(s(&opened, "/approval/decision"), "pending");
    let listed = f.daemon.cli(&["holds"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("f0.txt"),
        "{listed:?}"
    );
    let out = f.daemon.cli(&[
        "approve",
        &id_of(&hold).to_string(),
        "--note",
        "needed for the build",
    ]);
    assert!(out.status.success(), "{out:?}");
    let (code, stdout) = finish(child);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(stdout, "outside 0\nafter\n");
    let r = approval_record(&f.daemon, id_of(&hold), "approved");
    assert_eq!(r["approval"]["approver_uid"], 0);
    assert_eq!(s(&r, "/approval/approver"), "root");
    assert_eq!(s(&r, "/approval/note"), "needed for the build");
    assert!(r["approval"]["waited_ms"].as_u64().is_some(), "{r}");
    assert_eq!(s(&r, "/verdict"), "allowed");
    assert!(holds(&f.daemon).is_empty());
}

#[test]
fn deny_kills_the_held_process() {
    let f = fixture("{timeout: 60s}");
    let file = f.outside.join("f1.txt");
    let (child, hold) = held_read(&f.daemon, &file, "; print('after')");
    let (code, body) = f.daemon.request(
        "POST",
        &format!("/v1/holds/{}/deny", id_of(&hold)),
        Some(r#"{"note":"no"}"#),
    );
    assert_eq!(code, 200, "{body}");
    let (code, stdout) = finish(child);
    assert_ne!(code, Some(0));
    assert!(!stdout.contains("outside"), "nothing was read: {stdout}");
    let r = approval_record(&f.daemon, id_of(&hold), "denied");
    assert_eq!(s(&r, "/action"), "killed-process");
    assert_eq!(s(&r, "/approval/note"), "no");
    let (code, _) = f
        .daemon
        .request("POST", &format!("/v1/holds/{}/approve", id_of(&hold)), None);
    assert_eq!(code, 404, "a request is decided once");
}

#[test]
fn an_unanswered_request_times_out_and_is_denied() {
    let f = fixture("{timeout: 2s}");
    let file = f.outside.join("f2.txt");
    let (child, hold) = held_read(&f.daemon, &file, "");
    let r = approval_record(&f.daemon, id_of(&hold), "timeout");
    assert_eq!(s(&r, "/action"), "killed-process");
    assert!(
        r["approval"]["waited_ms"]
            .as_u64()
            .is_some_and(|w| w >= 2000),
        "{r}"
    );
    let (code, stdout) = finish(child);
    assert_ne!(code, Some(0));
    assert!(!stdout.contains("outside"), "{stdout}");
}

#[test]
fn files_deny_is_never_asked() {
    let f = fixture("{timeout: 60s}");
    let secret = f.ws.join("secret.txt");
    let out = f.daemon.exec(
        "ask",
        &[],
        &[
            PY,
            "-I",
            "-c",
            &format!("print(open({:?}).read())", secret.display().to_string()),
        ],
    );
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("TOPSECRET"));
    assert!(holds(&f.daemon).is_empty(), "no request for a denied file");
}

/// The agent waits for `go` in its workspace (written once its hold is pending), then
/// runs `then` (a shell command).
fn agent_script(f: &Fixture, then: &str) -> String {
    let go = f.ws.join("go");
    format!(
        "cat {file} & while [ ! -e {go} ]; do sleep 0.05; done; {then}; wait",
        file = f.outside.join("f3.txt").display(),
        go = go.display(),
    )
}

#[test]
fn an_agent_cannot_approve_its_own_hold() {
    let f = fixture("{timeout: 60s}");
    let socket = f.daemon.socket.display().to_string();
    // The agent's own client: a raw request on the status socket.
    let post = format!(
        "{PY} -I -c \"import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect('{socket}'); \
         s.sendall(b'POST /v1/holds/'+open('{go}').read().strip().encode()+b'/approve HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 0\\r\\n\\r\\n'); \
         print(s.recv(4096).decode().splitlines()[0])\"",
        go = f.ws.join("go").display()
    );
    let child = f
        .daemon
        .exec_spawn("ask", &["/bin/sh", "-c", &agent_script(&f, &post)]);
    let hold = wait_holds(&f.daemon, 1).remove(0);
    fs::write(f.ws.join("go"), id_of(&hold).to_string()).expect("write go");
    // The socket is outside the scope: the agent's connect to it is held too. The test (as
    // root) lets that through, so that the agent's request reaches the daemon.
    let refused = wait_for("the agent's refused decision", || {
        for h in holds(&f.daemon) {
            if h["id"] != hold["id"] {
                f.daemon
                    .request("POST", &format!("/v1/holds/{}/approve", id_of(&h)), None);
            }
        }
        f.daemon
            .records()
            .into_iter()
            .find(|r| s(r, "/kind") == "approval" && s(r, "/approval/decision") == "refused")
    });
    assert_eq!(refused["approval"]["id"], hold["id"]);
    assert!(
        s(&refused, "/approval/note").contains("agent_forbidden"),
        "{refused}"
    );
    let pending = holds(&f.daemon);
    assert!(
        pending.iter().any(|h| h["id"] == hold["id"]),
        "still pending: {pending:?}"
    );
    assert_eq!(state(hold["pid"].as_u64().expect("pid")), Some('T'));
    for h in pending {
        f.daemon
            .request("POST", &format!("/v1/holds/{}/deny", id_of(&h)), None);
    }
    let _ = finish(child);
}

#[test]
fn a_siblings_sigcont_does_not_resume_a_held_process() {
    let f = fixture("{timeout: 60s}");
    let killed = f.ws.join("killed");
    let then = format!("kill -CONT $!; echo kill=$? > {}", killed.display());
    let child = f
        .daemon
        .exec_spawn("ask", &["/bin/sh", "-c", &agent_script(&f, &then)]);
    let hold = wait_holds(&f.daemon, 1).remove(0);
    let pid = hold["pid"].as_u64().expect("pid");
    fs::write(f.ws.join("go"), "").expect("write go");
    let result = wait_for("the sibling's kill -CONT", || {
        fs::read_to_string(&killed)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    assert_ne!(result, "kill=0\n", "the kill was refused");
    // A SIGCONT that got through would have resumed the process before kill returned.
    assert_eq!(
        state(pid),
        Some('T'),
        "still stopped after the sibling's SIGCONT"
    );
    assert_eq!(holds(&f.daemon).len(), 1);
    let out = f.daemon.cli(&["approve", &id_of(&hold).to_string()]);
    assert!(out.status.success(), "{out:?}");
    let (_, stdout) = finish(child);
    assert!(stdout.contains("outside 3"), "{stdout}");
}

#[test]
fn twenty_requests_pending_at_once() {
    let f = fixture("{timeout: 60s, maxPending: 20}");
    let cats: Vec<String> = (0..20)
        .map(|i| format!("cat {} &", f.outside.join(format!("f{i}.txt")).display()))
        .collect();
    let child = f.daemon.exec_spawn(
        "ask",
        &["/bin/sh", "-c", &format!("{} wait", cats.join(" "))],
    );
    let pending = wait_holds(&f.daemon, 20);
    let mut pids: Vec<u64> = pending
        .iter()
        .map(|h| h["pid"].as_u64().expect("pid"))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 20, "one request per process");
    assert!(pids.iter().all(|p| state(*p) == Some('T')));
    for h in &pending {
        let (code, body) =
            f.daemon
                .request("POST", &format!("/v1/holds/{}/approve", id_of(h)), None);
        assert_eq!(code, 200, "{body}");
    }
    let (code, stdout) = finish(child);
    assert_eq!(code, Some(0), "{stdout}");
    for i in 0..20 {
        assert!(stdout.contains(&format!("outside {i}\n")), "{stdout}");
    }
}

/// A python agent that runs `body`, then writes `done` in its workspace and waits for `go`.
fn py_then_wait(f: &Fixture, body: &str) -> String {
    format!(
        "import os, time\n{body}\nopen({done:?}, 'w').close()\nwhile not os.path.exists({go:?}): time.sleep(0.05)\n",
        done = f.ws.join("done").display().to_string(),
        go = f.ws.join("go").display().to_string(),
    )
}

#[test]
fn approve_for_task_grants_the_exact_entry_until_the_task_ends() {
    let f = fixture("{timeout: 60s}");
    let file = f.outside.join("f4.txt");
    let path = file.display().to_string();
    let script = py_then_wait(
        &f,
        &format!("print(open({path:?}).read().strip())\nprint(open({path:?}).read().strip())"),
    );
    let child = f.daemon.exec_spawn("ask", &[PY, "-I", "-c", &script]);
    let hold = wait_holds(&f.daemon, 1).remove(0);
    let out = f
        .daemon
        .cli(&["approve", &id_of(&hold).to_string(), "--for-task"]);
    assert!(out.status.success(), "{out:?}");
    wait_for("the agent's second read", || {
        f.ws.join("done").exists().then_some(())
    });
    assert!(holds(&f.daemon).is_empty(), "the second read was not held");
    let entry = format!("files.read {path}");
    let r = approval_record(&f.daemon, id_of(&hold), "approved");
    assert_eq!(r["approval"]["for_task"], true);
    assert_eq!(s(&r, "/approval/grant"), entry);
    let task = s(&hold, "/task").to_owned();
    let agents = f.daemon.get_json("/v1/agents");
    let view = agents
        .as_array()
        .and_then(|a| a.iter().find(|t| t["id"] == task.as_str()))
        .cloned()
        .expect("the task is listed");
    assert_eq!(view["grants"], serde_json::json!([entry]), "{view}");
    let status = f.daemon.get_json("/v1/status");
    assert_eq!(
        status["grants"],
        serde_json::json!([format!("{task}: {entry}")])
    );
    // A reload that changes nothing keeps the task's grants.
    let (code, body) = f.daemon.request("POST", "/v1/reload", None);
    assert_eq!(code, 200, "{body}");
    let status = f.daemon.get_json("/v1/status");
    assert_eq!(
        status["grants"],
        serde_json::json!([format!("{task}: {entry}")])
    );
    let held_reads = f
        .daemon
        .records()
        .into_iter()
        .filter(|r| s(r, "/action") == "held" && s(r, "/file/path") == path)
        .count();
    assert_eq!(held_reads, 1, "only the first read waited");
    fs::write(f.ws.join("go"), "").expect("write go");
    let (code, stdout) = finish(child);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(stdout, "outside 4\noutside 4\n");
    let revoked = f.daemon.wait_record("the grant's revocation", |r| {
        s(r, "/kind") == "task" && s(r, "/task/event") == "grants-revoked"
    });
    assert_eq!(s(&revoked, "/agent/task"), task);
    assert!(s(&revoked, "/task/reason").contains(&entry), "{revoked}");
}

#[test]
fn an_approved_network_request_lets_the_retry_through() {
    let f = fixture("{timeout: 60s}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let script = format!(
        "import socket, errno, os, time\n\
         def attempt():\n  try:\n    socket.create_connection(('127.0.0.1', {port})).close(); print('ok')\n  \
         except OSError as e:\n    print(errno.errorcode.get(e.errno, e.errno))\n\
         attempt()\n\
         while not os.path.exists({go:?}): time.sleep(0.05)\n\
         attempt()\n",
        go = f.ws.join("go").display().to_string()
    );
    let child = f.daemon.exec_spawn("ask", &[PY, "-I", "-c", &script]);
    let hold = wait_holds(&f.daemon, 1).remove(0);
    assert_eq!(
        hold["stopped"], false,
        "a refused connect is not held: {hold}"
    );
    assert_eq!(s(&hold, "/kind"), "connect");
    let out = f.daemon.cli(&["approve", &id_of(&hold).to_string()]);
    assert!(out.status.success(), "{out:?}");
    let r = approval_record(&f.daemon, id_of(&hold), "approved");
    assert_eq!(
        s(&r, "/approval/grant"),
        format!("network.connect 127.0.0.1 port {port} tcp")
    );
    fs::write(f.ws.join("go"), "").expect("write go");
    let (code, stdout) = finish(child);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(stdout, "EPERM\nok\n");
    drop(listener);
}

#[test]
fn a_restarted_daemon_denies_what_was_held_for_a_decision() {
    let mut f = fixture("{timeout: 60s}");
    let file = f.outside.join("f5.txt");
    let (child, hold) = held_read(&f.daemon, &file, "");
    let pid = hold["pid"].as_u64().expect("pid");
    assert_eq!(state(pid), Some('T'));
    f.daemon.kill9();
    assert_eq!(state(pid), Some('T'), "still held while no daemon runs");
    f.daemon.restart();
    let r = f.daemon.wait_record("the restart's denial", |r| {
        s(r, "/kind") == "approval" && s(r, "/approval/decision") == "restart"
    });
    assert_eq!(s(&r, "/action"), "killed-process");
    assert_eq!(s(&r, "/agent/task"), s(&hold, "/task"));
    let (code, stdout) = finish(child);
    assert_ne!(code, Some(0));
    assert!(!stdout.contains("outside"), "{stdout}");
    assert!(holds(&f.daemon).is_empty());
}

/// An adopted agent has no seccomp filter: a sibling's SIGCONT does resume the held
/// process. The daemon finds it running while its request is pending and denies it.
#[test]
fn an_adopted_agents_sigcont_is_recorded_and_the_resumed_process_killed() {
    let (_ws_guard, ws) = workspace();
    let (_outside_guard, outside) = workspace();
    let file = outside.join("f.txt");
    fs::write(&file, "outside\n").expect("write");
    let tree = agent_monitor_e2e::CgroupTree::new("am-ask");
    let dir = tree.mkdir("agent1");
    let glob = format!(
        "{}/agent*",
        agent_monitor_e2e::CgroupTree::relative(&tree.0)
    );
    let yaml = scope("ask-adopted", &ws, "{timeout: 60s}").replace(
        "spec:\n",
        &format!("spec:\n  select:\n    cgroup: \"{glob}\"\n"),
    );
    let d = Daemon::start(&[("ask.yaml", &yaml)]);
    wait_for("the cgroup to be adopted", || {
        d.get_json("/v1/agents")
            .as_array()
            .is_some_and(|a| !a.is_empty())
            .then_some(())
    });
    let (go, killed) = (ws.join("go"), ws.join("killed"));
    // The reader stays alive after its read, so that the daemon finds it running.
    let script = format!(
        "{PY} -I -c 'open(\"{file}\").read(); import time; time.sleep(30)' & while [ ! -e {go} ]; do sleep 0.05; done; kill -CONT $!; echo kill=$? > {killed}; wait",
        file = file.display(),
        go = go.display(),
        killed = killed.display()
    );
    let child = agent_monitor_e2e::command_in_cgroup(&dir, "/bin/sh", &["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the agent");
    let hold = wait_holds(&d, 1).remove(0);
    let pid = hold["pid"].as_u64().expect("pid");
    fs::write(&go, "").expect("write go");
    let result = wait_for("the sibling's kill -CONT", || {
        fs::read_to_string(&killed)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    assert_eq!(result, "kill=0\n", "no seccomp filter refuses it here");
    let r = approval_record(&d, id_of(&hold), "resumed");
    assert_eq!(s(&r, "/action"), "killed-process");
    wait_for("the resumed process to be gone", || {
        state(pid).is_none_or(|c| c == 'Z').then_some(())
    });
    assert!(holds(&d).is_empty());
    let _ = wait_child(child);
}

/// Socket-group members may list holds; only root and the approver group may decide.
#[test]
fn only_root_and_the_approver_group_decide() {
    use std::os::unix::fs::PermissionsExt as _;
    for approvers in [None, Some("65534")] {
        let (_ws_guard, ws) = workspace();
        let (_outside_guard, outside) = workspace();
        let file = outside.join("f.txt");
        fs::write(&file, "outside\n").expect("write");
        let mut extra = vec!["--socket-group", "65534"];
        if let Some(g) = approvers {
            extra.extend(["--approver-group", g]);
        }
        let d = Daemon::start_with(
            &[("ask.yaml", &scope("ask", &ws, "{timeout: 60s}"))],
            &extra,
        );
        fs::set_permissions(d.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let (child, hold) = held_read(&d, &file, "");
        let id = id_of(&hold);
        let (code, body) = agent_monitor_e2e::curl_as(65534, 65534, &d.socket, "GET", "/v1/holds");
        assert_eq!(code, 200, "a socket-group member lists: {body}");
        assert!(body.contains(&format!("\"id\":{id}")), "{body}");
        let path = format!("/v1/holds/{id}/approve");
        let (code, body) = agent_monitor_e2e::curl_as(65534, 65534, &d.socket, "POST", &path);
        if approvers.is_none() {
            assert_eq!(code, 403, "{body}");
            assert!(body.contains("not_approver"), "{body}");
            let r = approval_record(&d, id, "refused");
            assert_eq!(r["approval"]["approver_uid"], 65534);
            assert_eq!(holds(&d).len(), 1, "still pending");
            let (code, body) = d.request("POST", &format!("/v1/holds/{id}/deny"), None);
            assert_eq!(code, 200, "root decides: {body}");
        } else {
            assert_eq!(code, 200, "an approver-group member decides: {body}");
            let r = approval_record(&d, id, "approved");
            assert_eq!(r["approval"]["approver_uid"], 65534);
        }
        let _ = finish(child);
    }
}
