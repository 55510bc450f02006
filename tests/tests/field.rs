//! The field corpus: real programs nobody here wrote, doing real work under
//! `agent-monitor exec` with a scope in `mode: enforce`, `onViolation: kill-agent`, that
//! names only what that work needs: its binaries in `exec.allow`, its package and install
//! directories in `files.read`, the workspace in `files.read` and `files.write`, the
//! loopback ports it talks to in `network.connect`. What every program needs just to start
//! and run (shared libraries, its own /proc, the cgroup limits it sizes itself by, locale,
//! /dev/null, ...) is the runtime baseline's business, never a scope's: these tests are
//! what proves the baseline complete.
//!
//! Each positive case asserts exit 0 and no violation record of its task. When one fails,
//! the same work runs again under the `audit` twin of its scope (kill-agent stops at the
//! first violation, audit records them all) and the message shows both runs: exit status,
//! stderr and every violation record (kind, action, layer, path or address, rule, reason).
//! Each negative twin asks the same program for a secret (a file outside the scope, a
//! `files.deny` entry) or an unlisted port: it must be stopped (a non-zero exit: 137 when
//! killed, or the program's own error when the kernel refused it), leak nothing, and be
//! recorded (a violation naming that path or address).
//!
//! The agents get a clean environment (`PATH=/usr/bin:/bin`, `HOME` the workspace, `TMPDIR`
//! inside it), and the machine's own tool configuration (`/etc/gitconfig`, `/etc/pip.conf`,
//! `PIP_*` variables) is kept out of the work.
//!
//! The corpus is installed by `cargo xtask setup` (`xtask/src/install.rs`, `field_corpus`)
//! under `target/field`, or wherever `AGENT_MONITOR_FIELD` says: the MCP servers from npm
//! (`npm/`), the wheels of pytest and tabulate (`wheels/`), the Rust probe
//! (`bin/parallelism`); their manifests and the scripts the agents run are in
//! `tests/fixtures/field/`.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, ErrorKind, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use agent_monitor_e2e::{
    DEADLINE, Daemon, HttpServer, binary, s, unique, wait_or_kill, workspace, workspace_root,
};
use serde_json::{Value, json};

const SH: &str = "/bin/sh";
const NODE: &str = "/usr/bin/node";
const GIT: &str = "/usr/bin/git";
const CURL: &str = "/usr/bin/curl";

/// How long one agent run may take (a venv with pip and pytest takes a few seconds).
const RUN_DEADLINE: Duration = Duration::from_mins(2);
/// Records of a finished task are complete once the audit log has been quiet this long.
const QUIET: Duration = Duration::from_millis(400);

const GIT_SESSION: &str = include_str!("../fixtures/field/git_session.sh");
const COREUTILS_SESSION: &str = include_str!("../fixtures/field/coreutils_session.sh");
const PYTHON_SESSION: &str = include_str!("../fixtures/field/python_session.sh");
const NODE_SESSION: &str = include_str!("../fixtures/field/node_session.mjs");
const PY_REQUIREMENTS: &str = include_str!("../fixtures/field/python/requirements.txt");
const PY_REPORT: &str = include_str!("../fixtures/field/python/report.py");
const PY_TESTS: &str = include_str!("../fixtures/field/python/test_report.py");
const PY_DATA: &str = include_str!("../fixtures/field/python/data.csv");

// ---------------------------------------------------------------------------------------
// The corpus on disk
// ---------------------------------------------------------------------------------------

/// `target/field` (or `$AGENT_MONITOR_FIELD`), where `cargo xtask setup` installs the corpus.
fn field_dir() -> PathBuf {
    std::env::var_os("AGENT_MONITOR_FIELD")
        .map_or_else(|| workspace_root().join("target/field"), PathBuf::from)
}

/// A path of the installed corpus; fails loudly when setup has not installed it.
fn corpus(rel: &str) -> PathBuf {
    let path = field_dir().join(rel);
    assert!(
        path.exists(),
        "{} is missing: the field corpus is installed by `cargo xtask setup`",
        path.display()
    );
    path
}

/// The entry point of an MCP server package from the corpus's `node_modules`.
fn mcp_server(package: &str) -> PathBuf {
    corpus(&format!(
        "npm/node_modules/@modelcontextprotocol/{package}/dist/index.js"
    ))
}

/// The npm install directory (`package.json` and `node_modules`: the servers' package tree).
fn npm_tree() -> String {
    format!("{}/**", p(&corpus("npm")))
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The last `max` bytes of a long output (at a char boundary), for failure messages.
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

// ---------------------------------------------------------------------------------------
// Scopes
// ---------------------------------------------------------------------------------------

/// What a case's scope names beyond its workspace (always readable and writable).
#[derive(Default)]
struct Spec {
    exec: Vec<String>,
    read: Vec<String>,
    deny: Vec<String>,
    /// Directories whose entries (not contents) it may list.
    list: Vec<String>,
    /// Loopback TCP ports it may connect to.
    connect: Vec<u16>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

fn flow(items: &[String]) -> String {
    // Debug-quoted strings are valid YAML double-quoted scalars for these paths.
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn scope_yaml(name: &str, mode: &str, ws: &Path, spec: &Spec) -> String {
    let ws_tree = format!("{}/**", p(ws));
    let mut read = vec![ws_tree.clone()];
    read.extend(spec.read.iter().cloned());
    let mut yaml = format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: {name}, owner: field@example.org}}\nspec:\n  mode: {mode}\n  onViolation: kill-agent\n  exec:\n    allow: {exec}\n  files:\n    read: {read}\n    write: {write}\n    deny: {deny}\n",
        exec = flow(&spec.exec),
        read = flow(&read),
        write = flow(&[ws_tree]),
        deny = flow(&spec.deny),
    );
    if !spec.list.is_empty() {
        let _ = writeln!(yaml, "    list: {}", flow(&spec.list));
    }
    if !spec.connect.is_empty() {
        yaml.push_str("  network:\n    connect:\n");
        for port in &spec.connect {
            let _ = writeln!(yaml, "      - {{cidr: 127.0.0.1/32, ports: [{port}]}}");
        }
    }
    yaml
}

