//! `events` (recent records, or `--follow` until interrupted, reconnecting when the daemon
//! restarts) and `report` (declared vs used).

use std::{fmt::Write as _, io::Write as _, time::Duration};

use http_body_util::BodyExt as _;
use hyper::Method;
use serde_json::Value;

use super::view::text;
use crate::{
    api::client::{Client, ClientError},
    cli::{EventsArgs, EventsFormat, ReportArgs},
    observe::ocsf,
};

/// Query string values are task ids (`[a-z0-9._-]`) and flags: nothing to escape but that.
fn query(args: &EventsArgs) -> String {
    let mut q = Vec::new();
    if args.follow {
        q.push("follow=1".to_string());
    }
    if args.violations {
        q.push("violations=1".to_string());
    }
    if let Some(t) = &args.task {
        let escaped: String = t
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        q.push(format!("task={escaped}"));
    }
    if let Some(n) = args.limit {
        q.push(format!("limit={n}"));
    }
    if q.is_empty() {
        "/v1/events".to_string()
    } else {
        format!("/v1/events?{}", q.join("&"))
    }
}

pub(crate) async fn events(args: EventsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.socket);
    let path = query(&args);
    let mut connected_once = false;
    let mut announced = false;
    loop {
        let body = match client.open(Method::GET, &path, None).await {
            Ok(body) => body,
            // The daemon is away (restarting): a follower waits for it.
            Err(ClientError::Connect { .. } | ClientError::Http(_))
                if args.follow && connected_once =>
            {
                if !announced {
                    eprintln!("agent-monitor: the daemon went away; reconnecting...");
                    announced = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if announced {
            eprintln!("agent-monitor: reconnected");
            announced = false;
        }
        connected_once = true;
        let ended = print_stream(body, args.format()).await;
        if !args.follow {
            return ended;
        }
        if let Err(e) = ended {
            tracing::debug!(error = %e, "event stream ended");
        }
    }
}

/// Prints every line of a streamed NDJSON body until it ends.
async fn print_stream(mut body: hyper::body::Incoming, format: EventsFormat) -> anyhow::Result<()> {
    let ctx = ocsf::Context::local();
    let mut pending: Vec<u8> = Vec::new();
    let mut out = std::io::stdout().lock();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..pos]);
            if line.trim().is_empty() {
                continue; // heartbeat
            }
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Some(notice) = v.get("notice") {
                eprintln!(
                    "agent-monitor: {} ({} records skipped)",
                    notice.as_str().unwrap_or_default(),
                    text(&v, "/skipped")
                );
                continue;
            }
            match format {
                EventsFormat::Json => writeln!(out, "{line}")?,
                EventsFormat::Ocsf => writeln!(out, "{}", ocsf::event(&v, &ctx))?,
                EventsFormat::Text => writeln!(out, "{}", render_record(&v))?,
            }
            out.flush()?;
        }
    }
    Ok(())
}

/// One line for humans: time, kind, verdict, action, task, process, object, rule.
pub(crate) fn render_record(r: &Value) -> String {
    let t = |p: &str| text(r, p);
    let object = if r.get("file").is_some() {
        let mut o = format!("{} {}", t("/file/access"), t("/file/path"));
        if let Some(to) = r.pointer("/file/new_path").and_then(Value::as_str) {
            let _ = write!(o, " -> {to}");
        }
        o
    } else if r.get("net").is_some() {
        let mut o = format!(
            "{}/{} {}:{}",
            t("/net/family"),
            t("/net/protocol"),
            t("/net/address"),
            t("/net/port")
        );
        if let Some(h) = r.pointer("/net/host").and_then(Value::as_str) {
            let _ = write!(o, " ({h})");
        }
        o
    } else if r.get("task").is_some() {
        format!("{}: {}", t("/task/event"), t("/task/reason"))
    } else if r.get("exec").is_some() {
        let argv: Vec<String> = r
            .pointer("/exec/argv")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        format!("{} [{}]", t("/exec/path"), argv.join(" "))
    } else {
        String::new()
    };
    let verdict = if r.get("violation").is_some() {
        format!(
            "VIOLATION {}: {}",
            t("/violation/rule"),
            t("/violation/reason")
        )
    } else {
        t("/verdict")
    };
    let action = match t("/action").as_str() {
        "" | "none" => String::new(),
        a => format!(" -> {a}"),
    };
    format!(
        "{} {:<7} {} pid={} {}  {}  {}{action}",
        t("/time"),
        t("/kind"),
        t("/agent/task"),
        t("/process/pid"),
        t("/process/comm"),
        object,
        verdict
    )
}

