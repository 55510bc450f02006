//! Refusals: techniques an outside review used to get past the monitor, each stopped before
//! it has an effect by what `agent-monitor exec` puts around the agent: Landlock (reads only
//! under files.read, writes, truncation and new names only under files.write, no device
//! nodes, no link or rename that widens access) and a seccomp allow-list (anything but
//! ordinary work refused with EPERM, with argument filters on clone, socket, signals and
//! the scheduling and limit calls). Each refusal is recorded: a Landlock one as a `file`
//! record (`action: refused`, `layer: landlock`), a seccomp one as an `escape` record
//! (`action: blocked`, `layer: seccomp`) naming the syscall.

use std::{fs, path::Path};

use agent_monitor_e2e::{Expected, s, unique, wait_for};

use crate::common::{Env, Helper, PY, Run, SCOPE, each, p};

const CLONE_FILES: &str = include_str!("cases/refuse_clone_files.py");
const PIDFD_GETFD: &str = include_str!("cases/refuse_pidfd_getfd.py");
const FANOTIFY: &str = include_str!("cases/refuse_fanotify.py");
const OPENAT2_UFFD: &str = include_str!("cases/refuse_openat2_uffd.py");
const HARDLINK: &str = include_str!("cases/refuse_hardlink.py");
const TRUNCATE: &str = include_str!("cases/refuse_truncate.py");
const ACCT: &str = include_str!("cases/refuse_acct.py");
const MKNOD: &str = include_str!("cases/refuse_mknod.py");
const SOCK_PACKET: &str = include_str!("cases/refuse_sock_packet.py");
const STARVE: &str = include_str!("cases/refuse_starve_daemon.py");
const STATUS_PEER: &str = include_str!("cases/refuse_status_peer.py");
const EXCHANGE: &str = include_str!("cases/refuse_exchange.py");
const THAW: &str = include_str!("cases/refuse_thaw.py");
const TWO_HELD: &str = include_str!("cases/refuse_two_held_threads.py");
const UNIX_SWAP: &str = include_str!("cases/refuse_unix_swap.py");
const UNIX_STALE_CWD: &str = include_str!("cases/refuse_unix_stale_cwd.py");

const EPERM: i32 = libc::EPERM;
const EACCES: i32 = libc::EACCES;
const EXDEV: i32 = libc::EXDEV;

/// The seccomp filter's refusal of `syscall`: an `escape` violation, blocked by seccomp.
fn seccomp_refused(env: &Env, run: &Run, syscall: &str) {
    env.expect(run, &Env::seccomp_refused(syscall));
}

/// Landlock's refusal of a file operation: a `file` violation of `rule`, `access` to
/// `path`, refused by Landlock, after which `onViolation: kill-process` killed the process.
fn landlock(rule: &str, access: &str, path: &Path) -> Expected {
    Expected::violation("file", "files", rule)
        .path(p(path))
        .access(access)
        .action("refused")
        .layer("landlock")
        .after("killed-process")
}

/// Landlock refused the attempt `label` (one of `errnos`), and the record `want` says so.
/// With `onViolation: kill-process` the daemon kills the process right after the refusal,
/// which may be before it printed the error it got: then it must have died without success
/// (the agent itself, or the child that made the attempt, reported as `KILLED`).
fn landlock_stopped(env: &Env, run: &Run, label: &str, errnos: &[i32], want: &Expected) {
    let out = run.stdout();
    let has = |suffix: &str| out.lines().any(|l| l == format!("{label}: {suffix}"));
    assert!(
        has("TRY"),
        "the attempt `{label}` was never made\n{}",
        env.describe(run)
    );
    let refused = errnos.iter().any(|e| has(&format!("BLOCKED errno={e}")));
    let done = out
        .lines()
        .any(|l| l.starts_with(&format!("{label}: DONE")));
    assert!(
        refused || ((run.killed() || has("KILLED")) && !done),
        "`{label}` was not refused with errno {errnos:?}\n{}",
        env.describe(run)
    );
    env.expect(run, want);
}