// ---------------------------------------------------------------------------------------
// The fixture: a daemon with the case's scope (and its audit twin), a workspace, a secret
// ---------------------------------------------------------------------------------------

struct Field {
    /// The enforce scope's name; its audit twin is `<name>-audit`.
    name: String,
    /// The agent's workspace: readable and writable.
    ws: PathBuf,
    /// A directory no files rule grants, holding `secret.txt`.
    outside: PathBuf,
    /// The text of `outside/secret.txt` (and of denied files a case plants).
    secret: String,
    daemon: Daemon,
    _dirs: [tempfile::TempDir; 2],
}

struct Run {
    task: String,
    out: Output,
    /// `agent-monitor exec` had not returned after `RUN_DEADLINE` and was killed.
    hung: bool,
    /// MCP sessions: every response, by request, in order (Err: none came).
    replies: Vec<Result<Value, String>>,
}

impl Run {
    fn stdout(&self) -> String {
        text(&self.out.stdout)
    }

    fn stderr(&self) -> String {
        text(&self.out.stderr)
    }
}

/// A child's stdout or stderr, read to the end on a thread.
fn drain(r: Option<impl std::io::Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

impl Field {
    /// Starts a daemon with the case's enforce scope and its audit twin; `spec` gets the
    /// workspace and the outside directory.
    fn start(name: &str, spec: impl FnOnce(&Path, &Path) -> Spec) -> Self {
        Self::start_yaml(name, |ws, outside| {
            scope_yaml(name, "enforce", ws, &spec(ws, outside))
        })
    }

    /// As `start`, with the enforce scope's YAML made by `make` (the audit twin is the
    /// same scope in audit mode).
    fn start_yaml(name: &str, make: impl FnOnce(&Path, &Path) -> String) -> Self {
        let (g1, ws) = workspace();
        let (g2, outside) = workspace();
        let secret = format!("TOPSECRET-{}", unique("field"));
        fs::write(outside.join("secret.txt"), &secret).expect("write the secret");
        let enforce = make(&ws, &outside);
        let audit = enforce
            .replace(&format!("name: {name}"), &format!("name: {name}-audit"))
            .replace("mode: enforce", "mode: audit");
        let daemon = Daemon::start(&[("enforce.yaml", &enforce), ("audit.yaml", &audit)]);
        let status = daemon.get_json("/v1/status");
        for want in [name.to_string(), format!("{name}-audit")] {
            assert!(
                status["scopes"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|s| s == want.as_str())),
                "scope {want} was not loaded: {}\n{enforce}",
                status["scope_errors"]
            );
        }
        let f = Self {
            name: name.to_string(),
            ws,
            outside,
            secret,
            daemon,
            _dirs: [g1, g2],
        };
        f.reset();
        f
    }

    fn ws(&self, rel: &str) -> PathBuf {
        self.ws.join(rel)
    }

    fn secret_path(&self) -> PathBuf {
        self.outside.join("secret.txt")
    }

    /// Empties the workspace (all but its temporary directory, recreated empty).
    fn reset(&self) {
        for entry in fs::read_dir(&self.ws)
            .expect("list the workspace")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path).expect("clear the workspace");
            } else {
                fs::remove_file(&path).expect("clear the workspace");
            }
        }
        fs::create_dir(self.ws("tmp")).expect("mkdir workspace/tmp");
    }

    fn write(&self, rel: &str, contents: &str) {
        let path = self.ws(rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).expect("mkdir");
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// `agent-monitor exec --scope SCOPE --task <fresh> -- CMD` with a clean environment
    /// (PATH, HOME and TMPDIR in the workspace, a UTF-8 locale) plus `env`.
    fn command(&self, scope: &str, task: &str, cmd: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(binary());
        c.arg("exec")
            .arg("--socket")
            .arg(&self.daemon.socket)
            .args(["--scope", scope, "--task", task, "--"])
            .args(cmd)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.ws)
            .env("TMPDIR", self.ws("tmp"))
            .env("LANG", "C.UTF-8")
            .envs(env.iter().copied())
            .current_dir(&self.ws);
        c
    }

    /// Waits for an exec client with a deadline; kills it (and says so) when it hangs.
    fn finish(
        task: String,
        mut child: Child,
        stdout: thread::JoinHandle<Vec<u8>>,
        stderr: thread::JoinHandle<Vec<u8>>,
        replies: Vec<Result<Value, String>>,
    ) -> Run {
        let (status, hung) = wait_or_kill(&mut child, RUN_DEADLINE);
        let out = Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        };
        Run {
            task,
            out,
            hung,
            replies,
        }
    }

    /// Runs `cmd` to completion as a fresh task of `scope`.
    fn run(&self, scope: &str, cmd: &[&str], env: &[(&str, &str)]) -> Run {
        let task = unique(scope);
        let mut child = self
            .command(scope, &task, cmd, env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run agent-monitor exec");
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        Self::finish(task, child, stdout, stderr, Vec::new())
    }

    /// Runs an MCP server (`node SERVER ARGS`) as a fresh task of `scope` and drives it over
    /// stdio JSON-RPC as an MCP client does: initialize, notifications/initialized,
    /// tools/list, then one tools/call per entry of `calls`, then end of input. A call that
    /// gets no answer (the server was killed) ends the session.
    fn mcp(
        &self,
        scope: &str,
        server: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        calls: &[(&str, Value)],
    ) -> Run {
        let task = unique(scope);
        let mut cmd = vec![NODE, p(server)];
        cmd.extend_from_slice(args);
        let mut child = self
            .command(scope, &task, &cmd, env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run agent-monitor exec");
        let mut stdin = child.stdin.take().expect("stdin");
        let (tx, rx) = mpsc::channel::<String>();
        let stdout_pipe = child.stdout.take().expect("stdout");
        let stdout = thread::spawn(move || {
            let mut all = Vec::new();
            for line in BufReader::new(stdout_pipe).lines() {
                let Ok(line) = line else { break };
                all.extend_from_slice(line.as_bytes());
                all.push(b'\n');
                let _ = tx.send(line);
            }
            all
        });
        let stderr = drain(child.stderr.take());
        let mut client = McpClient {
            stdin: &mut stdin,
            rx,
            next: 1,
        };
        let mut replies = Vec::new();
        let init = client.request(
            "initialize",
            &json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "agent-monitor-field", "version": "1"},
            }),
        );
        let mut alive = init.is_ok();
        replies.push(init);
        if alive {
            client.notify("notifications/initialized");
            let list = client.request("tools/list", &json!({}));
            alive = list.is_ok();
            replies.push(list);
        }
        for (name, arguments) in calls {
            if !alive {
                break;
            }
            let reply =
                client.request("tools/call", &json!({"name": name, "arguments": arguments}));
            alive = reply.is_ok();
            replies.push(reply);
        }
        drop(client);
        drop(stdin);
        Self::finish(task, child, stdout, stderr, replies)
    }

    /// Every record of a task once the audit log has been quiet for `QUIET` (at most
    /// `DEADLINE`): what the daemon made of the whole run, not a snapshot of it.
    fn settled_records(&self, task: &str) -> Vec<Value> {
        let len = || fs::metadata(&self.daemon.audit).map_or(0, |m| m.len());
        let deadline = Instant::now() + DEADLINE;
        let mut last = len();
        let mut since = Instant::now();
        while since.elapsed() < QUIET && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            let now = len();
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
        self.records(task)
    }

    fn records(&self, task: &str) -> Vec<Value> {
        self.daemon
            .records()
            .into_iter()
            .filter(|r| s(r, "/agent/task") == task)
            .collect()
    }

    /// Exit status, output, replies and every violation record of a run.
    fn describe(&self, run: &Run) -> String {
        let records = self.settled_records(&run.task);
        let violations: Vec<&Value> = records
            .iter()
            .filter(|r| s(r, "/verdict") == "violation")
            .collect();
        let stdout = run.stdout();
        let mut out = format!(
            "task {}: {}{}\n--- stderr (tail) ---\n{}\n--- stdout (tail) ---\n{}\n",
            run.task,
            if run.hung {
                "HUNG (agent-monitor exec killed after the deadline), "
            } else {
                ""
            },
            status_text(run.out.status),
            tail(&run.stderr(), 4000).trim_end(),
            if run.replies.is_empty() {
                tail(&stdout, 3000).trim_end()
            } else {
                "(JSON-RPC: see the replies)"
            },
        );
        if !run.replies.is_empty() {
            out.push_str("--- MCP replies ---\n");
            for (i, r) in run.replies.iter().enumerate() {
                let line = match r {
                    Ok(v) => v.to_string(),
                    Err(e) => format!("no reply: {e}"),
                };
                let _ = writeln!(out, "  {i}: {}", tail(&line, 600));
            }
        }
        let _ = writeln!(
            out,
            "--- {} violation records of {} records of the task ---",
            violations.len(),
            records.len()
        );
        for r in violations {
            let _ = writeln!(out, "  {}", record_line(r));
        }
        out
    }

    /// A positive case: `work(scope)` must exit 0 with no violation record under the enforce
    /// scope. Otherwise the same work runs again under the audit twin (it gets the scope's
    /// name and prepares its workspace itself) and the failure shows both runs.
    fn positive(&self, what: &str, work: impl Fn(&str) -> Run) -> Run {
        let run = work(&self.name);
        let records = self.settled_records(&run.task);
        let violations = records
            .iter()
            .filter(|r| s(r, "/verdict") == "violation")
            .count();
        if run.out.status.success() && !run.hung && violations == 0 {
            // No violation because it was watched, not because nothing was seen.
            assert!(
                records
                    .iter()
                    .any(|r| s(r, "/kind") == "exec" && s(r, "/verdict") == "allowed"),
                "{what}: no allowed exec record: was the task watched at all?\n{}",
                self.describe(&run)
            );
            return run;
        }
        let mut msg = format!(
            "{what}: under its enforce + kill-agent scope `{}` the work must exit 0 with no violation record\n{}",
            self.name,
            self.describe(&run)
        );
        let audit = work(&format!("{}-audit", self.name));
        let _ = write!(
            msg,
            "\n=== the same work under the audit twin `{}-audit` (nothing stopped, every violation recorded) ===\n{}",
            self.name,
            self.describe(&audit)
        );
        panic!("{msg}");
    }

    /// A negative case: the run must have been stopped (non-zero exit), leaked no secret on
    /// its output, and have a violation record matching `names` (waited for). Returns it.
    fn stopped(&self, what: &str, run: &Run, names: impl Fn(&Value) -> bool) -> Value {
        // The run is over: its records are all coming. Give up once the audit log has been
        // quiet for `QUIET` without one that names it (at most `DEADLINE`).
        let len = || fs::metadata(&self.daemon.audit).map_or(0, |m| m.len());
        let deadline = Instant::now() + DEADLINE;
        let mut last = len();
        let mut since = Instant::now();
        let record = loop {
            if let Some(r) = self
                .records(&run.task)
                .into_iter()
                .find(|r| s(r, "/verdict") == "violation" && names(r))
            {
                break r;
            }
            assert!(
                Instant::now() < deadline && since.elapsed() < QUIET,
                "{what}: no violation record names what it touched\n{}",
                self.describe(run)
            );
            thread::sleep(Duration::from_millis(50));
            let now = len();
            if now != last {
                last = now;
                since = Instant::now();
            }
        };
        assert!(
            !run.hung && !run.out.status.success(),
            "{what}: the agent was not stopped (want a non-zero exit)\n{}",
            self.describe(run)
        );
        let all = format!("{}{}", run.stdout(), run.stderr());
        assert!(
            !all.contains(&self.secret),
            "{what}: the secret leaked\n{}",
            self.describe(run)
        );
        eprintln!(
            "{what}: stopped ({}), recorded: {}",
            status_text(run.out.status),
            record_line(&record)
        );
        record
    }

    /// The record names `path` (or a path under it).
    fn names_path(path: &Path) -> impl Fn(&Value) -> bool {
        let path = p(path).to_string();
        move |r: &Value| {
            s(r, "/kind") == "file"
                && (s(r, "/file/path") == path
                    || s(r, "/file/path").starts_with(&format!("{path}/")))
        }
    }

    /// The record is a connect to 127.0.0.1:`port`.
    fn names_port(port: u16) -> impl Fn(&Value) -> bool {
        move |r: &Value| {
            s(r, "/kind") == "connect"
                && s(r, "/net/address") == "127.0.0.1"
                && r["net"]["port"].as_u64() == Some(u64::from(port))
        }
    }
}

