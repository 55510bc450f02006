//! `agent-monitor mcp` with the real MCP filesystem server from npm (the field corpus,
//! installed under `target/field` by `cargo xtask setup`): per-tool scopes from
//! `spec.tools` bind the server while each call runs, an unlisted tool is refused before it
//! reaches the server, `tools/list` is filtered, every record of a call names its tool,
//! and a server killed mid-call answers the client with an error instead of a hang.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    thread,
    time::Instant,
};

use agent_monitor_e2e::{
    DEADLINE, Daemon, binary, s, unique, wait_or_kill, workspace, workspace_root,
};
use serde_json::{Value, json};

const NODE: &str = "/usr/bin/node";

fn field_dir() -> PathBuf {
    std::env::var_os("AGENT_MONITOR_FIELD")
        .map_or_else(|| workspace_root().join("target/field"), PathBuf::from)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn server() -> PathBuf {
    let path =
        field_dir().join("npm/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    assert!(
        path.exists(),
        "{} is missing: the field corpus is installed by `cargo xtask setup`",
        path.display()
    );
    path
}

/// The server's scope: it may read and write the workspace (but not `.env`); its tools
/// may do less: `read_text_file` and `list_directory` only read, `write_file` writes only
/// `out/**`, `edit_file` is listed with a read-only scope, `move_file` is not listed.
fn scope(name: &str, ws: &Path) -> String {
    let npm = format!("{}/**", p(&field_dir().join("npm")));
    let ws = p(ws);
    enforced_server(
        name,
        &format!(
            "  files:
    read: [\"{npm}\", \"{ws}/**\"]
    write: [\"{ws}/**\"]
    deny: [\"{ws}/.env\"]
  tools:
    list_directory:
      files: {{read: [\"{npm}\", \"{ws}/**\"]}}
    read_text_file:
      files: {{read: [\"{npm}\", \"{ws}/**\"]}}
    edit_file:
      files: {{read: [\"{npm}\", \"{ws}/**\"]}}
    write_file:
      files: {{read: [\"{npm}\", \"{ws}/**\"], write: [\"{ws}/out/**\"]}}
"
        ),
    )
}

/// An enforced scope `name` that lets node run, with `rest` (its `files` and `tools`).
fn enforced_server(name: &str, rest: &str) -> String {
    format!(
        "apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {{name: {name}, owner: mcp@example.org}}
spec:
  mode: enforce
  onViolation: kill-process
  exec:
    allow: [{NODE}]
{rest}"
    )
}

struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::Receiver<String>,
    next: u64,
    task: String,
}

impl Session {
    /// `agent-monitor mcp --scope NAME -- node server WS`, initialized.
    fn start(daemon: &Daemon, scope: &str, ws: &Path) -> Self {
        let task = unique("mcp");
        let mut child = Command::new(binary())
            .arg("mcp")
            .arg("--socket")
            .arg(&daemon.socket)
            .args(["--scope", scope, "--task", &task, "--", NODE])
            .arg(server())
            .arg(ws)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", ws)
            .current_dir(ws)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run agent-monitor mcp");
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut session = Self {
            child,
            stdin,
            rx,
            next: 1,
            task,
        };
        let init = session.request(
            "initialize",
            &json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "agent-monitor-mcp-test", "version": "1"},
            }),
        );
        assert!(init.get("result").is_some(), "initialize: {init}");
        session.send_line(
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
        );
        session
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .expect("write to agent-monitor mcp");
    }

    /// The next message the proxy writes, within the deadline.
    fn next_message(&self, what: &str) -> Value {
        let line = self
            .rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("{what}: no answer within {DEADLINE:?} ({e})"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"))
    }

    /// Sends a request and waits for the answer with its id.
    fn request(&mut self, method: &str, params: &Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send_line(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
        );
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "{method}: no answer");
            let v = self.next_message(method);
            if v["id"].as_u64() == Some(id) {
                return v;
            }
        }
    }

    fn call(&mut self, tool: &str, arguments: &Value) -> Value {
        self.request("tools/call", &json!({"name": tool, "arguments": arguments}))
    }

    /// Closes the client's input and waits for the proxy to exit.
    fn finish(mut self) -> String {
        drop(self.stdin.take());
        let (_, hung) = wait_or_kill(&mut self.child, DEADLINE);
        assert!(
            !hung,
            "agent-monitor mcp did not exit after the end of its input"
        );
        self.task
    }
}

fn tool_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect()
}

fn text(reply: &Value) -> String {
    assert!(
        reply.get("error").is_none() && reply["result"]["isError"] != json!(true),
        "an error: {reply}"
    );
    reply["result"]["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["text"].as_str())
        .collect()
}

fn setup(name: &str) -> (tempfile::TempDir, PathBuf, Daemon) {
    let (guard, ws) = workspace();
    fs::write(ws.join("notes.md"), "# Notes\nthe agent may read this\n").expect("notes");
    fs::create_dir(ws.join("out")).expect("mkdir out");
    let daemon = Daemon::start(&[("mcp.yaml", &scope(name, &ws))]);
    let status = daemon.get_json("/v1/status");
    assert!(
        status["scopes"]
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s == name)),
        "scope not loaded: {}",
        status["scope_errors"]
    );
    (guard, ws, daemon)
}

#[test]
fn tool_calls_run_under_their_tools_scopes_and_unlisted_tools_never_run() {
    let (_guard, ws, daemon) = setup("mcp-tools");
    let mut session = Session::start(&daemon, "mcp-tools", &ws);
    let tools = tool_names(&session.request("tools/list", &json!({})));
    let mut want = vec![
        "edit_file",
        "list_directory",
        "read_text_file",
        "write_file",
    ];
    let mut got: Vec<&str> = tools.iter().map(String::as_str).collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "tools/list is filtered to spec.tools");

    let read = session.call("read_text_file", &json!({"path": p(&ws.join("notes.md"))}));
    assert!(text(&read).contains("the agent may read this"), "{read}");
    let write = session.call(
        "write_file",
        &json!({"path": p(&ws.join("out/summary.md")), "content": "by the server\n"}),
    );
    text(&write);
    assert_eq!(
        fs::read_to_string(ws.join("out/summary.md")).expect("written"),
        "by the server\n"
    );
    let moved = session.call(
        "move_file",
        &json!({"source": p(&ws.join("notes.md")), "destination": p(&ws.join("moved.md"))}),
    );
    assert!(
        moved["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("move_file") && m.contains("spec.tools")),
        "an unlisted tool gets a JSON-RPC error: {moved}"
    );
    assert!(ws.join("notes.md").exists() && !ws.join("moved.md").exists());
    // The server still serves after a refusal.
    let again = session.call("read_text_file", &json!({"path": p(&ws.join("notes.md"))}));
    text(&again);
    let task = session.finish();

    let of_task = |r: &Value| s(r, "/agent/task") == task;
    let read_record = daemon.wait_record("the read of notes.md", |r| {
        of_task(r) && s(r, "/kind") == "file" && s(r, "/file/path").ends_with("/notes.md")
    });
    assert_eq!(
        s(&read_record, "/call/name"),
        "read_text_file",
        "{read_record}"
    );
    assert!(!s(&read_record, "/call/id").is_empty());
    assert!(s(&read_record, "/call/digest").starts_with("sha256:"));
    let write_record = daemon.wait_record("the write of out/summary.md", |r| {
        of_task(r) && s(r, "/kind") == "file" && s(r, "/file/path").ends_with("/out/summary.md")
    });
    assert_eq!(
        s(&write_record, "/call/name"),
        "write_file",
        "{write_record}"
    );
    assert_eq!(s(&write_record, "/verdict"), "allowed", "{write_record}");
    let refused = daemon.wait_record("the refused move_file", |r| {
        of_task(r) && s(r, "/task/event") == "call-refused"
    });
    assert_eq!(s(&refused, "/call/name"), "move_file");
    assert_eq!(s(&refused, "/verdict"), "violation");
    let ended = daemon.wait_record("the end of write_file", |r| {
        of_task(r) && s(r, "/task/event") == "call-ended" && s(r, "/call/name") == "write_file"
    });
    assert_eq!(s(&ended, "/call/end/outcome"), "ok", "{ended}");
    assert!(
        ended["call"]["end"]["events"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{ended}"
    );
    report_groups_by_tool(&daemon, &task);
    let records = daemon.records();
    assert!(
        !records
            .iter()
            .any(|r| of_task(r) && s(r, "/verdict") == "violation" && s(r, "/kind") == "file"),
        "no file violation in the allowed session"
    );
}

#[test]
fn a_write_outside_the_tools_scope_is_stopped_and_the_client_gets_an_error() {
    let (_guard, ws, daemon) = setup("mcp-stop");
    let before = fs::read_to_string(ws.join("notes.md")).expect("notes");
    let mut session = Session::start(&daemon, "mcp-stop", &ws);
    // The server's scope allows writing the whole workspace; write_file's only out/**.
    let reply = session.call(
        "write_file",
        &json!({"path": p(&ws.join("notes.md")), "content": "overwritten\n"}),
    );
    assert!(reply.get("error").is_some(), "the call fails: {reply}");
    assert_eq!(
        fs::read_to_string(ws.join("notes.md")).expect("notes"),
        before
    );
    let task = session.finish();
    let of_task = |r: &Value| s(r, "/agent/task") == task;
    let violation = daemon.wait_record("the stopped write", |r| {
        of_task(r) && s(r, "/verdict") == "violation" && s(r, "/kind") == "file"
    });
    assert_eq!(s(&violation, "/call/name"), "write_file", "{violation}");
    assert!(
        s(&violation, "/file/path").contains("/notes.md"),
        "the write of notes.md (or its temporary file): {violation}"
    );
    let ended = daemon.wait_record("the end of the call", |r| {
        of_task(r) && s(r, "/task/event") == "call-ended"
    });
    assert_eq!(s(&ended, "/call/end/outcome"), "server-died", "{ended}");

    // edit_file is listed with a scope that only reads: its write is stopped too.
    let mut session = Session::start(&daemon, "mcp-stop", &ws);
    let reply = session.call(
        "edit_file",
        &json!({"path": p(&ws.join("notes.md")), "edits": [{"oldText": "Notes", "newText": "Edited"}]}),
    );
    assert!(
        reply.get("error").is_some() || reply["result"]["isError"] == json!(true),
        "{reply}"
    );
    assert_eq!(
        fs::read_to_string(ws.join("notes.md")).expect("notes"),
        before
    );
    let task = session.finish();
    let violation = daemon.wait_record("the stopped edit", |r| {
        s(r, "/agent/task") == task && s(r, "/verdict") == "violation"
    });
    assert_eq!(s(&violation, "/call/name"), "edit_file", "{violation}");
}

#[test]
fn malformed_and_oversized_messages_get_errors_not_a_hang() {
    let (_guard, ws, daemon) = setup("mcp-bad");
    let mut session = Session::start(&daemon, "mcp-bad", &ws);
    session.send_line("{not json");
    let parse = session.next_message("a malformed message");
    assert_eq!(parse["error"]["code"], json!(-32700), "{parse}");
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(17 << 20));
    session.send_line(&big);
    let oversized = session.next_message("an oversized message");
    assert_eq!(oversized["error"]["code"], json!(-32600), "{oversized}");
    // Still serving.
    let read = session.call("read_text_file", &json!({"path": p(&ws.join("notes.md"))}));
    text(&read);
    let task = session.finish();
    let errors = || {
        daemon
            .records()
            .into_iter()
            .filter(|r| s(r, "/agent/task") == task && s(r, "/task/event") == "protocol-error")
            .count()
    };
    agent_monitor_e2e::wait_for("two protocol-error records", || {
        (errors() == 2).then_some(())
    });
}

#[test]
fn a_tool_scope_wider_than_its_server_is_refused_naming_the_entry() {
    let (_guard, ws) = workspace();
    let yaml =
        scope("mcp-wide", &ws) + "    create_directory:\n      files: {write: [\"/tmp/**\"]}\n";
    let file = ws.join("wide.yaml");
    fs::write(&file, yaml).expect("write the scope");
    let out = Command::new(binary())
        .args(["check"])
        .arg(&file)
        .output()
        .expect("run agent-monitor check");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("spec.tools.create_directory") && all.contains("files.write[0]: /tmp/**"),
        "{all}"
    );
}

/// The daemon's `held` counter (operations the kernel stopped until judged).
fn held(daemon: &Daemon) -> u64 {
    let (code, body) = daemon.request("GET", "/metrics", None);
    assert_eq!(code, 200, "GET /metrics: {body}");
    body.lines()
        .find_map(|l| l.strip_prefix("agent_monitor_held_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no agent_monitor_held_total in /metrics:\n{body}"))
}

/// Files judged readable under one tool's scope stay readable for that tool across the
/// switches of other calls (its repeated read is not held again), and are never taken as
/// readable under another tool's scope that lacks them.
#[test]
fn reads_judged_under_one_tool_hold_for_that_tool_alone() {
    const ROUNDS: u64 = 4;
    let (_guard, ws) = workspace();
    fs::write(ws.join("notes.md"), "# Notes\nthe agent may read this\n").expect("notes");
    fs::create_dir(ws.join("pub")).expect("mkdir pub");
    fs::write(ws.join("pub/a.md"), "public\n").expect("pub/a.md");
    let npm = format!("{}/**", p(&field_dir().join("npm")));
    let w = p(&ws);
    let name = "mcp-reads";
    let yaml = enforced_server(
        name,
        &format!(
            "  files:
    read: [\"{npm}\", \"{w}/**\"]
  tools:
    read_text_file:
      files: {{read: [\"{npm}\", \"{w}/**\"]}}
    read_multiple_files:
      files: {{read: [\"{npm}\", \"{w}/pub/**\"]}}
"
        ),
    );
    let daemon = Daemon::start(&[("mcp.yaml", &yaml)]);
    let mut session = Session::start(&daemon, name, &ws);
    let notes = json!({"path": p(&ws.join("notes.md"))});
    let public = json!({"paths": [p(&ws.join("pub/a.md"))]});
    let round = |session: &mut Session| {
        let read = session.call("read_text_file", &notes);
        assert!(text(&read).contains("the agent may read this"), "{read}");
        let read = session.call("read_multiple_files", &public);
        assert!(text(&read).contains("public"), "{read}");
    };
    // Each file is held and judged the first time under each tool's scope.
    round(&mut session);
    // Then, switched back and forth, neither is held again: were the reads forgotten at a
    // switch, each call would be held at least once (2 * ROUNDS holds). Node may still
    // read a file of its own for the first time now and then (the CPU count, once).
    let before = held(&daemon);
    for _ in 0..ROUNDS {
        round(&mut session);
    }
    let holds = held(&daemon) - before;
    assert!(
        holds < ROUNDS,
        "{holds} holds in {ROUNDS} rounds of two calls: the reads are judged again at every call"
    );
    // Under read_multiple_files' scope notes.md is out of bounds, however often another
    // tool read it.
    let stolen = session.call(
        "read_multiple_files",
        &json!({"paths": [p(&ws.join("notes.md"))]}),
    );
    let leaked = stolen.to_string().contains("the agent may read this");
    let task = session.finish();
    assert!(
        !leaked,
        "notes.md leaked through read_multiple_files: {stolen}"
    );
    let violation = daemon.wait_record("the read of notes.md under read_multiple_files", |r| {
        s(r, "/agent/task") == task
            && s(r, "/kind") == "file"
            && s(r, "/verdict") == "violation"
            && s(r, "/file/path").ends_with("/notes.md")
    });
    assert_eq!(
        s(&violation, "/call/name"),
        "read_multiple_files",
        "{violation}"
    );
}

/// `report` groups what the session's calls used by tool.
fn report_groups_by_tool(daemon: &Daemon, task: &str) {
    let report = agent_monitor_e2e::wait_for("the report of both reads", || {
        let r = daemon.get_json(&format!("/v1/report/{task}"));
        let reads = r["calls"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "read_text_file")?
            .clone();
        (reads["calls"] == 2).then_some(r)
    });
    let by = |name: &str| {
        report["calls"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in the report: {report}"))
    };
    let reads = by("read_text_file");
    assert!(
        reads["used"].as_array().is_some_and(|u| u.iter().any(|i| i
            .as_str()
            .is_some_and(|i| i.starts_with("read ") && i.ends_with("/notes.md")))),
        "{reads}"
    );
    let writes = by("write_file");
    assert_eq!(writes["calls"], 1, "{writes}");
    assert!(
        writes["used"].as_array().is_some_and(|u| u
            .iter()
            .any(|i| i.as_str().is_some_and(|i| i.ends_with("/out/summary.md")))),
        "{writes}"
    );
    assert_eq!(by("move_file")["refused"], 1, "{report}");
}