/// A technique stopped at one of two points: seccomp refusing `syscall` (EPERM) or
/// Landlock refusing the file operation (EACCES) recorded as `landlock`. The record must be
/// that of the refusal the agent got.
fn seccomp_or_landlock(env: &Env, run: &Run, label: &str, syscall: &str, landlock: &Expected) {
    if run
        .stdout()
        .lines()
        .any(|l| l == format!("{label}: BLOCKED errno={EPERM}"))
    {
        seccomp_refused(env, run, syscall);
    } else {
        landlock_stopped(env, run, label, &[EACCES], landlock);
    }
}

/// Asserts `path` still holds `want`.
fn assert_unchanged(env: &Env, run: &Run, path: &Path, want: &str) {
    let now = fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"));
    assert_eq!(
        now,
        want,
        "{} was changed\n{}",
        path.display(),
        env.describe(run)
    );
}

/// A file the scope may only read (under `origin`), with a fresh content.
fn read_only_file(env: &Env) -> (std::path::PathBuf, String) {
    let path = env.origin.join("README.md");
    let text = format!("ORIGIN-{}", unique("r"));
    fs::write(&path, &text).expect("write the origin file");
    (path, text)
}

#[test]
fn clone_files_shares_the_descriptor_table_of_the_opener() {
    let env = Env::start();
    each(&["secret", "outside"], |technique| {
        let (target, text) = if technique == "secret" {
            (&env.secret, &env.secret_text)
        } else {
            (&env.outside_file, &env.outside_text)
        };
        let run = env.py(&[CLONE_FILES], &[p(target)]);
        env.assert_no_leak(&run, &[text]);
        if technique == "secret" {
            // Landlock lets the child open the denied file (it lies under files.read) and
            // the kernel's kill of the child leaves the descriptor in the shared table:
            // only the refusal of the clone stops this one.
            env.assert_blocked(&run, "steal", &[EPERM]);
            seccomp_refused(&env, &run, "clone");
        } else {
            // Refused at the clone; were the clone let through, Landlock would refuse the
            // child's open of a file outside files.read.
            seccomp_or_landlock(&env, &run, "steal", "clone", &Env::landlock_read(p(target)));
        }
    });
}

#[test]
fn pidfd_getfd_takes_the_descriptor_of_a_held_open() {
    let env = Env::start();
    let run = env.py(&[PIDFD_GETFD], &[p(&env.outside_file)]);
    env.assert_no_leak(&run, &[&env.outside_text]);
    env.assert_blocked(&run, "steal", &[EPERM]);
    seccomp_refused(&env, &run, "pidfd_getfd");
    landlock_stopped(
        &env,
        &run,
        "open",
        &[EACCES],
        &Env::landlock_read(p(&env.outside_file)),
    );
}

#[test]
fn fanotify_opens_a_file_outside_for_the_agent() {
    let env = Env::start();
    let run = env.py(&[FANOTIFY], &[p(&env.outside), p(&env.outside_file)]);
    env.assert_no_leak(&run, &[&env.outside_text]);
    env.assert_blocked(&run, "steal", &[EPERM]);
    seccomp_refused(&env, &run, "fanotify_init");
}

#[test]
fn openat2_flags_in_a_userfaultfd_page() {
    let env = Env::start();
    let (file, text) = read_only_file(&env);
    let run = env.py(&[OPENAT2_UFFD], &[p(&file), "MARKER"]);
    assert_unchanged(&env, &run, &file, &text);
    env.assert_blocked(&run, "uffd", &[EPERM]);
    seccomp_refused(&env, &run, "userfaultfd");
    // Without the page trick: the open for writing itself.
    landlock_stopped(
        &env,
        &run,
        "plain",
        &[EACCES],
        &landlock("files.write", "write", &file),
    );
}