/// `exit 137`, `killed by signal 9`.
fn status_text(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("{status:?}"),
    }
}

/// One record on one line: kind, verdict, action, layer, process, object, rule, reason.
fn record_line(r: &Value) -> String {
    let object = if r.get("file").is_some() {
        let mut o = format!("file {} {}", s(r, "/file/access"), s(r, "/file/path"));
        if !s(r, "/file/new_path").is_empty() {
            let _ = write!(o, " -> {}", s(r, "/file/new_path"));
        }
        if r["file"]["unresolved"].as_bool() == Some(true) {
            o.push_str(" (unresolved)");
        }
        o
    } else if r.get("net").is_some() {
        format!(
            "net {}/{} {}:{}{}",
            s(r, "/net/family"),
            s(r, "/net/protocol"),
            s(r, "/net/address"),
            r["net"]["port"],
            if s(r, "/net/host").is_empty() {
                String::new()
            } else {
                format!(" ({})", s(r, "/net/host"))
            }
        )
    } else if r.get("exec").is_some() {
        format!("exec {} {}", s(r, "/exec/path"), r["exec"]["argv"])
    } else if let Some(e) = r.get("escape") {
        format!("escape {e}")
    } else if let Some(t) = r.get("task") {
        format!("task {t}")
    } else {
        String::new()
    };
    let layer = match (s(r, "/layer"), s(r, "/after")) {
        ("", _) => String::new(),
        (l, "") => format!(" layer={l}"),
        (l, a) => format!(" layer={l} after={a}"),
    };
    format!(
        "{} {} action={}{layer} by {}({}) exe={}: {object} | rule: {} | reason: {}",
        s(r, "/kind"),
        s(r, "/verdict"),
        s(r, "/action"),
        s(r, "/process/comm"),
        r["process"]["pid"],
        s(r, "/process/exe"),
        s(r, "/violation/rule"),
        s(r, "/violation/reason"),
    )
}

