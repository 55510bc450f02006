//! Escape and tampering: leaving the agent's cgroup or namespaces, reaching into other
//! processes, using bpf(2) or mount(2), attacking the daemon (signals, ptrace, its pinned
//! state, its status socket) and other workloads through cgroupfs.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use crate::common::{Env, Helper, PY, Run, each, p};
use agent_monitor_e2e::{CgroupTree, Expected, cgroup2_root, command_in_cgroup, s, wait_for};

const CGROUP: &str = include_str!("cases/escape_cgroup.py");
const NS: &str = include_str!("cases/escape_ns.py");
const PTRACE: &str = include_str!("cases/escape_ptrace.py");
const BPF: &str = include_str!("cases/escape_bpf.py");
const MOUNT: &str = include_str!("cases/escape_mount.py");
const DAEMON: &str = include_str!("cases/escape_daemon.py");
const BPFFS: &str = include_str!("cases/escape_bpffs.py");
const STATUS: &str = include_str!("cases/escape_status.py");

/// An access to `path` on a filesystem holding the monitor's state and controls (cgroupfs,
/// bpffs), outside files.write: refused by Landlock, recorded as an escape, and the process
/// killed after it (`onViolation: kill-process`).
fn protected_fs(path: &str, access: &str) -> Expected {
    Expected::violation("escape", "escape", "escape.protected-fs")
        .field("/escape/technique", "protected-fs")
        .path(path)
        .access(access)
        .action("refused")
        .layer("landlock")
        .after("killed-process")
}

#[test]
fn moving_itself_to_another_cgroup() {
    let env = Env::start();
    let tree = CgroupTree::new("am-e2e-evasion");
    let dest = tree.mkdir("elsewhere");
    let root = cgroup2_root();
    each(
        &[("another cgroup", &dest), ("the cgroup2 root", &root)],
        |(_, dir)| {
            let run = env.py(&[CGROUP], &["move", p(dir), p(&env.secret)]);
            env.assert_no_leak(&run, &[&env.secret_text]);
            env.assert_stopped(&run, "write");
            assert!(
                run.killed(),
                "the agent was not killed\n{}",
                env.describe(&run)
            );
            env.expect(&run, &protected_fs(p(&dir.join("cgroup.procs")), "create"));
        },
    );
}

#[test]
fn killing_or_freezing_another_workload_through_cgroupfs() {
    let env = Env::start();
    let tree = CgroupTree::new("am-e2e-evasion");
    let victim_dir = tree.mkdir("victim");
    each(&["kill", "freeze"], |technique| {
        // A fresh workload for each technique.
        let _ = fs::write(victim_dir.join("cgroup.freeze"), "0");
        let mut victim = Helper(
            command_in_cgroup(&victim_dir, "/usr/bin/sleep", &["120"])
                .spawn()
                .expect("start the victim"),
        );
        let run = env.py(&[CGROUP], &[technique, p(&victim_dir)]);
        let events = fs::read_to_string(victim_dir.join("cgroup.events")).unwrap_or_default();
        assert!(
            victim.0.try_wait().expect("try_wait").is_none() && !events.contains("frozen 1"),
            "{technique}: the other workload was hit ({events:?})\n{}",
            env.describe(&run)
        );
        env.assert_stopped(&run, "write");
        let file = if technique == "kill" {
            "cgroup.kill"
        } else {
            "cgroup.freeze"
        };
        env.expect(&run, &protected_fs(p(&victim_dir.join(file)), "create"));
    });
}

#[test]
fn unshare_and_setns_into_new_namespaces() {
    let env = Env::start();
    // A process in a network namespace of its own, outside the agent, to setns into.
    let other = Helper(
        Command::new("/usr/bin/unshare")
            .args(["--net", "/usr/bin/sleep", "120"])
            .spawn()
            .expect("start a process in another network namespace"),
    );
    let other_pid = other.0.id().to_string();
    wait_for("the other network namespace", || {
        let own = fs::read_link("/proc/self/ns/net").ok()?;
        let theirs = fs::read_link(format!("/proc/{other_pid}/ns/net")).ok()?;
        (own != theirs).then_some(())
    });
    each(
        &["newns", "newnet", "newuser", "newcgroup", "newpid", "setns"],
        |technique| {
            let run = env.py(&[NS], &[technique, &other_pid]);
            env.assert_stopped(&run, "escape");
            // setns needs a handle on the other process first: the kernel kills the agent
            // when its pidfd_open of a process outside the agent returns (a descriptor).
            let want = if technique == "setns" {
                Expected::escape_syscall("pidfd_open")
                    .action("killed-process")
                    .layer("ebpf")
            } else {
                Env::seccomp_refused("unshare")
            };
            env.expect(&run, &want);
        },
    );
}

