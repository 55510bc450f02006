//! The unit's `SystemCallFilter=` against what the daemon really calls: the daemon runs
//! under strace (loading, a task, a reload, a stop) and every syscall it made must be in
//! the filter's allowed groups and not in its denied ones, as `systemd-analyze
//! syscall-filter` expands them. (No systemd runs here to apply the filter itself.)

use std::{
    collections::BTreeSet,
    fs,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use agent_monitor_e2e::{
    assert_exit, binary, cgroup2_root, remove_cgroup_tree, require_root, unique, wait_for,
    wait_or_kill, workspace_root,
};

/// Values of `key=` lines in a unit file (repeated keys in order).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

/// Stops the traced daemon and removes its cgroups, also when the test fails.
struct Cleanup {
    pid: u32,
    cgroup: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        #[expect(clippy::cast_possible_wrap, reason = "pids fit in i32")]
        // SAFETY: our grandchild; a finished pid is not reused this quickly.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(300));
        remove_cgroup_tree(&self.cgroup);
    }
}

/// Every syscall of a group (`@name`) or a single name, as systemd resolves them.
fn syscalls(item: &str, out: &mut BTreeSet<String>) {
    if !item.starts_with('@') {
        out.insert(item.to_owned());
        return;
    }
    let listing = Command::new("systemd-analyze")
        .args(["syscall-filter", item])
        .output()
        .expect("systemd-analyze syscall-filter");
    assert_exit(&listing, 0);
    for line in String::from_utf8_lossy(&listing.stdout).lines().skip(1) {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        syscalls(name, out);
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "one traced run, then the comparison")]
fn every_syscall_the_daemon_makes_passes_the_units_filter() {
    require_root();
    let unit = fs::read_to_string(workspace_root().join("deploy/systemd/agent-monitor.service"))
        .expect("unit");
    let mut allowed = BTreeSet::new();
    let mut denied = BTreeSet::new();
    for line in unit_values(&unit, "SystemCallFilter") {
        let (set, items) = match line.strip_prefix('~') {
            Some(rest) => (&mut denied, rest.to_owned()),
            None => (&mut allowed, line.clone()),
        };
        for item in items.split_whitespace() {
            syscalls(item, set);
        }
    }
    assert!(allowed.contains("bpf") && allowed.contains("read"));

    let dir = tempfile::tempdir().expect("tempdir");
    let scopes = dir.path().join("scopes");
    fs::create_dir(&scopes).expect("mkdir");
    fs::copy(
        workspace_root().join("examples/scopes/code-reviewer.yaml"),
        scopes.join("code-reviewer.yaml"),
    )
    .expect("scope");
    let trace = dir.path().join("trace");
    let socket = dir.path().join("am.sock");
    let parent = unique("am-e2e-seccomp");
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(binary())
        .args(["run", "--quiet", "--scopes"])
        .arg(&scopes)
        .arg("--socket")
        .arg(&socket)
        .arg("--audit-log")
        .arg(dir.path().join("audit.jsonl"))
        .args([
            "--cgroup-parent",
            &parent,
            "--release-on-exit",
            "--pin-path",
        ])
        .arg(PathBuf::from("/sys/fs/bpf").join(&parent))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace (cargo xtask setup installs it)");
    // strace forks short-lived children of its own at start (probing ptrace features):
    // the daemon is the child that runs the binary.
    let bin = fs::canonicalize(binary()).expect("the binary's path");
    let daemon: u32 = wait_for("the traced daemon to start", || {
        fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id()))
            .ok()?
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|pid| fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == bin))
    });
    let _cleanup = Cleanup {
        pid: daemon,
        cgroup: cgroup2_root().join(&parent),
    };
    wait_for("the traced daemon's socket", || {
        Command::new(binary())
            .args(["status", "--socket"])
            .arg(&socket)
            .output()
            .ok()
            .filter(|o| o.status.success())
    });
    let out = Command::new(binary())
        .args(["exec", "--scope", "code-reviewer", "--socket"])
        .arg(&socket)
        .args(["--", "/bin/sh", "-c", "cat /etc/hostname >/dev/null; true"])
        .stdin(Stdio::null())
        .output()
        .expect("exec");
    assert_exit(&out, 0);
    #[expect(clippy::cast_possible_wrap, reason = "pids fit in i32")]
    // SAFETY: the daemon is our grandchild, still running (it answered above).
    unsafe {
        libc::kill(daemon as i32, libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(300));
        libc::kill(daemon as i32, libc::SIGTERM);
    }
    // A daemon that missed its SIGTERM fails the test instead of hanging the suite.
    let (status, hung) = wait_or_kill(&mut strace, Duration::from_mins(1));
    assert!(
        !hung,
        "the traced daemon did not stop on SIGTERM within 60 s"
    );
    assert!(status.success(), "daemon under strace: {status}");

    let text = fs::read_to_string(&trace).expect("trace");
    let mut used = BTreeSet::new();
    for line in text.lines() {
        let rest = line.split_once(' ').map_or("", |(_, r)| r.trim_start());
        let name = rest
            .strip_prefix("<... ")
            .map_or_else(|| rest.split('(').next(), |r| r.split(' ').next())
            .unwrap_or_default();
        if !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            used.insert(name.to_owned());
        }
    }
    assert!(
        used.contains("bpf") && used.contains("perf_event_open"),
        "{used:?}"
    );
    let refused: Vec<&String> = used
        .iter()
        .filter(|s| !allowed.contains(*s) || denied.contains(*s))
        .collect();
    assert!(
        refused.is_empty(),
        "the unit's SystemCallFilter would refuse {refused:?} (used: {used:?})"
    );
}
