//! What `agent-monitor mcp` costs per tool call: the same `read_text_file` calls to the MCP
//! filesystem server (field corpus, `target/field/npm`) sent straight to the server, through
//! `agent-monitor mcp` under a scope without `spec.tools` (calls one at a time, attributed,
//! no switch) and under one with `spec.tools` (the kernel maps switched to the tool's scope
//! and back around each call). Round trip per call, p50 and p99.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{Env, daemon::Daemon, report::percentile};

const NODE: &str = "/usr/bin/node";
const WARMUP: usize = 20;
const CALLS: usize = 300;

/// One way of reaching the server.
#[derive(Debug, Clone, Default)]
pub struct Way {
    pub name: &'static str,
    pub lat: Vec<Duration>,
}

#[derive(Debug, Default)]
pub struct Calls {
    pub ways: Vec<Way>,
    pub error: Option<String>,
}

struct Session {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    next: u64,
}

impl Session {
    fn start(mut cmd: Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the MCP server")?;
        let stdin = child.stdin.take().context("stdin")?;
        let out = BufReader::new(child.stdout.take().context("stdout")?);
        let mut s = Self {
            child,
            stdin,
            out,
            next: 1,
        };
        s.request(
            "initialize",
            &json!({"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "bench", "version": "1"}}),
        )?;
        writeln!(
            s.stdin,
            "{}",
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
        )?;
        Ok(s)
    }

    fn request(&mut self, method: &str, params: &Value) -> anyhow::Result<Value> {
        let id = self.next;
        self.next += 1;
        writeln!(
            self.stdin,
            "{}",
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        )?;
        self.stdin.flush()?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.out.read_line(&mut line)? == 0 {
                bail!("{method}: the server closed its output");
            }
            let v: Value = serde_json::from_str(&line).context("an answer that is not JSON")?;
            if v["id"].as_u64() == Some(id) {
                if v.get("error").is_some() || v["result"]["isError"] == json!(true) {
                    bail!("{method}: {v}");
                }
                return Ok(v);
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scope(name: &str, npm: &str, ws: &str, tools: bool) -> String {
    let mut yaml = format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: {name}, owner: bench@example.org}}\nspec:\n  mode: enforce\n  onViolation: kill-process\n  exec: {{allow: [{NODE}]}}\n  files:\n    read: [\"{npm}/**\", \"{ws}/**\"]\n    write: [\"{ws}/**\"]\n"
    );
    if tools {
        let _ = write!(
            yaml,
            "  tools:\n    read_text_file:\n      files: {{read: [\"{npm}/**\", \"{ws}/**\"]}}\n    write_file:\n      files: {{read: [\"{npm}/**\", \"{ws}/**\"], write: [\"{ws}/out/**\"]}}\n"
        );
    }
    yaml
}

fn measure(name: &'static str, cmd: Command, file: &Path) -> anyhow::Result<Way> {
    let mut s = Session::start(cmd)?;
    let args = json!({"name": "read_text_file", "arguments": {"path": file}});
    let mut lat = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let t = Instant::now();
        s.request("tools/call", &args)?;
        if i >= WARMUP {
            lat.push(t.elapsed());
        }
    }
    lat.sort_unstable();
    Ok(Way { name, lat })
}

pub fn run(env: &Env, root: &Path, out: &mut Calls) {
    if let Err(e) = run_inner(env, root, out) {
        out.error = Some(format!("{e:#}"));
    }
}

fn run_inner(env: &Env, root: &Path, out: &mut Calls) -> anyhow::Result<()> {
    let npm = root.join("target/field/npm");
    let server: PathBuf =
        npm.join("node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    if !server.is_file() {
        bail!("{} is missing: run `cargo xtask setup`", server.display());
    }
    let ws = env.dir.join("mcp-ws");
    fs::create_dir_all(ws.join("out")).context("creating the MCP workspace")?;
    let file = ws.join("notes.md");
    fs::write(&file, "# Notes\nread by the bench\n").context("writing the file")?;
    let (npm_s, ws_s) = (npm.display().to_string(), ws.display().to_string());
    let scopes = env.dir.join("calls-scopes");
    fs::create_dir_all(&scopes).context("creating the scopes")?;
    fs::write(
        scopes.join("plain.yaml"),
        scope("bench-mcp-plain", &npm_s, &ws_s, false),
    )?;
    fs::write(
        scopes.join("tools.yaml"),
        scope("bench-mcp-tools", &npm_s, &ws_s, true),
    )?;
    let direct = {
        let mut c = Command::new(NODE);
        c.arg(&server).arg(&ws);
        c
    };
    out.ways.push(measure("server alone", direct, &file)?);
    let daemon = Daemon::start(
        &env.daemon,
        &env.dir.join("calls-daemon"),
        &scopes,
        &format!("{}-calls", env.name),
        None,
        &[],
    )?;
    for (name, scope) in [
        ("mcp, no spec.tools", "bench-mcp-plain"),
        ("mcp, spec.tools (switch)", "bench-mcp-tools"),
    ] {
        let mut c = Command::new(&env.daemon);
        c.arg("mcp")
            .arg("--socket")
            .arg(daemon.socket())
            .args(["--scope", scope, "--", NODE])
            .arg(&server)
            .arg(&ws);
        out.ways.push(measure(name, c, &file)?);
    }
    drop(daemon);
    Ok(())
}

pub fn render(md: &mut String, c: &Calls) -> anyhow::Result<()> {
    writeln!(
        md,
        "\n### 10. MCP calls through `agent-monitor mcp` ({CALLS} `read_text_file` calls to the npm filesystem server after {WARMUP} not timed, one at a time, round trip as the client sees it)\n"
    )?;
    writeln!(
        md,
        "Without `spec.tools` a call costs the proxy's two hops and two requests to the daemon (start, end); with it also the switch of the server's kernel maps to the tool's scope and back.\n"
    )?;
    if let Some(e) = &c.error {
        writeln!(md, "Not measured: {e}\n")?;
    }
    writeln!(md, "| path | p50 ms | p99 ms |\n|---|---|---|")?;
    let ms = |d: Option<Duration>| {
        d.map_or_else(|| "-".into(), |d| format!("{:.2}", d.as_secs_f64() * 1e3))
    };
    for w in &c.ways {
        writeln!(
            md,
            "| {} | {} | {} |",
            w.name,
            ms(percentile(&w.lat, 50.0)),
            ms(percentile(&w.lat, 99.0))
        )?;
    }
    Ok(())
}
