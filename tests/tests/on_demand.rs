//! The syscall tracepoints are attached only while an agent runs: with none, no process of
//! the machine is on the syscall slow path for the monitor's sake. An agent's first syscall
//! is still seen, and a crashed daemon leaves its agents watched.

use std::fs;

use agent_monitor_e2e::{Daemon, s, wait_for, workspace};
use serde_json::Value;

/// Kinds of the BPF links a process holds (`link_type:` in each link's fdinfo): the daemon
/// holds one per attached hook.
fn perf_links(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("link_type:") && l.contains("perf"))
        })
        .count()
}

fn syscall_hooks(d: &Daemon) -> Value {
    d.get_json("/v1/status")["syscall_hooks"].clone()
}

fn wait_live(d: &Daemon, live: bool) -> Value {
    wait_for(&format!("the syscall hooks live={live}"), || {
        let h = syscall_hooks(d);
        (h["live"] == live).then_some(h)
    })
}

fn pinned_links(d: &Daemon) -> usize {
    fs::read_dir(d.pins.join("demand")).map_or(0, Iterator::count)
}

const AUDIT: &str = "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {name: watch, owner: o@example.org}\nspec:\n  mode: audit\n  exec:\n    allow: [/usr/bin/cat, /bin/sh, /usr/bin/sleep]\n";

#[test]
fn syscall_hooks_attach_only_while_an_agent_runs() {
    let d = Daemon::start(&[("watch.yaml", AUDIT)]);
    // Checked once at start (each attached), then detached: no agent runs.
    let idle = wait_live(&d, false);
    assert_eq!(idle["on_demand"], true, "{idle}");
    assert!(idle["hooks"].as_u64().is_some_and(|n| n > 50), "{idle}");
    assert_eq!(idle["attached"], 0, "{idle}");
    let (attaches, detaches) = (idle["attaches"].as_u64(), idle["detaches"].as_u64());
    assert_eq!((attaches, detaches), (Some(1), Some(1)), "{idle}");
    let status = d.get_json("/v1/status");
    assert!(
        status["coverage"]["failed"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "an idle hook is not a failed one: {status}"
    );
    let idle_links = perf_links(d.pid());
    assert_eq!(pinned_links(&d), 0, "no syscall link pinned while idle");

    // The agent's very first syscalls are seen: its exec of cat and cat's read of a file
    // outside files.read (an audit scope: recorded, not stopped).
    let (_g, ws) = workspace();
    let outside = ws.join("outside.txt");
    fs::write(&outside, "x\n").expect("write");
    let out = d.exec(
        "watch",
        &[],
        &["/usr/bin/cat", outside.to_str().expect("utf-8")],
    );
    assert!(out.status.success(), "{out:?}");
    let r = d.wait_record("the agent's read outside files.read", |r| {
        s(r, "/kind") == "file" && s(r, "/file/path") == outside.to_str().unwrap_or_default()
    });
    assert_eq!(s(&r, "/verdict"), "violation", "{r}");
    let during = syscall_hooks(&d);
    assert!(during["attaches"].as_u64() >= Some(2), "{during}");
    // And detached again once it ended.
    let after = wait_live(&d, false);
    assert!(after["detaches"].as_u64() >= Some(2), "{after}");
    assert_eq!(perf_links(d.pid()), idle_links, "{after}");
    eprintln!(
        "attach {} ms, detach {} ms",
        after["last_attach_ms"], after["last_detach_ms"]
    );
}

#[test]
fn a_crashed_daemon_leaves_the_syscall_hooks_of_its_agents_attached() {
    let (_g, ws) = workspace();
    let go = ws.join("go");
    let mut d = Daemon::start_with(&[("watch.yaml", AUDIT)], &["--keep-pins"]);
    wait_live(&d, false);
    let script = format!(
        "while [ ! -e {g} ]; do /usr/bin/sleep 0.05; done; /usr/bin/cat /etc/hostname",
        g = go.display()
    );
    let mut agent = d.exec_spawn("watch", &["/bin/sh", "-c", &script]);
    let live = wait_live(&d, true);
    let held = perf_links(d.pid());
    assert!(pinned_links(&d) > 50, "{live}");
    d.kill9();
    assert!(
        pinned_links(&d) > 50,
        "the syscall links stay pinned (attached) after kill -9"
    );
    d.restart();
    // Adopted as they are: the agent still runs, so nothing is detached.
    let adopted = syscall_hooks(&d);
    assert_eq!(adopted["live"], true, "{adopted}");
    assert_eq!(
        perf_links(d.pid()),
        held,
        "the restarted daemon holds the same links"
    );
    fs::write(&go, "").expect("touch go");
    let status = agent.wait().expect("agent");
    assert!(status.success(), "{status:?}");
    d.wait_record("the agent's read after the restart", |r| {
        s(r, "/kind") == "file" && s(r, "/file/path") == "/etc/hostname"
    });
    wait_live(&d, false);
    assert_eq!(pinned_links(&d), 0);
}
