//! From a first run to an enforced scope, end to end: real programs learned with
//! `exec --learn` (recorded, never stopped), the proposal checked, enforced in `enforce` +
//! `kill-agent` on the same work (which must pass with zero violations) and on its twins
//! (which touch a secret and must be stopped), and replayed against the recorded run as a
//! CI gate (zero for the proposal, non-zero for a candidate that drops an entry).
//!
//! The workspace lives under `target/`, not under /tmp: the proposal widens what is written
//! under a temporary directory to the whole directory, which would hide what these tests
//! check.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use agent_monitor_e2e::{Daemon, HttpServer, binary, s, unique, workspace_root};
use serde_json::Value;

const COREUTILS_SESSION: &str = include_str!("../fixtures/field/coreutils_session.sh");
const NODE_SESSION: &str = include_str!("../fixtures/field/node_session.mjs");
const NODE: &str = "/usr/bin/node";
const PAGE: &str = "page from the learn server\n";
const SECRET: &str = "TOPSECRET-learn-7f3a";

/// A directory under `target/e2e-learn`, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(prefix: &str) -> Self {
        let path = workspace_root()
            .join("target/e2e-learn")
            .join(unique(prefix));
        fs::create_dir_all(&path).expect("mkdir");
        Self(fs::canonicalize(&path).expect("canonicalize"))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn agent_monitor(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run agent-monitor")
}

/// `exec --learn NAME --task ID --out FILE --deny ... -- CMD`, from `cwd`.
fn learn(d: &Daemon, name: &str, task: &str, out: &Path, deny: &[&str], cmd: &[&str]) -> Output {
    let mut c = Command::new(binary());
    c.args([
        "exec",
        "--socket",
        p(&d.socket),
        "--learn",
        name,
        "--task",
        task,
    ]);
    c.args(["--owner", "learner@example.org", "--out", p(out)]);
    for glob in deny {
        c.args(["--deny", glob]);
    }
    c.arg("--").args(cmd).stdin(Stdio::null());
    c.output().expect("run exec --learn")
}

/// `exec --scope FILE --task ID -- CMD`.
fn enforce(d: &Daemon, scope: &Path, task: &str, cmd: &[&str]) -> Output {
    Command::new(binary())
        .args([
            "exec",
            "--socket",
            p(&d.socket),
            "--scope",
            p(scope),
            "--task",
            task,
            "--",
        ])
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run exec --scope")
}

fn violations(d: &Daemon, task: &str) -> Vec<Value> {
    d.records()
        .into_iter()
        .filter(|r| s(r, "/agent/task") == task && s(r, "/verdict") == "violation")
        .collect()
}

/// The task's `ended` record is in the log (nothing of the task is still on its way).
fn wait_ended(d: &Daemon, task: &str) {
    d.wait_record(&format!("task {task} ended"), |r| {
        s(r, "/agent/task") == task && s(r, "/kind") == "task"
    });
}

/// Runs `cmd` under `scope` as task `task` and asserts it passes with zero violations.
fn passes_clean(d: &Daemon, scope: &Path, task: &str, cmd: &[&str]) {
    let out = enforce(d, scope, task, cmd);
    assert!(
        out.status.success(),
        "the same work under the proposal: {}",
        text(&out)
    );
    wait_ended(d, task);
    let v = violations(d, task);
    assert!(v.is_empty(), "violations under the proposal: {v:#?}");
}