// ---------------------------------------------------------------------------------------
// MCP over stdio, and a loopback HTTP server
// ---------------------------------------------------------------------------------------

struct McpClient<'a> {
    stdin: &'a mut ChildStdin,
    rx: mpsc::Receiver<String>,
    next: u64,
}

impl McpClient<'_> {
    fn send(&mut self, message: &Value) -> Result<(), String> {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("writing to the server: {e}"))
    }

    fn notify(&mut self, method: &str) {
        let _ = self.send(&json!({"jsonrpc": "2.0", "method": method}));
    }

    /// Sends a request and waits for the response with its id (skipping notifications).
    fn request(&mut self, method: &str, params: &Value) -> Result<Value, String> {
        let id = self.next;
        self.next += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.rx.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("{method}: no response within {DEADLINE:?}"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("{method}: the server closed its output"));
                }
            };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["id"].as_u64() == Some(id) {
                return Ok(v);
            }
        }
    }
}

/// The text of a tools/call response; fails on a JSON-RPC or a tool error.
fn tool_text(run: &Run, i: usize) -> String {
    let Some(Ok(reply)) = run.replies.get(i) else {
        panic!("reply {i}: {:?}", run.replies.get(i));
    };
    assert!(
        reply.get("error").is_none() && reply["result"]["isError"] != json!(true),
        "reply {i} is an error: {reply}"
    );
    reply["result"]["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The tools a tools/list reply (the second reply of a session) offers.
fn tool_names(run: &Run) -> Vec<String> {
    let Some(Ok(list)) = run.replies.get(1) else {
        panic!("no tools/list reply: {:?}", run.replies.get(1));
    };
    list["result"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(ToString::to_string))
        .collect()
}

/// A listener no scope allows: after a run, it must have no connection waiting.
struct Target(TcpListener);

impl Target {
    fn new() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the target");
        l.set_nonblocking(true).expect("nonblocking");
        Self(l)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().expect("addr").port()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port())
    }

    fn assert_untouched(&self, what: &str) {
        match self.0.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("{what}: the unlisted port got a connection: {other:?}"),
        }
    }
}

const PAGE: &str = "page from the field server\n";

