//! What a scope change widens and narrows, per dimension, in words a reviewer can sign off.
//!
//! Pure: compares two parsed scopes (their declared specs). An entry replaced by one that
//! covers it (`/usr/bin/git` by `/usr/bin/*`, `10.0.0.0/24` by `10.0.0.0/8`) is one
//! widening of that entry, not an addition and a removal; an entry added or removed while
//! another entry of the new scope still covers it changes nothing in effect and is only
//! stated.

mod connect;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use serde::Serialize;

use crate::policy::compile_glob;
use crate::scope::{Mode, OnViolation, Scope, ScopeSpec, Ttl};
use connect::connect;

/// One change of one dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Change {
    /// The manifest field it is about (`exec.allow`, `files.deny`, `mode`, ...).
    pub(crate) dimension: &'static str,
    /// One sentence: "adds write to /workspace/out/**".
    #[serde(rename = "change")]
    pub(crate) what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) old: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) new: Option<String>,
}

/// What changed between two versions of one scope (or a scope added or removed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct ScopeDiff {
    /// The new scope's name (the old one's when it was removed).
    pub(crate) scope: String,
    /// What the new version allows that the old did not, or stops less.
    pub(crate) widens: Vec<Change>,
    /// What the new version no longer allows, or stops more.
    pub(crate) narrows: Vec<Change>,
    /// Changes that neither widen nor narrow (owner, a redundant entry, a new selector).
    pub(crate) changes: Vec<Change>,
    /// Dimensions with no change at all, in manifest order.
    pub(crate) unchanged: Vec<&'static str>,
}

impl ScopeDiff {
    fn push<'a>(
        list: &'a mut Vec<Change>,
        dimension: &'static str,
        change: String,
    ) -> &'a mut Change {
        list.push(Change {
            dimension,
            what: change,
            old: None,
            new: None,
        });
        let newest = list.len() - 1;
        &mut list[newest]
    }

    fn widens(&mut self, dimension: &'static str, change: String) -> &mut Change {
        Self::push(&mut self.widens, dimension, change)
    }

    fn narrows(&mut self, dimension: &'static str, change: String) -> &mut Change {
        Self::push(&mut self.narrows, dimension, change)
    }

    fn states(&mut self, dimension: &'static str, change: String) -> &mut Change {
        Self::push(&mut self.changes, dimension, change)
    }

    /// Whether anything widens: the review gate.
    #[must_use]
    pub(crate) fn widens_any(&self) -> bool {
        !self.widens.is_empty()
    }
}

impl Change {
    fn values(&mut self, old: impl Into<Option<String>>, new: impl Into<Option<String>>) {
        self.old = old.into();
        self.new = new.into();
    }
}

/// Pairs the scopes of two files: by name, or the only scope of each file with the other
/// when both hold one. A scope only in `new` widens (it is a new set of permissions to
/// review as a whole); one only in `old` narrows.
#[must_use]
pub(crate) fn diff_files(old: &[Scope], new: &[Scope]) -> Vec<ScopeDiff> {
    if let ([o], [n]) = (old, new) {
        return vec![diff(o, n)];
    }
    let mut out = Vec::new();
    for o in old {
        if let Some(n) = new.iter().find(|n| n.name == o.name) {
            out.push(diff(o, n));
        } else {
            let mut d = ScopeDiff {
                scope: o.name.clone(),
                ..ScopeDiff::default()
            };
            d.narrows("scope", format!("removes scope {}", o.name))
                .values(o.name.clone(), None);
            out.push(d);
        }
    }
    for n in new.iter().filter(|n| !old.iter().any(|o| o.name == n.name)) {
        let mut d = ScopeDiff {
            scope: n.name.clone(),
            ..ScopeDiff::default()
        };
        d.widens(
            "scope",
            format!("adds scope {} (review it as a new scope)", n.name),
        )
        .values(None, n.name.clone());
        out.push(d);
    }
    out
}