/// The entries of one list of the proposal (`    allow:` .. next key), comments removed.
fn entries(yaml: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in yaml.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with(&format!("{key}:")) {
            inside = true;
            continue;
        }
        if inside {
            match trimmed.strip_prefix("- ") {
                Some(item) => out.push(
                    item.split("  #")
                        .next()
                        .unwrap_or(item)
                        .trim()
                        .trim_matches('"')
                        .to_owned(),
                ),
                None => break,
            }
        }
    }
    out
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one story, in order: learn, check, enforce, the twins, replay"
)]
fn a_learned_coreutils_session_is_enforced_as_proposed_and_its_twins_are_stopped() {
    let d = Daemon::start(&[]);
    let ws = Dir::new("ws");
    let outside = Dir::new("outside");
    let plans = Dir::new("plans");
    fs::write(outside.0.join("secret.txt"), SECRET).expect("write secret");
    let plant_env = || fs::write(ws.0.join(".env"), format!("API_KEY={SECRET}\n")).expect(".env");
    plant_env();
    let session = [SH, "-c", COREUTILS_SESSION, "sh", p(&ws.0)];

    // 1. Learn: the session runs unhindered, and the proposal is written.
    let proposal = plans.0.join("coreutils.yaml");
    let out = learn(
        &d,
        "coreutils-learned",
        "cu-learn",
        &proposal,
        &["**/.env"],
        &session,
    );
    assert!(out.status.success(), "learning run: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ALPHA\nmike\nzeta"),
        "{}",
        text(&out)
    );
    assert!(
        violations(&d, "cu-learn")
            .iter()
            .all(|r| s(r, "/action") == "none"),
        "nothing stopped"
    );
    let yaml = fs::read_to_string(&proposal).expect("the proposal was written");
    let check = agent_monitor(&["check", p(&proposal)]);
    assert!(
        check.status.success(),
        "check of the proposal: {}\n{yaml}",
        text(&check)
    );
    let exec = entries(&yaml, "allow");
    for tool in [
        "/usr/bin/tar",
        "/usr/bin/sort",
        "/usr/bin/mkdir",
        "/usr/bin/cp",
    ] {
        assert!(
            exec.iter().any(|e| e == tool),
            "{tool} in exec.allow:\n{yaml}"
        );
    }
    let write = entries(&yaml, "write");
    assert_eq!(
        write,
        [format!("{}/**", p(&ws.0))],
        "the workspace the session wrote:\n{yaml}"
    );
    assert!(
        !yaml.contains(p(&outside.0)),
        "nothing outside was used:\n{yaml}"
    );
    assert_eq!(entries(&yaml, "deny"), ["**/.env"], "{yaml}");

    // 2. Enforce the proposal (kill-agent) on the same work: zero violations.
    let enforced = plans.0.join("coreutils-enforced.yaml");
    fs::write(
        &enforced,
        yaml.replace("onViolation: kill-process", "onViolation: kill-agent"),
    )
    .expect("write");
    for entry in fs::read_dir(&ws.0).expect("ls ws").flatten() {
        let path = entry.path();
        if path.is_dir() {
            fs::remove_dir_all(&path).expect("reset ws");
        }
    }
    passes_clean(&d, &enforced, "cu-enforced", &session);

    // 3. The twins: a secret outside the workspace, a denied file inside it.
    let steal = format!(
        "cp {}/secret.txt {}/loot && cat {}/loot",
        p(&outside.0),
        p(&ws.0),
        p(&ws.0)
    );
    let out = enforce(&d, &enforced, "cu-twin-outside", &[SH, "-c", &steal]);
    assert!(
        !out.status.success(),
        "copying a secret from outside: {}",
        text(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(SECRET),
        "leaked: {}",
        text(&out)
    );
    let r = d.wait_record("the violation of the outside twin", |r| {
        s(r, "/agent/task") == "cu-twin-outside" && s(r, "/verdict") == "violation"
    });
    assert!(s(&r, "/file/path").starts_with(p(&outside.0)), "{r}");
    plant_env();
    let env = format!("sort {}/.env", p(&ws.0));
    let out = enforce(&d, &enforced, "cu-twin-env", &[SH, "-c", &env]);
    assert!(!out.status.success(), "reading .env: {}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(SECRET),
        "leaked: {}",
        text(&out)
    );
    let r = d.wait_record("the violation of the .env twin", |r| {
        s(r, "/agent/task") == "cu-twin-env" && s(r, "/verdict") == "violation"
    });
    assert!(s(&r, "/violation/rule").starts_with("files.deny"), "{r}");

    // 4. Replay as a CI gate: the proposal passes, a candidate without tar fails.
    let audit = p(&d.audit).to_owned();
    let replay = |candidate: &Path| {
        agent_monitor(&[
            "scope",
            "replay",
            p(candidate),
            "--log",
            &audit,
            "--task",
            "cu-learn",
        ])
    };
    let out = replay(&proposal);
    assert_eq!(
        out.status.code(),
        Some(0),
        "replay of the proposal: {}",
        text(&out)
    );
    let narrowed = plans.0.join("without-tar.yaml");
    let without: String = yaml
        .lines()
        .filter(|l| !l.contains("- /usr/bin/tar"))
        .fold(String::new(), |out, l| out + l + "\n");
    assert_ne!(without, yaml, "the candidate drops tar");
    fs::write(&narrowed, &without).expect("write");
    let out = replay(&narrowed);
    assert_eq!(
        out.status.code(),
        Some(1),
        "replay without tar: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/usr/bin/tar"),
        "{}",
        text(&out)
    );
}

