//! Whole directories (`DIR_OK`): once a held open shows the kernel that the scope lets the
//! agent read (or write) every file of a directory, first opens there are no longer held;
//! a name a deny entry ends in still is, and is refused before its content moves.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    time::Duration,
};

use agent_monitor_e2e::{Daemon, assert_exit, s, wait_or_kill, workspace};

const PY: &str = "/usr/bin/python3";

fn scope(ws: &Path) -> String {
    format!(
        r#"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {{name: dirs, owner: dirs@example.org}}
spec:
  mode: enforce
  onViolation: kill-process
  exec:
    allow: [/usr/bin/python3*]
  files:
    read: ["{ws}/**"]
    write: ["{ws}/out/**"]
    deny: ["**/.env", "{ws}/keys/*.pem"]
"#,
        ws = ws.display()
    )
}

/// A new directory `ws/dir` with `n` small files named by `name`.
fn filled(ws: &Path, dir: &str, n: usize, name: impl Fn(usize) -> String) -> PathBuf {
    let dir = ws.join(dir);
    fs::create_dir(&dir).expect("mkdir");
    for i in 0..n {
        fs::write(dir.join(name(i)), format!("{i}\n")).expect("write");
    }
    dir
}

fn held(d: &Daemon) -> u64 {
    d.get_json("/v1/status")["counters"]["held"]
        .as_u64()
        .expect("status counts held operations")
}

/// Runs python in a new task reading the first `n` files of `dir`; the holds it took.
fn holds_reading(d: &Daemon, dir: &Path, n: usize) -> u64 {
    let before = held(d);
    let script = format!(
        "import os\nd = '{dir}'\nfor name in sorted(os.listdir(d))[:{n}]:\n  open(os.path.join(d, name)).read()\nprint('read', {n})",
        dir = dir.display()
    );
    let out = d.exec("dirs", &[], &[PY, "-I", "-S", "-c", &script]);
    assert_exit(&out, 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("read {n}")
    );
    held(d) - before
}

/// The holds of python starting and listing a new directory `ws/dir` of `n` files, then
/// of the same reading them all, side by side in new tasks (a task's reads are its own).
fn side_by_side(dir: &str, n: usize) -> (u64, u64, Daemon) {
    let (guard, ws) = workspace();
    let dir = filled(&ws, dir, n, |i| format!("f{i:03}.txt"));
    let d = Daemon::start(&[("dirs.yaml", &scope(&ws))]);
    let base = holds_reading(&d, &dir, 0);
    let all = holds_reading(&d, &dir, n);
    drop(guard);
    (base, all, d)
}

#[test]
fn a_directory_the_scope_reads_whole_is_held_once_not_per_file() {
    let (base, all, d) = side_by_side("data", 300);
    assert!(
        all <= base + 3,
        "reading 300 files of one directory took {all} holds, starting alone {base}"
    );
    // Nothing was a violation.
    let violations: Vec<_> = d
        .records()
        .into_iter()
        .filter(|r| s(r, "/verdict") == "violation")
        .collect();
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn a_denied_name_made_after_the_directory_was_found_readable_is_still_refused() {
    let (_guard, ws) = workspace();
    let data = ws.join("data");
    fs::create_dir(&data).expect("mkdir");
    fs::write(data.join("a.txt"), "first\n").expect("write");
    let d = Daemon::start(&[("dirs.yaml", &scope(&ws))]);
    // One process: it reads a.txt (held: the directory is found readable), says so, waits
    // for files the scope did not know of at its start, reads the new one, then the .env.
    let script = format!(
        r"import os, sys, time
d = {data:?}
open(os.path.join(d, 'a.txt')).read()
print('ready', flush=True)
deadline = time.monotonic() + 30
while not os.path.exists(os.path.join(d, 'go')) and time.monotonic() < deadline:
    time.sleep(0.01)
print(open(os.path.join(d, 'new.txt')).read().strip(), flush=True)
print(open(os.path.join(d, '.env')).read().strip(), flush=True)
",
        data = data.display().to_string()
    );
    let mut child = d.exec_spawn("dirs", &[PY, "-I", "-S", "-c", &script]);
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "ready");
    let held_before = held(&d);
    fs::write(data.join("new.txt"), "made later\n").expect("write");
    fs::write(data.join(".env"), "TOPSECRET\n").expect("write");
    fs::write(data.join("go"), "").expect("write");
    let (status, timed_out) = wait_or_kill(&mut child, Duration::from_mins(1));
    assert!(!timed_out, "the agent did not finish");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
    assert_eq!(rest.trim(), "made later", "{rest}");
    assert!(!rest.contains("TOPSECRET"));
    // `exec` reports the kill as 128 + SIGKILL.
    assert_eq!(status.code(), Some(137), "{status:?}");
    // new.txt went through without a hold; the .env was held and judged.
    assert_eq!(
        held(&d) - held_before,
        1,
        "holds after the directory was found readable"
    );
    let denied = d.wait_record("the .env read", |r| {
        s(r, "/verdict") == "violation" && s(r, "/file/path").ends_with("/data/.env")
    });
    assert_eq!(
        s(&denied, "/violation/rule"),
        "files.deny[0]: **/.env",
        "{denied:#}"
    );
}

#[test]
fn a_directory_a_deny_glob_may_reach_stays_held_per_file() {
    let (base, all, _d) = side_by_side("keys", 20);
    // `keys/*.pem` may match any new file there: each first read is judged.
    assert!(
        all >= base + 20,
        "{all} holds reading 20 files, {base} starting"
    );
}

#[test]
fn a_directory_the_scope_writes_whole_is_held_once_not_per_file() {
    let (_guard, ws) = workspace();
    fs::create_dir(ws.join("out")).expect("mkdir");
    let d = Daemon::start(&[("dirs.yaml", &scope(&ws))]);
    let run = |n: usize, dir: &str| {
        let before = held(&d);
        let script = format!(
            "import os\nd = '{}/out/{dir}'\nos.mkdir(d)\nfor i in range({n}):\n  open(os.path.join(d, f'f{{i}}'), 'w').write('x')\nprint(len(os.listdir(d)))",
            ws.display()
        );
        let out = d.exec("dirs", &[], &[PY, "-I", "-S", "-c", &script]);
        assert_exit(&out, 0);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), n.to_string());
        held(&d) - before
    };
    let base = run(0, "a");
    let all = run(200, "b");
    assert!(
        all <= base + 3,
        "writing 200 new files in one directory took {all} holds, starting alone {base}"
    );
    // A write outside `out` is still held and killed, the directory grant nowhere near it.
    let script = format!("open('{}/data.txt', 'w').write('x')", ws.display());
    let out = d.exec("dirs", &[], &[PY, "-I", "-S", "-c", &script]);
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(
        !ws.join("data.txt").exists() || fs::read(ws.join("data.txt")).expect("read").is_empty()
    );
}
