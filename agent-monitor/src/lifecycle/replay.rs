//! A candidate scope judged against recorded activity: what it would have refused of what
//! agents did, and which of its grants nothing used. A CI gate for scope changes.
//!
//! Every recorded activity is judged by [`CompiledPolicy::evaluate`], the daemon's own
//! engine; what the daemon decides besides it is rebuilt from the record:
//!
//! - A connect or send whose record carries `net.host` went to an address the agent's own
//!   resolver learned for a `host:` rule: the candidate allows it when one of its `host:`
//!   rules allows that name, port and protocol, or a CIDR rule allows the address.
//! - A refused DNS question (a `send` with `net.host` and no process) is allowed when one of
//!   the candidate's `host:` rules names it (the resolver answers by name alone).
//! - The daemon's baseline presets (a read of the process's own image, a listing of the
//!   directory the task started in, a read of its own cgroup limits) need facts the log does
//!   not keep. A record the daemon allowed that the candidate's rules refuse is taken as
//!   allowed by the baseline when it has that shape (a read of the record's `process.exe`, a
//!   read under `/sys/fs/cgroup`, any listing) *and* the candidate keeps `files.baseline:
//!   true`; with the baseline off it stays a violation.
//!
//! Not replayed, and counted as such: paths the daemon could not resolve exactly, escape
//! attempts (no scope allows them), addresses learned through a `host:` rule by an earlier
//! daemon (the name is not recorded), DNS questions counted together without their names,
//! and Unix-socket records without an address.
//!
//! Identical activities are judged once; each record counts for the actions it stands for
//! (`count`, on aggregated records).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::{self, Write as _},
    net::SocketAddr,
};

use serde::Serialize;

use super::log::{Entry, Log, Observed, Source};
use crate::{
    observe::usage::connect_entry,
    policy::{
        CompiledPolicy, ConnectTarget, Context, Dimension, FileAccess, RuleList, RuleRef, Verdict,
        Violation, host_matches,
    },
    scope::Scope,
};

/// Activities listed per violated rule in the text output.
const LISTED: usize = 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    #[error("the candidate holds no scope named {name:?} (it holds {available})")]
    NoSuchScope { name: String, available: String },
    #[error("the candidate holds several scopes ({available}): pick one with --scope")]
    SeveralScopes { available: String },
    #[error(
        "the logs hold no record of scope {scope:?}{} (they hold records of: {present})",
        task_suffix(.task.as_deref())
    )]
    NoRecords {
        scope: String,
        task: Option<String>,
        /// The scopes the logs do hold records of.
        present: String,
    },
}

fn task_suffix(task: Option<&str>) -> String {
    task.map(|t| format!(" and task {t:?}")).unwrap_or_default()
}

/// The candidate scope among those a manifest holds: the one named `name`, or the only one.
///
/// # Errors
/// No scope of that name, or several scopes and no name.
pub(crate) fn pick(mut scopes: Vec<Scope>, name: Option<&str>) -> Result<Scope, ReplayError> {
    let available = || {
        scopes
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if scopes.len() == 1 {
        return Ok(scopes.swap_remove(0));
    }
    let Some(name) = name else {
        return Err(ReplayError::SeveralScopes {
            available: available(),
        });
    };
    match scopes.iter().position(|s| s.name == name) {
        Some(i) => Ok(scopes.swap_remove(i)),
        None => Err(ReplayError::NoSuchScope {
            name: name.to_owned(),
            available: available(),
        }),
    }
}

/// Which records are replayed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Select<'a> {
    pub(crate) scope: &'a str,
    pub(crate) task: Option<&'a str>,
}

/// One activity the candidate would refuse.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Found {
    pub(crate) rule: String,
    pub(crate) dimension: Dimension,
    pub(crate) reason: String,
    pub(crate) activity: String,
    /// Actions (a record may stand for several).
    pub(crate) count: u64,
    pub(crate) first_seen: String,
}

/// A grant of the candidate no replayed activity used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Unused {
    /// e.g. `files.read[2]`.
    pub(crate) rule: String,
    /// The entry as written.
    pub(crate) entry: String,
}

/// Records of one kind that could not be replayed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NotReplayed {
    pub(crate) what: &'static str,
    pub(crate) records: u64,
    pub(crate) first_seen: String,
}

/// A log warning, for the report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LogWarning {
    pub(crate) at: String,
    pub(crate) message: String,
}