pub(crate) async fn report(args: ReportArgs) -> anyhow::Result<()> {
    let path = format!("/v1/report/{}", args.task);
    let v: Value = Client::new(&args.socket).get_json(&path).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render_report(&v));
    }
    Ok(())
}

fn items(v: &Value, pointer: &str) -> Vec<Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Files listed in the human report; `--json` has them all.
const FILES_SHOWN: usize = 40;

pub(crate) fn render_report(v: &Value) -> String {
    let t = |p: &str| text(v, p);
    let mut out = String::new();
    let live = if v.get("live").and_then(Value::as_bool) == Some(true) {
        "running"
    } else {
        "ended"
    };
    let _ = writeln!(
        out,
        "task {} ({live}), scope {}, owner {}",
        t("/task"),
        t("/scope"),
        t("/owner")
    );
    let _ = writeln!(
        out,
        "records {}, violations {}, from {} to {}\n",
        t("/records"),
        t("/violations"),
        t("/first_seen"),
        t("/last_seen")
    );
    let _ = writeln!(out, "{:<24} {:>6}  ENTRY", "DECLARED", "USES");
    for e in items(v, "/entries") {
        let uses = e.get("uses").and_then(Value::as_u64).unwrap_or(0);
        let flag = match (text(&e, "/kind").as_str(), uses) {
            ("allow", 0) => "  (never used)",
            ("deny", n) if n > 0 => "  (refused attempts)",
            _ => "",
        };
        let _ = writeln!(
            out,
            "{:<24} {uses:>6}  {}{flag}",
            text(&e, "/rule"),
            text(&e, "/entry")
        );
    }
    let section = |out: &mut String, title: &str, list: &[Value], limit: usize| {
        let _ = writeln!(out, "\n{title} ({}):", list.len());
        for i in list.iter().take(limit) {
            let access: Vec<&str> = i
                .get("access")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let rules: Vec<&str> = i
                .get("rules")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let violated = i.get("violation").and_then(Value::as_bool) == Some(true);
            let by = match (rules.is_empty(), violated) {
                (false, _) => rules.join(", "),
                (true, true) => "no entry".to_string(),
                (true, false) => "the baseline".to_string(),
            };
            let violation = if violated { "  VIOLATION" } else { "" };
            let access = if access.is_empty() {
                String::new()
            } else {
                format!(" [{}]", access.join(","))
            };
            let _ = writeln!(
                out,
                "  {}{access}  x{}  by {by}{violation}",
                text(i, "/what"),
                text(i, "/count"),
            );
        }
        if list.len() > limit {
            let _ = writeln!(out, "  ... {} more (--json lists all)", list.len() - limit);
        }
    };
    section(&mut out, "tools run", &items(v, "/used/exec"), usize::MAX);
    section(&mut out, "files", &items(v, "/used/files"), FILES_SHOWN);
    let dirs = items(v, "/used/directories");
    let _ = writeln!(out, "\ndirectories ({}):", dirs.len());
    for d in &dirs {
        let _ = writeln!(out, "  {}  x{}", text(d, "/path"), text(d, "/count"));
    }
    section(&mut out, "network", &items(v, "/used/network"), usize::MAX);
    let unused = items(v, "/unused");
    let _ = writeln!(
        out,
        "\nunused entries ({}){}",
        unused.len(),
        if unused.is_empty() {
            ""
        } else {
            ": candidates for removal"
        }
    );
    for u in unused {
        let _ = writeln!(out, "  {}", u.as_str().unwrap_or_default());
    }
    render_calls(&mut out, &items(v, "/calls"));
    out
}

/// The report's `calls`: what tool calls used, by call name.
fn render_calls(out: &mut String, calls: &[Value]) {
    if calls.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nby tool call ({}):", calls.len());
    for c in calls {
        let _ = writeln!(
            out,
            "  {}: {} calls, {} refused, {} records, {} violations",
            text(c, "/name"),
            text(c, "/calls"),
            text(c, "/refused"),
            text(c, "/records"),
            text(c, "/violations"),
        );
        for u in items(c, "/used") {
            let _ = writeln!(out, "    {}", u.as_str().unwrap_or_default());
        }
    }
}