/// What changes from `old` to `new`.
#[must_use]
pub(crate) fn diff(old: &Scope, new: &Scope) -> ScopeDiff {
    let mut d = ScopeDiff {
        scope: new.name.clone(),
        ..ScopeDiff::default()
    };
    if old.name != new.name {
        d.states(
            "metadata.name",
            format!("renames {} to {}", old.name, new.name),
        )
        .values(old.name.clone(), new.name.clone());
    }
    if old.owner != new.owner {
        d.states(
            "metadata.owner",
            format!("owner {} -> {}", old.owner, new.owner),
        )
        .values(old.owner.clone(), new.owner.clone());
    }
    if old.identity != new.identity {
        let show = |i: &Option<String>| i.clone().unwrap_or_else(|| "(none)".to_owned());
        d.states(
            "metadata.identity",
            format!(
                "identity {} -> {}",
                show(&old.identity),
                show(&new.identity)
            ),
        )
        .values(old.identity.clone(), new.identity.clone());
    }
    let (o, n) = (&old.spec, &new.spec);
    mode(&mut d, o.mode, n.mode);
    on_violation(&mut d, o.on_violation, n.on_violation);
    ttl(&mut d, o.ttl, n.ttl);
    select(&mut d, o, n);
    let (po, pn) = (o.policy_spec(), n.policy_spec());
    globs(&mut d, PATHS[0], &po.exec_allow, &pn.exec_allow);
    baseline(&mut d, o.files.baseline, n.files.baseline);
    globs(&mut d, PATHS[1], &po.files.read, &pn.files.read);
    globs(&mut d, PATHS[2], &po.files.write, &pn.files.write);
    globs(&mut d, PATHS[3], &po.files.deny, &pn.files.deny);
    globs(&mut d, PATHS[4], &po.files.list, &pn.files.list);
    connect(&mut d, &po.connect, &pn.connect);
    bind(&mut d, o, n);
    let touched: BTreeSet<&str> = d
        .widens
        .iter()
        .chain(&d.narrows)
        .chain(&d.changes)
        .map(|c| c.dimension)
        .collect();
    d.unchanged = DIMENSIONS
        .iter()
        .copied()
        .filter(|dim| !touched.contains(dim))
        .collect();
    d
}

/// Every dimension compared, in manifest order (for the `unchanged` line).
const DIMENSIONS: [&str; 12] = [
    "mode",
    "onViolation",
    "ttl",
    "select",
    "exec.allow",
    "files.baseline",
    "files.read",
    "files.write",
    "files.deny",
    "files.list",
    "network.connect",
    "network.bind",
];

/// How a path list is worded, and which way an addition goes.
#[derive(Clone, Copy)]
struct PathList {
    dimension: &'static str,
    /// "exec", "read of", "write to", "listing of".
    verb: &'static str,
    /// `files.deny`: an addition narrows.
    deny: bool,
}

const PATHS: [PathList; 5] = [
    PathList {
        dimension: "exec.allow",
        verb: "exec",
        deny: false,
    },
    PathList {
        dimension: "files.read",
        verb: "read of",
        deny: false,
    },
    PathList {
        dimension: "files.write",
        verb: "write to",
        deny: false,
    },
    PathList {
        dimension: "files.deny",
        verb: "deny of",
        deny: true,
    },
    PathList {
        dimension: "files.list",
        verb: "listing of",
        deny: false,
    },
];

const GLOB_CHARS: &[char] = &['*', '?', '[', '{'];

/// Whether glob `wide` matches everything `narrow` does, as far as can be told without
/// enumerating paths: `narrow` is an exact path `wide` matches, or `wide` is `P/**` and
/// `narrow` is `P` or lies under `P/`.
pub(crate) fn covers(wide: &str, narrow: &str) -> bool {
    if wide == narrow {
        return true;
    }
    if let Some(prefix) = wide.strip_suffix("/**") {
        let under = narrow
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if under && (prefix.is_empty() || !prefix.contains(GLOB_CHARS)) {
            return true;
        }
    }
    !narrow.contains(GLOB_CHARS)
        && compile_glob(wide).is_ok_and(|g| g.compile_matcher().is_match(narrow))
}

fn globs(d: &mut ScopeDiff, list: PathList, old: &[String], new: &[String]) {
    let removed: Vec<&String> = old.iter().filter(|p| !new.contains(p)).collect();
    let added: Vec<&String> = new.iter().filter(|p| !old.contains(p)).collect();
    let kept: Vec<&String> = new.iter().filter(|p| old.contains(p)).collect();
    let PathList {
        dimension, verb, ..
    } = list;
    // (widening, narrowing) wording: for deny lists, a wider deny narrows.
    let mut paired_added: BTreeSet<&str> = BTreeSet::new();
    let mut paired_removed: BTreeSet<&str> = BTreeSet::new();
    for r in &removed {
        for a in &added {
            let (grows, shrinks) = (covers(a, r), covers(r, a));
            if !(grows || shrinks) {
                continue;
            }
            paired_added.insert(a.as_str());
            paired_removed.insert(r.as_str());
            let widens = grows != list.deny;
            let word = if grows { "widens" } else { "narrows" };
            let text = format!("{word} {verb} {r} to {a}");
            let change = if widens {
                d.widens(dimension, text)
            } else {
                d.narrows(dimension, text)
            };
            change.values((*r).clone(), (*a).clone());
        }
    }
    for r in removed
        .iter()
        .filter(|r| !paired_removed.contains(r.as_str()))
    {
        if let Some(k) = kept.iter().find(|k| covers(k, r)) {
            d.states(
                dimension,
                format!("removes {verb} {r}, still covered by {k}"),
            )
            .values((*r).clone(), None);
        } else if list.deny {
            d.widens(dimension, format!("no longer denies {r}"))
                .values((*r).clone(), None);
        } else {
            d.narrows(dimension, format!("removes {verb} {r}"))
                .values((*r).clone(), None);
        }
    }
    for a in added.iter().filter(|a| !paired_added.contains(a.as_str())) {
        if let Some(k) = kept.iter().find(|k| covers(k, a)) {
            d.states(
                dimension,
                format!("adds {verb} {a}, already covered by {k}"),
            )
            .values(None, (*a).clone());
        } else if list.deny {
            d.narrows(dimension, format!("denies {a}"))
                .values(None, (*a).clone());
        } else {
            d.widens(dimension, format!("adds {verb} {a}"))
                .values(None, (*a).clone());
        }
    }
}

