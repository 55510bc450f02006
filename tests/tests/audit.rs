//! Audit mode end to end: real processes in tagged cgroups do in-scope and out-of-scope
//! work; the records in the audit log are checked field by field.

use std::{
    fs,
    net::{TcpListener, UdpSocket},
    os::unix::fs::symlink,
    path::Path,
};

use agent_monitor_e2e::{Daemon, Ports, assert_exit, s, workspace};
use serde_json::Value;

const PY: &str = "/usr/bin/python3";

/// The scope every test here runs under; `{WS}` is the test's workspace, ports are the
/// test's own listeners.
fn scope(ws: &Path, tcp: u16, udp: u16, bind: u16) -> String {
    format!(
        r#"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata:
  name: e2e
  owner: e2e-team@example.org
  identity: spiffe://example.org/agent/e2e
spec:
  mode: audit
  exec:
    allow: [/bin/sh, /usr/bin/cat, /usr/bin/python3*]
  files:
    read: ["{ws}/**"]
    write: ["{ws}/out/**"]
    deny: ["{ws}/secret*"]
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
    _ws_guard: tempfile::TempDir,
    ws: std::path::PathBuf,
    tcp_in: TcpListener,
    tcp_out: TcpListener,
    udp_in: UdpSocket,
    udp_out: UdpSocket,
    bind_port: u16,
    daemon: Daemon,
}

fn fixture() -> Fixture {
    let (guard, ws) = workspace();
    fs::create_dir(ws.join("out")).expect("mkdir out");
    fs::write(ws.join("a.txt"), "alpha\n").expect("write");
    fs::write(ws.join("secret.txt"), "s3cret\n").expect("write");
    let ports = Ports::new();
    let yaml = scope(
        &ws,
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
    let daemon = Daemon::start(&[("e2e.yaml", &yaml)]);
    Fixture {
        _ws_guard: guard,
        ws,
        tcp_in,
        tcp_out,
        udp_in,
        udp_out,
        bind_port,
        daemon,
    }
}

fn is_file(r: &Value, path: &Path, access: &str) -> bool {
    s(r, "/kind") == "file"
        && s(r, "/file/path") == path.to_str().unwrap_or_default()
        && s(r, "/file/access") == access
}

/// The fields every record of this scope carries.
fn assert_agent(r: &Value, task: &str) {
    assert_eq!(s(r, "/agent/scope"), "e2e", "{r}");
    assert_eq!(s(r, "/agent/task"), task, "{r}");
    assert_eq!(s(r, "/agent/owner"), "e2e-team@example.org", "{r}");
    assert_eq!(
        s(r, "/agent/identity"),
        "spiffe://example.org/agent/e2e",
        "{r}"
    );
    assert!(
        r["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 30 && t.as_bytes()[19] == b'.'),
        "RFC 3339 ns time: {r}"
    );
    assert!(r["process"]["pid"].as_u64().is_some_and(|p| p > 0), "{r}");
    assert!(
        s(r, "/process/cgroup").ends_with(&format!("/{task}")),
        "{r}"
    );
}

fn assert_allowed(r: &Value) {
    assert_eq!(s(r, "/verdict"), "allowed", "{r}");
    assert_eq!(s(r, "/action"), "none", "{r}");
    assert!(r.get("violation").is_none(), "{r}");
}

fn assert_violation(r: &Value, dimension: &str, rule: &str) {
    assert_eq!(s(r, "/verdict"), "violation", "{r}");
    assert_eq!(s(r, "/action"), "none", "audit mode never acts: {r}");
    assert_eq!(s(r, "/violation/dimension"), dimension, "{r}");
    assert!(
        s(r, "/violation/rule").starts_with(rule),
        "rule {rule}: {r}"
    );
    assert!(!s(r, "/violation/reason").is_empty(), "{r}");
}

#[test]
fn exec_in_and_out_of_scope() {
    let f = fixture();
    let out = f.daemon.exec(
        "e2e",
        &["--task", "exec-1"],
        &["/bin/sh", "-c", "/usr/bin/cat /dev/null; /usr/bin/id -u"],
    );
    assert_exit(&out, 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "audit mode lets id run"
    );
    let cat = f.daemon.wait_record("exec of cat", |r| {
        s(r, "/kind") == "exec" && s(r, "/exec/path") == "/usr/bin/cat"
    });
    assert_agent(&cat, "exec-1");
    assert_allowed(&cat);
    assert_eq!(
        cat["exec"]["argv"],
        serde_json::json!(["/usr/bin/cat", "/dev/null"])
    );
    assert_eq!(s(&cat, "/process/exe"), "/usr/bin/cat");
    assert_eq!(s(&cat, "/process/comm"), "cat");
    let id = f.daemon.wait_record("exec of id", |r| {
        s(r, "/kind") == "exec" && s(r, "/exec/path") == "/usr/bin/id"
    });
    assert_agent(&id, "exec-1");
    assert_violation(&id, "exec", "exec.allow");
    assert_eq!(id["exec"]["argv"], serde_json::json!(["/usr/bin/id", "-u"]));
    // /bin/sh in the scope names the real binary it points to: the shell itself is allowed.
    let sh = f.daemon.wait_record("exec of sh", |r| {
        s(r, "/kind") == "exec" && r["exec"]["argv"][0] == "/bin/sh"
    });
    assert_allowed(&sh);
    assert_eq!(
        s(&sh, "/exec/path"),
        fs::canonicalize("/bin/sh")
            .expect("sh")
            .to_str()
            .expect("utf8")
    );
}

#[test]
fn file_read_in_scope_denied_and_outside() {
    let f = fixture();
    let (a, secret) = (f.ws.join("a.txt"), f.ws.join("secret.txt"));
    let out = f.daemon.exec(
        "e2e",
        &["--task", "read-1"],
        &[
            "/usr/bin/cat",
            a.to_str().unwrap_or_default(),
            secret.to_str().unwrap_or_default(),
            "/etc/hostname",
        ],
    );
    assert_exit(&out, 0);
    let ok = f
        .daemon
        .wait_record("read of a.txt", |r| is_file(r, &a, "read"));
    assert_agent(&ok, "read-1");
    assert_allowed(&ok);
    assert_eq!(s(&ok, "/process/comm"), "cat");
    let denied = f
        .daemon
        .wait_record("read of secret", |r| is_file(r, &secret, "read"));
    assert_violation(&denied, "files", "files.deny[0]");
    let outside = f.daemon.wait_record("read of /etc/hostname", |r| {
        is_file(r, Path::new("/etc/hostname"), "read")
    });
    assert_violation(&outside, "files", "files.read");
    // The shared libraries cat loads are the runtime baseline, not violations.
    let libc = f.daemon.wait_record("libc load", |r| {
        s(r, "/kind") == "file" && s(r, "/file/path").contains("libc.so")
    });
    assert_allowed(&libc);
}

#[test]
fn file_write_and_create() {
    let f = fixture();
    let script = format!(
        "echo new > {ws}/out/new.txt; echo other > {ws}/other.txt; {PY} -c \"open('{ws}/out/new.txt', 'r+').write('w')\"",
        ws = f.ws.display()
    );
    let out = f
        .daemon
        .exec("e2e", &["--task", "write-1"], &["/bin/sh", "-c", &script]);
    assert_exit(&out, 0);
    let created = f.daemon.wait_record("create in out/", |r| {
        is_file(r, &f.ws.join("out/new.txt"), "create")
    });
    assert_agent(&created, "write-1");
    assert_allowed(&created);
    let outside = f.daemon.wait_record("create outside out/", |r| {
        is_file(r, &f.ws.join("other.txt"), "create")
    });
    assert_violation(&outside, "files", "files.write");
    let written = f.daemon.wait_record("r+ open", |r| {
        is_file(r, &f.ws.join("out/new.txt"), "write")
    });
    assert_allowed(&written);
    assert_eq!(s(&written, "/process/comm"), "python3");
}

#[test]
fn unlink_and_rename() {
    let f = fixture();
    for name in ["out/del.txt", "keep.txt", "out/from.txt", "out/c.txt"] {
        fs::write(f.ws.join(name), "x").expect("write");
    }
    let script = format!(
        "import os; os.unlink('{ws}/out/del.txt'); os.unlink('{ws}/keep.txt'); \
         os.rename('{ws}/out/from.txt', '{ws}/out/to.txt'); os.rename('{ws}/out/c.txt', '{ws}/moved.txt')",
        ws = f.ws.display()
    );
    let out = f
        .daemon
        .exec("e2e", &["--task", "unlink-1"], &[PY, "-c", &script]);
    assert_exit(&out, 0);
    let del = f.daemon.wait_record("unlink in out/", |r| {
        is_file(r, &f.ws.join("out/del.txt"), "unlink")
    });
    assert_agent(&del, "unlink-1");
    assert_allowed(&del);
    let keep = f.daemon.wait_record("unlink outside out/", |r| {
        is_file(r, &f.ws.join("keep.txt"), "unlink")
    });
    assert_violation(&keep, "files", "files.write");
    let ren = f.daemon.wait_record("rename in out/", |r| {
        is_file(r, &f.ws.join("out/from.txt"), "rename")
    });
    assert_allowed(&ren);
    assert_eq!(
        s(&ren, "/file/new_path"),
        f.ws.join("out/to.txt").to_str().unwrap_or_default()
    );
    let moved = f.daemon.wait_record("rename out of out/", |r| {
        is_file(r, &f.ws.join("out/c.txt"), "rename")
    });
    assert_violation(&moved, "files", "files.write");
    assert_eq!(
        s(&moved, "/file/new_path"),
        f.ws.join("moved.txt").to_str().unwrap_or_default()
    );
}

fn net_record(records: &Value, kind: &str, port: u16) -> bool {
    s(records, "/kind") == kind && records["net"]["port"].as_u64() == Some(u64::from(port))
}

#[test]
fn tcp_connect() {
    let f = fixture();
    let (pin, pout) = (
        f.tcp_in.local_addr().expect("a").port(),
        f.tcp_out.local_addr().expect("a").port(),
    );
    let script = format!(
        "import socket\nfor p in ({pin}, {pout}):\n  socket.create_connection(('127.0.0.1', p)).close()\n\
         s = socket.socket(socket.AF_INET6)\ntry:\n  s.connect(('::1', {pout}))\nexcept OSError:\n  pass\n"
    );
    let out = f
        .daemon
        .exec("e2e", &["--task", "tcp-1"], &[PY, "-c", &script]);
    assert_exit(&out, 0);
    let ok = f.daemon.wait_record("connect in scope", |r| {
        net_record(r, "connect", pin) && s(r, "/net/family") == "inet"
    });
    assert_agent(&ok, "tcp-1");
    assert_allowed(&ok);
    assert_eq!(
        (s(&ok, "/net/protocol"), s(&ok, "/net/address")),
        ("tcp", "127.0.0.1")
    );
    let bad = f.daemon.wait_record("connect out of scope", |r| {
        net_record(r, "connect", pout) && s(r, "/net/family") == "inet"
    });
    assert_violation(&bad, "network", "network.connect");
    let v6 = f.daemon.wait_record("ipv6 connect", |r| {
        net_record(r, "connect", pout) && s(r, "/net/family") == "inet6"
    });
    assert_eq!(s(&v6, "/net/address"), "::1");
    assert_violation(&v6, "network", "network.connect");
}

#[test]
fn udp_send() {
    let f = fixture();
    let (pin, pout) = (
        f.udp_in.local_addr().expect("a").port(),
        f.udp_out.local_addr().expect("a").port(),
    );
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.sendto(b'in', ('127.0.0.1', {pin}))\ns.sendto(b'out', ('127.0.0.1', {pout}))\n"
    );
    let out = f
        .daemon
        .exec("e2e", &["--task", "udp-1"], &[PY, "-c", &script]);
    assert_exit(&out, 0);
    let mut buf = [0u8; 8];
    let (n, _) = f
        .udp_in
        .recv_from(&mut buf)
        .expect("in-scope datagram arrives");
    assert_eq!(&buf[..n], b"in");
    let ok = f
        .daemon
        .wait_record("send in scope", |r| net_record(r, "send", pin));
    assert_agent(&ok, "udp-1");
    assert_allowed(&ok);
    assert_eq!(s(&ok, "/net/protocol"), "udp");
    let bad = f
        .daemon
        .wait_record("send out of scope", |r| net_record(r, "send", pout));
    assert_violation(&bad, "network", "network.connect");
}

#[test]
fn bind_in_and_out_of_scope() {
    let f = fixture();
    let other = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("a")
        .port();
    let script = format!(
        "import socket\nfor p in ({bind}, {other}):\n  s = socket.socket()\n  s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n  s.bind(('127.0.0.1', p))\n  s.close()\n",
        bind = f.bind_port
    );
    // `other` is still held by this test's listener above? No: it was dropped; SO_REUSEADDR
    // covers TIME_WAIT. Both binds succeed in audit mode.
    let out = f
        .daemon
        .exec("e2e", &["--task", "bind-1"], &[PY, "-c", &script]);
    assert_exit(&out, 0);
    let ok = f
        .daemon
        .wait_record("bind in scope", |r| net_record(r, "bind", f.bind_port));
    assert_agent(&ok, "bind-1");
    assert_allowed(&ok);
    let bad = f
        .daemon
        .wait_record("bind out of scope", |r| net_record(r, "bind", other));
    assert_violation(&bad, "network", "network.bind");
}

#[test]
fn untagged_process_produces_no_record() {
    let f = fixture();
    let secret = f.ws.join("secret.txt");
    let untagged = std::process::Command::new("/usr/bin/cat")
        .arg(&secret)
        .output()
        .expect("cat");
    assert!(untagged.status.success());
    let mut child = std::process::Command::new("/usr/bin/cat")
        .arg(&secret)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("cat");
    let untagged_pid = u64::from(child.id());
    assert!(child.wait().expect("wait").success());
    // A tagged marker afterwards: once its record is in, the untagged reads would be too.
    let marker = f.ws.join("a.txt");
    assert_exit(
        &f.daemon.exec(
            "e2e",
            &["--task", "marker"],
            &["/usr/bin/cat", marker.to_str().unwrap_or_default()],
        ),
        0,
    );
    f.daemon
        .wait_record("marker read", |r| is_file(r, &marker, "read"));
    let records = f.daemon.records();
    assert!(!records.is_empty());
    assert!(
        records
            .iter()
            .all(|r| r["process"]["pid"].as_u64() != Some(untagged_pid)),
        "untagged pid recorded"
    );
    assert!(
        records
            .iter()
            .all(|r| s(r, "/file/path") != secret.to_str().unwrap_or_default()),
        "untagged read recorded"
    );
    assert!(
        records.iter().all(|r| s(r, "/agent/task") == "marker"),
        "only the marker task has records"
    );
}

#[test]
fn relative_dotdot_and_symlink_paths_are_recorded_as_their_target() {
    let f = fixture();
    fs::create_dir(f.ws.join("sub")).expect("mkdir");
    symlink(f.ws.join("a.txt"), f.ws.join("sub/link")).expect("symlink");
    symlink(f.ws.join("secret.txt"), f.ws.join("sub/innocent")).expect("symlink");
    // One process per form: repeated opens of one file by one process are de-duplicated.
    let script = "cd sub && /usr/bin/cat ../a.txt > /dev/null; /usr/bin/cat ./link > /dev/null; \
                  /usr/bin/cat innocent > /dev/null; /usr/bin/cat ../sub/../a.txt > /dev/null";
    let out = std::process::Command::new(agent_monitor_e2e::binary())
        .current_dir(&f.ws)
        .arg("exec")
        .arg("--socket")
        .arg(&f.daemon.socket)
        .args([
            "--scope", "e2e", "--task", "paths-1", "--", "/bin/sh", "-c", script,
        ])
        .output()
        .expect("exec");
    assert_exit(&out, 0);
    let a = f.ws.join("a.txt");
    f.daemon
        .wait_record("reads of a.txt", |r| is_file(r, &a, "read"));
    let secret = f.daemon.wait_record("read through symlink", |r| {
        is_file(r, &f.ws.join("secret.txt"), "read")
    });
    assert_violation(&secret, "files", "files.deny");
    let cat_reads = || -> Vec<Value> {
        f.daemon
            .records()
            .into_iter()
            .filter(|r| {
                s(r, "/process/comm") == "cat"
                    && s(r, "/kind") == "file"
                    && s(r, "/file/path").starts_with(f.ws.to_str().unwrap_or_default())
            })
            .collect()
    };
    // The last cat's record may be in a later batch than the symlink read waited for.
    let reads = agent_monitor_e2e::wait_for("the reads of all four cats", || {
        let reads = cat_reads();
        (reads.len() >= 4).then_some(reads)
    });
    let paths: Vec<&str> = reads.iter().map(|r| s(r, "/file/path")).collect();
    // ../a.txt, ./link and ../sub/../a.txt all name a.txt; no record shows the string passed.
    assert_eq!(
        paths
            .iter()
            .filter(|p| **p == a.to_str().unwrap_or_default())
            .count(),
        3,
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .all(|p| !p.contains("..") && !p.ends_with("link") && !p.ends_with("innocent")),
        "{paths:?}"
    );
}

#[test]
fn repeated_identical_opens_are_counted_not_re_reported() {
    let f = fixture();
    let a = f.ws.join("a.txt");
    let script = format!(
        "for _ in range(50):\n  open('{a}').close()\nopen('{w}', 'a').close()\n",
        a = a.display(),
        w = f.ws.join("out/w.txt").display()
    );
    let before = f.daemon.get_json("/v1/status")["counters"]["deduplicated"]
        .as_u64()
        .unwrap_or(0);
    let out = f
        .daemon
        .exec("e2e", &["--task", "dedup-1"], &[PY, "-I", "-c", &script]);
    assert_exit(&out, 0);
    f.daemon.wait_record("the append", |r| {
        is_file(r, &f.ws.join("out/w.txt"), "create")
    });
    let reads = f
        .daemon
        .records()
        .into_iter()
        .filter(|r| is_file(r, &a, "read") && s(r, "/agent/task") == "dedup-1")
        .count();
    assert_eq!(
        reads, 1,
        "fifty identical reads within the window are one record"
    );
    let after = f.daemon.get_json("/v1/status")["counters"]["deduplicated"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        after - before >= 49,
        "the repeats are counted: {before} -> {after}"
    );
}