/// The outcome of a replay.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// Where the candidate came from.
    pub(crate) candidate: String,
    /// The scope whose records were replayed.
    pub(crate) scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) task: Option<String>,
    /// Records (lines) of that scope and task.
    pub(crate) records: u64,
    /// Log files they came from.
    pub(crate) files: usize,
    /// Records judged.
    pub(crate) replayed: u64,
    /// Records are missing from the logs.
    pub(crate) partial: bool,
    /// Grouped by rule (in rule order), most frequent first within a rule.
    pub(crate) violations: Vec<Found>,
    pub(crate) unused: Vec<Unused>,
    pub(crate) not_replayed: Vec<NotReplayed>,
    pub(crate) warnings: Vec<LogWarning>,
}

impl Report {
    /// Whether anything would be a violation.
    pub(crate) fn failed(&self) -> bool {
        !self.violations.is_empty()
    }
}

/// What one activity is judged with besides itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    observed: Observed,
    /// A refused DNS question (its name is `observed`'s host).
    question: bool,
    /// The acting process, where the verdict depends on it (its own `/proc` tree).
    tgid: u32,
    /// The daemon allowed it and it has the shape of a baseline preset.
    preset: bool,
}

#[derive(Debug, Clone)]
enum Outcome {
    /// Allowed through these declared entries (none for the baseline).
    Allowed(Vec<RuleRef>),
    Violation(Violation),
}

/// Judges the selected records of `log` against `candidate`.
///
/// # Errors
/// [`ReplayError::NoRecords`] when the logs hold no record of that scope (and task).
pub(crate) fn replay(
    candidate: &Scope,
    log: &Log,
    select: Select<'_>,
) -> Result<Report, ReplayError> {
    let policy = &candidate.policy;
    let mut cache: HashMap<Key, Outcome> = HashMap::new();
    let mut used: BTreeSet<RuleRef> = BTreeSet::new();
    // rule -> activity -> found
    let mut found: BTreeMap<String, BTreeMap<Key, (Found, Source)>> = BTreeMap::new();
    let mut skipped: BTreeMap<&'static str, (u64, Source)> = BTreeMap::new();
    let (mut records, mut replayed) = (0, 0);
    let mut files = BTreeSet::new();
    for entry in log.select(Some(select.scope), select.task) {
        records += 1;
        files.insert(&entry.at.file);
        let key = match key_of(entry) {
            Ok(Some(key)) => key,
            Ok(None) => continue,
            Err(what) => {
                skipped
                    .entry(what)
                    .or_insert_with(|| (0, entry.at.clone()))
                    .0 += 1;
                continue;
            }
        };
        replayed += 1;
        let outcome = cache
            .entry(key.clone())
            .or_insert_with(|| judge(policy, &key));
        let actions = entry.record.count.unwrap_or(1);
        match outcome {
            Outcome::Allowed(rules) => used.extend(rules.iter().copied()),
            Outcome::Violation(v) => {
                let (item, _) = found
                    .entry(v.rule.clone())
                    .or_default()
                    .entry(key)
                    .or_insert_with_key(|key| {
                        let item = Found {
                            rule: v.rule.clone(),
                            dimension: v.dimension,
                            reason: v.reason.clone(),
                            activity: describe(key),
                            count: 0,
                            first_seen: entry.at.to_string(),
                        };
                        (item, entry.at.clone())
                    });
                item.count += actions;
            }
        }
    }
    if records == 0 {
        let present: BTreeSet<&str> = log
            .entries
            .iter()
            .filter_map(|e| e.record.scope())
            .collect();
        return Err(ReplayError::NoRecords {
            scope: select.scope.to_owned(),
            task: select.task.map(str::to_owned),
            present: if present.is_empty() {
                "none".to_owned()
            } else {
                present.into_iter().collect::<Vec<_>>().join(", ")
            },
        });
    }
    let violations = found
        .into_values()
        .flat_map(|group| {
            let mut items: Vec<_> = group.into_values().collect();
            items.sort_by(|(a, at_a), (b, at_b)| b.count.cmp(&a.count).then(at_a.cmp(at_b)));
            items.into_iter().map(|(item, _)| item)
        })
        .collect();
    Ok(Report {
        candidate: candidate.source.to_string(),
        scope: select.scope.to_owned(),
        task: select.task.map(str::to_owned),
        records,
        files: files.len(),
        replayed,
        partial: log.partial(),
        violations,
        unused: unused(policy, &used),
        not_replayed: skipped
            .into_iter()
            .map(|(what, (records, at))| NotReplayed {
                what,
                records,
                first_seen: at.to_string(),
            })
            .collect(),
        warnings: log
            .warnings
            .iter()
            .map(|w| LogWarning {
                at: w.at.to_string(),
                message: w.message.clone(),
            })
            .collect(),
    })
}

