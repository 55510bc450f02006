//! From the paths a run used to path entries: exact paths, or `dir/**` where the rules of
//! the module above say so.

use std::collections::{BTreeMap, BTreeSet};

use super::{Counts, NEVER_WIDENED, TEMP_DIRS};

/// A proposed path entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Pattern {
    Exact(String),
    /// `dir/**`: the directory and everything below it.
    Tree(String),
}

impl Pattern {
    /// Whether this entry covers `path` (a `Tree` also covers its directory itself).
    pub(super) fn covers(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => p == path,
            Self::Tree(dir) => under(dir, path),
        }
    }

    /// Whether this entry covers every path `other` covers.
    pub(super) fn covers_pattern(&self, other: &Self) -> bool {
        match other {
            Self::Exact(p) => self.covers(p),
            Self::Tree(dir) => matches!(self, Self::Tree(_)) && self.covers(dir),
        }
    }

    /// As written in the manifest: glob characters of a real path escaped.
    pub(super) fn glob(&self) -> String {
        match self {
            Self::Exact(p) => escape(p),
            Self::Tree(dir) if dir == "/" => "/**".to_owned(),
            Self::Tree(dir) => format!("{}/**", escape(dir)),
        }
    }
}

/// One entry and what justified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Item {
    pub(super) pattern: Pattern,
    pub(super) records: u64,
    pub(super) paths: usize,
}

/// `path` is `dir` or below it.
fn under(dir: &str, path: &str) -> bool {
    dir == "/"
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A path's glob characters escaped (the policy's globs take `\` as an escape).
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn depth(dir: &str) -> usize {
    dir.split('/').filter(|c| !c.is_empty()).count()
}

/// Whether `dir` may become `dir/**`.
pub(super) fn widenable(dir: &str) -> bool {
    depth(dir) >= 2
        && !NEVER_WIDENED.iter().any(|never| {
            let (a, b): (Vec<&str>, Vec<&str>) =
                (never.split('/').collect(), dir.split('/').collect());
            a.len() == b.len() && a.iter().zip(&b).all(|(n, d)| *n == "*" || n == d)
        })
}

fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}

/// The entries for `paths`: temporary directories and `trees` (created directories, for
/// writes) first, then directories with at least `units` used entries directly below them.
pub(super) fn collapse(paths: &Counts, units: usize, trees: &BTreeSet<String>) -> Vec<Item> {
    let mut globs: BTreeSet<String> = BTreeSet::new();
    for path in paths.keys() {
        if let Some(temp) = TEMP_DIRS.iter().find(|t| under(t, path) && **t != path) {
            globs.insert((*temp).to_owned());
        }
    }
    globs.extend(trees.iter().filter(|d| widenable(d)).cloned());
    // Direct children with something used below them, per directory.
    let mut children: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for path in paths.keys() {
        let mut child = path.as_str();
        while let Some(dir) = parent(child) {
            children.entry(dir).or_default().insert(child);
            child = dir;
        }
    }
    for (dir, below) in &children {
        if below.len() >= units && widenable(dir) {
            globs.insert((*dir).to_owned());
        }
    }
    // The topmost glob wins; every path goes to the glob above it, or stays exact.
    let top: Vec<&String> = globs
        .iter()
        .filter(|g| !globs.iter().any(|o| o != *g && under(o, g)))
        .collect();
    let mut items: BTreeMap<Pattern, Item> = BTreeMap::new();
    for (path, records) in paths {
        let pattern = top.iter().find(|g| under(g, path)).map_or_else(
            || Pattern::Exact(path.clone()),
            |g| Pattern::Tree((*g).clone()),
        );
        let item = items.entry(pattern.clone()).or_insert(Item {
            pattern,
            records: 0,
            paths: 0,
        });
        item.records += records;
        item.paths += 1;
    }
    items.into_values().collect()
}

/// Directories among `created` that hold another used path: the task made them and used
/// them (only the topmost are kept by [`collapse`]).
pub(super) fn created_dirs(created: &BTreeSet<String>, used: &[&String]) -> BTreeSet<String> {
    created
        .iter()
        .filter(|dir| used.iter().any(|p| *p != *dir && under(dir, p)))
        .cloned()
        .collect()
}
