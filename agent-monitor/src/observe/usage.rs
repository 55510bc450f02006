//! Declared vs used (`GET /v1/report/{task}`): what each task actually did (tools run, files
//! and directories touched, hosts and ports reached), attributed to the scope entries that
//! allowed it, so that an access review can see the entries never used.
//!
//! Each distinct used item is matched against the declared entries once, when first seen.
//! Memory is bounded: at most [`MAX_ITEMS`] distinct items per dimension and task (beyond
//! that, uses are still attributed to entries but the items are not listed), and the usage
//! of at most [`MAX_TASKS`] tasks, the oldest ended ones evicted first.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use serde::Serialize;

use crate::{
    observe::record::{Kind, Record, Verdict},
    policy::{Activity, FileAccess},
    scope::Scope,
};

mod declared;
mod report;

use declared::Declared;
pub(crate) use declared::{EntryKind, EntryUse, connect_entry};
pub(crate) use report::Report;
use report::build;

/// Where usage finds the scope a task runs under (the daemon's task registry and scope
/// catalog).
pub(crate) trait Scopes {
    /// The scope of a live task.
    fn of_task(&self, task: &str) -> Option<Arc<Scope>>;
    /// A loaded scope by name.
    fn named(&self, scope: &str) -> Option<Arc<Scope>>;
}

/// Distinct items listed per dimension and task.
pub(crate) const MAX_ITEMS: usize = 2048;
/// Tasks whose usage is kept (live ones are never evicted).
pub(crate) const MAX_TASKS: usize = 256;

/// One distinct used item.
#[derive(Debug, Clone, Default)]
struct Item {
    count: u64,
    violation: bool,
    accesses: BTreeSet<&'static str>,
    rules: Vec<usize>,
}

struct TaskUsage {
    scope: Arc<Scope>,
    declared: Declared,
    /// Uses per entry of `declared.entries`.
    uses: Vec<u64>,
    first: String,
    last: String,
    records: u64,
    violations: u64,
    exec: BTreeMap<String, Item>,
    files: BTreeMap<(String, &'static str), Item>,
    net: BTreeMap<String, Item>,
    overflow: u64,
    /// By tool call name (`agent-monitor mcp`).
    calls: BTreeMap<String, CallUse>,
    /// The key of the last net record (reused, not allocated per record).
    key: String,
}

/// Tool names followed per task, and distinct things listed per tool.
const MAX_CALL_NAMES: usize = 256;
const MAX_CALL_USED: usize = 64;

/// What the calls of one tool did (`calls` in the report).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct CallUse {
    pub(crate) name: String,
    /// Calls that ended (any outcome).
    pub(crate) calls: u64,
    /// Calls refused before they reached the server (not in `spec.tools`).
    pub(crate) refused: u64,
    pub(crate) records: u64,
    pub(crate) violations: u64,
    /// Distinct things its calls used (`read /ws/a`, `exec /usr/bin/git`, `connect
    /// 10.0.0.1:443`), at most 64.
    pub(crate) used: BTreeSet<String>,
}

impl TaskUsage {
    fn new(scope: Arc<Scope>) -> Self {
        let declared = Declared::new(&scope.spec.policy_spec());
        Self {
            scope,
            uses: vec![0; declared.entries.len()],
            declared,
            first: String::new(),
            last: String::new(),
            records: 0,
            violations: 0,
            exec: BTreeMap::new(),
            files: BTreeMap::new(),
            net: BTreeMap::new(),
            overflow: 0,
            calls: BTreeMap::new(),
            key: String::new(),
        }
    }

    /// Counts a record of a tool call under the tool's name.
    fn observe_call(&mut self, r: &Record, name: &str) {
        if !self.calls.contains_key(name) && self.calls.len() >= MAX_CALL_NAMES {
            return;
        }
        let c = self
            .calls
            .entry(name.to_owned())
            .or_insert_with(|| CallUse {
                name: name.to_owned(),
                ..CallUse::default()
            });
        if r.kind == Kind::Task {
            match r.task.as_ref().map(|t| t.event) {
                Some("call-ended") => c.calls += 1,
                Some("call-refused") => c.refused += 1,
                _ => {}
            }
            return;
        }
        c.records += 1;
        c.violations += u64::from(r.verdict == Verdict::Violation);
        let item = if let Some(e) = &r.exec {
            Some(format!("exec {}", e.path))
        } else if let Some(f) = &r.file {
            Some(format!("{} {}", f.access.as_str(), f.path))
        } else {
            r.net
                .as_ref()
                .map(|n| format!("{} {}:{}", r.kind.name(), n.address, n.port))
        };
        if let Some(item) = item
            && (c.used.len() < MAX_CALL_USED || c.used.contains(&item))
        {
            c.used.insert(item);
        }
    }

    /// Counts one use of `key` in `map`, matching it against the entries when first seen.
    /// `key` is borrowed: an item already listed (most records) costs no allocation.
    fn use_item<K: Ord + std::borrow::Borrow<Q>, Q: Ord + ToOwned<Owned = K> + ?Sized>(
        map: &mut BTreeMap<K, Item>,
        overflow: &mut u64,
        uses: &mut [u64],
        key: &Q,
        violation: bool,
        access: Option<&'static str>,
        hits: impl FnOnce() -> Vec<usize>,
    ) {
        let count = |uses: &mut [u64], rules: &[usize]| {
            for &i in rules {
                if let Some(n) = uses.get_mut(i) {
                    *n += 1;
                }
            }
        };
        if let Some(item) = map.get_mut(key) {
            item.count += 1;
            item.violation |= violation;
            item.accesses.extend(access);
            // Counted from the item itself: a copy of its rules per record was an
            // allocation on every record the writer publishes.
            count(uses, &item.rules);
            return;
        }
        let rules = hits();
        count(uses, &rules);
        if map.len() < MAX_ITEMS {
            map.insert(
                key.to_owned(),
                Item {
                    count: 1,
                    violation,
                    accesses: access.into_iter().collect(),
                    rules,
                },
            );
        } else {
            *overflow += 1;
        }
    }