/// A process outside the agent holding a secret in its memory; returns it and the
/// address and length of the secret.
fn victim_process(secret: &str) -> (Helper, String, usize) {
    let mut child = Command::new(PY)
        .args([
            "-I",
            "-c",
            "import ctypes, sys\nb = ctypes.create_string_buffer(sys.argv[1].encode())\nprint(ctypes.addressof(b), flush=True)\nsys.stdin.read()\n",
            secret,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the victim");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("victim address");
    (Helper(child), line.trim().to_string(), secret.len())
}

#[test]
fn ptrace_and_process_vm_readv_of_a_process_outside_the_agent() {
    let env = Env::start();
    let secret = format!("VICTIM-{}", env.secret_text);
    let (victim, addr, len) = victim_process(&secret);
    let pid = victim.0.id().to_string();
    let techniques = [
        ("ptrace", "ptrace"),
        ("readv", "process_vm_readv"),
        ("procmem", "/mem"),
        // Last: it overwrites the victim's secret.
        ("writev", "process_vm_writev"),
    ];
    each(&techniques, |(technique, syscall)| {
        let run = env.py(&[PTRACE], &[&pid, &addr, &len.to_string(), technique]);
        env.assert_no_leak(&run, &[&secret]);
        if technique == "procmem" {
            env.assert_stopped(&run, "steal");
            env.expect(&run, &Env::landlock_read(&format!("/proc/{pid}/mem")));
        } else {
            env.assert_eperm(&run, "steal");
            env.expect(&run, &Env::seccomp_refused(syscall));
        }
    });
}

#[test]
fn the_bpf_syscall() {
    let env = Env::start();
    each(&["create", "untag"], |technique| {
        if technique == "create" {
            let run = env.py(&[BPF], &["create"]);
            env.assert_eperm(&run, "bpf");
            env.expect(&run, &Env::seccomp_refused("bpf"));
        } else {
            // The real prize: the daemon's pinned maps, emptied to untag the agent.
            let names: Vec<String> = fs::read_dir(env.daemon.pins.join("maps"))
                .expect("pinned maps")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let mut args = vec!["untag", p(&env.daemon.pins), p(&env.secret)];
            args.extend(names.iter().map(String::as_str));
            let run = env.py(&[BPF], &args);
            env.assert_no_leak(&run, &[&env.secret_text]);
            env.assert_stopped(&run, "bpf");
            env.expect(&run, &Env::seccomp_refused("bpf"));
        }
    });
}

/// Lazily unmounts whatever a case managed to mount on `0` (so a failing case leaves no
/// mount behind on the host).
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let Ok(c) = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()) else {
            return;
        };
        // SAFETY: a valid C string; umount2 has no other preconditions.
        while unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {}
    }
}

#[test]
fn mount_and_the_new_mount_api() {
    let env = Env::start();
    let target = env.ws.join("ok.txt");
    // The new mount API's first call, open_tree, is where it is refused.
    each(
        &[("mount", "mount"), ("move_mount", "open_tree")],
        |(technique, syscall)| {
            // Each technique starts from the unmounted file.
            let _unmount = Unmount(target.clone());
            let run = env.py(&[MOUNT], &[p(&env.outside_file), p(&target), technique]);
            env.assert_no_leak(&run, &[&env.outside_text]);
            env.assert_eperm(&run, "mount");
            env.expect(&run, &Env::seccomp_refused(syscall));
        },
    );
}

/// Removes a directory on drop (a failing case may leave one behind).
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

/// Resumes the daemon on drop, whatever a case did to it.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: signalling a known pid.
        unsafe {
            libc::kill(self.0, libc::SIGCONT);
        }
    }
}

