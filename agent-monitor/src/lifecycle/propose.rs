//! A proposed scope from recorded activity: the least `AgentScope` that covers what the
//! records show, generalized only where a run's own names cannot repeat.
//!
//! The rules (docs/SCOPES.md, "From a first run to an enforced scope"):
//! - exec: the canonical path of every image that ran (for a script, its interpreter: the
//!   image the kernel runs and the policy judges).
//! - files: what the baseline allows is left out (judged by the same policy engine, with
//!   `files.baseline: true`), and so are the daemon's own baseline decisions that depend
//!   on the task (a read of the process's own image or cgroup limits). A path that matches
//!   the `--deny` list is never proposed: it is reported and the list becomes `files.deny`.
//!   Everything written under a temporary directory (`/tmp`, `/var/tmp`, `/dev/shm`)
//!   becomes `that/**` (temporary names are random by design). A directory the task created
//!   or wrote and then used below becomes `dir/**` (write). Elsewhere paths stay exact, except that a
//!   directory with at least [`WRITE_UNITS`] written (or [`READ_UNITS`] read) entries
//!   directly below it, counting a used subdirectory as one entry, becomes `dir/**`;
//!   directories are merged bottom-up, never above depth 2 and never at [`NEVER_WIDENED`].
//!   A read covered by a write entry is left out; a directory listed (names only) stays a
//!   `files.list` entry unless a read or write entry covers it.
//! - network: a connect or send whose address came from a DNS answer the agent received
//!   becomes a `host:` rule with that name, any other a `/32` (or `/128`) `cidr:` rule; each
//!   with the exact ports and protocol seen. Binds become `network.bind` ports.
//! - each entry carries a comment with the records that justify it.
//!
//! The result is deterministic: the same records give the same YAML, byte for byte.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::{
    lifecycle::log::{Entry, NetOpName, Observed, ProtocolName},
    policy::{CompiledPolicy, Context, FileAccess, FileRules, PolicyError, PolicySpec, Verdict},
    scope::limits::MAX_LIST_ENTRIES,
};

/// Entries directly below a directory, counting subdirectories, that make it `dir/**`.
pub(crate) const WRITE_UNITS: usize = 3;
/// The same for reads.
pub(crate) const READ_UNITS: usize = 4;
/// Temporary directories: anything written below becomes `dir/**`.
const TEMP_DIRS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];
/// Directories never widened to `dir/**` (`*` is one component): system trees, homes and
/// configuration, where a glob would reach far more than the run used.
pub(crate) const NEVER_WIDENED: [&str; 10] = [
    "/home/*", "/root", "/etc/*", "/usr/*", "/var/*", "/proc/*", "/sys/*", "/dev/*", "/run/*",
    "/srv",
];

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProposeError {
    #[error("no record of {what}: nothing to propose from")]
    NoRecords { what: String },
    #[error("invalid --deny pattern: {0}")]
    Deny(#[source] PolicyError),
    #[error("the proposal's {list} would hold {n} entries, past the limit of {MAX_LIST_ENTRIES}")]
    TooMany { list: &'static str, n: usize },
    #[error("internal: {0}")]
    Internal(#[source] PolicyError),
}

/// What the proposal is for.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) name: String,
    pub(crate) owner: String,
    /// Globs never proposed (`files.deny` of the proposal).
    pub(crate) deny: Vec<String>,
    /// Names the records in errors (`task x`, `scope y in 3 logs`).
    pub(crate) what: String,
}

/// A path withheld because it matched the deny list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Withheld {
    pub(crate) path: String,
    pub(crate) access: String,
    pub(crate) records: u64,
}

/// The proposal and what a reviewer must know about it.
#[derive(Debug, Clone)]
pub(crate) struct Proposal {
    /// The `AgentScope` YAML (valid for `check`).
    pub(crate) yaml: String,
    /// Records read, and those that justified an entry.
    pub(crate) records: u64,
    pub(crate) used: u64,
    pub(crate) tasks: BTreeSet<String>,
    pub(crate) withheld: Vec<Withheld>,
}

/// Records per item.
type Counts = BTreeMap<String, u64>;

#[derive(Debug, Default)]
struct Seen {
    exec: Counts,
    read: Counts,
    write: Counts,
    list: Counts,
    /// Paths created (a directory among them is one that holds other paths).
    created: BTreeSet<String>,
    /// (target, protocol) -> port -> records.
    connect: BTreeMap<(Target, RuleProto), BTreeMap<u16, u64>>,
    bind: BTreeMap<u16, u64>,
    withheld: BTreeMap<(String, String), u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Host(String),
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RuleProto {
    Tcp,
    Udp,
    Any,
}

/// The proposal for `entries` (already selected: one task, or one scope's runs).
///
/// # Errors
/// No record with an activity, an invalid deny glob, or a list past the manifest limit.
pub(crate) fn propose<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    options: &Options,
    partial: bool,
) -> Result<Proposal, ProposeError> {
    let baseline = CompiledPolicy::compile(PolicySpec {
        files: FileRules {
            baseline: true,
            ..FileRules::default()
        },
        ..PolicySpec::default()
    })
    .map_err(ProposeError::Internal)?;
    // Everything readable and writable but the deny list: a violation is a denied path.
    let deny = CompiledPolicy::compile(PolicySpec {
        files: FileRules {
            baseline: false,
            read: vec!["/**".to_owned()],
            write: vec!["/**".to_owned()],
            deny: options.deny.clone(),
            list: Vec::new(),
        },
        ..PolicySpec::default()
    })
    .map_err(ProposeError::Deny)?;
    let judge = Judge {
        baseline: &baseline,
        deny: &deny,
    };
    let mut seen = Seen::default();
    let (mut records, mut used) = (0, 0);
    let mut tasks = BTreeSet::new();
    for entry in entries {
        records += 1;
        if let Some(task) = entry.record.task_id() {
            tasks.insert(task.to_owned());
        }
        let Ok(Some(observed)) = entry.record.observed() else {
            continue;
        };
        let n = entry.record.count.unwrap_or(1).max(1);
        if judge.note(&mut seen, entry, &observed, n) {
            used += n;
        }
    }
    if used == 0 && seen.withheld.is_empty() && records == 0 {
        return Err(ProposeError::NoRecords {
            what: options.what.clone(),
        });
    }
    let yaml = render(&seen, options, (records, &tasks), partial)?;
    Ok(Proposal {
        yaml,
        records,
        used,
        tasks,
        withheld: seen
            .withheld
            .into_iter()
            .map(|((path, access), records)| Withheld {
                path,
                access,
                records,
            })
            .collect(),
    })
}

struct Judge<'a> {
    baseline: &'a CompiledPolicy,
    deny: &'a CompiledPolicy,
}