// ---------------------------------------------------------------------------------------
// 1. MCP servers from npm, over stdio JSON-RPC
// ---------------------------------------------------------------------------------------

fn mcp_spec(ws: &Path) -> Spec {
    Spec {
        exec: strings(&[NODE]),
        read: vec![npm_tree()],
        deny: vec![format!("{}/.env", p(ws))],
        ..Spec::default()
    }
}

fn prepare_filesystem_server(f: &Field) {
    f.reset();
    f.write("notes.md", "# Notes\nthe agent may read this\n");
    f.write("src/lib.rs", "pub fn answer() -> u32 { 42 }\n");
    f.write(".env", &format!("API_KEY={}\n", f.secret));
}

#[test]
fn mcp_filesystem_server_lists_reads_and_writes_the_workspace() {
    let f = Field::start("mcp-fs", |ws, _| mcp_spec(ws));
    filesystem_session(&f);
}

/// The worked example (examples/scopes/mcp-filesystem.yaml, docs/SCOPES.md) with its
/// paths moved to this test's workspace and corpus: the same session passes under it.
#[test]
fn the_mcp_filesystem_example_scope_serves_the_same_session() {
    let example = fs::read_to_string(workspace_root().join("examples/scopes/mcp-filesystem.yaml"))
        .expect("read the example scope");
    let tools = corpus("npm");
    let tools = tools.parent().expect("the corpus directory").to_path_buf();
    let f = Field::start_yaml("mcp-filesystem", |ws, _| {
        example
            .replace("/workspace", p(ws))
            .replace("/opt/agent-tools", p(&tools))
    });
    filesystem_session(&f);
}

/// The server-filesystem session: list, read, create, write and read back in the
/// workspace, with zero violations.
fn filesystem_session(f: &Field) {
    let server = mcp_server("server-filesystem");
    let ws = p(&f.ws).to_string();
    let run = f.positive("server-filesystem session", |scope| {
        prepare_filesystem_server(f);
        f.mcp(
            scope,
            &server,
            &[&ws],
            &[],
            &[
                ("list_directory", json!({"path": ws})),
                ("read_text_file", json!({"path": format!("{ws}/notes.md")})),
                ("create_directory", json!({"path": format!("{ws}/out")})),
                (
                    "write_file",
                    json!({"path": format!("{ws}/out/summary.md"), "content": "written by the MCP server\n"}),
                ),
                ("read_text_file", json!({"path": format!("{ws}/out/summary.md")})),
            ],
        )
    });
    let check = || -> Result<(), String> {
        let tools = tool_names(&run);
        for t in ["list_directory", "read_text_file", "write_file"] {
            if !tools.iter().any(|n| n == t) {
                return Err(format!("tools/list lacks {t}: {tools:?}"));
            }
        }
        let listing = tool_text(&run, 2);
        if !(listing.contains("[FILE] notes.md") && listing.contains("[DIR] src")) {
            return Err(format!("list_directory: {listing}"));
        }
        if !tool_text(&run, 3).contains("the agent may read this") {
            return Err("read_text_file did not return notes.md".into());
        }
        if tool_text(&run, 6) != "written by the MCP server\n" {
            return Err(format!(
                "the written file reads back as {:?}",
                tool_text(&run, 6)
            ));
        }
        Ok(())
    };
    if let Err(e) = check() {
        panic!("{e}\n{}", f.describe(&run));
    }
    assert_eq!(
        fs::read_to_string(f.ws("out/summary.md")).expect("the server wrote the file"),
        "written by the MCP server\n"
    );
}

#[test]
fn mcp_filesystem_server_is_stopped_reading_outside_the_scope_or_a_denied_file() {
    let f = Field::start("mcp-fs", |ws, _| mcp_spec(ws));
    let server = mcp_server("server-filesystem");
    let ws = p(&f.ws).to_string();
    // The server itself allows the outside directory (a second allowed dir on its command
    // line): only the scope stands between it and the secret.
    prepare_filesystem_server(&f);
    let secret = f.secret_path();
    let run = f.mcp(
        &f.name,
        &server,
        &[&ws, p(&f.outside)],
        &[],
        &[
            ("list_directory", json!({"path": ws})),
            ("read_text_file", json!({"path": p(&secret)})),
        ],
    );
    let r = f.stopped(
        "server-filesystem reading a file outside the scope",
        &run,
        Field::names_path(&secret),
    );
    assert_eq!(s(&r, "/file/access"), "read", "{}", record_line(&r));
    // A file the scope denies inside the workspace it may otherwise read.
    prepare_filesystem_server(&f);
    let env_file = f.ws(".env");
    let run = f.mcp(
        &f.name,
        &server,
        &[&ws],
        &[],
        &[("read_text_file", json!({"path": p(&env_file)}))],
    );
    let r = f.stopped(
        "server-filesystem reading a files.deny entry",
        &run,
        Field::names_path(&env_file),
    );
    assert!(
        s(&r, "/violation/rule").starts_with("files.deny"),
        "{}",
        record_line(&r)
    );
}

fn memory_calls_that_build_a_graph() -> Vec<(&'static str, Value)> {
    vec![
        (
            "create_entities",
            json!({"entities": [
                {"name": "agent-monitor", "entityType": "project", "observations": ["watches agent processes"]},
                {"name": "field-corpus", "entityType": "test-suite", "observations": ["runs real software"]},
            ]}),
        ),
        (
            "create_relations",
            json!({"relations": [{"from": "field-corpus", "to": "agent-monitor", "relationType": "tests"}]}),
        ),
        (
            "add_observations",
            json!({"observations": [{"entityName": "agent-monitor", "contents": ["enforces scopes"]}]}),
        ),
        ("read_graph", json!({})),
    ]
}