fn assert_daemon_alive(env: &Env, run: &Run) {
    let pid = env.daemon.pid();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
    assert!(
        matches!(state, Some("R" | "S" | "D")),
        "the daemon is not running (state {state:?})\n{}",
        env.describe(run)
    );
    assert!(
        env.daemon
            .try_request("GET", "/v1/status", None)
            .is_some_and(|(code, _)| code == 200),
        "the daemon does not answer\n{}",
        env.describe(run)
    );
}

fn attack_daemon(techniques: &[&str]) {
    let env = Env::start();
    let pid = env.daemon.pid();
    let _resume = Resume(i32::try_from(pid).expect("pid fits"));
    each(techniques, |technique| {
        let run = env.py(&[DAEMON], &[&pid.to_string(), technique]);
        env.assert_eperm(&run, "signal");
        assert_daemon_alive(&env, &run);
        let syscall = match technique {
            "ptrace" => "ptrace",
            // The pidfd is refused before any signal can be sent through it.
            "pidfd-kill" => "pidfd_open",
            _ => "kill",
        };
        env.expect(&run, &Env::seccomp_refused(syscall));
    });
}

#[test]
fn stopping_the_daemon() {
    attack_daemon(&["stop"]);
}

#[test]
fn ptracing_the_daemon() {
    attack_daemon(&["ptrace"]);
}

#[test]
fn killing_the_daemon() {
    attack_daemon(&["kill"]);
}

#[test]
fn killing_the_daemon_through_a_pidfd() {
    attack_daemon(&["pidfd-kill"]);
}

#[test]
fn tampering_with_the_pinned_state_in_bpffs() {
    let env = Env::start();
    let pins = env.daemon.pins.clone();
    let pinned = || {
        let mut files: Vec<_> = ["maps", "links"]
            .iter()
            .filter_map(|sub| fs::read_dir(pins.join(sub)).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        files
    };
    // Whatever the case manages to create there goes before the harness removes the pins.
    let _cleanup = RemoveDir(pins.join("evil"));
    let before = pinned();
    assert!(
        !before.is_empty(),
        "the daemon pinned nothing under {}",
        pins.display()
    );
    let first = before[0].clone();
    let evil = pins.join("evil");
    each(&["unlink", "mkdir"], |technique| {
        let (target, access) = if technique == "unlink" {
            (&first, "unlink")
        } else {
            (&evil, "create")
        };
        let mut args = vec![technique];
        args.extend(
            before
                .iter()
                .map(|f| p(f))
                .filter(|_| technique == "unlink"),
        );
        if technique == "mkdir" {
            args.push(p(&evil));
        }
        let run = env.py(&[BPFFS], &args);
        assert_eq!(
            pinned(),
            before,
            "pins were removed\n{}",
            env.describe(&run)
        );
        assert!(!evil.exists(), "{}", env.describe(&run));
        env.assert_stopped(&run, technique);
        env.expect(&run, &protected_fs(p(target), access));
    });
}

#[test]
fn the_status_socket_from_inside_the_agent() {
    let env = Env::start();
    // Another agent's task, which the attacker tries to revoke.
    let victim = Helper(env.daemon.exec_spawn(
        crate::common::SCOPE,
        &[PY, "-I", "-c", "import time; time.sleep(120)"],
    ));
    let task = wait_for("the victim task to run", || {
        let list = env.daemon.get_json("/v1/agents");
        list.as_array()?
            .iter()
            .find(|t| t["pids"].as_array().is_some_and(|p| !p.is_empty()))
            .map(|t| s(t, "/id").to_string())
    });
    let run = env.py(&[STATUS], &[p(&env.daemon.socket), &task]);
    let out = run.stdout();
    // Killed at the first connect (the socket is outside files.write): no request was made.
    let killed_first = run.killed() && out.contains("list: TRY") && !out.contains("DONE");
    for label in ["list", "revoke"] {
        let refused = out.lines().any(|l| {
            l == format!("{label}: BLOCKED errno=1")
                || (l.starts_with(&format!("{label}: DONE")) && l.contains(" 403 "))
        }) || (run.killed() && !out.contains(&format!("{label}: DONE")));
        assert!(
            killed_first || (out.contains(&format!("{label}: TRY")) && refused),
            "`{label}` was not refused\n{}",
            env.describe(&run)
        );
    }
    let (code, body) = env
        .daemon
        .request("GET", &format!("/v1/tasks/{task}"), None);
    assert_eq!(code, 200, "the victim task is gone: {body}");
    drop(victim);
}