    fn observe(&mut self, r: &Record) {
        if let Some(call) = &r.call {
            self.observe_call(r, &call.name);
        }
        // Lifecycle records (revoked, degraded) are not something the agent used, nor are
        // decisions on holds (the held operation has its own record).
        if matches!(r.kind, Kind::Task | Kind::Approval) {
            return;
        }
        if self.first.is_empty() {
            self.first.push_str(&r.time);
        }
        self.last.clear();
        self.last.push_str(&r.time);
        self.records += 1;
        let violation = r.verdict == Verdict::Violation;
        self.violations += u64::from(violation);
        let d = &self.declared;
        let policy = &self.scope.policy;
        let uses = &mut self.uses;
        if let Some(e) = &r.exec {
            let hits = || d.entries_of(&policy.matching(&Activity::Exec { path: &e.path }));
            Self::use_item(
                &mut self.exec,
                &mut self.overflow,
                uses,
                e.path.as_str(),
                violation,
                None,
                hits,
            );
        }
        if let Some(f) = &r.file {
            let to = f.new_path.as_deref().map(|to| (to, FileAccess::Create));
            for (path, access) in std::iter::once((f.path.as_str(), f.access)).chain(to) {
                let name = access.as_str();
                let hits = || d.entries_of(&policy.matching(&Activity::File { path, access }));
                Self::use_item(
                    &mut self.files,
                    &mut self.overflow,
                    uses,
                    &(path.to_string(), name),
                    violation,
                    Some(name),
                    hits,
                );
            }
        }
        if let Some(n) = &r.net {
            let op = match r.kind {
                Kind::Bind => "bind",
                Kind::Send => "send",
                _ => "connect",
            };
            // `{op} {family}/{protocol} {address}:{port}`, written piece by piece into a
            // buffer kept for it: the key of every net record, where `write!` cost more
            // than the rest of the record's usage.
            let key = &mut self.key;
            key.clear();
            for part in [op, " ", n.family, "/", &n.protocol, " ", &n.address, ":"] {
                key.push_str(part);
            }
            push_decimal(key, n.port);
            if let Some(h) = &n.host {
                key.push_str(" (");
                key.push_str(h);
                key.push(')');
            }
            let hits = || d.net_hits(policy, r.kind, n);
            Self::use_item(
                &mut self.net,
                &mut self.overflow,
                uses,
                self.key.as_str(),
                violation,
                None,
                hits,
            );
        }
    }
}

/// Appends `n` in decimal, as `Display` writes it.
fn push_decimal(out: &mut String, n: u16) {
    let mut digits = [0u8; 20];
    for &d in crate::observe::record::decimal(u64::from(n), &mut digits) {
        out.push(char::from(d));
    }
}

#[derive(Default)]
struct Inner {
    tasks: HashMap<String, TaskUsage>,
    order: VecDeque<String>,
}

#[derive(Default)]
pub(crate) struct Usage {
    inner: Mutex<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Usage {
    /// Adds a batch of written records.
    pub(crate) fn observe(&self, scopes: &dyn Scopes, records: &[Record]) {
        // Consecutive records are mostly of one task: its usage is looked up once per run
        // of them, not once per record.
        let runs = || {
            records.chunk_by(|a, b| {
                Arc::ptr_eq(&a.agent.task, &b.agent.task) || a.agent.task == b.agent.task
            })
        };
        let missing: Vec<(&str, &str)> = {
            let inner = lock(&self.inner);
            let mut m: Vec<(&str, &str)> = runs()
                .filter_map(<[Record]>::first)
                .filter(|r| !inner.tasks.contains_key(&*r.agent.task))
                .map(|r| (&*r.agent.task, &*r.agent.scope))
                .collect();
            m.dedup();
            m
        };
        let found: Vec<(String, Arc<Scope>)> = missing
            .into_iter()
            .filter_map(|(task, scope)| {
                let s = scopes.of_task(task).or_else(|| scopes.named(scope))?;
                Some((task.to_string(), s))
            })
            .collect();
        let mut inner = lock(&self.inner);
        for (task, scope) in found {
            if !inner.tasks.contains_key(&task) {
                inner.tasks.insert(task.clone(), TaskUsage::new(scope));
                inner.order.push_back(task);
            }
        }
        for run in runs() {
            let Some(first) = run.first() else { continue };
            if let Some(t) = inner.tasks.get_mut(&*first.agent.task) {
                for r in run {
                    t.observe(r);
                }
            }
        }
        if inner.tasks.len() > MAX_TASKS {
            let inner = &mut *inner;
            while inner.tasks.len() > MAX_TASKS {
                let Some(pos) = inner.order.iter().position(|t| scopes.of_task(t).is_none()) else {
                    break;
                };
                if let Some(id) = inner.order.remove(pos) {
                    inner.tasks.remove(&id);
                }
            }
        }
    }

    /// The report of a task, live or ended (while its usage is kept).
    pub(crate) fn report(&self, scopes: &dyn Scopes, task: &str) -> Option<Report> {
        let live = scopes.of_task(task);
        let inner = lock(&self.inner);
        let fresh;
        let usage = match (inner.tasks.get(task), live.clone()) {
            (Some(u), _) => u,
            (None, Some(scope)) => {
                fresh = TaskUsage::new(scope);
                &fresh
            }
            (None, None) => return None,
        };
        Some(build(task, usage, live.is_some()))
    }
}

#[cfg(test)]
mod tests;
