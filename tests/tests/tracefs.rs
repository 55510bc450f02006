//! Tracepoint record layouts come from tracefs at load. The daemon reads the `format` files
//! from `AGENT_MONITOR_TRACEFS` when it is set: here a copy of this machine's, with one
//! field removed or moved. A required hook that cannot read its record stops the daemon
//! with a message naming the tracepoint and the field; an optional one is left unattached
//! with that message in the status.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use agent_monitor_e2e::{DEADLINE, binary, http, require_root, stop_daemon, unique};
use serde_json::Value;

/// The categories of the hooked tracepoints.
const CATEGORIES: [&str; 3] = ["sched", "cgroup", "syscalls"];

/// This machine's tracefs.
fn real_tracefs() -> PathBuf {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(PathBuf::from)
        .find(|r| r.join("events/sched/sched_process_exec/format").is_file())
        .expect("tracefs is mounted")
}

/// A copy of the `format` files of every tracepoint in [`CATEGORIES`] under `dst`.
fn copy_formats(dst: &Path) {
    let src = real_tracefs();
    for category in CATEGORIES {
        let dir = src.join("events").join(category);
        for entry in fs::read_dir(&dir).expect("read tracefs").flatten() {
            let format = entry.path().join("format");
            if !format.is_file() {
                continue;
            }
            let to = dst.join("events").join(category).join(entry.file_name());
            fs::create_dir_all(&to).expect("mkdir");
            fs::copy(&format, to.join("format")).expect("copy format");
        }
    }
}

/// Rewrites one copied format file; fails the test when `from` is not in it.
fn edit(root: &Path, tracepoint: &str, from: &str, to: &str) {
    let path = root.join("events").join(tracepoint).join("format");
    let text = fs::read_to_string(&path).expect("read copied format");
    assert!(
        text.contains(from),
        "{from:?} not in {}:\n{text}",
        path.display()
    );
    fs::write(&path, text.replace(from, to)).expect("write format");
}

/// `agent-monitor run` reading its tracepoint layouts from `tracefs`; its pins and cgroups
/// are removed on drop.
struct Run {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pins: PathBuf,
    cgroup_parent: String,
}

impl Run {
    fn start(tracefs: &Path) -> Self {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let scopes = dir.path().join("scopes");
        fs::create_dir(&scopes).expect("mkdir scopes");
        fs::write(
            scopes.join("s.yaml"),
            "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: tracefs\n  owner: tracefs@example.org\nspec:\n  exec:\n    allow: [/bin/true]\n",
        )
        .expect("write scope");
        let cgroup_parent = unique("am-e2e");
        let pins = PathBuf::from("/sys/fs/bpf").join(&cgroup_parent);
        let log = fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let child = Command::new(binary())
            .arg("run")
            .arg("--scopes")
            .arg(&scopes)
            .arg("--socket")
            .arg(dir.path().join("am.sock"))
            .arg("--audit-log")
            .arg(dir.path().join("audit.jsonl"))
            .arg("--pin-path")
            .arg(&pins)
            .args([
                "--cgroup-parent",
                &cgroup_parent,
                "--quiet",
                "--release-on-exit",
            ])
            .env("AGENT_MONITOR_TRACEFS", tracefs)
            .env("AGENT_MONITOR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent-monitor run");
        Self {
            child: Some(child),
            dir,
            pins,
            cgroup_parent,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Waits for the daemon to exit on its own.
    fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET /v1/status` once the daemon answers.
    fn status(&mut self) -> Value {
        let socket = self.dir.path().join("am.sock");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("daemon exited early ({status}):\n{}", self.log());
            }
            if let Ok((200, body)) = http::request(&socket, "GET", "/v1/status", None, DEADLINE) {
                return serde_json::from_str(&body).expect("status JSON");
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let child = self.child.take();
        stop_daemon(child, || self.log(), &self.cgroup_parent, &self.pins);
    }
}

/// The hooks of a status (`hooks`), as (program, target, attached, error).
fn hooks(status: &Value) -> Vec<(String, String, bool, String)> {
    status["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .map(|h| {
            (
                h["program"].as_str().unwrap_or_default().to_owned(),
                h["target"].as_str().unwrap_or_default().to_owned(),
                h["attached"].as_bool().unwrap_or_default(),
                h["error"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The unchanged copy: the layout read from it is this kernel's, every hook attaches.
#[test]
fn an_unchanged_copy_of_tracefs_attaches_every_hook() {
    let root = tempfile::tempdir().expect("tempdir");
    copy_formats(root.path());
    let mut run = Run::start(root.path());
    let status = run.status();
    assert_eq!(status["coverage"]["failed"], serde_json::json!([]));
    assert!(
        hooks(&status)
            .iter()
            .any(|(p, t, a, _)| p == "sched_process_exit"
                && t == "tracepoint:sched:sched_process_exit"
                && *a),
        "{status}"
    );
}

/// `sched_process_exit` (required: the end of every agent process) without its
/// `group_dead` field: the daemon does not start, and says which tracepoint and field.
#[test]
fn a_required_tracepoint_without_its_field_stops_the_daemon_naming_it() {
    let root = tempfile::tempdir().expect("tempdir");
    copy_formats(root.path());
    edit(
        root.path(),
        "sched/sched_process_exit",
        "\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n",
        "",
    );
    let mut run = Run::start(root.path());
    let status = run.wait_exit();
    assert!(!status.success(), "{status}");
    let log = run.log();
    assert!(
        log.contains(
            "cannot attach sched_process_exit: tracepoint sched:sched_process_exit has no field `group_dead` (read by sched_process_exit)"
        ),
        "{log}"
    );
}

/// `ret` of `sys_exit_kill` moved by 8 bytes: `sys_exit_escape` reads `ret` at one offset
/// on every syscall it watches, so that tracepoint (optional) is left unattached, named in
/// the status with its field; everything else attaches.
#[test]
fn an_optional_tracepoint_with_a_shifted_field_is_not_attached_and_named() {
    let root = tempfile::tempdir().expect("tempdir");
    copy_formats(root.path());
    edit(
        root.path(),
        "syscalls/sys_exit_kill",
        "\tfield:long ret;\toffset:16;",
        "\tfield:long ret;\toffset:24;",
    );
    let mut run = Run::start(root.path());
    let status = run.status();
    assert_eq!(
        status["coverage"]["failed"],
        serde_json::json!(["tracepoint:syscalls:sys_exit_kill"]),
        "{status}"
    );
    let refused: Vec<_> = hooks(&status).into_iter().filter(|h| !h.2).collect();
    assert_eq!(
        refused,
        [(
            "sys_exit_escape".to_owned(),
            "tracepoint:syscalls:sys_exit_kill".to_owned(),
            false,
            "tracepoint syscalls:sys_exit_kill: field `ret` is at offset 24, sys_exit_escape reads it at 16 (where the other tracepoints it is attached to have it)".to_owned()
        )]
    );
}