#[test]
fn mcp_memory_server_keeps_its_graph_in_a_workspace_file() {
    let f = Field::start("mcp-memory", |ws, _| mcp_spec(ws));
    let server = mcp_server("server-memory");
    let memory = f.ws("memory.jsonl");
    let env = [("MEMORY_FILE_PATH", p(&memory))];
    let first = f.positive("server-memory building a graph", |scope| {
        f.reset();
        f.mcp(
            scope,
            &server,
            &[],
            &env,
            &memory_calls_that_build_a_graph(),
        )
    });
    let graph = tool_text(&first, 5);
    assert!(
        graph.contains("enforces scopes") && graph.contains("\"relationType\": \"tests\""),
        "{graph}\n{}",
        f.describe(&first)
    );
    let stored = fs::read_to_string(&memory).expect("the memory file was written");
    assert!(stored.contains("field-corpus"), "{stored}");
    // A new server process (a new task) finds the graph in the file.
    let second = f.positive("server-memory reading its file back", |scope| {
        f.mcp(
            scope,
            &server,
            &[],
            &env,
            &[
                ("search_nodes", json!({"query": "field"})),
                ("open_nodes", json!({"names": ["agent-monitor"]})),
            ],
        )
    });
    assert!(
        tool_text(&second, 2).contains("field-corpus")
            && tool_text(&second, 3).contains("watches agent processes"),
        "{}",
        f.describe(&second)
    );
}

#[test]
fn mcp_memory_server_is_stopped_with_its_memory_file_outside_the_scope() {
    let f = Field::start("mcp-memory", |ws, _| mcp_spec(ws));
    let server = mcp_server("server-memory");
    let memory = f.outside.join("memory.jsonl");
    fs::write(
        &memory,
        format!(
            "{}\n",
            json!({"type": "entity", "name": "credentials", "entityType": "secret", "observations": [f.secret]})
        ),
    )
    .expect("write the outside memory file");
    let run = f.mcp(
        &f.name,
        &server,
        &[],
        &[("MEMORY_FILE_PATH", p(&memory))],
        &[("read_graph", json!({}))],
    );
    f.stopped(
        "server-memory reading a memory file outside the scope",
        &run,
        Field::names_path(&memory),
    );
}

// ---------------------------------------------------------------------------------------
// 2. Python: a venv, pip from a local wheel directory, the package's code, pytest
// ---------------------------------------------------------------------------------------

fn python_spec(wheels: &Path) -> Spec {
    Spec {
        exec: strings(&[
            SH,
            "/usr/bin/python3*",
            // pip describes the platform in its User-Agent (its vendored `distro`), even
            // with --no-index: it runs lsb_release (a shell script running getopt, cut and
            // tr) and uname.
            "/usr/bin/lsb_release",
            "/usr/bin/getopt",
            "/usr/bin/cut",
            "/usr/bin/tr",
            "/usr/bin/uname",
        ]),
        read: vec![
            format!("{}/**", p(wheels)),
            // Debian's ensurepip installs pip into a new venv from these wheels.
            "/usr/share/python-wheels/**".to_string(),
        ],
        // pip's `distro` looks for `/etc/*-release` files by listing /etc: their names,
        // not what the other files in /etc hold.
        list: strings(&["/etc"]),
        ..Spec::default()
    }
}

fn prepare_python_project(f: &Field) {
    f.reset();
    f.write("proj/requirements.txt", PY_REQUIREMENTS);
    f.write("proj/report.py", PY_REPORT);
    f.write("proj/test_report.py", PY_TESTS);
    f.write("proj/data.csv", PY_DATA);
}

/// The machine's pip configuration (`/etc/pip.conf`, `PIP_*`) is not the project's.
const PIP_ENV: [(&str, &str); 1] = [("PIP_CONFIG_FILE", "/dev/null")];

#[test]
fn python_venv_pip_install_from_wheels_and_pytest() {
    let wheels = corpus("wheels");
    let f = Field::start("python", |_, _| python_spec(&wheels));
    let run = f.positive("venv + pip + pytest", |scope| {
        prepare_python_project(&f);
        f.run(
            scope,
            &[SH, "-c", PYTHON_SESSION, "sh", p(&f.ws), p(&wheels)],
            &PIP_ENV,
        )
    });
    let out = run.stdout();
    assert!(
        out.contains("| tool ") && out.contains("| pytest ") && out.contains("2 passed"),
        "{}",
        f.describe(&run)
    );
    assert!(
        f.ws("proj/report.md").is_file(),
        "the project's code wrote its report"
    );
}

#[test]
fn python_pytest_is_stopped_when_a_test_reads_a_secret() {
    let wheels = corpus("wheels");
    let f = Field::start("python", |_, _| python_spec(&wheels));
    prepare_python_project(&f);
    let secret = f.secret_path();
    // A test in the project (a poisoned dependency, a prompt-injected edit) reads a file
    // the scope does not grant.
    f.write(
        "proj/test_steal.py",
        &format!(
            "def test_reads_a_secret():\n    data = open({:?}).read()\n    print(data)\n    assert False, data\n",
            p(&secret)
        ),
    );
    let run = f.run(
        &f.name,
        &[SH, "-c", PYTHON_SESSION, "sh", p(&f.ws), p(&wheels)],
        &PIP_ENV,
    );
    f.stopped(
        "pytest running a test that reads outside the scope",
        &run,
        Field::names_path(&secret),
    );
}

// ---------------------------------------------------------------------------------------
// 3. git
// ---------------------------------------------------------------------------------------

