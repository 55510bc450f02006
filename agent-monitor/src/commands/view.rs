//! `status` and `agents`: human-readable by default, `--json` for machines.

use serde_json::Value;

use crate::{
    api::{client::Client, status::StatusView},
    cli::ClientArgs,
    control::tasks::TaskView,
};

/// A field as text ("" when absent; strings unquoted).
pub(crate) fn text(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
        .unwrap_or_default()
}

pub(crate) async fn status(args: ClientArgs) -> anyhow::Result<()> {
    let v: Value = Client::new(&args.socket).get_json("/v1/status").await?;
    if args.json {
        // As the daemon sent it, fields this build does not know included.
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let status: StatusView = serde_json::from_value(v)?;
    print!("{}", render_status(&status));
    Ok(())
}

pub(crate) fn render_status(v: &StatusView) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "agent-monitor {}  up {}s  kernel {}  cgroup2 {}",
        v.version, v.uptime_seconds, v.kernel, v.cgroup2_root
    );
    let c = &v.coverage;
    let _ = writeln!(
        out,
        "hooks:    {} attached, {} failed",
        c.attached,
        c.failed.len()
    );
    let d = &v.syscall_hooks;
    if d.on_demand {
        let now = if d.live {
            format!("attached now ({} of {})", d.attached, d.hooks)
        } else {
            "detached now: no agent runs".to_owned()
        };
        let _ = writeln!(
            out,
            "syscalls: {now}; attached {} times (last {:.1} ms), detached {} times (last {:.1} ms)",
            d.attaches, d.last_attach_ms, d.detaches, d.last_detach_ms
        );
    }
    let lockdown = c.kernel.lockdown.as_deref().unwrap_or("unknown");
    let bpf_lsm = match c.kernel.bpf_lsm {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    let _ = writeln!(out, "kernel:   BPF-LSM {bpf_lsm}, lockdown {lockdown}");
    for limit in &c.limits {
        let _ = writeln!(out, "  limit:  {limit}");
    }
    let ring = match v.ring_buffer {
        Some(r) if r.size_bytes > 0 => format!(
            "; ring buffer {} of {} bytes in use",
            r.used_bytes, r.size_bytes
        ),
        _ => String::new(),
    };
    let n = &v.counters;
    let _ = writeln!(
        out,
        "events:   {} emitted, {} dropped in the kernel{ring}",
        n.kernel.emitted, n.kernel.dropped
    );
    let _ = writeln!(
        out,
        "records:  {} written, {} violations, {} blocked, {} killed",
        n.records, n.violations, n.blocked, n.killed
    );
    let _ = writeln!(
        out,
        "errors:   {} undecodable events, {} orphan events, {} audit write errors, {} records dropped",
        n.decode_errors, n.orphan_events, n.audit_write_errors, n.audit_records_dropped
    );
    let _ = writeln!(out, "scopes:   {}", v.scopes.join(", "));
    let _ = writeln!(
        out,
        "tasks:    {}  followers: {}  audit log: {}  holds pending: {}",
        v.tasks, v.followers, v.audit_log, v.holds_pending
    );
    for g in &v.grants {
        let _ = writeln!(out, "grant:    {g} (until the task ends)");
    }
    if let Some(o) = &v.otlp {
        let _ = writeln!(
            out,
            "otlp:     {} records sent to {}, {} batches failed, {} bytes behind{}",
            o.records_sent,
            o.endpoint,
            o.batches_failed,
            o.backlog_bytes,
            o.last_error
                .as_ref()
                .map_or(String::new(), |e| format!("; last error: {e}"))
        );
    }
    if v.degraded.is_empty() {
        let _ = writeln!(out, "degraded: none");
    }
    for d in &v.degraded {
        let _ = writeln!(
            out,
            "degraded: {} (scope {}): {}",
            d.task, d.scope, d.reason
        );
    }
    for e in &v.scope_errors {
        let _ = writeln!(out, "rejected scope file: {}", e.error);
    }
    out
}

pub(crate) async fn agents(args: ClientArgs) -> anyhow::Result<()> {
    let v: Value = Client::new(&args.socket).get_json("/v1/agents").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let tasks: Vec<TaskView> = serde_json::from_value(v)?;
    print!("{}", render_agents(&tasks));
    Ok(())
}

pub(crate) fn render_agents(tasks: &[TaskView]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<28} {:<18} {:<7} {:>5} {:>8} {:>10}  {:<20}  CGROUP\n",
        "TASK", "SCOPE", "MODE", "PIDS", "EVENTS", "VIOLATIONS", "EXPIRES"
    );
    for t in tasks {
        let expires: String = t
            .expires
            .as_deref()
            .map_or_else(|| "-".to_owned(), |e| e.chars().take(19).collect());
        let _ = writeln!(
            out,
            "{:<28} {:<18} {:<7} {:>5} {:>8} {:>10}  {:<20}  {}",
            t.id,
            t.scope,
            t.mode.to_string(),
            t.pids.len(),
            t.events,
            t.violations,
            expires,
            t.cgroup
        );
        for g in &t.grants {
            let _ = writeln!(out, "{:<28} grant: {g} (until the task ends)", "");
        }
    }
    out
}