#[test]
fn hard_links_into_the_workspace() {
    let env = Env::start();
    let (file, text) = read_only_file(&env);
    each(&["read outside", "write origin"], |technique| {
        let (source, name, usage) = if technique == "read outside" {
            (&env.outside_file, env.ws.join("notes-link.txt"), "read")
        } else {
            (&file, env.ws.join("readme-link.md"), "write")
        };
        let run = env.py(&[HARDLINK], &[p(source), p(&name), usage, "MARKER"]);
        env.assert_no_leak(&run, &[&env.outside_text]);
        assert_unchanged(&env, &run, &file, &text);
        assert!(
            fs::symlink_metadata(&name).is_err(),
            "the link {} was made\n{}",
            name.display(),
            env.describe(&run)
        );
        if technique == "read outside" {
            // A new name for a file the agent may not read is itself a violation.
            landlock_stopped(
                &env,
                &run,
                "link",
                &[EXDEV, EACCES],
                &landlock("files.read", "link", source).new_path(p(&name)),
            );
        } else {
            env.assert_blocked(&run, "link", &[EXDEV, EACCES]);
            // A new name for a readable file is not (git clones a local repository with
            // hard links, and copies when refused); Landlock refuses it because writing
            // through it would widen access, and no violation is recorded for it.
            env.assert_no_violation(&run);
        }
    });
}

#[test]
fn truncate_by_path_outside_files_write() {
    let env = Env::start();
    let (file, text) = read_only_file(&env);
    each(
        &[
            ("outside", &env.outside_file, &env.outside_text),
            ("read-only", &file, &text),
        ],
        |(_, target, want)| {
            let run = env.py(&[TRUNCATE], &[p(target)]);
            assert_unchanged(&env, &run, target, want);
            landlock_stopped(
                &env,
                &run,
                "truncate",
                &[EACCES],
                &landlock("files.write", "truncate", target),
            );
        },
    );
}

/// Turns process accounting off on drop, whatever a case managed to turn on.
struct AcctOff;

impl Drop for AcctOff {
    fn drop(&mut self) {
        // SAFETY: acct(NULL) has no preconditions.
        unsafe {
            libc::acct(std::ptr::null());
        }
    }
}

#[test]
fn acct_makes_the_kernel_write_outside_files_write() {
    let env = Env::start();
    let _off = AcctOff;
    // acct(2) does not create its file: the target is an existing (empty) file outside.
    let log = env.outside.join("acct.log");
    fs::write(&log, "").expect("create acct.log");
    let run = env.py(&[ACCT], &[p(&log)]);
    let written = fs::metadata(&log).map_or(0, |m| m.len());
    assert_eq!(
        written,
        0,
        "the kernel wrote {written} bytes of accounting into {}\n{}",
        log.display(),
        env.describe(&run)
    );
    env.assert_blocked(&run, "acct", &[EPERM]);
    seccomp_refused(&env, &run, "acct");
}

#[test]
fn mknod_of_a_device_in_the_workspace() {
    let env = Env::start();
    let node = env.ws.join("kmsg");
    let run = env.py(&[MKNOD], &[p(&node)]);
    assert!(
        fs::symlink_metadata(&node).is_err(),
        "the device node was made\n{}",
        env.describe(&run)
    );
    // The seccomp argument filter (char and block devices) or Landlock (no make_char).
    seccomp_or_landlock(
        &env,
        &run,
        "mknod",
        "mknod",
        &landlock("files.write", "create", &node),
    );
}

#[test]
fn sock_packet_is_a_packet_socket_under_another_family() {
    let env = Env::start();
    let run = env.py(&[SOCK_PACKET], &[&env.udp_target_port().to_string()]);
    let got = env.udp_received();
    env.assert_nothing_received("SOCK_PACKET", &got, &run);
    env.assert_blocked(&run, "socket", &[EPERM]);
    seccomp_refused(&env, &run, "socket");
}

/// What an agent could change to starve the daemon (of its main thread).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Standing {
    nice: i32,
    policy: i32,
    nofile: (u64, u64),
    ioprio: i64,
}