impl Judge<'_> {
    /// Adds one record's activity to `seen`; whether it can justify an entry.
    fn note(&self, seen: &mut Seen, entry: &Entry, observed: &Observed, n: u64) -> bool {
        let record = &entry.record;
        let tgid = record.process.as_ref().map_or(0, |p| p.pid);
        let ctx = Context { tgid };
        match observed {
            Observed::Exec { path } => {
                *seen.exec.entry(path.clone()).or_default() += n;
                true
            }
            Observed::File { path, access } => {
                let access = access.access();
                let allowed = record.verdict.as_deref() == Some("allowed");
                let exe = record.process.as_ref().and_then(|p| p.exe.as_deref());
                // The daemon's baseline decisions that depend on the task: its own image,
                // its own cgroup's limits (whose path names the task).
                let preset = allowed
                    && access == FileAccess::Read
                    && (exe == Some(path.as_str()) || path.starts_with("/sys/fs/cgroup/"));
                if preset || self.baseline_allows(path, access, ctx) {
                    return false;
                }
                // Denied by the task's own scope (its `files.deny`), or by the given list.
                let denied_by_scope = record
                    .violation
                    .as_ref()
                    .is_some_and(|v| v.rule.starts_with("files.deny"));
                if denied_by_scope {
                    *seen
                        .withheld
                        .entry((path.clone(), access.to_string()))
                        .or_default() += n;
                    return false;
                }
                if self.denied(seen, path, access, n, ctx) {
                    return false;
                }
                let counts = match access {
                    FileAccess::Read => &mut seen.read,
                    FileAccess::List => &mut seen.list,
                    FileAccess::Create => {
                        seen.created.insert(path.clone());
                        &mut seen.write
                    }
                    _ => &mut seen.write,
                };
                *counts.entry(path.clone()).or_default() += n;
                true
            }
            Observed::Rename { from, to } => {
                let mut any = false;
                for path in [from, to] {
                    if !self.baseline_allows(path, FileAccess::Write, ctx)
                        && !self.denied(seen, path, FileAccess::Rename, n, ctx)
                    {
                        *seen.write.entry(path.clone()).or_default() += n;
                        any = true;
                    }
                }
                any
            }
            Observed::Link { from, to } => {
                let mut any = false;
                for (path, access) in [(from, FileAccess::Read), (to, FileAccess::Create)] {
                    if self.baseline_allows(path, access, ctx)
                        || self.denied(seen, path, access, n, ctx)
                    {
                        continue;
                    }
                    let counts = if access == FileAccess::Read {
                        &mut seen.read
                    } else {
                        &mut seen.write
                    };
                    *counts.entry(path.clone()).or_default() += n;
                    any = true;
                }
                any
            }
            Observed::Net {
                op,
                addr,
                port,
                protocol,
                host,
            } => note_net(seen, (*op, *addr, *port, *protocol), host.as_deref(), n),
        }
    }

    fn baseline_allows(&self, path: &str, access: FileAccess, ctx: Context) -> bool {
        let activity = crate::policy::Activity::File { path, access };
        matches!(self.baseline.evaluate(&activity, ctx), Verdict::Allowed)
    }

    /// Whether the deny list matches `path` (then it is withheld and counted).
    fn denied(
        &self,
        seen: &mut Seen,
        path: &str,
        access: FileAccess,
        n: u64,
        ctx: Context,
    ) -> bool {
        let activity = crate::policy::Activity::File { path, access };
        if matches!(self.deny.evaluate(&activity, ctx), Verdict::Allowed) {
            return false;
        }
        *seen
            .withheld
            .entry((path.to_owned(), access.to_string()))
            .or_default() += n;
        true
    }
}

/// A connect, send or bind into `seen`; whether it can justify an entry.
fn note_net(
    seen: &mut Seen,
    (op, addr, port, protocol): (NetOpName, IpAddr, u16, ProtocolName),
    host: Option<&str>,
    n: u64,
) -> bool {
    if op == NetOpName::Bind {
        // Port 0 asks the kernel for any free port: nothing to declare.
        if port != 0 {
            *seen.bind.entry(port).or_default() += n;
        }
        return port != 0;
    }
    let target = host.map_or(Target::Addr(addr), |h| Target::Host(h.to_owned()));
    let proto = match protocol {
        ProtocolName::Tcp => RuleProto::Tcp,
        ProtocolName::Udp => RuleProto::Udp,
        ProtocolName::Other(_) => RuleProto::Any,
    };
    *seen
        .connect
        .entry((target, proto))
        .or_default()
        .entry(port)
        .or_default() += n;
    true
}

mod generalize;
mod render;

use render::render;

#[cfg(test)]
mod tests;
