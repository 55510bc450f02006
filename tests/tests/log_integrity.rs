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
    fs,
    path::{Path, PathBuf},
    process::Output,
    thread,
    time::{Duration, Instant},
};

use agent_monitor_e2e::{
    DEADLINE, Daemon, assert_exit, http,
    memfs::{MemFs, Tmpfs},
    s, wait_for,
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
    d: Daemon,
    socket: PathBuf,
    audit: PathBuf,
}

impl Monitor {
    fn start(scopes: &[(&str, &str)], audit: &Path) -> Self {
        let audit = audit.to_str().expect("UTF-8 path");
        let d = Daemon::start_with(scopes, &["--audit-log", audit]);
        Self {
            socket: d.socket.clone(),
            audit: d.audit.clone(),
            d,
        }
    }

    fn log(&self) -> String {
        self.d.log()
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
        self.d.exec(scope, &[], cmd)
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
    let disk = MemFs::mount();
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