const IOPRIO_WHO_PROCESS: libc::c_long = 1;

fn pid_t(pid: u32) -> libc::pid_t {
    libc::pid_t::try_from(pid).expect("pid fits")
}

fn standing(pid: u32) -> Standing {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("daemon stat");
    // Field 19 (nice), counted from field 3 (state), after the command's closing paren.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .expect("stat")
        .1
        .split_whitespace()
        .collect();
    let nice = fields[16].parse().expect("nice");
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads only, into a valid rlimit.
    let (policy, rc, ioprio) = unsafe {
        (
            libc::sched_getscheduler(pid_t(pid)),
            libc::prlimit(
                pid_t(pid),
                libc::RLIMIT_NOFILE,
                std::ptr::null(),
                &raw mut limit,
            ),
            libc::syscall(
                libc::SYS_ioprio_get,
                IOPRIO_WHO_PROCESS,
                libc::c_long::from(pid),
            ),
        )
    };
    assert_eq!(rc, 0, "prlimit of the daemon");
    Standing {
        nice,
        policy,
        nofile: (limit.rlim_cur, limit.rlim_max),
        ioprio,
    }
}

/// Puts the daemon back as it was (resumed, same nice, policy and I/O priority, and the
/// limit when it can be raised again), so that it stops cleanly.
struct Restore(u32, Standing);

impl Drop for Restore {
    fn drop(&mut self) {
        let Self(pid, was) = *self;
        let limit = libc::rlimit {
            rlim_cur: was.nofile.0,
            rlim_max: was.nofile.1,
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain calls on a known pid with valid pointers.
        unsafe {
            libc::kill(pid_t(pid), libc::SIGCONT);
            libc::prlimit(
                pid_t(pid),
                libc::RLIMIT_NOFILE,
                &raw const limit,
                std::ptr::null_mut(),
            );
            libc::setpriority(libc::PRIO_PROCESS, pid, was.nice);
            libc::sched_setscheduler(pid_t(pid), was.policy, &raw const param);
            libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                libc::c_long::from(pid),
                was.ioprio,
            );
        }
    }
}

#[test]
fn starving_the_daemon() {
    let techniques = [
        ("sigqueue", "rt_sigqueueinfo"),
        ("prlimit", "prlimit64"),
        ("setpriority", "setpriority"),
        ("sched", "sched_setscheduler"),
        ("ioprio", "ioprio_set"),
    ];
    each(&techniques, |(technique, syscall)| {
        // A daemon per technique: a lowered hard limit cannot be raised again (not even by
        // root without CAP_SYS_RESOURCE), and a starved daemon would slow the next one.
        let env = Env::start();
        let pid = env.daemon.pid();
        let before = standing(pid);
        let _restore = Restore(pid, before);
        let run = env.py(&[STARVE], &[&pid.to_string(), technique]);
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
        assert!(
            matches!(state, Some("R" | "S" | "D")),
            "the daemon is not running (state {state:?})\n{}",
            env.describe(&run)
        );
        assert_eq!(
            standing(pid),
            before,
            "the daemon's scheduling or limits changed\n{}",
            env.describe(&run)
        );
        assert!(
            env.daemon
                .try_request("GET", "/v1/status", None)
                .is_some_and(|(code, _)| code == 200),
            "the daemon does not answer\n{}",
            env.describe(&run)
        );
        env.assert_blocked(&run, "starve", &[EPERM]);
        seccomp_refused(&env, &run, syscall);
    });
}

