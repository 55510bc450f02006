//! The status socket under load (issue 21): a burst of 1,000 connections is queued and
//! answered, none reset; 200 slowloris connections of a socket-group member hold nothing for
//! long, root's `status` and `exec` keep working meanwhile, and the daemon's log gets a few
//! refusal warnings, not one per connection; `exec` retries a daemon that is not there for
//! a few seconds, then says so.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream, process::CommandExt as _},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use agent_monitor_e2e::{DEADLINE, Daemon, binary, parse_curl, wait_or_kill};
use serde_json::Value;

const SCOPE: &str = "apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata:
  name: load
  owner: load@example.org
spec:
  mode: audit
  exec:
    allow: [/usr/bin/true]
";

/// The concurrent connections of the burst.
const BURST: usize = 1000;
/// The slowloris connections the attacker keeps open.
const SLOWLORIS: usize = 200;
/// How long the attacker keeps them open.
const ATTACK: Duration = Duration::from_secs(20);
/// Root's `status` and `exec`, and a request of another member of the socket group, each
/// finish within this during the attack.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// No attacker connection is held longer than this: the wait for a slot (5 s), the head
/// deadline of a `503 busy` answer (1 s) and of a served connection (2 s), and slack.
const LONGEST_HOLD: Duration = Duration::from_secs(10);
/// The daemon's rate-limited warning about refused connections.
const REFUSAL_WARNING: &str = "status socket: refused or cut off connections";

/// Raises this process's descriptor limit for the burst's client ends.
fn raise_fd_limit(want: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit), 0);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit), 0);
        }
    }
}

fn http_code(response: &[u8]) -> u16 {
    String::from_utf8_lossy(response)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn refusal_warnings(d: &Daemon) -> usize {
    d.log()
        .lines()
        .filter(|l| l.contains(REFUSAL_WARNING))
        .count()
}

#[test]
fn a_burst_of_1000_concurrent_connections_is_answered_none_reset() {
    let d = Daemon::start(&[("load.yaml", SCOPE)]);
    raise_fd_limit(4096);
    let start = Instant::now();
    // All connected before the first request is sent: 1,000 connections at once.
    let mut conns: Vec<UnixStream> = (0..BURST)
        .map(|i| {
            UnixStream::connect(&d.socket)
                .unwrap_or_else(|e| panic!("connect {i} of {BURST}: {e}\n{}", d.log()))
        })
        .collect();
    let connected = start.elapsed();
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: am\r\nConnection: close\r\n\r\n")
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
    }
    // The daemon answers them concurrently; reading them in order takes as long as the
    // last answer (each fits in the socket's buffer).
    let (mut ok, mut busy) = (0, 0);
    for (i, mut s) in conns.into_iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let mut answer = Vec::new();
        if let Err(e) = s.read_to_end(&mut answer) {
            panic!(
                "connection {i}: {e} after {} bytes (reset?)\n{}",
                answer.len(),
                d.log()
            );
        }
        match http_code(&answer) {
            200 => ok += 1,
            503 => busy += 1,
            _ => panic!(
                "connection {i}: not answered 200 or 503: {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(300)])
            ),
        }
    }
    let answered = start.elapsed();
    eprintln!(
        "burst: {BURST} connections connected in {connected:?}; {ok} answered 200 and {busy} \
         503 busy, all within {answered:?}"
    );
    assert_eq!(ok + busy, BURST);
    assert!(
        ok >= BURST / 2,
        "a burst from root is queued, not shed: {ok} of {BURST} served"
    );
    assert_eq!(d.request("GET", "/v1/status", None).0, 200);
}

/// Keeps `want` connections open for `secs`, each with a request head that never ends
/// (one more byte every 0.5 s); reopens those the daemon closes. Prints "holding" once all
/// are open, and at the end a JSON report.
const SLOWLORIS_PY: &str = r#"
import json, select, socket, sys, time
path, want, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
HEAD = b"GET /v1/status HTTP/1.1\r\nHost: am\r\n"
conns = {}
stats = dict(opened=0, cut=0, answered=0, connect_failed=0, longest=0.0)
end = time.monotonic() + secs
announced = False
last_trickle = 0.0
poll = select.poll()
def top_up():
    while len(conns) < want:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(path)
            s.sendall(HEAD)
        except OSError:
            stats["connect_failed"] += 1
            s.close()
            return
        s.setblocking(False)
        conns[s.fileno()] = (s, time.monotonic())
        poll.register(s.fileno(), select.POLLIN)
        stats["opened"] += 1
while time.monotonic() < end:
    top_up()
    if not announced and len(conns) >= want:
        print("holding", flush=True)
        announced = True
    now = time.monotonic()
    for fd, _ in poll.poll(200):
        s, opened = conns.pop(fd)
        poll.unregister(fd)
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        stats["answered" if data else "cut"] += 1
        stats["longest"] = max(stats["longest"], time.monotonic() - opened)
        s.close()
    if now - last_trickle >= 0.5:
        last_trickle = now
        for s, _ in conns.values():
            try:
                s.send(b"X")
            except OSError:
                pass