/// git outside any agent, as the test's own tool (a clean config, a fixed identity).
fn git(dir: &Path, args: &[&str]) {
    let out = Command::new(GIT)
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "origin")
        .env("GIT_AUTHOR_EMAIL", "origin@example.org")
        .env("GIT_COMMITTER_NAME", "origin")
        .env("GIT_COMMITTER_EMAIL", "origin@example.org")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// A bare repository at `bare` with one commit holding `file` = `contents`.
fn bare_repo(bare: &Path, file: &str, contents: &str) {
    let (_g, work) = workspace();
    git(&work, &["init", "-q", "-b", "main"]);
    fs::write(work.join(file), contents).expect("write");
    git(&work, &["add", file]);
    git(&work, &["commit", "-q", "-m", "init"]);
    git(&work, &["clone", "-q", "--bare", p(&work), p(bare)]);
}

/// The agent's git environment: no system config (the machine's is not the project's), a
/// fixed identity.
const GIT_ENV: [(&str, &str); 5] = [
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_AUTHOR_NAME", "agent"),
    ("GIT_AUTHOR_EMAIL", "agent@example.org"),
    ("GIT_COMMITTER_NAME", "agent"),
    ("GIT_COMMITTER_EMAIL", "agent@example.org"),
];

fn git_spec(origin: &Path) -> Spec {
    Spec {
        exec: strings(&[SH, GIT, "/usr/lib/git-core/*"]),
        // The origin is read-only; git's templates come from /usr/share/git-core.
        read: vec![
            format!("{}/**", p(origin)),
            "/usr/share/git-core/**".to_string(),
        ],
        ..Spec::default()
    }
}

#[test]
fn git_init_commit_branch_diff_gc_and_clones_of_a_read_only_origin() {
    let (_og, origin_dir) = workspace();
    let origin = origin_dir.join("origin.git");
    bare_repo(&origin, "README", "hello from origin\n");
    let f = Field::start("git", |_, _| git_spec(&origin));
    git_session(&f, &origin);
}

/// The worked example (examples/scopes/coding-agent.yaml, docs/SCOPES.md) with its paths
/// moved to this test's workspace and mirror: the same git session passes under it.
#[test]
fn the_coding_agent_example_scope_serves_the_git_session() {
    let (_og, mirrors) = workspace();
    let origin = mirrors.join("origin.git");
    bare_repo(&origin, "README", "hello from origin\n");
    let example = fs::read_to_string(workspace_root().join("examples/scopes/coding-agent.yaml"))
        .expect("read the example scope");
    let f = Field::start_yaml("coding-agent", |ws, _| {
        example
            .replace("/workspace", p(ws))
            .replace("/srv/mirrors", p(&mirrors))
    });
    git_session(&f, &origin);
}

/// The git session: init, commit, branch, diff, log, gc and clones of `origin`, with
/// zero violations.
fn git_session(f: &Field, origin: &Path) {
    let run = f.positive("git session", |scope| {
        f.reset();
        f.run(
            scope,
            &[SH, "-c", GIT_SESSION, "sh", p(&f.ws), p(origin)],
            &GIT_ENV,
        )
    });
    let out = run.stdout();
    assert!(
        out.contains("Say hello")
            && out.contains("main.rs | 4")
            && out.contains("hello from origin"),
        "{}",
        f.describe(&run)
    );
    assert!(f.ws("clone/README").is_file() && f.ws("clone-over-transport/README").is_file());
}

#[test]
fn git_clone_of_a_repository_outside_the_scope_is_stopped() {
    let (_og, origin_dir) = workspace();
    let origin = origin_dir.join("origin.git");
    bare_repo(&origin, "README", "hello from origin\n");
    let f = Field::start("git", |_, _| git_spec(&origin));
    let private = f.outside.join("private.git");
    bare_repo(&private, "credentials.txt", &f.secret);
    let script = format!(
        "set -eu\ncd {ws}\ngit clone -q {private} stolen\ngit -C stolen show HEAD:credentials.txt\n",
        ws = p(&f.ws),
        private = p(&private)
    );
    let run = f.run(&f.name, &[SH, "-c", &script], &GIT_ENV);
    f.stopped(
        "git clone of a repository outside the scope",
        &run,
        Field::names_path(&private),
    );
    assert!(!f.ws("stolen/credentials.txt").exists());
}

// ---------------------------------------------------------------------------------------
// 4. A shell session of coreutils
// ---------------------------------------------------------------------------------------

fn coreutils_spec(ws: &Path) -> Spec {
    Spec {
        exec: strings(&[
            SH,
            "/usr/bin/mkdir",
            "/usr/bin/cp",
            "/usr/bin/mv",
            "/usr/bin/rm",
            "/usr/bin/find",
            "/usr/bin/ls",
            "/usr/bin/sed",
            "/usr/bin/sort",
            "/usr/bin/tar",
            "/usr/bin/gzip",
        ]),
        deny: vec![format!("{}/.env", p(ws))],
        ..Spec::default()
    }
}

#[test]
fn coreutils_session_mkdir_cp_mv_rm_find_ls_sed_sort_tar() {
    let f = Field::start("coreutils", |ws, _| coreutils_spec(ws));
    let run = f.positive("coreutils session", |scope| {
        f.reset();
        f.run(scope, &[SH, "-c", COREUTILS_SESSION, "sh", p(&f.ws)], &[])
    });
    let out = run.stdout();
    assert!(
        out.contains("./unpacked/copy/lib/renamed.txt")
            && out.contains("./unpacked/copy/lib/deep/leaf.txt")
            && !out.contains("scratch.tmp")
            && out.contains("ALPHA\nmike\nzeta"),
        "{}",
        f.describe(&run)
    );
    assert!(
        !f.ws("src").exists() && !f.ws("copy").exists(),
        "rm -rf ran"
    );
}