/// A scope that lets the agent reach the daemon's socket (it writes everywhere).
const WIDE: &str = r"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {name: wide, owner: evasion@example.org}
spec:
  mode: enforce
  onViolation: kill-process
  exec:
    allow: [/usr/bin/python3*]
  files:
    read: [/**]
    write: [/**]
";

/// The HTTP status of what the case printed for `label` (`label: DONE 'HTTP/1.1 403 ...'`);
/// None when it got no answer.
fn http_status(out: &str, label: &str) -> Option<u16> {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{label}: DONE ")))?;
    line.trim_matches(|c| c == '\'' || c == '"')
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn the_status_socket_through_a_connection_whose_peer_exited() {
    let env = Env::start_with_scopes(&[("wide.yaml", WIDE)]);
    // Another agent's task, which the attacker tries to revoke.
    let victim = Helper(
        env.daemon
            .exec_spawn(SCOPE, &[PY, "-I", "-c", "import time; time.sleep(120)"]),
    );
    let task = wait_for("the victim task to run", || {
        let list = env.daemon.get_json("/v1/agents");
        list.as_array()?
            .iter()
            .find(|t| t["pids"].as_array().is_some_and(|p| !p.is_empty()))
            .map(|t| s(t, "/id").to_string())
    });
    let run = env.py_as("wide", &[STATUS_PEER], &[p(&env.daemon.socket), &task]);
    let out = run.stdout();
    for label in ["list", "revoke"] {
        assert!(
            out.lines().any(|l| l == format!("{label}: TRY")),
            "the attempt `{label}` was never made\n{}",
            env.describe(&run)
        );
        let status = http_status(&out, label);
        assert!(
            !status.is_some_and(|code| (200..300).contains(&code)),
            "`{label}` was served ({status:?})\n{}",
            env.describe(&run)
        );
    }
    let listed = env.daemon.get_json("/v1/agents");
    assert!(
        listed
            .as_array()
            .is_some_and(|tasks| tasks.iter().any(|t| s(t, "/id") == task)),
        "the victim task {task} is gone: {listed}\n{}",
        env.describe(&run)
    );
    drop(victim);
}

#[test]
fn rename_exchange_with_a_file_outside() {
    let env = Env::start();
    let mine = env.ws.join("ok.txt");
    let run = env.py(&[EXCHANGE], &[p(&mine), p(&env.outside_file)]);
    env.assert_no_leak(&run, &[&env.outside_text]);
    assert_unchanged(&env, &run, &mine, "fine\n");
    assert_unchanged(&env, &run, &env.outside_file, &env.outside_text);
    // The child that tried it may be killed right after the refusal (kill-process).
    let out = run.stdout();
    assert!(
        [EXDEV, EACCES]
            .iter()
            .any(|e| out.contains(&format!("exchange: BLOCKED errno={e}")))
            || out.contains("exchange: KILLED"),
        "the exchange was not refused\n{}",
        env.describe(&run)
    );
    env.expect(
        &run,
        &landlock("files.write", "rename", &mine).new_path(p(&env.outside_file)),
    );
}

#[test]
fn thawing_a_held_open_with_sigcont() {
    let env = Env::start();
    // Made after the daemon loaded: only its path (`**/.env`) says it is denied, so the
    // open is held for the daemon.
    let dotenv = env.ws.join(".env");
    let text = format!("DOTENV-{}", env.secret_text);
    fs::write(&dotenv, &text).expect("write .env");
    let run = env.py(&[THAW], &[p(&dotenv)]);
    env.assert_no_leak(&run, &[&text]);
    env.assert_blocked(&run, "thaw", &[EPERM]);
    seccomp_refused(&env, &run, "kill");
    env.assert_stopped(&run, "read");
    env.expect(
        &run,
        &Expected::violation("file", "files", Env::DOTENV_RULE)
            .path(p(&dotenv))
            .access("read")
            .action("killed-process")
            .layer("ebpf"),
    );
}

/// A listening Unix socket (non-blocking) at `path`.
fn unix_listener(path: &Path) -> std::os::unix::net::UnixListener {
    let l = std::os::unix::net::UnixListener::bind(path).expect("bind a unix socket");
    l.set_nonblocking(true).expect("nonblocking");
    l
}

/// Asserts the outside socket received nothing, the attempt was stopped, and the connect
/// is recorded as one to the socket it reached (whatever path the agent named).
fn outside_socket_untouched(
    env: &Env,
    run: &Run,
    outside: &std::os::unix::net::UnixListener,
    outside_path: &Path,
    technique: &str,
) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok((mut conn, _)) = outside.accept() {
        conn.set_nonblocking(true).expect("nonblocking");
        while let Ok(n @ 1..) = std::io::Read::read(&mut conn, &mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
    }
    env.assert_nothing_received(technique, &got, run);
    env.assert_stopped(run, "connect");
    // Judged by the path the socket really has, against files.write: held at the syscall,
    // then killed.
    env.expect(
        run,
        &Expected::violation("connect", "files", "files.write")
            .family("unix")
            .address(p(outside_path))
            .path(p(outside_path))
            .access("write")
            .action("killed-process")
            .layer("ebpf"),
    );
}

#[test]
fn a_unix_connect_through_a_symlink_swapped_while_it_is_held() {
    let env = Env::start();
    let allowed_path = env.ws.join("allowed.sock");
    let _allowed = unix_listener(&allowed_path);
    let outside_path = env.outside.join("runtime.sock");
    let outside = unix_listener(&outside_path);
    let run = env.py(
        &[UNIX_SWAP],
        &[p(&env.ws), p(&allowed_path), p(&outside_path)],
    );
    outside_socket_untouched(&env, &run, &outside, &outside_path, "a swapped symlink");
}

#[test]
fn a_relative_unix_connect_after_a_chdir_the_monitor_lost() {
    // A small ring buffer: the sibling's flood makes the agent's own chdir event drop.
    let env = Env::start_with(&["--ring-buffer-bytes", "4096"]);
    let _allowed = unix_listener(&env.ws.join("runtime.sock"));
    let outside_path = env.outside.join("runtime.sock");
    let outside = unix_listener(&outside_path);
    let run = env.py(&[UNIX_STALE_CWD], &[p(&env.ws), p(&env.outside)]);
    outside_socket_untouched(&env, &run, &outside, &outside_path, "a lost chdir");
}

#[test]
fn two_threads_held_at_once() {
    two_threads_held(false);
}

/// The same runs, also asserting the agent never reads the denied file. It can: the stop is
/// `bpf_send_signal` from the syscall's exit tracepoint, which on the kernel we test on can
/// land a few syscalls after the open returned (docs/SECURITY.md, "Signals from eBPF can
/// land late"), so this fails now and then, on a quiet machine too. Run it with
/// `-- --ignored`; it passes once the stop is synchronous.
#[test]
#[ignore = "known gap: a stop sent from eBPF can land after the read (docs/SECURITY.md)"]
fn two_threads_held_at_once_leak_nothing() {
    two_threads_held(true);
}

fn two_threads_held(no_leak: bool) {
    let env = Env::start();
    // Made after the daemon loaded: only its path (`**/.env`) says it is denied, so the
    // open is held for the daemon, as is the open of each new allowed file.
    let dotenv = env.ws.join(".env");
    let text = format!("DOTENV-{}", env.secret_text);
    fs::write(&dotenv, &text).expect("write .env");
    // The two holds race (which verdict the daemon reads first); several runs give the
    // order that would leak a chance to happen.
    for i in 0..12 {
        let allowed = env.ws.join(format!("fresh-{i}.txt"));
        fs::write(&allowed, format!("fine {i}\n")).expect("write allowed file");
        let run = env.py(&[TWO_HELD], &[p(&allowed), p(&dotenv)]);
        if no_leak {
            env.assert_no_leak(&run, &[&text]);
            env.assert_stopped(&run, "denied");
        } else {
            assert!(
                run.killed(),
                "the agent was not killed\n{}",
                env.describe(&run)
            );
        }
        env.expect(
            &run,
            &Expected::violation("file", "files", Env::DOTENV_RULE)
                .path(p(&dotenv))
                .access("read")
                .action("killed-process")
                .layer("ebpf"),
        );
    }
}