for s, opened in conns.values():
    stats["longest"] = max(stats["longest"], time.monotonic() - opened)
    s.close()
print(json.dumps(stats), flush=True)
"#;

/// The lines a child prints, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs a client command, killed past `CLIENT_DEADLINE`; returns how long it took.
fn within_deadline(what: &str, mut child: Child) -> Duration {
    let start = Instant::now();
    let (status, hung) = wait_or_kill(&mut child, CLIENT_DEADLINE);
    let took = start.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(!hung, "{what} did not finish within {CLIENT_DEADLINE:?}");
    assert!(status.success(), "{what}: {status}: {stderr}");
    took
}

fn status_cli(socket: &Path) -> Child {
    Command::new(binary())
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent-monitor status")
}

#[test]
fn slowloris_of_a_group_member_holds_nothing_for_long_and_root_keeps_working() {
    // 65534: nobody / nogroup.
    let d = Daemon::start_with(&[("load.yaml", SCOPE)], &["--socket-group", "65534"]);
    // Let others reach the socket file itself (the test dir is 0700).
    fs::set_permissions(d.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let warnings_before = refusal_warnings(&d);
    let mut attacker = Command::new("/usr/bin/python3")
        .args(["-c", SLOWLORIS_PY])
        .arg(&d.socket)
        .args([SLOWLORIS.to_string(), ATTACK.as_secs().to_string()])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the slowloris attacker");
    let attack_start = Instant::now();
    let lines = lines_of(&mut attacker);
    let first = lines
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|e| panic!("the attacker never held {SLOWLORIS} connections: {e}"));
    assert_eq!(first, "holding");

    // While it lasts: root's status and exec, and a request of another group member.
    let (mut rounds, mut worst) = (0, Duration::ZERO);
    while attack_start.elapsed() + 2 * CLIENT_DEADLINE < ATTACK {
        let status = within_deadline("agent-monitor status", status_cli(&d.socket));
        let exec = within_deadline(
            "agent-monitor exec",
            d.exec_spawn("load", &["/usr/bin/true"]),
        );
        let start = Instant::now();
        let curl = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "5",
                "-w",
                "\n%{http_code}",
                "--unix-socket",
            ])
            .arg(&d.socket)
            .arg("http://agent-monitor/v1/status")
            .uid(65533)
            .gid(65534)
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        let member = start.elapsed();
        let (code, body) = parse_curl(&curl);
        assert_eq!(code, 200, "another uid of the socket group: {body}");
        assert!(member < CLIENT_DEADLINE, "another uid took {member:?}");
        worst = worst.max(status).max(exec).max(member);
        rounds += 1;
    }
    assert!(
        attacker.try_wait().expect("attacker").is_none(),
        "the attack lasted throughout"
    );
    eprintln!(
        "slowloris: {rounds} rounds of status + exec + another member's request, the slowest \
         {worst:?}"
    );

    let report = lines
        .recv_timeout(ATTACK + DEADLINE)
        .expect("the attacker's report");
    let (status, hung) = wait_or_kill(&mut attacker, DEADLINE);
    assert!(!hung && status.success(), "attacker: {status}");
    let report: Value = serde_json::from_str(&report).expect("report JSON");
    eprintln!("slowloris attacker: {report}");
    let longest = report["longest"].as_f64().expect("longest");
    assert!(
        longest < LONGEST_HOLD.as_secs_f64(),
        "a slowloris connection was held {longest} s: {report}"
    );
    assert!(
        report["cut"].as_u64().unwrap_or(0) >= SLOWLORIS as u64,
        "the daemon cut the slow connections: {report}"
    );
    assert_eq!(report["answered"], 0, "no slowloris head ever completed");

    // (3) A few warnings with counts, not one per connection: one at once, then at most one
    // per 10 s, plus the last counts.
    let warnings = refusal_warnings(&d) - warnings_before;
    let allowed = usize::try_from(ATTACK.as_secs() / 10).expect("small") + 2;
    let log = d.log();
    eprintln!("slowloris: {warnings} refusal warnings in the daemon's log");
    assert!(
        (1..=allowed).contains(&warnings),
        "{warnings} refusal warnings in {ATTACK:?} (allowed 1..={allowed}):\n{log}"
    );
    assert!(
        !log.contains("connection refused: too many connections"),
        "the per-connection warning is gone:\n{log}"
    );
}

#[test]
fn exec_retries_a_daemon_that_is_not_there_then_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("nobody-listens.sock");
    let start = Instant::now();
    let out = Command::new(binary())
        .args(["exec", "--socket"])
        .arg(&socket)
        .args(["--scope", "load", "--", "/usr/bin/true"])
        .stdin(Stdio::null())
        .output()
        .expect("run agent-monitor exec");
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("did not take the request"), "{stderr}");
    // Backoff for up to 5 s, not a failure at once nor a hang.
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "gave up after {took:?}: {stderr}"
    );
}
