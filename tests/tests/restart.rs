//! Enforcement outlives the daemon: pinned programs and maps keep stopping an agent after
//! `kill -9`, and a restarted daemon adopts them (the same programs, no second copy) and
//! records what happened meanwhile from the ring buffer.

use std::{fs, path::Path, process::Child};

use agent_monitor_e2e::{Daemon, s, wait_for, workspace};

/// The programs behind the BPF links a process holds (`prog_id:` in each link's fdinfo).
/// The daemon holds every hook's link, so this is the set of programs it enforces with.
fn linked_programs(pid: u32) -> std::collections::BTreeSet<u32> {
    let mut ids = std::collections::BTreeSet::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        if !text.contains("link_type:") {
            continue;
        }
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse().ok())
        {
            ids.insert(id);
        }
    }
    ids
}

/// An agent of `scope` that loops (sleep) until `go` exists, then cats `target`. Returns
/// once the loop ran twice: every file the loop opens has been judged readable by then
/// (opens the kernel cannot judge alone wait for a daemon).
fn waiting_agent(d: &Daemon, scope: &str, go: &Path, target: &Path) -> Child {
    let script = format!(
        "while [ ! -e {g} ]; do /usr/bin/sleep 0.05; done; /usr/bin/cat {t}",
        g = go.display(),
        t = target.display()
    );
    let agent = d.exec_spawn(scope, &["/bin/sh", "-c", &script]);
    wait_for("the agent's loop to run twice", || {
        let sleeps = d
            .records()
            .iter()
            .filter(|r| s(r, "/kind") == "exec" && s(r, "/exec/path").ends_with("/sleep"))
            .count();
        (sleeps >= 2).then_some(())
    });
    agent
}

#[test]
fn kill_9_then_pivot_is_still_stopped_and_recorded_after_restart() {
    let (_g, ws) = workspace();
    fs::write(ws.join("secret.txt"), "TOPSECRET\n").expect("write");
    let yaml = format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: persist, owner: o@example.org}}\nspec:\n  mode: enforce\n  exec:\n    allow: [/bin/sh, /usr/bin/cat, /usr/bin/sleep]\n  files:\n    read: [\"{w}/**\"]\n    deny: [\"{w}/secret.txt\"]\n",
        w = ws.display()
    );
    let mut d = Daemon::start_with(&[("p.yaml", &yaml)], &["--keep-pins"]);
    let programs = linked_programs(d.pid());
    assert!(
        programs.len() > 10,
        "a fresh daemon holds the links of its hooks (control for the check below): {programs:?}"
    );
    let go = ws.join("go");
    let agent = waiting_agent(&d, "persist", &go, &ws.join("secret.txt"));
    d.kill9();
    assert!(
        d.pins.join("links").is_dir(),
        "links stay pinned after kill -9"
    );
    // The pivot happens while no daemon runs.
    fs::write(&go, "").expect("touch go");
    let out = agent.wait_with_output().expect("exec client");
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("TOPSECRET"),
        "{out:?}"
    );

    d.restart();
    assert_eq!(
        linked_programs(d.pid()),
        programs,
        "the restarted daemon adopted the pinned programs instead of loading its own"
    );
    let r = d.wait_record(
        "the violation that happened while the daemon was down",
        |r| s(r, "/kind") == "file" && s(r, "/file/path").ends_with("/secret.txt"),
    );
    assert_eq!(
        (s(&r, "/verdict"), s(&r, "/action")),
        ("violation", "killed-process"),
        "{r}"
    );
    assert!(
        s(&r, "/agent/task").starts_with("persist-"),
        "attributed to the saved task: {r}"
    );
    let status = d.get_json("/v1/status");
    assert!(
        status["coverage"]["attached"]
            .as_u64()
            .is_some_and(|n| n > 30),
        "{status}"
    );
    let pins = d.pins.clone();
    drop(d);
    assert!(!pins.exists(), "--release-on-exit removed the pins");
}

/// Processes of the daemon's task cgroups whose state is `T` (stopped) and comm `comm`.
fn stopped(d: &Daemon, comm: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for task in fs::read_dir(d.cgroup_parent_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let procs = fs::read_to_string(task.path().join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ...
            let Some((name, rest)) = stat.split_once(") ") else {
                continue;
            };
            if name.ends_with(&format!("({comm}")) && rest.starts_with('T') {
                found.push(pid);
            }
        }
    }
    found
}

#[test]
fn an_open_held_while_no_daemon_runs_waits_for_the_restarted_one() {
    let (_g, ws) = workspace();
    let inside = ws.join("in");
    fs::create_dir(&inside).expect("mkdir");
    let yaml = format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: held, owner: o@example.org}}\nspec:\n  mode: enforce\n  exec:\n    allow: [/bin/sh, /usr/bin/cat, /usr/bin/sleep]\n  files:\n    read: [\"{w}/**\"]\n",
        w = inside.display()
    );
    let mut d = Daemon::start_with(&[("h.yaml", &yaml)], &["--keep-pins"]);
    let go = inside.join("go");
    // Another process's /proc entry: Landlock lets /proc be read (it cannot tell whose it
    // is), so only a daemon can judge it, and none runs. The kernel holds cat at the open's
    // exit, before it could read a byte.
    let target = Path::new("/proc/1/status");
    let agent = waiting_agent(&d, "held", &go, target);
    d.kill9();
    fs::write(&go, "").expect("touch go");
    wait_for("cat held by the kernel", || {
        (!stopped(&d, "cat").is_empty()).then_some(())
    });
    d.restart();
    let out = agent.wait_with_output().expect("exec client");
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let r = d.wait_record("the held open, judged after the restart", |r| {
        s(r, "/kind") == "file" && s(r, "/file/path") == "/proc/1/status"
    });
    assert_eq!(
        (s(&r, "/verdict"), s(&r, "/action")),
        ("violation", "killed-process"),
        "{r}"
    );
}
