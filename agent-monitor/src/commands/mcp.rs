//! `agent-monitor mcp`: sits between an MCP client (this process's stdin and stdout) and a
//! stdio MCP server it starts as a task, passing newline-delimited JSON-RPC through
//! unchanged, except that:
//!
//! - each `tools/call` is passed to the server only after the daemon has bound the server by
//!   the tool's scope (`PUT /v1/tasks/{id}/call`), and the server is bound by its own scope
//!   again once the answer has come (`DELETE`); calls therefore go one at a time;
//! - a call of a tool `spec.tools` does not list is answered with a JSON-RPC error here
//!   (the daemon records it) and never reaches the server; `tools/list` answers are
//!   filtered to the listed tools;
//! - malformed or oversized messages, and a server that dies mid-call, are answered with
//!   JSON-RPC errors and recorded: the client never waits for an answer that cannot come.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;

use anyhow::Context as _;
use hyper::Method;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader},
    process::{ChildStdin, ChildStdout},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use super::confine;
use crate::{
    api::client::{Client, ClientError, Retry},
    cli::McpArgs,
    control::state::TaskCreated,
};

/// The largest message passed either way (a file's content travels in one).
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Calls waiting for the one in flight; past this a call is answered with an error.
const MAX_QUEUED_CALLS: usize = 1024;

/// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;

/// One line read with a size cap.
#[derive(Debug)]
enum Line {
    Message(Vec<u8>),
    /// Longer than the cap: skipped to its end.
    TooLong(usize),
    Eof,
}

/// Reads one `\n`-terminated line of at most `max` bytes; a longer one is skipped whole.
async fn read_line(r: &mut (impl AsyncBufRead + Unpin), max: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut skipped = 0usize;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(match (line.is_empty(), skipped) {
                (true, 0) => Line::Eof,
                (_, 0) => Line::Message(line),
                (_, n) => Line::TooLong(n),
            });
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let end = chunk.len() < done;
        if skipped > 0 || line.len() + chunk.len() > max {
            skipped += line.len() + chunk.len();
            line.clear();
        } else {
            line.extend_from_slice(chunk);
        }
        r.consume(done);
        if end {
            return Ok(if skipped > 0 {
                Line::TooLong(skipped)
            } else {
                Line::Message(line)
            });
        }
    }
}

/// Reads lines into a channel until the end of input (or an error, taken as the end).
fn reader(mut r: impl AsyncBufRead + Unpin + Send + 'static) -> mpsc::Receiver<Line> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let line = read_line(&mut r, MAX_MESSAGE_BYTES)
                .await
                .unwrap_or(Line::Eof);
            let eof = matches!(line, Line::Eof);
            if tx.send(line).await.is_err() || eof {
                break;
            }
        }
    });
    rx
}

