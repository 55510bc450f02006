//! The daemon cannot be made to stall: a DNS flood from an agent keeps the daemon's memory
//! bounded and the next violation is recorded as usual; a slow or full disk under the
//! audit log does not delay the verdicts of held operations, and no record is lost.
//!
//! The slow disk is a FUSE filesystem served by this test (the FUSE protocol on /dev/fuse,
//! no library) whose writes and syncs sleep as long as the test says; the full disk is a
//! small tmpfs filled up. Both are unmounted on drop, also when a test fails.

use std::{
    fs,
    net::UdpSocket,
    path::{Path, PathBuf},
    process::Output,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use agent_monitor_e2e::{
    DEADLINE, Daemon, assert_exit, http,
    memfs::{MemFs, Tmpfs},
    s, wait_for, workspace,
};
use serde_json::Value;

const PY: &str = "/usr/bin/python3";

/// What a DNS flood may add to the daemon's resident memory. The resolver holds at most
/// 128 upstream questions in flight (64 KiB reply buffer each: 8 MiB), the out-of-scope
/// record queue 1024 questions, the audit writer's queue 16384 records (about 16 MiB);
/// the rest is allocator slack.
const FLOOD_RSS_MIB: u64 = 64;

/// Held opens each test times.
const N: usize = 20;

/// The write and sync delay of the slow disk, and what a verdict may take meanwhile.
const DISK_DELAY: Duration = Duration::from_secs(3);
const VERDICT_LIMIT: Duration = Duration::from_secs(1);

fn vm_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A counter of `GET /metrics` (0 when absent).
fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------
// DNS flood
// ---------------------------------------------------------------------------------------

fn flood_scope(ws: &Path) -> String {
    format!(
        r#"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {{name: flood, owner: liveness@example.org}}
spec:
  mode: enforce
  onViolation: alert
  exec:
    allow: [/usr/bin/python3*, /usr/bin/cat]
  files:
    read: ["{ws}/**"]
    deny: ["{ws}/secret.txt"]
  network:
    connect:
      - {{host: "*.flood.test", ports: [80]}}
"#,
        ws = ws.display()
    )
}

/// Sends `count` questions as fast as the socket takes them (half for names the scope
/// allows, which go to an upstream that never answers, half for names it does not), for
/// at most 4 s, reading whatever comes back; prints `sent N`, then `rcode R N` per answer
/// code seen.
const FLOOD: &str = r"import socket, time, sys
count = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
def q(i, name):
  return (i & 0xffff).to_bytes(2, 'big') + b'\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00' + b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\x00\x00\x01\x00\x01'
codes = {}
def drain():
  while True:
    try:
      data = s.recv(4096)
    except (BlockingIOError, InterruptedError):
      return
    if len(data) >= 4:
      codes[data[3] & 15] = codes.get(data[3] & 15, 0) + 1
sent = 0
end = time.monotonic() + 4
while sent < count and time.monotonic() < end:
  name = ('n%d.flood.test' if sent % 2 == 0 else 'n%d.elsewhere.test') % sent
  try:
    s.sendto(q(sent, name), ('127.0.0.1', 53))
    sent += 1
  except (BlockingIOError, InterruptedError):
    drain()
  if sent % 64 == 0:
    drain()
wait = time.monotonic() + 1
while time.monotonic() < wait:
  drain()
  time.sleep(0.01)
print('sent', sent, flush=True)
for c, n in sorted(codes.items()):
  print('rcode', c, n, flush=True)
";

/// Execs an agent that reads the denied file; returns how long until its violation record
/// is in the audit log.
fn time_a_violation(d: &Daemon, ws: &Path) -> Duration {
    let secret = ws.join("secret.txt");
    let before = d
        .records()
        .iter()
        .filter(|r| s(r, "/file/path") == secret.to_string_lossy())
        .count();
    let started = Instant::now();
    // onViolation: alert, so the read is recorded, not stopped.
    let _ = d.exec("flood", &[], &["/usr/bin/cat", &secret.to_string_lossy()]);
    wait_for("the violation record of the denied read", || {
        let n = d
            .records()
            .iter()
            .filter(|r| {
                s(r, "/file/path") == secret.to_string_lossy() && s(r, "/verdict") == "violation"
            })
            .count();
        (n > before).then_some(())
    });
    started.elapsed()
}

#[test]
fn a_dns_flood_keeps_the_daemons_memory_bounded_and_violations_recorded() {
    let (_guard, ws) = workspace();
    fs::write(ws.join("secret.txt"), "TOPSECRET\n").expect("write");
    // An upstream that never answers: every allowed question waits its full timeout.
    let black_hole = UdpSocket::bind("127.0.0.1:0").expect("bind the upstream");
    let upstream = black_hole.local_addr().expect("addr").to_string();
    let d = Daemon::start_with(
        &[("flood.yaml", &flood_scope(&ws))],
        &["--dns-upstream", &upstream],
    );
    let usual = time_a_violation(&d, &ws);
    let baseline = vm_rss_kib(d.pid());
    assert!(baseline > 0, "daemon RSS readable");

    // Sample the daemon's RSS while the agent floods its resolver.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let (stop, peak, pid) = (Arc::clone(&stop), Arc::clone(&peak), d.pid());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(vm_rss_kib(pid), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = d.exec("flood", &[], &[PY, "-I", "-c", FLOOD, "200000"]);
    // Right after the flood (the upstream questions still wait for their timeout), the
    // next violation is recorded as fast as before it.
    let after = time_a_violation(&d, &ws);
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    assert_exit(&out, 0);
    let lines = stdout_lines(&out);
    let peak = peak.load(Ordering::Relaxed);
    let metrics = d.request("GET", "/metrics", None).1;
    let overload = metric(&metrics, "agent_monitor_dns_refused_overload_total");
    eprintln!(
        "flood: {lines:?}; daemon RSS {} MiB before, {} MiB at most during; violation recorded in {usual:?} before, {after:?} after; {overload} questions refused for overload",
        baseline / 1024,
        peak / 1024
    );
    let sent: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("sent ")?.parse().ok())
        .unwrap_or(0);
    assert!(sent >= 5000, "the agent flooded its resolver: {lines:?}");
    assert!(
        peak <= baseline + FLOOD_RSS_MIB * 1024,
        "daemon RSS grew from {baseline} KiB to {peak} KiB (bound: +{FLOOD_RSS_MIB} MiB)"
    );
    // Beyond the in-flight bound, allowed questions were answered SERVFAIL at once and
    // counted; out-of-scope ones were still refused.
    assert!(overload > 0, "no question refused for overload:\n{metrics}");
    assert!(
        lines.iter().any(|l| l.starts_with("rcode 2 ")),
        "SERVFAIL answers: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("rcode 5 ")),
        "REFUSED answers: {lines:?}"
    );
    assert!(
        after <= usual + Duration::from_secs(2),
        "the violation after the flood took {after:?} (before it: {usual:?})"
    );
    // The daemon's own refusals are records too, and the status socket still answers.
    d.wait_record("a refused question of the flood", |r| {
        s(r, "/net/host").ends_with(".elsewhere.test") && s(r, "/action") == "blocked"
    });
    assert!(d.get_json("/v1/status")["tasks"].is_number());
}