/// What a record asks the policy: `Ok(None)` for records of no activity (task lifecycle),
/// `Err` naming why an activity cannot be replayed.
fn key_of(entry: &Entry) -> Result<Option<Key>, &'static str> {
    let r = &entry.record;
    match r.kind.as_str() {
        "task" | "gap" | "dns" => return Ok(None),
        "escape" => return Err("escape attempts (no scope allows them)"),
        _ => {}
    }
    if r.file.as_ref().is_some_and(|f| f.unresolved) {
        return Err("paths the daemon could not resolve exactly");
    }
    let host = r.net.as_ref().and_then(|n| n.host.as_deref());
    if host.is_some_and(|h| h.starts_with('<')) {
        return Err("addresses learned through a host: rule by an earlier daemon (no name)");
    }
    // Refused DNS questions are the only records without a process.
    let question = r.process.is_none() && r.kind == "send";
    if question && host.is_none() {
        return Err("DNS questions counted together without their names");
    }
    let observed = match r.observed() {
        Ok(Some(observed)) => observed,
        Ok(None) => return Err("Unix-socket records without an address"),
        Err(_) => return Err("records of fields this build does not know"),
    };
    let exe = r.process.as_ref().and_then(|p| p.exe.as_deref());
    let preset = r.verdict.as_deref() == Some("allowed") && is_preset(&observed, exe);
    let pid = r.process.as_ref().map_or(0, |p| p.pid);
    let tgid = if touches_proc(&observed) { pid } else { 0 };
    Ok(Some(Key {
        observed,
        question,
        tgid,
        preset,
    }))
}

/// The shapes of the daemon's baseline presets (see the module doc).
fn is_preset(observed: &Observed, exe: Option<&str>) -> bool {
    let Observed::File { path, access } = observed else {
        return false;
    };
    match access.access() {
        FileAccess::List => true,
        FileAccess::Read => exe == Some(path.as_str()) || path.starts_with("/sys/fs/cgroup/"),
        _ => false,
    }
}

fn touches_proc(observed: &Observed) -> bool {
    let proc = |p: &str| p.starts_with("/proc/");
    match observed {
        Observed::File { path, .. } => proc(path),
        Observed::Rename { from, to } | Observed::Link { from, to } => proc(from) || proc(to),
        Observed::Exec { .. } | Observed::Net { .. } => false,
    }
}

fn judge(policy: &CompiledPolicy, key: &Key) -> Outcome {
    let activity = key.observed.activity();
    if key.question {
        return judge_question(policy, &key.observed);
    }
    let verdict = policy.evaluate(&activity, Context { tgid: key.tgid });
    if let Observed::Net {
        host: Some(host),
        port,
        protocol,
        ..
    } = &key.observed
    {
        let mut rules = policy.hosts_matching(host, *port, protocol.protocol());
        rules.extend(policy.matching(&activity));
        return match verdict {
            Verdict::Allowed => Outcome::Allowed(rules),
            Verdict::Violation(_) if !rules.is_empty() => Outcome::Allowed(rules),
            Verdict::Violation(v) => Outcome::Violation(Violation {
                reason: format!(
                    "{} (learned as {host}): no host: rule allows the name, port and protocol, \
                     and no CIDR rule the address",
                    v.reason
                ),
                ..v
            }),
        };
    }
    match verdict {
        Verdict::Allowed => Outcome::Allowed(policy.matching(&activity)),
        Verdict::Violation(_) if key.preset && policy.declared().files.baseline => {
            Outcome::Allowed(Vec::new())
        }
        Verdict::Violation(v) => Outcome::Violation(v),
    }
}

/// The resolver answers a question when a `host:` rule names it, whatever its ports.
fn judge_question(policy: &CompiledPolicy, observed: &Observed) -> Outcome {
    let Observed::Net {
        host: Some(name), ..
    } = observed
    else {
        return Outcome::Allowed(Vec::new());
    };
    let rules: Vec<RuleRef> = policy
        .declared()
        .connect
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(&r.target, ConnectTarget::Host(h) if host_matches(h, name)))
        .map(|(index, _)| RuleRef {
            list: RuleList::Connect,
            index,
        })
        .collect();
    if rules.is_empty() {
        Outcome::Violation(Violation {
            dimension: Dimension::Network,
            rule: "network.connect".to_owned(),
            reason: format!("DNS question for {name} matches no host: rule in network.connect"),
        })
    } else {
        Outcome::Allowed(rules)
    }
}

