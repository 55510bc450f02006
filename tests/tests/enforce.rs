//! Enforce mode end to end: out-of-scope network operations fail with EPERM in the kernel,
//! denied files and unlisted binaries are killed before the process sees anything, and
//! kill-agent takes the whole task down.

use std::{
    fs,
    net::{TcpListener, UdpSocket},
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use agent_monitor_e2e::{Daemon, Ports, assert_exit, s, workspace};
use serde_json::Value;

const PY: &str = "/usr/bin/python3";

fn scope(name: &str, ws: &Path, on_violation: &str, tcp: u16, udp: u16, bind: u16) -> String {
    format!(
        r#"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {{name: {name}, owner: enforce@example.org}}
spec:
  mode: enforce
  onViolation: {on_violation}
  exec:
    allow: [/bin/sh, /usr/bin/cat, /usr/bin/sleep, /usr/bin/python3*]
  files:
    read: ["{ws}/**"]
    write: ["{ws}/**"]
    deny: ["{ws}/secret.txt"]
  network:
    connect:
      - {{cidr: 127.0.0.1/32, ports: [{tcp}]}}
      - {{cidr: 127.0.0.1/32, ports: [{udp}], protocol: udp}}
    bind: [{bind}]
"#,
        ws = ws.display()
    )
}

struct Fixture {
    _guard: tempfile::TempDir,
    ws: PathBuf,
    tcp_in: TcpListener,
    tcp_out: TcpListener,
    udp_in: UdpSocket,
    udp_out: UdpSocket,
    bind_port: u16,
    daemon: Daemon,
}

fn port(l: &TcpListener) -> u16 {
    l.local_addr().expect("addr").port()
}

fn fixture(on_violation: &str) -> Fixture {
    fixture_with_env(on_violation, &[])
}

fn fixture_with_env(on_violation: &str, env: &[(&str, &str)]) -> Fixture {
    let (guard, ws) = workspace();
    fs::write(ws.join("ok.txt"), "fine\n").expect("write");
    fs::write(ws.join("secret.txt"), "TOPSECRET\n").expect("write");
    let ports = Ports::new();
    let yaml = scope(
        "enf",
        &ws,
        on_violation,
        ports.tcp_in_port(),
        ports.udp_in_port(),
        ports.bind_port,
    );
    let Ports {
        tcp_in,
        tcp_out,
        udp_in,
        udp_out,
        bind_port,
    } = ports;
    let daemon = Daemon::start_with_env(&[("enf.yaml", &yaml)], &[], env);
    Fixture {
        _guard: guard,
        ws,
        tcp_in,
        tcp_out,
        udp_in,
        udp_out,
        bind_port,
        daemon,
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A python script run isolated (-I: no cwd or user site on sys.path, so it reads only its
/// runtime) that prints one line per attempt: `ok` or the errno name.
fn py_net(f: &Fixture, body: &str) -> String {
    let script = format!(
        "import socket, errno\ndef t(fn):\n  try:\n    fn(); print('ok')\n  except OSError as e:\n    print(errno.errorcode.get(e.errno, e.errno))\n{body}"
    );
    let out = f.daemon.exec("enf", &[], &[PY, "-I", "-c", &script]);
    assert_exit(&out, 0);
    stdout(&out)
}

fn net_records(d: &Daemon, kind: &str, port: u16) -> Vec<Value> {
    d.records()
        .into_iter()
        .filter(|r| s(r, "/kind") == kind && r["net"]["port"].as_u64() == Some(u64::from(port)))
        .collect()
}

#[test]
fn out_of_scope_connects_fail_with_eperm_in_scope_ones_succeed() {
    connects_are_judged(&fixture("kill-process"));
}

/// Kernels without `bpf_loop` (before 5.17) get the rule searches unrolled: the programs
/// still load (the fixture asserts every hook attached) and judge ports the same way.
#[test]
fn without_bpf_loop_connects_are_judged_the_same() {
    let f = fixture_with_env("kill-process", &[("AGENT_MONITOR_BPF_LOOP", "0")]);
    let log = f.daemon.log();
    assert!(log.contains("rule searches are unrolled"), "{log}");
    connects_are_judged(&f);
}

fn connects_are_judged(f: &Fixture) {
    let (pin, pout) = (port(&f.tcp_in), port(&f.tcp_out));
    let body = format!(
        "t(lambda: socket.create_connection(('127.0.0.1', {pin})).close())\n\
         t(lambda: socket.create_connection(('127.0.0.1', {pout})).close())\n\
         s6 = socket.socket(socket.AF_INET6)\nt(lambda: s6.connect(('::1', {pin})))\n\
         m = socket.socket(socket.AF_INET6)\nt(lambda: m.connect(('::ffff:127.0.0.1', {pin})))\n\
         m2 = socket.socket(socket.AF_INET6)\nt(lambda: m2.connect(('::ffff:127.0.0.1', {pout})))\n"
    );
    let lines = py_net(f, &body);
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        ["ok", "EPERM", "EPERM", "ok", "EPERM"],
        "{lines}"
    );
    let blocked = f.daemon.wait_record("blocked connect", |r| {
        s(r, "/kind") == "connect"
            && r["net"]["port"].as_u64() == Some(u64::from(pout))
            && s(r, "/net/family") == "inet"
    });
    assert_eq!(s(&blocked, "/verdict"), "violation");
    assert_eq!(s(&blocked, "/action"), "blocked");
    let ok = net_records(&f.daemon, "connect", pin);
    assert!(
        ok.iter()
            .any(|r| s(r, "/verdict") == "allowed" && s(r, "/action") == "none"),
        "{ok:?}"
    );
    let v6 = f
        .daemon
        .wait_record("blocked ::1", |r| s(r, "/net/address") == "::1");
    assert_eq!(s(&v6, "/action"), "blocked");
}

#[test]
fn udp_sends_and_binds_outside_scope_fail_with_eperm() {
    let f = fixture("kill-process");
    let (uin, uout) = (
        f.udp_in.local_addr().expect("a").port(),
        f.udp_out.local_addr().expect("a").port(),
    );
    let other = port(&TcpListener::bind("127.0.0.1:0").expect("bind"));
    let body = format!(
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         t(lambda: u.sendto(b'in', ('127.0.0.1', {uin})))\n\
         t(lambda: u.sendto(b'out', ('127.0.0.1', {uout})))\n\
         u.close()\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         t(lambda: u.sendmsg([b'out2'], [], 0, ('127.0.0.1', {uout})))\n\
         b = socket.socket()\nb.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\nt(lambda: b.bind(('127.0.0.1', {bind})))\n\
         c = socket.socket()\nt(lambda: c.bind(('127.0.0.1', {other})))\n",
        bind = f.bind_port
    );
    let lines = py_net(&f, &body);
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        ["ok", "EPERM", "EPERM", "ok", "EPERM"],
        "{lines}"
    );
    let mut buf = [0u8; 8];
    let (n, _) = f
        .udp_in
        .recv_from(&mut buf)
        .expect("in-scope datagram arrives");
    assert_eq!(&buf[..n], b"in");
    f.udp_out.set_nonblocking(true).expect("nonblocking");
    assert!(
        f.udp_out.recv_from(&mut buf).is_err(),
        "no byte reached the out-of-scope port"
    );
    let sent = f.daemon.wait_record("blocked send", |r| {
        s(r, "/kind") == "send" && r["net"]["port"].as_u64() == Some(u64::from(uout))
    });
    assert_eq!(s(&sent, "/action"), "blocked");
    let bind = f.daemon.wait_record("blocked bind", |r| {
        s(r, "/kind") == "bind" && r["net"]["port"].as_u64() == Some(u64::from(other))
    });
    assert_eq!(s(&bind, "/action"), "blocked");
}

#[test]
fn a_denied_file_is_killed_before_its_content_is_read_whatever_the_path() {
    let f = fixture("kill-process");
    let secret = f.ws.join("secret.txt");
    fs::create_dir(f.ws.join("sub")).expect("mkdir");
    symlink(&secret, f.ws.join("sub/link")).expect("symlink");
    fs::hard_link(&secret, f.ws.join("hard.txt")).expect("hard link");
    let ws = f.ws.display().to_string();
    let attempts = [
        format!("{ws}/secret.txt"),
        format!("{ws}/sub/link"),
        format!("{ws}/hard.txt"),
        format!("/proc/self/root{ws}/secret.txt"),
    ];
    for path in &attempts {
        let out = f
            .daemon
            .exec("enf", &[], &["/usr/bin/cat", &format!("{ws}/ok.txt"), path]);
        assert_eq!(out.status.code(), Some(137), "{path}: {out:?}");
        let text = stdout(&out);
        assert!(
            text.contains("fine"),
            "the allowed file was read first: {text}"
        );
        assert!(!text.contains("TOPSECRET"), "{path} leaked: {text}");
    }
    // A relative path from a nearby working directory.
    let out = f.daemon.exec(
        "enf",
        &[],
        &[
            "/bin/sh",
            "-c",
            &format!("cd {ws}/sub && /usr/bin/cat ../secret.txt"),
        ],
    );
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(!stdout(&out).contains("TOPSECRET"));
    let killed = f.daemon.wait_record("kill record", |r| {
        s(r, "/kind") == "file" && s(r, "/action") == "killed-process"
    });
    assert_eq!(s(&killed, "/verdict"), "violation");
    assert!(
        s(&killed, "/violation/rule").starts_with("files.deny"),
        "{killed}"
    );
}

#[test]
fn a_denied_file_is_found_by_identity_in_a_grown_descriptor_table_too() {
    // The kernel reads the new descriptor's file from the task's fd table: the one inside
    // `files_struct` (64 slots, read with direct loads) or, once a descriptor above 63 was
    // used, one allocated elsewhere (read through the helper). Opened under an in-scope
    // name (a hard link), only that identity check can catch it.
    let f = fixture("kill-process");
    let link = f.ws.join("hard.txt");
    fs::hard_link(f.ws.join("secret.txt"), &link).expect("hard link");
    for grow in [false, true] {
        let script = format!(
            concat!(
                "import os\nif {}: os.dup2(1, 300)\n",
                "print([l for l in open('/proc/self/status') if l.startswith('FDSize')][0], ",
                "flush=True)\n",
                "print(open({:?}).read(), flush=True)"
            ),
            if grow { "True" } else { "False" },
            link.display().to_string()
        );
        let out = f.daemon.exec("enf", &[], &[PY, "-I", "-c", &script]);
        assert_eq!(out.status.code(), Some(137), "grown={grow}: {out:?}");
        let text = stdout(&out);
        assert!(!text.contains("TOPSECRET"), "grown={grow}: {out:?}");
        // Both tables were exercised: 64 slots is the table inside `files_struct`.
        let fdsize = text
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<u32>().ok());
        if grow {
            assert!(fdsize.is_some_and(|n| n > 64), "{text}");
        } else {
            assert_eq!(fdsize, Some(64), "{text}");
        }
    }
}

#[test]
fn an_unlisted_binary_is_killed_before_it_runs_even_renamed() {
    let f = fixture("kill-process");
    let marker = f.ws.join("marker");
    // Outside exec.allow and the scope's trees: Landlock refuses the exec itself, and
    // `exec` says so (126, as a shell does for a command it may not run), unless
    // kill-process killed the refused child first (137, naming the violation).
    let out = f.daemon.exec(
        "enf",
        &[],
        &["/usr/bin/touch", marker.to_str().unwrap_or_default()],
    );
    let said = stderr(&out);
    assert!(
        (out.status.code() == Some(126) && said.contains("refused"))
            || (out.status.code() == Some(137) && said.contains("exec.allow")),
        "exec names the refusal: {out:?}"
    );
    assert!(!marker.exists(), "touch must not have run");
    // A copy of touch named like an allowed tool is judged by what it is.
    let fake = f.ws.join("cat");
    fs::copy("/usr/bin/touch", &fake).expect("copy");
    let out = f.daemon.exec(
        "enf",
        &[],
        &[
            "/bin/sh",
            "-c",
            &format!("{} {}", fake.display(), marker.display()),
        ],
    );
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(!marker.exists(), "the renamed copy must not have run");
    let r = f.daemon.wait_record("exec kill", |r| {
        s(r, "/kind") == "exec" && s(r, "/exec/path") == fake.to_str().unwrap_or_default()
    });
    assert_eq!(
        (s(&r, "/verdict"), s(&r, "/action")),
        ("violation", "killed-process")
    );
    // The allowed tool itself runs.
    assert_exit(
        &f.daemon.exec(
            "enf",
            &[],
            &[
                "/usr/bin/cat",
                f.ws.join("ok.txt").to_str().unwrap_or_default(),
            ],
        ),
        0,
    );
}

#[test]
fn kill_agent_takes_down_parent_siblings_and_later_children() {
    let f = fixture("kill-agent");
    let ws = f.ws.display();
    // A background sibling, then a violation in a child, then the shell would go on forking.
    let script = format!(
        "/usr/bin/sleep 30 & /usr/bin/sleep 31 & /usr/bin/cat {ws}/secret.txt; /usr/bin/sleep 32 & wait; echo survived > {ws}/after"
    );
    let out = f
        .daemon
        .exec("enf", &["--task", "ka-1"], &["/bin/sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(
        !f.ws.join("after").exists(),
        "the shell must not go on after the violation"
    );
    let r = f
        .daemon
        .wait_record("kill-agent record", |r| s(r, "/action") == "killed-agent");
    assert_eq!(s(&r, "/agent/task"), "ka-1");
    // Nothing of the task is left: no sleep survives.
    let cgroup = f.daemon.cgroup_parent_dir().join("ka-1");
    agent_monitor_e2e::wait_for("the task's processes to be gone", || {
        (!cgroup.exists()
            || !fs::read_to_string(cgroup.join("cgroup.events"))
                .unwrap_or_default()
                .contains("populated 1"))
        .then_some(())
    });
    let sleeps = std::process::Command::new("pgrep")
        .args(["-f", "^/usr/bin/sleep 3[012]$"])
        .output()
        .expect("pgrep");
    assert!(
        stdout(&sleeps).trim().is_empty(),
        "sleeps survived: {}",
        stdout(&sleeps)
    );
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn exec_names_the_violation_that_killed_the_agent() {
    let f = fixture("kill-process");
    let out = f.daemon.exec(
        "enf",
        &["--task", "named-1"],
        &[
            "/usr/bin/cat",
            f.ws.join("secret.txt").to_str().unwrap_or_default(),
        ],
    );
    assert_eq!(out.status.code(), Some(137));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("task named-1 killed for a violation: files.deny[0]"),
        "{err}"
    );
    let (code, body) = f.daemon.request("GET", "/v1/tasks/named-1", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("files.deny[0]"), "{body}");
}

#[test]
fn ttl_and_delete_revoke_a_task() {
    let f = fixture("kill-process");
    let out = f.daemon.exec(
        "enf",
        &["--task", "ttl-1", "--ttl", "1s"],
        &["/usr/bin/sleep", "30"],
    );
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(
        stderr(&out).contains("task ttl-1 revoked: ttl passed"),
        "{}",
        stderr(&out)
    );
    let r = f.daemon.wait_record("revocation record", |r| {
        s(r, "/kind") == "task" && s(r, "/agent/task") == "ttl-1"
    });
    assert_eq!(
        (s(&r, "/task/event"), s(&r, "/action")),
        ("revoked", "killed-agent")
    );

    let child = f.daemon.exec_spawn("enf", &["/usr/bin/sleep", "30"]);
    let task = agent_monitor_e2e::wait_for("the task to run", || {
        let list = f.daemon.get_json("/v1/agents");
        list.as_array()?
            .iter()
            .find(|t| t["pids"].as_array().is_some_and(|p| !p.is_empty()))
            .map(|t| s(t, "/id").to_string())
    });
    let (code, body) = f
        .daemon
        .request("DELETE", &format!("/v1/tasks/{task}"), None);
    assert_eq!(code, 204, "{body}");
    let out = child.wait_with_output().expect("exec client");
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(stderr(&out).contains("revoked: DELETE"), "{}", stderr(&out));
    let (code, _) = f
        .daemon
        .request("DELETE", &format!("/v1/tasks/{task}"), None);
    assert_eq!(code, 404, "a revoked task is gone");
}

#[test]
fn a_binary_matching_a_glob_created_after_load_is_released_others_killed() {
    let (_g, ws) = workspace();
    let bin = ws.join("bin");
    fs::create_dir(&bin).expect("mkdir");
    let yaml = format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: glob, owner: o@example.org}}\nspec:\n  mode: enforce\n  exec:\n    allow: [\"{b}/tool*\"]\n  files:\n    read: [\"{w}/**\"]\n    write: [\"{w}/**\"]\n",
        b = bin.display(),
        w = ws.display()
    );
    let d = Daemon::start(&[("g.yaml", &yaml)]);
    // Both appear after the scope was loaded: only the daemon can judge them by path.
    fs::copy("/usr/bin/touch", bin.join("tool-new")).expect("copy");
    fs::copy("/usr/bin/touch", bin.join("other")).expect("copy");
    let made = ws.join("made");
    let out = d.exec(
        "glob",
        &[],
        &[
            bin.join("tool-new").to_str().unwrap_or_default(),
            made.to_str().unwrap_or_default(),
        ],
    );
    assert_exit(&out, 0);
    assert!(made.exists(), "the in-scope binary ran after release");
    let marker = ws.join("marker");
    let out = d.exec(
        "glob",
        &[],
        &[
            bin.join("other").to_str().unwrap_or_default(),
            marker.to_str().unwrap_or_default(),
        ],
    );
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(!marker.exists(), "the out-of-scope binary never ran");
}

