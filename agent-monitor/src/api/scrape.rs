//! The metrics read at scrape time from the daemon's state (the live ones are
//! `observe::metrics`).

use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::{
    metrics::{
        counter::ConstCounter,
        family::Family,
        gauge::{ConstGauge, Gauge},
    },
    registry::Registry,
};

use crate::control::state::Shared;

type Labels1 = [(&'static str, &'static str); 1];

fn gauge(v: usize) -> ConstGauge {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Values read at scrape time.
#[expect(clippy::too_many_lines, reason = "one registration per metric")]
pub(super) fn snapshot(shared: &Shared) -> Registry {
    let mut r = Registry::with_prefix("agent_monitor");
    let k = shared.kernel_counters();
    let s = &shared.stats;
    let counters: [(&str, &str, u64); 12] = [
        (
            "kernel_events_emitted",
            "Events the kernel programs put in the ring buffer",
            k.emitted,
        ),
        (
            "kernel_events_dropped",
            "Events lost because the ring buffer was full",
            k.dropped,
        ),
        (
            "kernel_pid_map_full",
            "Tagged processes the kernel could not track (pid map full)",
            k.pid_map_full,
        ),
        (
            "blocked",
            "Actions refused in the kernel",
            s.blocked.load(Relaxed),
        ),
        (
            "killed",
            "Processes killed for a violation",
            s.killed.load(Relaxed),
        ),
        (
            "held",
            "Operations the kernel held (the process stopped) until the daemon judged them",
            s.held.load(Relaxed),
        ),
        (
            "decode_errors",
            "Ring-buffer records that could not be decoded",
            s.decode_errors.load(Relaxed),
        ),
        (
            "orphan_events",
            "Events of no live task (late events of an ended task)",
            s.orphan_events.load(Relaxed),
        ),
        (
            "audit_write_errors",
            "Audit log write failures",
            s.sink_errors.load(Relaxed),
        ),
        (
            "audit_records_dropped",
            "Records dropped because the audit log fell too far behind (counted, never silent)",
            s.audit_records_dropped.load(Relaxed) + shared.dns.records_dropped(),
        ),
        (
            "dns_refused_overload",
            "Agents' DNS questions answered SERVFAIL because too many were in flight",
            shared.dns.refused_overload(),
        ),
        (
            "violations_all",
            "Violations of all kinds (same as the sum of agent_monitor_violations_total)",
            s.violations.load(Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        r.register(name, help, ConstCounter::new(value));
    }
    r.register(
        "tasks_active",
        "Agent tasks being watched",
        gauge(shared.registry().len()),
    );
    r.register(
        "followers",
        "Clients following GET /v1/events",
        gauge(shared.observed.feed.followers()),
    );
    r.register(
        "degraded_agents",
        "Agents whose enforcement is degraded",
        gauge(shared.registry().iter().filter(|t| t.degraded).count()),
    );
    if let Some(ring) = shared.observed.metrics.ring_usage() {
        r.register(
            "ring_buffer_used_bytes",
            "Bytes written by the kernel and not yet read by the daemon",
            ConstGauge::new(i64::try_from(ring.used_bytes).unwrap_or(i64::MAX)),
        );
        r.register(
            "ring_buffer_size_bytes",
            "Size of the event ring buffer",
            ConstGauge::new(i64::try_from(ring.size_bytes).unwrap_or(i64::MAX)),
        );
    }
    let hooks = Family::<Labels1, Gauge>::default();
    for h in &shared.hooks {
        let state = if h.attached { "attached" } else { "failed" };
        hooks.get_or_create(&[("state", state)]).inc();
    }
    r.register("hooks", "Kernel hooks, by state", hooks);
    if let Some(export) = shared.observed.export.metrics() {
        for (name, help, value, counter) in export {
            if counter {
                r.register(name, help, ConstCounter::new(value));
            } else {
                r.register(
                    name,
                    help,
                    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)),
                );
            }
        }
    }
    r.register(
        "uptime_seconds",
        "Seconds since the daemon started",
        ConstGauge::new(i64::try_from(shared.started_at.elapsed().as_secs()).unwrap_or(i64::MAX)),
    );
    r
}