/// One line naming an activity.
fn describe(key: &Key) -> String {
    match &key.observed {
        Observed::Net { host: Some(h), .. } if key.question => format!("DNS question for {h}"),
        Observed::Exec { path } => format!("exec {path}"),
        Observed::File { path, access } => format!("{} {path}", access.access()),
        Observed::Rename { from, to } => format!("rename {from} -> {to}"),
        Observed::Link { from, to } => format!("link {from} -> {to}"),
        Observed::Net {
            op,
            addr,
            port,
            protocol,
            host,
        } => {
            let mut s = format!(
                "{} {} {}",
                op.op(),
                SocketAddr::new(*addr, *port),
                protocol.protocol()
            );
            if let Some(h) = host {
                let _ = write!(s, " ({h})");
            }
            s
        }
    }
}

/// The granting entries (not `files.deny`) no replayed activity was allowed through.
fn unused(policy: &CompiledPolicy, used: &BTreeSet<RuleRef>) -> Vec<Unused> {
    let spec = policy.declared();
    let globs = |list: RuleList, patterns: &[String]| -> Vec<(RuleRef, String)> {
        patterns
            .iter()
            .enumerate()
            .map(|(index, p)| (RuleRef { list, index }, p.clone()))
            .collect()
    };
    let mut all = globs(RuleList::ExecAllow, &spec.exec_allow);
    all.extend(globs(RuleList::FilesRead, &spec.files.read));
    all.extend(globs(RuleList::FilesWrite, &spec.files.write));
    all.extend(globs(RuleList::FilesList, &spec.files.list));
    all.extend(spec.connect.iter().enumerate().map(|(index, rule)| {
        (
            RuleRef {
                list: RuleList::Connect,
                index,
            },
            connect_entry(rule),
        )
    }));
    all.extend(spec.bind.iter().enumerate().map(|(index, port)| {
        (
            RuleRef {
                list: RuleList::Bind,
                index,
            },
            port.to_string(),
        )
    }));
    all.into_iter()
        .filter(|(r, _)| !used.contains(r))
        .map(|(r, entry)| Unused {
            rule: format!("{}[{}]", r.list.name(), r.index),
            entry,
        })
        .collect()
}

impl fmt::Display for Report {
    /// The text report: header, would-be violations by rule, unused grants, what could not
    /// be replayed, the logs' warnings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let task = self
            .task
            .as_deref()
            .map(|t| format!(", task {t}"))
            .unwrap_or_default();
        writeln!(
            f,
            "replay of {} (scope {}{task}): {} records from {} file{}, {} replayed{}",
            self.candidate,
            self.scope,
            self.records,
            self.files,
            if self.files == 1 { "" } else { "s" },
            self.replayed,
            if self.partial { " (partial)" } else { "" },
        )?;
        if self.violations.is_empty() {
            writeln!(f, "would be violations: none")?;
        } else {
            writeln!(f, "would be violations:")?;
            let mut rest = self.violations.as_slice();
            while let Some(first) = rest.first() {
                let n = rest.iter().take_while(|v| v.rule == first.rule).count();
                let (group, tail) = rest.split_at(n);
                let total: u64 = group.iter().map(|v| v.count).sum();
                writeln!(
                    f,
                    "  {} ({}): {total} actions",
                    first.rule,
                    dimension(first.dimension)
                )?;
                for v in group.iter().take(LISTED) {
                    writeln!(
                        f,
                        "    {} x{} (first {}): {}",
                        v.activity, v.count, v.first_seen, v.reason
                    )?;
                }
                if n > LISTED {
                    writeln!(f, "    ... and {} more", n - LISTED)?;
                }
                rest = tail;
            }
        }
        if self.unused.is_empty() {
            writeln!(f, "grants nothing used: none")?;
        } else {
            writeln!(f, "grants nothing used:")?;
            for u in &self.unused {
                writeln!(f, "  {}: {}", u.rule, u.entry)?;
            }
        }
        if !self.not_replayed.is_empty() {
            let total: u64 = self.not_replayed.iter().map(|n| n.records).sum();
            writeln!(f, "{total} records could not be replayed:")?;
            for n in &self.not_replayed {
                writeln!(f, "  {}: {} (first {})", n.what, n.records, n.first_seen)?;
            }
        }
        for w in &self.warnings {
            writeln!(f, "{}: warning: {}", w.at, w.message)?;
        }
        if self.partial {
            writeln!(
                f,
                "the result is partial: records are missing from the logs (see the warnings \
                 above); activity they held was not judged"
            )?;
        }
        Ok(())
    }
}

fn dimension(d: Dimension) -> &'static str {
    match d {
        Dimension::Exec => "exec",
        Dimension::Files => "files",
        Dimension::Network => "network",
        Dimension::Escape => "escape",
    }
}

#[cfg(test)]
mod tests;