// ---------------------------------------------------------------------------------------
// A daemon whose audit log is on a given filesystem
// ---------------------------------------------------------------------------------------

/// `agent-monitor run` with the audit log at a path of the test's choosing (the harness's
/// `Daemon` keeps it in its own directory); stopped, its cgroups and pins removed on drop.
struct Monitor {
    d: Daemon,
    socket: PathBuf,
}

impl Monitor {
    fn start(scope: (&str, &str), audit: &Path) -> Self {
        let audit = audit.to_str().expect("UTF-8 path");
        let d = Daemon::start_with(&[scope], &["--audit-log", audit]);
        Self {
            socket: d.socket.clone(),
            d,
        }
    }

    fn log(&self) -> String {
        self.d.log()
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        http::request(&self.socket, "GET", path, None, DEADLINE).ok()
    }

    fn counter(&self, name: &str) -> u64 {
        let (_, body) = self
            .get("/v1/status")
            .unwrap_or_else(|| panic!("status: no answer\n{}", self.log()));
        let v: Value = serde_json::from_str(&body).expect("status JSON");
        v["counters"][name].as_u64().unwrap_or(0)
    }

    fn exec(&self, scope: &str, cmd: &[&str]) -> Output {
        self.d.exec(scope, &[], cmd)
    }

    /// The complete lines of the audit log, parsed.
    fn records(&self) -> Vec<Value> {
        self.d.records()
    }
}

/// An enforced scope whose every open of a file the kernel has not judged yet is held for
/// the daemon's verdict (`kill-process`). The `*.key` deny glob could match a new file in
/// any directory, so no directory is found readable whole: each first open is held.
fn held_scope(ws: &Path) -> String {
    format!(
        r#"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {{name: held, owner: liveness@example.org}}
spec:
  mode: enforce
  onViolation: kill-process
  exec:
    allow: [/usr/bin/python3*]
  files:
    read: ["{ws}/**"]
    write: ["{ws}/**"]
    deny: ["{ws}/**/*.key"]
"#,
        ws = ws.display()
    )
}

