//! `GET /v1/status`: version, kernel, coverage (hooks attached and what this kernel cannot
//! do), counters, scopes, tasks and degraded agents.

use std::{fs, sync::atomic::Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use crate::{
    control::catalog::ScopeProblem,
    control::state::Shared,
    kernel::loader::{HookStatus, KernelCounters},
    kernel::ring_fill::RingUsage,
};

/// A running agent that is not fully watched: some of its events were lost (ring buffer
/// full), so it may have done things no record shows. Set by the sweep (`Task::degraded`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Degraded {
    pub(crate) task: String,
    pub(crate) scope: String,
    pub(crate) reason: String,
}

/// `GET /v1/status`, as the daemon writes it and `agent-monitor status` reads it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StatusView {
    pub(crate) version: String,
    pub(crate) uptime_seconds: u64,
    pub(crate) kernel: String,
    pub(crate) cgroup2_root: String,
    /// Every hook and whether it attached (not read back: `coverage` sums it up).
    #[serde(skip_deserializing)]
    pub(crate) hooks: Vec<HookStatus>,
    pub(crate) coverage: Coverage,
    /// The syscall tracepoints, attached only while agents run.
    #[serde(default)]
    pub(crate) syscall_hooks: crate::kernel::demand::DemandStatus,
    pub(crate) counters: Counters,
    pub(crate) scopes: Vec<String>,
    pub(crate) scope_errors: Vec<ScopeProblem>,
    pub(crate) tasks: usize,
    /// Agents whose events were lost.
    pub(crate) degraded: Vec<Degraded>,
    pub(crate) audit_log: String,
    pub(crate) followers: usize,
    /// How full the event ring buffer is (None when it could not be watched).
    pub(crate) ring_buffer: Option<RingUsage>,
    /// Requests of `onViolation: ask` waiting for a person, and the just-in-time grants of
    /// running tasks (`task: entry`).
    #[serde(default)]
    pub(crate) holds_pending: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) grants: Vec<String>,
    /// The OpenTelemetry export's health (absent when it is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) otlp: Option<crate::observe::otlp::HealthView>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Coverage {
    pub(crate) attached: usize,
    /// Targets of the hooks that did not attach.
    pub(crate) failed: Vec<String>,
    pub(crate) kernel: KernelFacts,
    /// What is not covered or not enforceable here, one sentence each.
    pub(crate) limits: Vec<String>,
}

/// What this kernel offers, read from securityfs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KernelFacts {
    /// `bpf` is among the active LSMs (`/sys/kernel/security/lsm`); None when securityfs
    /// is not mounted.
    pub(crate) bpf_lsm: Option<bool>,
    /// Kernel lockdown mode (`none`, `integrity`, `confidentiality`), when known.
    pub(crate) lockdown: Option<String>,
    /// The Landlock ABI agents started by `exec` are restricted with (0: none).
    pub(crate) landlock_abi: u32,
    /// Landlock rights the layer uses that this kernel's ABI lacks.
    pub(crate) landlock_missing: Vec<String>,
}

