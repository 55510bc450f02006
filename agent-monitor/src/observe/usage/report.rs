//! The report of a task (`GET /v1/report/{task}`), built from its usage.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{CallUse, EntryKind, EntryUse, Item, TaskUsage};

/// `GET /v1/report/{task}`.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) task: String,
    pub(crate) scope: String,
    pub(crate) owner: String,
    pub(crate) identity: Option<String>,
    /// The task is still running.
    pub(crate) live: bool,
    pub(crate) first_seen: Option<String>,
    pub(crate) last_seen: Option<String>,
    pub(crate) records: u64,
    pub(crate) violations: u64,
    /// Every declared entry with its number of uses.
    pub(crate) entries: Vec<EntryUse>,
    /// Allow entries never used: candidates for removal.
    pub(crate) unused: Vec<String>,
    pub(crate) used: Used,
    /// Distinct items not listed (beyond the per-task limit); their uses are still counted.
    pub(crate) unlisted: u64,
    /// What was used, by tool call name (`agent-monitor mcp`).
    pub(crate) calls: Vec<CallUse>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Used {
    pub(crate) exec: Vec<UsedItem>,
    pub(crate) files: Vec<UsedItem>,
    /// Parent directories of the files, with the number of uses below them.
    pub(crate) directories: Vec<UsedDir>,
    pub(crate) network: Vec<UsedItem>,
}

#[derive(Debug, Serialize)]
pub(crate) struct UsedItem {
    pub(crate) what: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) access: Vec<&'static str>,
    pub(crate) count: u64,
    /// Entries that allow (or deny) it; empty: no entry (the baseline, or a violation).
    pub(crate) rules: Vec<String>,
    pub(crate) violation: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct UsedDir {
    pub(crate) path: String,
    pub(crate) count: u64,
}

pub(super) fn build(task: &str, u: &TaskUsage, live: bool) -> Report {
    let names = |rules: &[usize]| -> Vec<String> {
        rules
            .iter()
            .filter_map(|i| u.declared.entries.get(*i))
            .map(|e| e.rule.clone())
            .collect()
    };
    let entries: Vec<EntryUse> = u
        .declared
        .entries
        .iter()
        .zip(&u.uses)
        .map(|(e, n)| EntryUse {
            uses: *n,
            ..e.clone()
        })
        .collect();
    let item = |what: String, i: &Item| UsedItem {
        what,
        access: i.accesses.iter().copied().collect(),
        count: i.count,
        rules: names(&i.rules),
        violation: i.violation,
    };
    let mut files: BTreeMap<&str, UsedItem> = BTreeMap::new();
    let mut dirs: BTreeMap<String, u64> = BTreeMap::new();
    for ((path, _), i) in &u.files {
        let entry = files
            .entry(path.as_str())
            .or_insert_with(|| item(path.clone(), &Item::default()));
        entry.count += i.count;
        entry.access.extend(i.accesses.iter().copied());
        entry.violation |= i.violation;
        for r in names(&i.rules) {
            if !entry.rules.contains(&r) {
                entry.rules.push(r);
            }
        }
        if let Some((dir, _)) = path.rsplit_once('/') {
            let dir = if dir.is_empty() { "/" } else { dir };
            *dirs.entry(dir.to_string()).or_default() += i.count;
        }
    }
    Report {
        task: task.to_string(),
        scope: u.scope.name.clone(),
        owner: u.scope.owner.clone(),
        identity: u.scope.identity.clone(),
        live,
        first_seen: (!u.first.is_empty()).then(|| u.first.clone()),
        last_seen: (!u.last.is_empty()).then(|| u.last.clone()),
        records: u.records,
        violations: u.violations,
        unused: entries
            .iter()
            .filter(|e| e.kind == EntryKind::Allow && e.uses == 0)
            .map(|e| format!("{}: {}", e.rule, e.entry))
            .collect(),
        entries,
        used: Used {
            exec: u.exec.iter().map(|(p, i)| item(p.clone(), i)).collect(),
            files: files.into_values().collect(),
            directories: dirs
                .into_iter()
                .map(|(path, count)| UsedDir { path, count })
                .collect(),
            network: u.net.iter().map(|(k, i)| item(k.clone(), i)).collect(),
        },
        unlisted: u.overflow,
        calls: u.calls.values().cloned().collect(),
    }
}
