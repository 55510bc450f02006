//! `status` and `agents`: human-readable by default, `--json` for machines.

use serde_json::Value;

use crate::{api::client::Client, cli::ClientArgs};

/// A field as text ("" when absent; strings unquoted).
pub(crate) fn text(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
        .unwrap_or_default()
}

fn list(v: &Value, pointer: &str) -> Vec<Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub(crate) async fn status(args: ClientArgs) -> anyhow::Result<()> {
    let v: Value = Client::new(&args.socket).get_json("/v1/status").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", render_status(&v));
    Ok(())
}

pub(crate) fn render_status(v: &Value) -> String {
    use std::fmt::Write as _;
    let t = |p: &str| text(v, p);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "agent-monitor {}  up {}s  kernel {}  cgroup2 {}",
        t("/version"),
        t("/uptime_seconds"),
        t("/kernel"),
        t("/cgroup2_root")
    );
    let failed = list(v, "/coverage/failed");
    let _ = writeln!(
        out,
        "hooks:    {} attached, {} failed",
        t("/coverage/attached"),
        failed.len()
    );
    let lockdown = v
        .pointer("/coverage/kernel/lockdown")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let bpf_lsm = match v
        .pointer("/coverage/kernel/bpf_lsm")
        .and_then(Value::as_bool)
    {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    let _ = writeln!(out, "kernel:   BPF-LSM {bpf_lsm}, lockdown {lockdown}");
    for limit in list(v, "/coverage/limits") {
        let _ = writeln!(out, "  limit:  {}", limit.as_str().unwrap_or_default());
    }
    let ring = match (
        v.pointer("/ring_buffer/used_bytes").and_then(Value::as_u64),
        v.pointer("/ring_buffer/size_bytes").and_then(Value::as_u64),
    ) {
        (Some(used), Some(size)) if size > 0 => {
            format!("; ring buffer {used} of {size} bytes in use")
        }
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "events:   {} emitted, {} dropped in the kernel{ring}",
        t("/counters/emitted"),
        t("/counters/dropped")
    );
    let _ = writeln!(
        out,
        "records:  {} written, {} violations, {} blocked, {} killed",
        t("/counters/records"),
        t("/counters/violations"),
        t("/counters/blocked"),
        t("/counters/killed")
    );
    let _ = writeln!(
        out,
        "errors:   {} undecodable events, {} orphan events, {} audit write errors",
        t("/counters/decode_errors"),
        t("/counters/orphan_events"),
        t("/counters/audit_write_errors")
    );
    let scopes: Vec<String> = list(v, "/scopes")
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    let _ = writeln!(out, "scopes:   {}", scopes.join(", "));
    let _ = writeln!(
        out,
        "tasks:    {}  followers: {}  audit log: {}",
        t("/tasks"),
        t("/followers"),
        t("/audit_log")
    );
    let degraded = list(v, "/degraded");
    if degraded.is_empty() {
        let _ = writeln!(out, "degraded: none");
    }
    for d in degraded {
        let _ = writeln!(
            out,
            "degraded: {} (scope {}): {}",
            text(&d, "/task"),
            text(&d, "/scope"),
            text(&d, "/reason")
        );
    }
    for e in list(v, "/scope_errors") {
        let _ = writeln!(out, "rejected scope file: {}", text(&e, "/error"));
    }
    out
}

pub(crate) async fn agents(args: ClientArgs) -> anyhow::Result<()> {
    let v: Vec<Value> = Client::new(&args.socket).get_json("/v1/agents").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", render_agents(&v));
    Ok(())
}

pub(crate) fn render_agents(tasks: &[Value]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<28} {:<18} {:<7} {:>5} {:>8} {:>10}  {:<20}  CGROUP\n",
        "TASK", "SCOPE", "MODE", "PIDS", "EVENTS", "VIOLATIONS", "EXPIRES"
    );
    for t in tasks {
        let s = |k: &str| text(t, &format!("/{k}"));
        let pids = t.get("pids").and_then(Value::as_array).map_or(0, Vec::len);
        let expires = match t.get("expires").and_then(Value::as_str) {
            Some(e) => e.chars().take(19).collect(),
            None => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<28} {:<18} {:<7} {:>5} {:>8} {:>10}  {:<20}  {}",
            s("id"),
            s("scope"),
            s("mode"),
            pids,
            s("events"),
            s("violations"),
            expires,
            s("cgroup")
        );
    }
    out
}
