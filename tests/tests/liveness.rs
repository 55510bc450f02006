//! The daemon cannot be made to stall: a DNS flood from an agent keeps the daemon's memory
//! bounded and the next violation is recorded as usual; a slow or full disk under the
//! audit log does not delay the verdicts of held operations, and no record is lost.
//!
//! The slow disk is a FUSE filesystem served by this test (the FUSE protocol on /dev/fuse,
//! no library) whose writes and syncs sleep as long as the test says; the full disk is a
//! small tmpfs filled up. Both are unmounted on drop, also when a test fails.

use std::{
    ffi::CString,
    fs,
    io::Write as _,
    net::UdpSocket,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use agent_monitor_e2e::{
    DEADLINE, Daemon, assert_exit, binary, cgroup2_root, http, remove_cgroup_tree, remove_pins,
    require_root, s, unique, wait_for, workspace,
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
    child: Option<Child>,
    dir: tempfile::TempDir,
    socket: PathBuf,
    audit: PathBuf,
    pins: PathBuf,
    cgroup_parent: String,
}

impl Monitor {
    fn start(scope: (&str, &str), audit: &Path) -> Self {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let scopes = dir.path().join("scopes");
        fs::create_dir(&scopes).expect("mkdir");
        fs::write(scopes.join(scope.0), scope.1).expect("write scope");
        let socket = dir.path().join("am.sock");
        let cgroup_parent = unique("am-e2e");
        let pins = PathBuf::from("/sys/fs/bpf").join(&cgroup_parent);
        let log = fs::File::create(dir.path().join("daemon.log")).expect("log");
        let child = Command::new(binary())
            .arg("run")
            .arg("--scopes")
            .arg(&scopes)
            .arg("--socket")
            .arg(&socket)
            .arg("--audit-log")
            .arg(audit)
            .arg("--pin-path")
            .arg(&pins)
            .args([
                "--cgroup-parent",
                &cgroup_parent,
                "--quiet",
                "--release-on-exit",
            ])
            .env("AGENT_MONITOR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent-monitor run");
        let mut m = Self {
            child: Some(child),
            dir,
            socket,
            audit: audit.to_path_buf(),
            pins,
            cgroup_parent,
        };
        wait_for("the daemon to answer on its socket", || {
            if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("daemon exited early ({status}):\n{}", m.log());
            }
            m.get("/v1/status").filter(|(code, _)| *code == 200)
        });
        m
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
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
        Command::new(binary())
            .arg("exec")
            .arg("--socket")
            .arg(&self.socket)
            .args(["--scope", scope, "--"])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run agent-monitor exec")
    }

    /// The complete lines of the audit log, parsed.
    fn records(&self) -> Vec<Value> {
        let text = fs::read_to_string(&self.audit).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            #[expect(clippy::cast_possible_wrap, reason = "pids fit in i32")]
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + DEADLINE;
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        if thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log());
        }
        remove_cgroup_tree(&cgroup2_root().join(&self.cgroup_parent));
        remove_pins(&self.pins);
    }
}

/// An enforced scope whose every open of a file the kernel has not judged yet is held for
/// the daemon's verdict (`kill-process`).
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

// ---------------------------------------------------------------------------------------
// The slow disk: a FUSE filesystem whose writes and syncs sleep
// ---------------------------------------------------------------------------------------

/// The files of the slow filesystem (one flat directory) and its delay.
#[derive(Default)]
struct SlowState {
    files: Vec<(String, Vec<u8>)>,
}

struct SlowFs {
    dir: tempfile::TempDir,
    /// Kept open while mounted (the server threads hold clones).
    _fuse: Arc<OwnedFd>,
    delay_ms: Arc<AtomicU64>,
    mounted: bool,
}

const ROOT: u64 = 1;