#[test]
fn coreutils_are_stopped_archiving_outside_the_scope_or_copying_a_denied_file() {
    let f = Field::start("coreutils", |ws, _| coreutils_spec(ws));
    let script = format!(
        "set -eu\ncd {ws}\ntar czf loot.tgz {outside}\n",
        ws = p(&f.ws),
        outside = p(&f.outside)
    );
    let run = f.run(&f.name, &[SH, "-c", &script], &[]);
    f.stopped(
        "tar of a directory outside the scope",
        &run,
        Field::names_path(&f.outside),
    );
    f.write(".env", &format!("API_KEY={}\n", f.secret));
    let env_file = f.ws(".env");
    let script = format!(
        "set -eu\ncd {ws}\ncp .env env.bak\nsort env.bak\n",
        ws = p(&f.ws)
    );
    let run = f.run(&f.name, &[SH, "-c", &script], &[]);
    let r = f.stopped(
        "cp of a files.deny entry",
        &run,
        Field::names_path(&env_file),
    );
    assert!(
        s(&r, "/violation/rule").starts_with("files.deny"),
        "{}",
        record_line(&r)
    );
}

// ---------------------------------------------------------------------------------------
// 5. curl and Node against a loopback HTTP server in scope
// ---------------------------------------------------------------------------------------

fn web_spec(port: u16) -> Spec {
    Spec {
        exec: strings(&[NODE, CURL]),
        connect: vec![port],
        ..Spec::default()
    }
}

#[test]
fn curl_fetches_a_page_from_an_allowed_local_server() {
    let server = HttpServer::start(PAGE);
    let f = Field::start("curl", |_, _| web_spec(server.port()));
    let page = f.ws("page.html");
    let run = f.positive("curl to an allowed port", |scope| {
        f.reset();
        f.run(
            scope,
            &[CURL, "-sS", "--fail", "-o", p(&page), &server.url()],
            &[],
        )
    });
    assert_eq!(
        fs::read_to_string(&page).unwrap_or_default(),
        PAGE,
        "{}",
        f.describe(&run)
    );
}

#[test]
fn curl_to_an_unlisted_port_is_blocked() {
    let server = HttpServer::start(PAGE);
    let target = Target::new();
    let f = Field::start("curl", |_, _| web_spec(server.port()));
    let run = f.run(&f.name, &[CURL, "-sS", "--fail", &target.url()], &[]);
    let r = f.stopped(
        "curl to an unlisted port",
        &run,
        Field::names_port(target.port()),
    );
    assert_refused_in_the_kernel(&r);
    target.assert_untouched("curl");
}

/// A connect outside the scope fails with EPERM in the cgroup hook (then kill-agent ends the
/// task, which the record may say instead of `blocked`).
fn assert_refused_in_the_kernel(r: &Value) {
    assert!(
        s(r, "/layer") == "cgroup-hook" && ["blocked", "killed-agent"].contains(&s(r, "/action")),
        "{}",
        record_line(r)
    );
}

fn node_session(f: &Field, scope: &str, url: &str) -> Run {
    f.reset();
    f.write("node_session.mjs", NODE_SESSION);
    f.run(
        scope,
        &[NODE, p(&f.ws("node_session.mjs")), p(&f.ws), url],
        &[],
    )
}

#[test]
fn node_fs_promises_child_process_and_fetch_in_the_workspace() {
    let server = HttpServer::start(PAGE);
    let f = Field::start("node", |_, _| web_spec(server.port()));
    let run = f.positive("node session", |scope| {
        node_session(&f, scope, &server.url())
    });
    let line = run.stdout();
    let v: Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("the session's JSON line ({e})\n{}", f.describe(&run)));
    assert_eq!(v["sorted"], "alpha,beta,gamma", "{v}");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["page"], PAGE.trim(), "{v}");
    assert_eq!(v["listed"], json!(["renamed.txt"]), "{v}");
    assert!(!f.ws("node-work").exists(), "fs.rm ran");
}

#[test]
fn node_fetch_to_an_unlisted_port_is_blocked() {
    let server = HttpServer::start(PAGE);
    let target = Target::new();
    let f = Field::start("node", |_, _| web_spec(server.port()));
    let run = node_session(&f, &f.name, &target.url());
    let r = f.stopped(
        "node fetch to an unlisted port",
        &run,
        Field::names_port(target.port()),
    );
    assert_refused_in_the_kernel(&r);
    target.assert_untouched("node fetch");
}

// ---------------------------------------------------------------------------------------
// 6. A Rust program sizing itself by its cgroup's CPU limit
// ---------------------------------------------------------------------------------------

fn probe_spec(probe: &Path) -> Spec {
    Spec {
        exec: vec![p(probe).to_string()],
        ..Spec::default()
    }
}

#[test]
fn rust_available_parallelism_in_the_task_cgroup() {
    let probe = corpus("bin/parallelism");
    let f = Field::start("rust-probe", |_, _| probe_spec(&probe));
    let out_file = f.ws("parallelism.txt");
    let run = f.positive("available_parallelism", |scope| {
        f.reset();
        f.run(scope, &[p(&probe), "--out", p(&out_file)], &[])
    });
    let written = fs::read_to_string(&out_file).unwrap_or_default();
    assert!(
        written.starts_with("parallelism=") && written == run.stdout(),
        "{written:?}\n{}",
        f.describe(&run)
    );
}

#[test]
fn rust_probe_is_stopped_reading_a_secret() {
    let probe = corpus("bin/parallelism");
    let f = Field::start("rust-probe", |_, _| probe_spec(&probe));
    let secret = f.secret_path();
    let run = f.run(&f.name, &[p(&probe), "--read", p(&secret)], &[]);
    f.stopped(
        "the Rust probe reading outside the scope",
        &run,
        Field::names_path(&secret),
    );
}