#[test]
fn a_flood_that_fills_the_ring_buffer_does_not_weaken_enforcement() {
    let (_g, ws) = workspace();
    fs::write(ws.join("secret.txt"), "TOPSECRET\n").expect("write");
    fs::write(ws.join("f"), "x").expect("write");
    let yaml = scope("flood", &ws, "kill-process", 1, 1, 1);
    // One page: a few events fill it. The flood is of chdir events: opens the kernel cannot
    // judge hold the process until the daemon has read them, which throttles an open flood.
    let d = Daemon::start_with(&[("f.yaml", &yaml)], &["--ring-buffer-bytes", "4096"]);
    let script = format!(
        "import os, threading\ndef run():\n  for _ in range(3000):\n    os.chdir('{ws}')\nts = [threading.Thread(target=run) for _ in range(4)]\n[t.start() for t in ts]\n[t.join() for t in ts]\nprint(open('{ws}/secret.txt').read())\n",
        ws = ws.display()
    );
    let out = d.exec("flood", &["--task", "flood-1"], &[PY, "-I", "-c", &script]);
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(
        !stdout(&out).contains("TOPSECRET"),
        "the pivot after the flood was stopped"
    );
    let status = d.get_json("/v1/status");
    assert!(
        status["counters"]["dropped"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "drops are counted: {status}"
    );
    let r = d.wait_record("degraded record", |r| s(r, "/task/event") == "degraded");
    assert_eq!(s(&r, "/agent/task"), "flood-1");
}

#[test]
fn fail_closed_kills_an_agent_whose_events_are_lost() {
    let (_g, ws) = workspace();
    fs::write(ws.join("f"), "x").expect("write");
    let yaml = scope("fc", &ws, "kill-process", 1, 1, 1);
    let d = Daemon::start_with(
        &[("f.yaml", &yaml)],
        &["--ring-buffer-bytes", "4096", "--fail-closed"],
    );
    // Floods, then keeps running until killed (bounded: it gives up after a while).
    let script = format!(
        "import os, time\nfor _ in range(20000):\n  os.chdir('{ws}')\nfor _ in range(300):\n  time.sleep(0.1)\nprint('survived')\n",
        ws = ws.display()
    );
    let out = d.exec("fc", &["--task", "fc-1"], &[PY, "-I", "-c", &script]);
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(!stdout(&out).contains("survived"));
    assert!(
        stderr(&out).contains("events lost (fail-closed)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_path_unreadable_at_syscall_entry_is_read_again_not_guessed() {
    let f = fixture("kill-process");
    let ok = f.ws.join("ok.txt");
    // The path string lives in a file-backed page the process has never touched: the
    // syscall tracepoint cannot fault it in, the syscall itself does. The fd is closed at
    // once, so the daemon cannot read the path back from it: the kernel must re-read.
    let holder = f.ws.join("path-holder");
    let mut bytes = ok.to_str().unwrap_or_default().as_bytes().to_vec();
    bytes.resize(4096, 0);
    fs::write(&holder, &bytes).expect("write holder");
    let script = format!(
        "import ctypes, mmap, os\nfd = os.open('{h}', os.O_RDONLY)\nm = mmap.mmap(fd, 4096, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)\n\
         addr = ctypes.addressof(ctypes.c_char.from_buffer(m))\nlibc = ctypes.CDLL(None, use_errno=True)\n\
         r = libc.open(ctypes.c_void_p(addr), 0)\nprint('fd' if r >= 0 else 'err')\nlibc.close(r)\n",
        h = holder.display()
    );
    let out = f
        .daemon
        .exec("enf", &["--task", "fault-1"], &[PY, "-I", "-c", &script]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out).trim(), "fd");
    let r = f
        .daemon
        .wait_record("the open through an untouched page", |r| {
            s(r, "/agent/task") == "fault-1"
                && s(r, "/file/path") == ok.to_str().unwrap_or_default()
        });
    assert_eq!(
        (s(&r, "/verdict"), s(&r, "/action")),
        ("allowed", "none"),
        "{r}"
    );
    let guessed = f
        .daemon
        .records()
        .into_iter()
        .filter(|r| s(r, "/agent/task") == "fault-1" && s(r, "/verdict") == "violation")
        .count();
    assert_eq!(guessed, 0, "no violation from a guessed path");
}

#[test]
fn a_held_open_is_recorded_under_the_image_that_made_it() {
    // The exec event travels on the ordinary ring, the held open on the verdict ring: the
    // daemon must have read the exec before it records the open, or the violation is
    // charged to the shell that exec'd cat.
    // Another process's /proc entry: Landlock lets /proc be read (it cannot tell whose it
    // is), so only the held open and the daemon's verdict stop it.
    let f = fixture("kill-process");
    let path = "/proc/1/comm";
    let script = format!("exec /usr/bin/cat {path}");
    for _ in 0..5 {
        let out = f.daemon.exec("enf", &[], &["/bin/sh", "-c", &script]);
        assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    }
    let violations: Vec<Value> = f
        .daemon
        .records()
        .into_iter()
        .filter(|r| s(r, "/verdict") == "violation" && s(r, "/file/path") == path)
        .collect();
    assert_eq!(violations.len(), 5, "{violations:#?}");
    for r in &violations {
        assert_eq!(s(r, "/process/exe"), "/usr/bin/cat", "{r:#}");
    }
    // Each was held by the kernel for the daemon's verdict, and counted.
    let held = f.daemon.get_json("/v1/status")["counters"]["held"]
        .as_u64()
        .unwrap_or_default();
    assert!(held >= 5, "held counter: {held}");
}