#[test]
fn propose_for_a_task_and_from_logs_agree_and_a_bad_log_is_named() {
    let d = Daemon::start(&[]);
    let ws = Dir::new("ws");
    let plans = Dir::new("plans");
    let script = format!(
        "mkdir -p {ws}/out && for i in 1 2 3; do echo $i > {ws}/out/$i.txt; done; cat {ws}/out/1.txt",
        ws = p(&ws.0)
    );
    let learned = plans.0.join("learned.yaml");
    let out = learn(
        &d,
        "writer",
        "writer-1",
        &learned,
        &[],
        &[SH, "-c", &script],
    );
    assert!(out.status.success(), "{}", text(&out));
    let from_exec = fs::read_to_string(&learned).expect("proposal");
    // The same proposal for the ended task, from the daemon, and from the log file.
    let out = d.cli(&[
        "scope",
        "propose",
        "--task",
        "writer-1",
        "--owner",
        "learner@example.org",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        from_exec,
        "propose --task"
    );
    let out = agent_monitor(&[
        "scope",
        "propose",
        "--from-log",
        p(&d.audit),
        "--scope",
        "writer",
        "--owner",
        "learner@example.org",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        from_exec,
        "propose --from-log"
    );
    assert!(
        from_exec.contains(&format!("{}/out/**", p(&ws.0))),
        "{from_exec}"
    );
    // A log cut mid-line and holding garbage: named by file and line, marked partial.
    let bad = plans.0.join("bad.jsonl");
    let mut log = fs::read_to_string(&d.audit).expect("audit log");
    log.push_str("not a record\n{\"time\":\"t\",\"kind\":\"file\",\"verd");
    fs::write(&bad, log).expect("write");
    let out = agent_monitor(&[
        "scope",
        "propose",
        "--from-log",
        p(&bad),
        "--scope",
        "writer",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:", p(&bad))) && stderr.contains("PARTIAL"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("# PARTIAL"),
        "{}",
        text(&out)
    );
    // An unknown task is a clear error.
    let out = d.cli(&["scope", "propose", "--task", "no-such-task"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-task"),
        "{}",
        text(&out)
    );
}

const SH: &str = "/bin/sh";

/// Node (fs.promises, a child Node, fetch from a loopback server): learned, the proposal
/// names the server's address and port (no DNS was used), the directory the session created,
/// and its script; enforced, the same work passes, and a fetch from another port is refused.
#[test]
fn a_learned_node_session_is_enforced_as_proposed_and_an_unlisted_port_is_refused() {
    let d = Daemon::start(&[]);
    let server = HttpServer::start(PAGE);
    let other = HttpServer::start(PAGE);
    let ws = Dir::new("ws");
    let plans = Dir::new("plans");
    let script = ws.0.join("node_session.mjs");
    fs::write(&script, NODE_SESSION).expect("write the session");
    let session = |url: &str| {
        vec![
            NODE.to_owned(),
            p(&script).to_owned(),
            p(&ws.0).to_owned(),
            url.to_owned(),
        ]
    };
    let work = session(&server.url());
    let work: Vec<&str> = work.iter().map(String::as_str).collect();
    let proposal = plans.0.join("node.yaml");
    let out = learn(&d, "node-learned", "node-learn", &proposal, &[], &work);
    assert!(out.status.success(), "learning run: {}", text(&out));
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(v["status"], 200, "{v}");
    let yaml = fs::read_to_string(&proposal).expect("the proposal");
    let rule = format!(
        "{{cidr: 127.0.0.1/32, ports: [{}], protocol: tcp}}",
        server.port()
    );
    assert!(
        yaml.contains(&rule),
        "the server's address and port:\n{yaml}"
    );
    assert!(
        entries(&yaml, "allow")
            .iter()
            .any(|e| e.starts_with("/usr/bin/node") || e.contains("/node")),
        "{yaml}"
    );
    assert!(
        entries(&yaml, "write").contains(&format!("{}/node-work/**", p(&ws.0))),
        "the directory the session created:\n{yaml}"
    );
    let enforced = plans.0.join("node-enforced.yaml");
    fs::write(
        &enforced,
        yaml.replace("onViolation: kill-process", "onViolation: kill-agent"),
    )
    .expect("write");
    passes_clean(&d, &enforced, "node-enforced", &work);
    let twin = session(&other.url());
    let twin: Vec<&str> = twin.iter().map(String::as_str).collect();
    let out = enforce(&d, &enforced, "node-twin", &twin);
    assert!(
        !out.status.success(),
        "a fetch from an unlisted port: {}",
        text(&out)
    );
    let r = d.wait_record("the refused connect", |r| {
        s(r, "/agent/task") == "node-twin" && s(r, "/verdict") == "violation"
    });
    assert_eq!(
        r["net"]["port"].as_u64(),
        Some(u64::from(other.port())),
        "{r}"
    );
}