impl KernelFacts {
    pub(crate) fn probe() -> Self {
        let lsm = fs::read_to_string("/sys/kernel/security/lsm").ok();
        let lockdown = fs::read_to_string("/sys/kernel/security/lockdown")
            .ok()
            .and_then(|s| {
                let start = s.find('[')?;
                let end = s[start..].find(']')? + start;
                Some(s[start + 1..end].to_string())
            });
        let landlock_abi = crate::control::landlock::abi();
        Self {
            bpf_lsm: lsm.map(|l| l.split(',').any(|m| m.trim() == "bpf")),
            lockdown,
            landlock_abi,
            landlock_missing: crate::control::landlock::missing(landlock_abi)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Counters {
    #[serde(flatten)]
    pub(crate) kernel: KernelCounters,
    /// Events read from the ring buffer and decoded (`emitted` = `read` + `decode_errors`
    /// once the daemon has caught up).
    pub(crate) read: u64,
    /// Lines this daemon wrote to the audit log: only records that reached the file (task
    /// and gap records included), never one still queued, retried or dropped.
    pub(crate) records: u64,
    pub(crate) violations: u64,
    pub(crate) blocked: u64,
    pub(crate) killed: u64,
    pub(crate) held: u64,
    pub(crate) decode_errors: u64,
    pub(crate) orphan_events: u64,
    pub(crate) audit_write_errors: u64,
    /// Records never written: the audit log fell too far behind (also DNS records the
    /// resolver could not queue). Gap records in the log tell of each.
    #[serde(default)]
    pub(crate) audit_records_dropped: u64,
    /// Agents' DNS questions answered SERVFAIL because too many were in flight.
    #[serde(default)]
    pub(crate) dns_refused_overload: u64,
}

fn limits(hooks: &[HookStatus], facts: &KernelFacts, identity_error: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = identity_error {
        out.push(format!(
            "files cannot be identified in the kernel (device and inode): {e}"
        ));
    }
    // The programs are tracepoints and cgroup hooks only (no BPF-LSM, kprobes or fentry).
    let lsm = match facts.bpf_lsm {
        Some(true) => "BPF-LSM is active but not used",
        Some(false) => "no BPF-LSM on this kernel",
        None => "BPF-LSM unknown (securityfs not mounted) and not used",
    };
    if facts.landlock_abi == 0 {
        out.push(
            "no Landlock on this kernel: file and exec actions of agents started by `exec` \
             cannot be refused before they happen"
                .to_string(),
        );
    } else if !facts.landlock_missing.is_empty() {
        out.push(format!(
            "Landlock ABI {} lacks {}: those are not refused before they happen",
            facts.landlock_abi,
            facts.landlock_missing.join(", ")
        ));
    }
    out.push(format!(
        "{lsm}: for agents adopted by cgroup (no Landlock), file and exec actions are not \
         refused; an enforced agent's process is killed (SIGKILL) at the exit of the open or \
         exec that broke its scope, or held (SIGSTOP) there until the daemon has judged a \
         path only it can judge; unlink, rename, link, truncate and O_CREAT outside \
         files.write take effect before that kill"
    ));
    out.push(
        "escape syscalls (namespaces, mounts, bpf, ptrace, process_vm_*, io_uring, modules, \
         raw and packet sockets, signals to the daemon) are refused by the seccomp filter of \
         agents started with `exec`; agents adopted by cgroup have no filter and are killed \
         after such a syscall ran"
            .to_string(),
    );

    if facts.lockdown.as_deref().is_some_and(|l| l != "none") {
        out.push(format!(
            "kernel lockdown ({}): bpf_probe_write_user is unavailable",
            facts.lockdown.as_deref().unwrap_or_default()
        ));
    }
    for h in hooks.iter().filter(|h| !h.attached) {
        out.push(format!(
            "not covered: {} ({})",
            h.target,
            h.error.as_deref().unwrap_or("did not attach")
        ));
    }
    out
}

pub(crate) fn view(shared: &Shared) -> StatusView {
    let s = &shared.stats;
    let catalog = shared.catalog();
    let facts = KernelFacts::probe();
    // One registry lock at a time (a guard in the literal below would live to its end).
    let (tasks, degraded, grants) = {
        let registry = shared.registry();
        let grants = registry
            .iter()
            .flat_map(|t| t.grants.iter().map(|g| format!("{}: {g}", t.id)))
            .collect();
        let degraded = registry
            .iter()
            .filter(|t| t.degraded)
            .map(|t| Degraded {
                task: t.id.clone(),
                scope: t.scope.name.clone(),
                reason: "events of this agent were lost (ring buffer full)".to_owned(),
            })
            .collect();
        (registry.len(), degraded, grants)
    };
    let holds_pending = crate::control::state::lock(&shared.approvals).len();
    StatusView {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: shared.started_at.elapsed().as_secs(),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cgroup2_root: shared.cgroup2.root().display().to_string(),
        hooks: shared.hooks.clone(),
        coverage: Coverage {
            attached: shared.hooks.iter().filter(|h| h.attached).count(),
            failed: shared
                .hooks
                .iter()
                .filter(|h| !h.attached)
                .map(|h| h.target.clone())
                .collect(),
            limits: limits(&shared.hooks, &facts, shared.identity_error.as_deref()),
            kernel: facts,
        },
        syscall_hooks: shared.demand.status(),
        counters: Counters {
            kernel: shared.kernel_counters(),
            read: shared.observed.metrics.events_read(),
            records: s.records.load(Relaxed),
            violations: s.violations.load(Relaxed),
            blocked: s.blocked.load(Relaxed),
            killed: s.killed.load(Relaxed),
            held: s.held.load(Relaxed),
            decode_errors: s.decode_errors.load(Relaxed),
            orphan_events: s.orphan_events.load(Relaxed),
            audit_write_errors: s.sink_errors.load(Relaxed),
            audit_records_dropped: s.audit_records_dropped.load(Relaxed)
                + shared.dns.records_dropped(),
            dns_refused_overload: shared.dns.refused_overload(),
        },
        scopes: catalog.all().map(|s| s.name.clone()).collect(),
        scope_errors: catalog.problems().to_vec(),
        tasks,
        degraded,
        audit_log: shared.config.audit_log.display().to_string(),
        followers: shared.observed.feed.followers(),
        ring_buffer: shared.observed.metrics.ring_usage(),
        otlp: shared.observed.export.view(),
        holds_pending,
        grants,
    }
}