/// Opens `n` files of the workspace the daemon has not judged (each open is held until
/// its verdict) and prints how long each open took, in microseconds.
fn held_opens(m: &Monitor, ws: &Path, tag: &str, n: usize) -> Vec<u64> {
    for i in 0..n {
        fs::write(ws.join(format!("{tag}-{i}.txt")), "x\n").expect("write");
    }
    let script = format!(
        "import time\nfor i in range({n}):\n  t = time.monotonic()\n  open('{ws}/{tag}-%d.txt' % i).read()\n  print(int((time.monotonic() - t) * 1e6), flush=True)",
        ws = ws.display()
    );
    let out = m.exec("held", &[PY, "-I", "-c", &script]);
    assert_exit(&out, 0);
    let times: Vec<u64> = stdout_lines(&out)
        .iter()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert_eq!(times.len(), n, "{out:?}");
    times
}

fn max_ms(times: &[u64]) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "microseconds")]
    let ms = times.iter().copied().max().unwrap_or(0) as f64 / 1000.0;
    ms
}

/// Waits until the audit log has an allowed record of every `<tag>-<i>.txt` open.
fn wait_for_open_records(m: &Monitor, ws: &Path, tag: &str, n: usize) {
    wait_for(&format!("the records of the {tag} opens"), || {
        let records = m.records();
        (0..n)
            .all(|i| {
                let path = ws.join(format!("{tag}-{i}.txt"));
                records.iter().any(|r| {
                    s(r, "/file/path") == path.to_string_lossy() && s(r, "/verdict") == "allowed"
                })
            })
            .then_some(())
    });
}

#[test]
fn a_slow_disk_under_the_audit_log_does_not_delay_verdicts_of_held_operations() {
    let slow = MemFs::mount();
    let (_guard, ws) = workspace();
    let audit = slow.path().join("audit.jsonl");
    let m = Monitor::start(("held.yaml", &held_scope(&ws)), &audit);
    // As fast as the disk: every open was held and answered.
    let held_before = m.counter("held");
    let fast = held_opens(&m, &ws, "fast", N);
    wait_for_open_records(&m, &ws, "fast", N);
    assert!(
        m.counter("held") >= held_before + N as u64,
        "the opens were held"
    );

    // Every write(2) and fdatasync of the audit log now takes DISK_DELAY.
    slow.set_delay(DISK_DELAY);
    let started = Instant::now();
    let slowed = held_opens(&m, &ws, "slow", N);
    let agent_took = started.elapsed();
    // The status socket answers meanwhile.
    let (code, _) = m.get("/v1/status").expect("status while the disk is slow");
    assert_eq!(code, 200);
    eprintln!(
        "held opens, slowest of {N}: {:.2} ms with a fast disk, {:.2} ms with {DISK_DELAY:?} per write and sync (agent ran {agent_took:?})",
        max_ms(&fast),
        max_ms(&slowed)
    );
    assert!(
        max_ms(&slowed) < VERDICT_LIMIT.as_secs_f64() * 1000.0,
        "a held open waited {:.0} ms for its verdict behind the disk: {slowed:?}",
        max_ms(&slowed)
    );
    // The verdicts came while the log was behind: the records of these opens were not
    // all written yet.
    let written = m
        .records()
        .iter()
        .filter(|r| s(r, "/file/path").contains("/slow-"))
        .count();
    assert!(
        written < N,
        "the disk was not slow: all {written} records already written"
    );
    // Nothing was lost: once the disk is fast again every record reaches the log.
    slow.set_delay(Duration::ZERO);
    wait_for_open_records(&m, &ws, "slow", N);
}

// ---------------------------------------------------------------------------------------
// The full disk: a small tmpfs, filled up
// ---------------------------------------------------------------------------------------

#[test]
fn a_full_disk_is_reported_verdicts_go_on_and_the_records_follow_when_space_returns() {
    let disk = Tmpfs::mount("1m");
    let (_guard, ws) = workspace();
    let audit = disk.path().join("audit.jsonl");
    let m = Monitor::start(("held.yaml", &held_scope(&ws)), &audit);
    let before = held_opens(&m, &ws, "before", N);
    wait_for_open_records(&m, &ws, "before", N);
    let filler = disk.fill("filler");
    let full = held_opens(&m, &ws, "full", N);
    eprintln!(
        "held opens, slowest of {N}: {:.2} ms with space, {:.2} ms with the disk full",
        max_ms(&before),
        max_ms(&full)
    );
    assert!(
        max_ms(&full) < VERDICT_LIMIT.as_secs_f64() * 1000.0,
        "a held open waited {:.0} ms with the disk full: {full:?}",
        max_ms(&full)
    );
    // The failures are counted and the daemon keeps running.
    wait_for("audit log write errors to be counted", || {
        (m.counter("audit_write_errors") > 0).then_some(())
    });
    let errors = m.counter("audit_write_errors");
    // Space returns: the records of the full period follow, whole lines only.
    fs::remove_file(&filler).expect("remove filler");
    wait_for_open_records(&m, &ws, "full", N);
    eprintln!("{errors} failed writes while the disk was full");
}
