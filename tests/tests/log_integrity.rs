//! The audit log stays whole when the disk fails under it (issue 21): a batch that fails
//! half-way (a full tmpfs, writes failing with EIO) leaves no partial line, `records`
//! counts only what is on disk, records that had to be dropped are counted
//! (`audit_records_dropped`) and a `gap` record in the log says how many and when, and
//! enforcement goes on meanwhile.
//!
//! The full disk is a small tmpfs filled up; the failing disk a FUSE filesystem served by
//! this test (the FUSE protocol on /dev/fuse, no library, as in liveness.rs) whose writes
//! store a given number of bytes and then fail with EIO (this kernel has no dm-error). Both
//! are unmounted on drop, also when a test fails.

use std::{
    ffi::CString,
    fs,
    io::Write as _,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use agent_monitor_e2e::{
    DEADLINE, assert_exit, binary, cgroup2_root, http, remove_cgroup_tree, remove_pins,
    require_root, s, unique, wait_for,
};
use serde_json::Value;

const PY: &str = "/usr/bin/python3";

/// Files the bulk agent opens while the disk is full: more records than the audit
/// writer's queue holds (16,384), so some must be dropped.
const BULK: usize = 24_000;

// ---------------------------------------------------------------------------------------
// A daemon whose audit log is on a given filesystem
// ---------------------------------------------------------------------------------------

/// `agent-monitor run` with the audit log at a path of the test's choosing; stopped, its
/// cgroups and pins removed on drop.
struct Monitor {
    child: Option<Child>,
    dir: tempfile::TempDir,
    socket: PathBuf,
    audit: PathBuf,
    pins: PathBuf,
    cgroup_parent: String,
}

impl Monitor {
    fn start(scopes: &[(&str, &str)], audit: &Path) -> Self {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let scopes_dir = dir.path().join("scopes");
        fs::create_dir(&scopes_dir).expect("mkdir");
        for (name, yaml) in scopes {
            fs::write(scopes_dir.join(name), yaml).expect("write scope");
        }
        let socket = dir.path().join("am.sock");
        let cgroup_parent = unique("am-e2e");
        let pins = PathBuf::from("/sys/fs/bpf").join(&cgroup_parent);
        let log = fs::File::create(dir.path().join("daemon.log")).expect("log");
        let child = Command::new(binary())
            .arg("run")
            .arg("--scopes")
            .arg(&scopes_dir)
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

    fn counters(&self) -> Value {
        let (_, body) = self
            .get("/v1/status")
            .unwrap_or_else(|| panic!("status: no answer\n{}", self.log()));
        let v: Value = serde_json::from_str(&body).expect("status JSON");
        v["counters"].clone()
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters()[name].as_u64().unwrap_or(0)
    }

    /// A counter of `GET /metrics` (0 when absent).
    fn metric(&self, name: &str) -> u64 {
        let body = self.get("/metrics").map(|(_, b)| b).unwrap_or_default();
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
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

    /// The audit log as it is on disk: its raw bytes.
    fn raw(&self) -> Vec<u8> {
        fs::read(&self.audit).unwrap_or_default()
    }

    /// Every line of the audit log, parsed; fails the test on a line that is not JSON or a
    /// last line without its newline (a partial line).
    fn whole_lines(&self) -> Vec<Value> {
        let (lines, tail) = self.lines_and_tail();
        assert!(
            tail.is_empty(),
            "the audit log ends in a partial line: {tail:?}"
        );
        lines
    }

    /// The complete lines of the audit log, parsed (failing the test on one that is not
    /// JSON: a fragment glued to a record), and what follows the last newline.
    fn lines_and_tail(&self) -> (Vec<Value>, String) {
        let raw = self.raw();
        let text = String::from_utf8_lossy(&raw);
        let end = text.rfind('\n').map_or(0, |i| i + 1);
        let lines = text[..end]
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"))
            })
            .collect();
        (lines, text[end..].to_owned())
    }

    /// Waits until every record the daemon counts as written is on disk and nothing else
    /// is (lines == `records`), with `ready` true of the lines; returns them.
    fn wait_consistent(&self, what: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            // A fragment may stay at the end while the disk fails; it must be gone once
            // the writer is through.
            let (lines, tail) = self.lines_and_tail();
            let records = self.counter("records");
            if tail.is_empty() && lines.len() as u64 == records && ready(&lines) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {} lines on disk, records = {records}\n{}",
                lines.len(),
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
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

/// `bulk`: an audited agent that may read the workspace (each open one record);
/// `guard`: an enforced one for which `secret.txt` is denied (the kernel kills at open).
fn scopes(ws: &Path) -> [(&'static str, String); 2] {
    [
        (
            "bulk.yaml",
            format!(
                r#"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {{name: bulk, owner: integrity@example.org}}
spec:
  mode: audit
  exec:
    allow: [/usr/bin/python3*]
  files:
    read: ["{ws}/**"]
"#,
                ws = ws.display()
            ),
        ),
        (
            "guard.yaml",
            format!(
                r#"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {{name: guard, owner: integrity@example.org}}
spec:
  mode: enforce
  onViolation: kill-process
  exec:
    allow: [/usr/bin/cat]
  files:
    read: ["{ws}/**"]
    deny: ["{ws}/secret.txt"]
"#,
                ws = ws.display()
            ),
        ),
    ]
}

/// Opens `files/<tag>-<i>` for i in 0..n (created here first), one record each.
fn bulk_opens(m: &Monitor, ws: &Path, tag: &str, n: usize) {
    let dir = ws.join("files");
    fs::create_dir_all(&dir).expect("mkdir files");
    for i in 0..n {
        fs::write(dir.join(format!("{tag}-{i}")), "x").expect("write");
    }
    let script = format!(
        "for i in range({n}):\n  open('{dir}/{tag}-%d' % i).close()",
        dir = dir.display()
    );
    let out = m.exec("bulk", &[PY, "-I", "-c", &script]);
    assert_exit(&out, 0);
}

/// The guard agent reads the denied file: the kernel kills it (exit 137), however the
/// audit log fares.
fn enforcement_goes_on(m: &Monitor, ws: &Path) {
    let secret = ws.join("secret.txt");
    fs::write(&secret, "TOPSECRET\n").expect("write");
    let out = m.exec("guard", &["/usr/bin/cat", &secret.to_string_lossy()]);
    assert_exit(&out, 137);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("TOPSECRET"),
        "{out:?}"
    );
}

fn records_of(lines: &[Value], ws: &Path, tag: &str) -> usize {
    let prefix = ws.join("files").join(format!("{tag}-"));
    let prefix = prefix.to_string_lossy();
    lines
        .iter()
        .filter(|r| s(r, "/file/path").starts_with(&*prefix))
        .count()
}

fn gaps(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|r| s(r, "/kind") == "gap").collect()
}

// ---------------------------------------------------------------------------------------
// The full disk: a tmpfs, filled up, then freed
// ---------------------------------------------------------------------------------------

struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "am-integrity"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert_exit(&out, 0);
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        fs::canonicalize(self.dir.path()).expect("canonicalize")
    }

    /// Fills the filesystem with a file `filler` until it is full.
    fn fill(&self, filler: &str) -> PathBuf {
        let filler = self.dir.path().join(filler);
        let mut f = fs::File::create(&filler).expect("create filler");
        let chunk = vec![b'x'; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        // The last pages, byte-sized.
        while f.write_all(b"x").is_ok() {}
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
fn a_full_disk_then_freed_leaves_whole_lines_and_every_lost_record_counted_and_told() {
    let disk = Tmpfs::mount("64m");
    // The agents' files on a tmpfs of their own (fast to create, not the full one).
    let work = Tmpfs::mount("256m");
    let ws = work.path();
    let audit = disk.path().join("audit.jsonl");
    let [(bulk_file, bulk), (guard_file, guard)] = scopes(&ws);
    let m = Monitor::start(&[(bulk_file, &bulk), (guard_file, &guard)], &audit);
    bulk_opens(&m, &ws, "before", 50);
    m.wait_consistent("the records before the disk fills", |l| {
        records_of(l, &ws, "before") == 50
    });

    // The disk fills up; an agent makes more records than the writer's queue holds.
    let filler = disk.fill("filler");
    bulk_opens(&m, &ws, "full", BULK);
    enforcement_goes_on(&m, &ws);
    wait_for("records to be dropped and counted", || {
        (m.counter("audit_records_dropped") > 0 && m.counter("audit_write_errors") > 0)
            .then_some(())
    });
    let during = m.counters();
    // Meanwhile nothing is counted that is not on disk, and the log is whole.
    let lines = m.whole_lines();
    assert_eq!(
        lines.len() as u64,
        during["records"].as_u64().unwrap_or(0),
        "records counted while the disk is full: {during}"
    );
    assert!(
        records_of(&lines, &ws, "full") < BULK,
        "the disk was not full"
    );

    // Space returns: what was queued follows, after a gap record for what was dropped.
    fs::remove_file(&filler).expect("remove filler");
    let told = |l: &[Value]| -> u64 { gaps(l).iter().filter_map(|g| g["lost"].as_u64()).sum() };
    let lines = m.wait_consistent("the queued records and gap records for every loss", |l| {
        records_of(l, &ws, "full") > 0
            && told(l) > 0
            && told(l) == m.counter("audit_records_dropped")
    });
    // Whatever is written after this is counted, not lost.
    let after = m.counters();
    let dropped = after["audit_records_dropped"].as_u64().unwrap_or(0);
    let gap_lines = gaps(&lines);
    let told = told(&lines);
    let full = records_of(&lines, &ws, "full");
    eprintln!(
        "disk full then freed: {} lines, {full} of {BULK} bulk records written, {dropped} dropped, {} gap record(s) telling of {told}, {} failed writes; counters {after}",
        lines.len(),
        gap_lines.len(),
        after["audit_write_errors"]
    );
    assert_eq!(told, dropped, "gap records tell of every dropped record");
    for g in &gap_lines {
        assert!(g["lost"].as_u64().unwrap_or(0) > 0, "{g}");
        assert!(s(g, "/since") <= s(g, "/time"), "{g}");
    }
    // Every bulk open is a record written or one counted as dropped, unless the kernel
    // could not deliver its event (ring buffer full: counted as `dropped` there).
    let kernel_dropped = after["dropped"].as_u64().unwrap_or(0);
    assert!(
        full as u64 + dropped + kernel_dropped >= BULK as u64,
        "{full} written + {dropped} dropped + {kernel_dropped} not delivered of {BULK}"
    );
    assert_eq!(
        m.metric("agent_monitor_audit_records_dropped_total"),
        dropped,
        "/metrics says so too"
    );
    // The log goes on as usual.
    bulk_opens(&m, &ws, "after", 50);
    m.wait_consistent("the records after", |l| records_of(l, &ws, "after") == 50);
    assert_eq!(
        m.counter("audit_records_dropped"),
        dropped,
        "nothing more lost"
    );
}

// ---------------------------------------------------------------------------------------
// The failing disk: a FUSE filesystem whose writes fail with EIO half-way
// ---------------------------------------------------------------------------------------

#[test]
fn writes_failing_with_eio_half_way_leave_no_partial_line_and_are_retried() {
    let disk = FaultyFs::mount();
    let work = Tmpfs::mount("64m");
    let ws = work.path();
    let audit = disk.path().join("audit.jsonl");
    let [(bulk_file, bulk), (guard_file, guard)] = scopes(&ws);
    let m = Monitor::start(&[(bulk_file, &bulk), (guard_file, &guard)], &audit);
    bulk_opens(&m, &ws, "before", 20);
    m.wait_consistent("the records before the failures", |l| {
        records_of(l, &ws, "before") == 20
    });

    // The next batch gets 300 bytes in (half a record), then EIO: the daemon cuts the
    // fragment off and retries.
    disk.fail_after(Some(300), false);
    bulk_opens(&m, &ws, "eio", 200);
    enforcement_goes_on(&m, &ws);
    wait_for("failed writes to be counted", || {
        (disk.failed_writes() > 0 && m.counter("audit_write_errors") > 0).then_some(())
    });
    let lines = m.whole_lines();
    assert_eq!(
        lines.len() as u64,
        m.counter("records"),
        "only records on disk are counted"
    );
    assert!(records_of(&lines, &ws, "eio") < 200, "the writes did fail");

    // Worse: the cut fails too, so a fragment stays in the file while writes fail. It is
    // cut before anything else is written.
    disk.fail_after(Some(0), false);
    bulk_opens(&m, &ws, "cutfail", 10);
    thread::sleep(Duration::from_millis(300));
    disk.fail_after(Some(150), true);
    bulk_opens(&m, &ws, "cutfail2", 10);
    wait_for(
        "a write that fails half-way with the cut failing too",
        || {
            let raw = m.raw();
            (!raw.is_empty() && !raw.ends_with(b"\n")).then_some(())
        },
    );
    // The writer tries again, fails (at the cut: nothing reaches the disk) and counts it.
    let errors = m.counter("audit_write_errors");
    wait_for("the writer to try again", || {
        (m.counter("audit_write_errors") > errors + 1).then_some(())
    });
    assert!(
        !m.raw().ends_with(b"\n"),
        "the fragment is still there: the writer does not write past it"
    );

    // The disk heals: the fragment goes, every record follows, nothing was lost.
    disk.fail_after(None, false);
    let lines = m.wait_consistent("every record after the disk healed", |l| {
        records_of(l, &ws, "eio") == 200
            && records_of(l, &ws, "cutfail") == 10
            && records_of(l, &ws, "cutfail2") == 10
    });
    assert!(gaps(&lines).is_empty(), "nothing was dropped");
    assert_eq!(m.counter("audit_records_dropped"), 0);
    eprintln!(
        "EIO half-way: {} lines, all whole; {} failed writes ({} counted by the daemon)",
        lines.len(),
        disk.failed_writes(),
        m.counter("audit_write_errors")
    );
}

// ---------------------------------------------------------------------------------------
// The faulty filesystem (after liveness.rs's slow one)
// ---------------------------------------------------------------------------------------

/// The files of the faulty filesystem (one flat directory).
#[derive(Default)]
struct FsState {
    files: Vec<(String, Vec<u8>)>,
}

/// What the faulty filesystem fails.
struct Faults {
    /// Bytes writes may still store (negative: no limit). A write beyond it stores what
    /// fits (a short write) and the next one fails with EIO: a batch fails half-way.
    budget: AtomicI64,
    /// Truncation (the daemon's cut back to the last whole line) fails with EIO too.
    fail_truncate: AtomicBool,
    /// Writes that failed with EIO.
    failed_writes: AtomicU64,
}

struct FaultyFs {
    dir: tempfile::TempDir,
    /// Kept open while mounted (the server threads hold clones).
    _fuse: Arc<OwnedFd>,
    faults: Arc<Faults>,
    mounted: bool,
}

const ROOT: u64 = 1;

impl FaultyFs {
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
                c"faultyfs".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount fuse: {}", std::io::Error::last_os_error());
        let faults = Arc::new(Faults {
            budget: AtomicI64::new(-1),
            fail_truncate: AtomicBool::new(false),
            failed_writes: AtomicU64::new(0),
        });
        let state = Arc::new(Mutex::new(FsState::default()));
        for _ in 0..4 {
            let (fuse, faults, state) =
                (Arc::clone(&fuse), Arc::clone(&faults), Arc::clone(&state));
            thread::spawn(move || serve(&fuse, &faults, &state));
        }
        Self {
            dir,
            _fuse: fuse,
            faults,
            mounted: true,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes store at most `bytes` more, then fail with EIO (None: no limit); with
    /// `fail_truncate` the cut fails too.
    fn fail_after(&self, bytes: Option<u64>, fail_truncate: bool) {
        self.faults
            .fail_truncate
            .store(fail_truncate, Ordering::Relaxed);
        self.faults.budget.store(
            bytes.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            Ordering::Relaxed,
        );
    }

    fn failed_writes(&self) -> u64 {
        self.faults.failed_writes.load(Ordering::Relaxed)
    }
}

impl Drop for FaultyFs {
    fn drop(&mut self) {
        self.fail_after(None, false);
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
fn serve(fuse: &OwnedFd, faults: &Faults, state: &Mutex<FsState>) {
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
        let Some(reply) = handle(req, faults, state) else {
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
fn handle(req: &[u8], faults: &Faults, state: &Mutex<FsState>) -> Option<Result<Vec<u8>, i32>> {
    let (opcode, node) = (u32_at(req, 4), u64_at(req, 16));
    let body = &req[40.min(req.len())..];
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
            let truncate = opcode == 4 && u32_at(body, 0) & (1 << 3) != 0;
            if truncate && faults.fail_truncate.load(Ordering::Relaxed) {
                return Some(Err(libc::EIO));
            }
            let size = match file_index(node).and_then(|i| st.files.get_mut(i)) {
                Some((_, data)) => {
                    if truncate {
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
        16 => write(&mut st, faults, node, body),
        // FSYNC, RELEASE, FLUSH, RELEASEDIR, FSYNCDIR, DESTROY
        20 | 18 | 25 | 29 | 30 | 38 => Ok(Vec::new()),
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

/// WRITE: `fuse_write_in` (40 bytes) then the data, at the offset the kernel chose; as much
/// of it as the budget allows, EIO when nothing is left.
fn write(st: &mut FsState, faults: &Faults, node: u64, body: &[u8]) -> Result<Vec<u8>, i32> {
    let (offset, size) = (u64_at(body, 8), u32_at(body, 16) as usize);
    let mut payload = body.get(40..40 + size).unwrap_or_default();
    let budget = faults.budget.load(Ordering::Relaxed);
    if budget >= 0 {
        let room = usize::try_from(budget).unwrap_or(usize::MAX);
        if room == 0 {
            faults.failed_writes.fetch_add(1, Ordering::Relaxed);
            return Err(libc::EIO);
        }
        payload = &payload[..payload.len().min(room)];
        faults.budget.fetch_sub(
            i64::try_from(payload.len()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
    }
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