fn mode(d: &mut ScopeDiff, old: Mode, new: Mode) {
    let text = format!("mode {old} -> {new}");
    match (old, new) {
        (Mode::Enforce, Mode::Audit) => d.widens("mode", format!("{text}: nothing is stopped")),
        (Mode::Audit, Mode::Enforce) => {
            d.narrows("mode", format!("{text}: violations are stopped"))
        }
        _ => return,
    }
    .values(old.to_string(), new.to_string());
}

/// How much a violation costs the agent, least first.
fn severity(on: OnViolation) -> u8 {
    match on {
        OnViolation::Alert => 0,
        // A person may let the operation through.
        OnViolation::Ask => 1,
        OnViolation::Refuse => 2,
        OnViolation::KillProcess => 3,
        OnViolation::KillAgent => 4,
    }
}

fn on_violation(d: &mut ScopeDiff, old: OnViolation, new: OnViolation) {
    let text = format!("onViolation {old} -> {new}");
    match severity(new).cmp(&severity(old)) {
        std::cmp::Ordering::Less => d.widens("onViolation", text),
        std::cmp::Ordering::Greater => d.narrows("onViolation", text),
        std::cmp::Ordering::Equal => return,
    }
    .values(old.to_string(), new.to_string());
}

fn ttl(out: &mut ScopeDiff, old: Option<Ttl>, new: Option<Ttl>) {
    let (before, after) = (old.map(|t| t.to_string()), new.map(|t| t.to_string()));
    let change = match (old, new) {
        (Some(was), None) => {
            out.widens("ttl", format!("removes ttl {was}: tasks are never revoked"))
        }
        (None, Some(now)) => out.narrows("ttl", format!("adds ttl {now}")),
        (Some(was), Some(now)) if now.duration() > was.duration() => {
            out.widens("ttl", format!("ttl {was} -> {now}"))
        }
        (Some(was), Some(now)) if now.duration() < was.duration() => {
            out.narrows("ttl", format!("ttl {was} -> {now}"))
        }
        _ => return,
    };
    change.values(before, after);
}

fn select(out: &mut ScopeDiff, old: &ScopeSpec, new: &ScopeSpec) {
    let show = |s: &ScopeSpec| {
        let select = s.select.as_ref()?;
        match (&select.cgroup, &select.kubernetes) {
            (Some(cgroup), _) => Some(format!("cgroup {cgroup}")),
            (None, Some(k)) => Some(format!(
                "kubernetes {}",
                serde_json::to_string(k).unwrap_or_default()
            )),
            (None, None) => None,
        }
    };
    let (before, after) = (show(old), show(new));
    let change = match (&before, &after) {
        (was, now) if was == now => return,
        (Some(was), None) => out.states(
            "select",
            format!("removes select {was}: matching agents are no longer adopted"),
        ),
        (None, Some(now)) => out.states(
            "select",
            format!("adds select {now}: matching agents are adopted"),
        ),
        (Some(was), Some(now)) => out.states("select", format!("select {was} -> {now}")),
        (None, None) => return,
    };
    change.values(before, after);
}

fn baseline(d: &mut ScopeDiff, old: bool, new: bool) {
    match (old, new) {
        (true, false) => d.narrows("files.baseline", "turns the file baseline off".to_owned()),
        (false, true) => d.widens(
            "files.baseline",
            "turns the file baseline on (runtime reads: libraries, locale, certificates)"
                .to_owned(),
        ),
        _ => return,
    }
    .values(old.to_string(), new.to_string());
}

fn bind(d: &mut ScopeDiff, o: &ScopeSpec, n: &ScopeSpec) {
    let ports = |s: &ScopeSpec| {
        s.network
            .bind
            .iter()
            .map(|p| p.0)
            .collect::<BTreeSet<u16>>()
    };
    let (old, new) = (ports(o), ports(n));
    for p in new.difference(&old) {
        d.widens("network.bind", format!("adds bind port {p}"))
            .values(None, p.to_string());
    }
    for p in old.difference(&new) {
        d.narrows("network.bind", format!("removes bind port {p}"))
            .values(p.to_string(), None);
    }
}