impl SlowFs {
    fn mount() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // SAFETY: a plain open of a device node.
        let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(
            fd >= 0,
            "open /dev/fuse: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd was just opened and is owned here.
        let fuse = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let target = CString::new(dir.path().to_string_lossy().as_bytes()).expect("path");
        let options = CString::new(format!(
            "fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other"
        ))
        .expect("options");
        // SAFETY: valid C strings; mounting is what this test does.
        let rc = unsafe {
            libc::mount(
                c"slowfs".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount fuse: {}", std::io::Error::last_os_error());
        let delay_ms = Arc::new(AtomicU64::new(0));
        let state = Arc::new(Mutex::new(SlowState::default()));
        for _ in 0..4 {
            let (fuse, delay, state) =
                (Arc::clone(&fuse), Arc::clone(&delay_ms), Arc::clone(&state));
            thread::spawn(move || serve(&fuse, &delay, &state));
        }
        Self {
            dir,
            _fuse: fuse,
            delay_ms,
            mounted: true,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl Drop for SlowFs {
    fn drop(&mut self) {
        self.set_delay(Duration::ZERO);
        if self.mounted {
            let target = CString::new(self.dir.path().to_string_lossy().as_bytes()).expect("path");
            // SAFETY: unmounting what this test mounted.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            self.mounted = false;
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

fn name_at(b: &[u8], at: usize) -> String {
    let raw = b.get(at..).unwrap_or_default();
    let end = raw.iter().position(|c| *c == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// `struct fuse_attr` (88 bytes).
fn attr(ino: u64, size: u64) -> Vec<u8> {
    let mode: u32 = if ino == ROOT { 0o040_755 } else { 0o100_644 };
    let mut a = Vec::with_capacity(88);
    for v in [ino, size, size.div_ceil(512), 0, 0, 0] {
        a.extend_from_slice(&v.to_le_bytes());
    }
    for v in [
        0u32,
        0,
        0,
        mode,
        if ino == ROOT { 2 } else { 1 },
        0,
        0,
        0,
        4096,
        0,
    ] {
        a.extend_from_slice(&v.to_le_bytes());
    }
    a
}

/// `struct fuse_entry_out` (128 bytes), nothing cached.
fn entry(ino: u64, size: u64) -> Vec<u8> {
    let mut e = Vec::with_capacity(128);
    for v in [ino, 0, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&attr(ino, size));
    e
}

/// `struct fuse_open_out`: direct I/O (every write(2) reaches this server at once).
fn open_out() -> Vec<u8> {
    let mut o = vec![0; 8];
    o.extend_from_slice(&1u32.to_le_bytes());
    o.extend_from_slice(&[0; 4]);
    o
}

/// Serves requests until the filesystem is unmounted.
fn serve(fuse: &OwnedFd, delay: &AtomicU64, state: &Mutex<SlowState>) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        // SAFETY: reading into a buffer we own.
        let n = unsafe { libc::read(fuse.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let Ok(n) = usize::try_from(n) else {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN | libc::ENOENT) => continue,
                _ => return,
            }
        };
        let req = &buf[..n];
        let unique = u64_at(req, 8);
        let Some(reply) = handle(req, delay, state) else {
            continue;
        };
        let (error, payload) = match reply {
            Ok(p) => (0i32, p),
            Err(e) => (-e, Vec::new()),
        };
        let mut out = Vec::with_capacity(16 + payload.len());
        out.extend_from_slice(
            &u32::try_from(16 + payload.len())
                .expect("small")
                .to_le_bytes(),
        );
        out.extend_from_slice(&error.to_le_bytes());
        out.extend_from_slice(&unique.to_le_bytes());
        out.extend_from_slice(&payload);
        // SAFETY: writing a buffer we own. A reply to an interrupted request may fail.
        unsafe { libc::write(fuse.as_raw_fd(), out.as_ptr().cast(), out.len()) };
    }
}

/// The file a node id names (files are numbered from 2; 1 is the root).
fn file_index(node: u64) -> Option<usize> {
    node.checked_sub(2).and_then(|i| usize::try_from(i).ok())
}

fn ino_of(i: usize) -> u64 {
    u64::try_from(i).expect("small") + 2
}

/// The answer to one request (`fuse_in_header` then its body); None for those that get
/// none (`FORGET`, `BATCH_FORGET`, `INTERRUPT`).
fn handle(req: &[u8], delay: &AtomicU64, state: &Mutex<SlowState>) -> Option<Result<Vec<u8>, i32>> {
    let (opcode, node) = (u32_at(req, 4), u64_at(req, 16));
    let body = &req[40.min(req.len())..];
    let sleep = || thread::sleep(Duration::from_millis(delay.load(Ordering::Relaxed)));
    let mut st = state.lock().expect("state");
    Some(match opcode {
        2 | 42 | 36 => return None,
        26 => Ok(init_out(u32_at(body, 8))),
        // LOOKUP
        1 => {
            let name = name_at(body, 0);
            match st.files.iter().position(|(n, _)| *n == name) {
                Some(i) if node == ROOT => Ok(entry(ino_of(i), st.files[i].1.len() as u64)),
                _ => Err(libc::ENOENT),
            }
        }
        // GETATTR, SETATTR (only the size is kept)
        3 | 4 => {
            let size = match file_index(node).and_then(|i| st.files.get_mut(i)) {
                Some((_, data)) => {
                    if opcode == 4 && u32_at(body, 0) & (1 << 3) != 0 {
                        data.resize(usize::try_from(u64_at(body, 16)).unwrap_or(0), 0);
                    }
                    data.len() as u64
                }
                None => 0,
            };
            let mut o = vec![0u8; 16];
            o.extend_from_slice(&attr(node, size));
            Ok(o)
        }
        // OPEN, OPENDIR
        14 | 27 => Ok(open_out()),
        // CREATE
        35 => {
            let name = name_at(body, 16);
            let i = if let Some(i) = st.files.iter().position(|(n, _)| *n == name) {
                i
            } else {
                st.files.push((name, Vec::new()));
                st.files.len() - 1
            };
            let mut o = entry(ino_of(i), st.files[i].1.len() as u64);
            o.extend_from_slice(&open_out());
            Ok(o)
        }
        // READ
        15 => {
            let (offset, size) = (u64_at(body, 8), u32_at(body, 16) as usize);
            let data = file_index(node)
                .and_then(|i| st.files.get(i))
                .map(|(_, d)| d.as_slice());
            let data = data.unwrap_or_default();
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(data.len());
            Ok(data[start..(start + size).min(data.len())].to_vec())
        }
        // WRITE and FSYNC sleep first (without the state locked).
        16 | 20 => {
            drop(st);
            sleep();
            if opcode == 20 {
                return Some(Ok(Vec::new()));
            }
            let mut st = state.lock().expect("state");
            write(&mut st, node, body)
        }
        // RELEASE, FLUSH, RELEASEDIR, FSYNCDIR, DESTROY
        18 | 25 | 29 | 30 | 38 => Ok(Vec::new()),
        17 => Ok(statfs_out()),
        _ => Err(libc::ENOSYS),
    })
}

/// `struct fuse_init_out`: protocol 7.31, big writes of up to 128 KiB.
fn init_out(max_readahead: u32) -> Vec<u8> {
    let mut o = Vec::with_capacity(64);
    for v in [7u32, 31, max_readahead, 1 << 5] {
        o.extend_from_slice(&v.to_le_bytes());
    }
    o.extend_from_slice(&16u16.to_le_bytes());
    o.extend_from_slice(&12u16.to_le_bytes());
    o.extend_from_slice(&(128u32 * 1024).to_le_bytes());
    o.extend_from_slice(&1u32.to_le_bytes());
    o.extend_from_slice(&32u16.to_le_bytes());
    o.resize(64, 0);
    o
}

/// `struct fuse_kstatfs`.
fn statfs_out() -> Vec<u8> {
    let mut o = Vec::with_capacity(80);
    for v in [1u64 << 20, 1 << 19, 1 << 19, 1 << 10, 1 << 9] {
        o.extend_from_slice(&v.to_le_bytes());
    }
    for v in [4096u32, 255, 4096] {
        o.extend_from_slice(&v.to_le_bytes());
    }
    o.resize(80, 0);
    o
}

/// WRITE: `fuse_write_in` (40 bytes) then the data, at the offset the kernel chose.
fn write(st: &mut SlowState, node: u64, body: &[u8]) -> Result<Vec<u8>, i32> {
    let (offset, size) = (u64_at(body, 8), u32_at(body, 16) as usize);
    let payload = body.get(40..40 + size).unwrap_or_default();
    let (_, data) = file_index(node)
        .and_then(|i| st.files.get_mut(i))
        .ok_or(libc::EIO)?;
    let at = usize::try_from(offset).unwrap_or(0);
    if data.len() < at + payload.len() {
        data.resize(at + payload.len(), 0);
    }
    data[at..at + payload.len()].copy_from_slice(payload);
    let mut o = u32::try_from(payload.len())
        .expect("small")
        .to_le_bytes()
        .to_vec();
    o.extend_from_slice(&[0; 4]);
    Ok(o)
}

#[test]
fn a_slow_disk_under_the_audit_log_does_not_delay_verdicts_of_held_operations() {
    let slow = SlowFs::mount();
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

struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "am-full"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert_exit(&out, 0);
        Self { dir }
    }

    /// Fills the filesystem with a file `filler` until it is full.
    fn fill(&self, filler: &str) -> PathBuf {
        let filler = self.dir.path().join(filler);
        let mut f = fs::File::create(&filler).expect("create filler");
        let chunk = vec![b'x'; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-l"])
            .arg(self.dir.path())
            .output();
    }
}

#[test]
fn a_full_disk_is_reported_verdicts_go_on_and_the_records_follow_when_space_returns() {
    let disk = Tmpfs::mount("1m");
    let (_guard, ws) = workspace();
    let audit = disk.dir.path().join("audit.jsonl");
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