/// The text form of a JSON-RPC id (the daemon's records carry it).
fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The digest of a call's arguments in its records: SHA-256 of their JSON text (keys in
/// order), so an operator can match a record to the call in the client's own log without
/// the arguments (which may hold secrets) being written.
fn digest(arguments: &Value) -> String {
    use sha2::Digest as _;
    let sum = sha2::Sha256::digest(arguments.to_string().as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in sum {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn error_reply(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

async fn write_line(w: &mut (impl AsyncWrite + Unpin), message: &[u8]) -> std::io::Result<()> {
    w.write_all(message).await?;
    w.write_all(b"\n").await?;
    w.flush().await
}

/// The proxy's state between the two sides.
struct Proxy {
    client: Client,
    task: String,
    /// `spec.tools` names; empty: every tool, no scope switch.
    tools: Vec<String>,
    /// The call passed to the server and not answered yet: its id.
    in_flight: Option<Value>,
    /// Calls waiting for the one in flight.
    queue: VecDeque<Value>,
    /// Ids of `tools/list` requests whose answers are filtered.
    lists: HashSet<String>,
    server_in: Option<ChildStdin>,
    out: tokio::io::Stdout,
}

impl Proxy {
    async fn send_client(&mut self, message: &Value) -> anyhow::Result<()> {
        write_line(&mut self.out, message.to_string().as_bytes())
            .await
            .context("writing to the MCP client")
    }

    async fn send_server(&mut self, message: &[u8]) {
        if let Some(w) = self.server_in.as_mut()
            && write_line(w, message).await.is_err()
        {
            // The server is gone; its end of output says so to the loop.
            self.server_in = None;
        }
    }

    /// Records a message refused without reaching the other side.
    async fn protocol_error(&self, error: String) {
        let path = format!("/v1/tasks/{}/call-errors", self.task);
        if let Err(e) = self
            .client
            .send(Method::POST, &path, Some(json!({ "error": error })))
            .await
        {
            eprintln!("agent-monitor mcp: recording a protocol error: {e}");
        }
    }

    /// A message from the client.
    async fn on_client(&mut self, line: Line) -> anyhow::Result<()> {
        let bytes = match line {
            Line::Message(bytes) => bytes,
            Line::TooLong(n) => {
                let why = format!(
                    "a client message of {n} bytes is over the limit of {MAX_MESSAGE_BYTES}"
                );
                self.protocol_error(why.clone()).await;
                return self
                    .send_client(&error_reply(&Value::Null, INVALID_REQUEST, &why))
                    .await;
            }
            Line::Eof => return Ok(()),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let message: Value = match serde_json::from_slice(&bytes) {
            Ok(Value::Object(m)) => Value::Object(m),
            Ok(_) => {
                let why = "a client message that is not a JSON-RPC object (batches are not \
                           part of MCP)";
                self.protocol_error(why.into()).await;
                return self
                    .send_client(&error_reply(&Value::Null, INVALID_REQUEST, why))
                    .await;
            }
            Err(e) => {
                let why = format!("a client message that is not JSON: {e}");
                self.protocol_error(why.clone()).await;
                return self
                    .send_client(&error_reply(&Value::Null, PARSE_ERROR, &why))
                    .await;
            }
        };
        let method = message.get("method").and_then(Value::as_str);
        let id = message.get("id").filter(|id| !id.is_null()).cloned();
        match (method, id) {
            (Some("tools/call"), Some(id)) if self.queue.len() >= MAX_QUEUED_CALLS => {
                let why = format!("more than {MAX_QUEUED_CALLS} calls wait for the server");
                self.protocol_error(why.clone()).await;
                self.send_client(&error_reply(&id, INTERNAL_ERROR, &why))
                    .await
            }
            (Some("tools/call"), Some(_)) => {
                self.queue.push_back(message);
                self.next_call().await
            }
            (Some("notifications/cancelled"), None) => {
                // A cancelled call gets no answer (MCP): one still queued is dropped, the
                // one in flight ends here so the next can start.
                let cancelled = message["params"]["requestId"].clone();
                self.queue.retain(|m| m["id"] != cancelled);
                self.send_server(&bytes).await;
                if self.in_flight.as_ref() == Some(&cancelled) {
                    self.end_call("cancelled", None).await;
                    return self.next_call().await;
                }
                Ok(())
            }
            (Some("tools/list"), Some(id)) => {
                self.lists.insert(id_text(&id));
                self.send_server(&bytes).await;
                Ok(())
            }
            _ => {
                self.send_server(&bytes).await;
                Ok(())
            }
        }
    }

    /// Passes the next queued call to the server once the daemon has switched its scope;
    /// answers those it refuses.
    async fn next_call(&mut self) -> anyhow::Result<()> {
        while self.in_flight.is_none() {
            let Some(message) = self.queue.pop_front() else {
                return Ok(());
            };
            let id = message["id"].clone();
            let Some(name) = message["params"]["name"].as_str() else {
                let why = "tools/call without params.name";
                self.protocol_error(why.into()).await;
                self.send_client(&error_reply(&id, INVALID_PARAMS, why))
                    .await?;
                continue;
            };
            let start = json!({
                "id": id_text(&id),
                "name": name,
                "digest": digest(&message["params"]["arguments"]),
            });
            let path = format!("/v1/tasks/{}/call", self.task);
            match self.client.send(Method::PUT, &path, Some(start)).await {
                Ok(_) => {
                    self.in_flight = Some(id);
                    self.send_server(message.to_string().as_bytes()).await;
                }
                Err(ClientError::Api { error, message, .. }) if error == "tool_not_listed" => {
                    self.send_client(&error_reply(
                        &id,
                        INVALID_PARAMS,
                        &format!("agent-monitor: {message}"),
                    ))
                    .await?;
                }
                Err(e) => {
                    // Never passed unbound: without the switch the call does not run.
                    self.send_client(&error_reply(
                        &id,
                        INTERNAL_ERROR,
                        &format!("agent-monitor could not start the call: {e}"),
                    ))
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Ends the call in flight at the daemon (the server is bound by its own scope again).
    async fn end_call(&mut self, outcome: &str, error: Option<String>) {
        if self.in_flight.take().is_none() {
            return;
        }
        let path = format!("/v1/tasks/{}/call", self.task);
        let body = json!({ "outcome": outcome, "error": error });
        if let Err(e) = self.client.send(Method::DELETE, &path, Some(body)).await {
            eprintln!("agent-monitor mcp: ending the call: {e}");
        }
    }

    /// A message from the server.
    async fn on_server(&mut self, line: Line) -> anyhow::Result<()> {
        let bytes = match line {
            Line::Message(bytes) => bytes,
            Line::TooLong(n) => {
                let why = format!(
                    "a server message of {n} bytes is over the limit of {MAX_MESSAGE_BYTES}"
                );
                self.protocol_error(why.clone()).await;
                // Most likely the answer of the call in flight: it will not come otherwise.
                if let Some(id) = self.in_flight.clone() {
                    self.end_call("error", Some(why.clone())).await;
                    self.send_client(&error_reply(&id, INTERNAL_ERROR, &why))
                        .await?;
                    self.next_call().await?;
                }
                return Ok(());
            }
            Line::Eof => return Ok(()),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let Ok(mut message) = serde_json::from_slice::<Value>(&bytes) else {
            self.protocol_error("a server message that is not JSON".into())
                .await;
            return Ok(());
        };
        let is_answer = message.get("method").is_none();
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        if is_answer && self.in_flight.as_ref() == Some(&id) {
            let (outcome, error) = match message.get("error") {
                Some(e) => ("error", Some(e.to_string())),
                None => ("ok", None),
            };
            self.end_call(outcome, error).await;
            self.send_client(&message).await?;
            return self.next_call().await;
        }
        if is_answer && self.lists.remove(&id_text(&id)) && !self.tools.is_empty() {
            if let Some(tools) = message["result"]["tools"].as_array_mut() {
                tools.retain(|t| {
                    t["name"]
                        .as_str()
                        .is_some_and(|n| self.tools.iter().any(|l| l == n))
                });
            }
            return self.send_client(&message).await;
        }
        write_line(&mut self.out, &bytes)
            .await
            .context("writing to the MCP client")
    }

    /// The server's output ended: every call it will not answer gets an error.
    async fn server_gone(&mut self) -> anyhow::Result<()> {
        let why = "the MCP server exited during the call";
        if let Some(id) = self.in_flight.clone() {
            self.end_call("server-died", Some(why.into())).await;
            self.send_client(&error_reply(&id, INTERNAL_ERROR, why))
                .await?;
        }
        while let Some(message) = self.queue.pop_front() {
            self.send_client(&error_reply(
                &message["id"],
                INTERNAL_ERROR,
                "the MCP server has exited",
            ))
            .await?;
        }
        Ok(())
    }
}

/// `agent-monitor mcp`: exits with the server's status.
pub(crate) async fn mcp(args: McpArgs) -> anyhow::Result<i32> {
    let client = Client::new(&args.socket);
    let mut body = json!({
        "task": args.task,
        "ttl": args.ttl,
        "landlock_abi": crate::control::landlock::abi(),
    });
    if std::path::Path::new(&args.scope).is_file() {
        body["scope_yaml"] = Value::String(
            std::fs::read_to_string(&args.scope)
                .with_context(|| format!("reading {}", args.scope))?,
        );
    } else {
        body["scope"] = Value::String(args.scope.clone());
    }
    let answer = client
        .send_retrying(&Method::POST, "/v1/tasks", Some(&body), &Retry::EXEC)
        .await?;
    let created: TaskCreated =
        serde_json::from_slice(&answer).context("unexpected answer from the daemon")?;
    let mut cmd = std::process::Command::new(&args.cmd[0]);
    cmd.args(&args.cmd[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let ruleset = confine(&mut cmd, &created)?;
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} in task {}", args.cmd[0], created.task))?;
    drop(ruleset);
    let server_out: ChildStdout = child.stdout.take().context("the server's stdout")?;
    let mut server_lines = reader(BufReader::new(server_out));
    let mut client_lines = reader(BufReader::new(tokio::io::stdin()));
    let mut proxy = Proxy {
        client,
        task: created.task.clone(),
        tools: created.tools.clone(),
        in_flight: None,
        queue: VecDeque::new(),
        lists: HashSet::new(),
        server_in: child.stdin.take(),
        out: tokio::io::stdout(),
    };
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut client_done = false;
    loop {
        tokio::select! {
            line = server_lines.recv() => {
                let line = line.unwrap_or(Line::Eof);
                if matches!(line, Line::Eof) {
                    proxy.server_gone().await?;
                    break;
                }
                proxy.on_server(line).await?;
            }
            line = client_lines.recv(), if !client_done => {
                let line = line.unwrap_or(Line::Eof);
                client_done = matches!(line, Line::Eof);
                proxy.on_client(line).await?;
            }
            _ = term.recv() => signal_child(pid, libc::SIGTERM),
            _ = int.recv() => signal_child(pid, libc::SIGINT),
        }
        // The end of the client's input reaches the server once no call waits for it.
        if client_done && proxy.in_flight.is_none() && proxy.queue.is_empty() {
            proxy.server_in = None;
        }
    }
    drop(proxy.server_in.take());
    // A server that outlives the end of its input by 5 s is killed.
    let waited = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await;
    let status = if let Ok(status) = waited {
        status.context("waiting for the server")?
    } else {
        child.start_kill().context("killing the server")?;
        child.wait().await.context("waiting for the server")?
    };
    Ok(status.code().unwrap_or_else(|| {
        std::os::unix::process::ExitStatusExt::signal(&status).map_or(1, |s| 128 + s)
    }))
}

fn signal_child(pid: Option<i32>, sig: i32) {
    if let Some(pid) = pid {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(pid, sig) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut r = BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        loop {
            match read_line(&mut r, max).await.expect("read") {
                Line::Message(m) => out.push(String::from_utf8(m).expect("utf8")),
                Line::TooLong(n) => out.push(format!("too long: {n}")),
                Line::Eof => return out,
            }
        }
    }

    #[tokio::test]
    async fn lines_over_the_cap_are_skipped_whole() {
        let got = lines(b"{\"a\":1}\n0123456789abc\n{}\ntail", 8).await;
        assert_eq!(got, ["{\"a\":1}", "too long: 13", "{}", "tail"]);
    }

    #[test]
    fn digests_tell_arguments_apart() {
        let a = digest(&json!({"path": "/a"}));
        assert_eq!(a, digest(&json!({"path": "/a"})));
        assert_ne!(a, digest(&json!({"path": "/b"})));
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64, "{a}");
    }
}
