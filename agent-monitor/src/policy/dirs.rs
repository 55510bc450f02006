//! Whole directories judged at once: whether every file directly in a directory may be
//! read (or written) by the rules alone, so that the kernel may let a first open of any of
//! them through without holding it for the daemon (`DIR_OK`).
//!
//! Found from the declared globs, component by component, and on the safe side both ways:
//! a directory is covered only when a glob that allows the access surely matches every
//! name in it, and a deny glob that could match a name in it either names it (a literal
//! last component: `**/.env` names `.env`, which the kernel then still holds) or rules
//! the directory out. A glob this cannot take apart (braces, classes, escapes) covers nothing
//! and, as a deny glob, could match anything.

use std::collections::BTreeSet;

use agent_monitor_common::DIR_NAME_LEN;
use globset::GlobMatcher;

use super::{PolicySpec, glob::compile_glob};

/// What the rules let any process do to every file directly in one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirGrant {
    /// Every file may be read (and listed).
    pub(crate) read: bool,
    /// Every file may be written, made, truncated or removed.
    pub(crate) write: bool,
    /// But not those with these names (each shorter than `DIR_NAME_LEN`).
    pub(crate) except: BTreeSet<String>,
}

/// One component of a glob.
#[derive(Debug, Clone)]
enum Comp {
    Literal(String),
    /// `*`: any one component.
    Star,
    /// `**`: any number of components, none included.
    Deep,
    /// Any other glob component (`*.pem`, `a?c`): matched against a directory's
    /// components; of the unknown name, it may match any and surely matches none.
    Other(GlobMatcher),
}

/// A glob taken apart, or `Opaque` when its components cannot be told apart.
#[derive(Debug, Clone)]
enum Pattern {
    Comps(Vec<Comp>),
    Opaque,
}

fn parse(glob: &str) -> Pattern {
    // Braces may hold a `/`; classes and escapes are not worth telling apart here.
    if glob.contains(['{', '}', '[', ']', '\\']) {
        return Pattern::Opaque;
    }
    glob.split('/')
        .map(|c| match c {
            "*" => Some(Comp::Star),
            "**" => Some(Comp::Deep),
            c if c.contains(['*', '?']) => compile_glob(c)
                .ok()
                .map(|g| Comp::Other(g.compile_matcher())),
            c => Some(Comp::Literal(c.to_owned())),
        })
        .collect::<Option<Vec<_>>>()
        .map_or(Pattern::Opaque, Pattern::Comps)
}

/// The components of an absolute directory path, as a glob's are split (`/` is `[""]`).
fn dir_comps(dir: &str) -> Option<Vec<&str>> {
    if !dir.starts_with('/') {
        return None;
    }
    if dir == "/" {
        return Some(vec![""]);
    }
    let comps: Vec<&str> = dir.split('/').collect();
    // A canonical path: no empty component past the leading one, no `.` or `..`.
    comps
        .iter()
        .skip(1)
        .all(|c| !matches!(*c, "" | "." | ".."))
        .then_some(comps)
}

/// Which names `X` make `dir/X` match a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    Never,
    Names(BTreeSet<String>),
    Any,
}

impl Reach {
    fn or(self, other: Self) -> Self {
        match (self, other) {
            (Self::Any, _) | (_, Self::Any) => Self::Any,
            (Self::Never, r) | (r, Self::Never) => r,
            (Self::Names(mut a), Self::Names(b)) => {
                a.extend(b);
                Self::Names(a)
            }
        }
    }
}

/// How `p[pi..]` can match `dir[di..]` followed by one name (the name is `dir.len()`).
/// `sure`: only what surely matches counts (a covering glob); otherwise whatever may (a
/// deny glob).
fn reach(p: &[Comp], pi: usize, dir: &[&str], di: usize, sure: bool) -> Reach {
    let name_at = dir.len();
    let Some(comp) = p.get(pi) else {
        return if di == name_at + 1 {
            Reach::Any
        } else {
            Reach::Never
        };
    };
    if matches!(comp, Comp::Deep) {
        return (di..=name_at + 1).fold(Reach::Never, |acc, k| {
            if acc == Reach::Any {
                acc
            } else {
                acc.or(reach(p, pi + 1, dir, k, sure))
            }
        });
    }
    if di > name_at {
        return Reach::Never;
    }
    let next = || reach(p, pi + 1, dir, di + 1, sure);
    if di == name_at {
        return match comp {
            Comp::Star => next(),
            Comp::Other(_) if !sure => next(),
            Comp::Literal(name) if !sure => match next() {
                Reach::Never => Reach::Never,
                _ => Reach::Names(BTreeSet::from([name.clone()])),
            },
            _ => Reach::Never,
        };
    }
    let here = dir[di];
    let matches = match comp {
        Comp::Literal(l) => l == here,
        Comp::Star => !here.is_empty(),
        Comp::Other(glob) => glob.is_match(here),
        // Handled above.
        Comp::Deep => false,
    };
    if matches { next() } else { Reach::Never }
}

/// The globs whole directories are judged by, taken apart once per scope.
#[derive(Debug, Clone)]
pub(crate) struct DirRules {
    /// What lets a file be read (`files.read`, `files.write`, `exec.allow`, the baseline)
    /// and written (`files.write`, the baseline's writes).
    read: Vec<Pattern>,
    write: Vec<Pattern>,
    deny: Vec<Pattern>,
}

impl DirRules {
    pub(crate) fn new(spec: &PolicySpec, baseline: Option<(&[&str], &[&str])>) -> Self {
        let files = &spec.files;
        let (base_read, base_write) = baseline.unwrap_or_default();
        let read = files
            .read
            .iter()
            .chain(&files.write)
            .chain(&spec.exec_allow)
            .map(String::as_str)
            .chain(base_read.iter().copied())
            .map(parse)
            .collect();
        let write = files
            .write
            .iter()
            .map(String::as_str)
            .chain(base_write.iter().copied())
            .map(parse)
            .collect();
        Self {
            read,
            write,
            deny: files.deny.iter().map(|g| parse(g)).collect(),
        }
    }

    /// What the rules let any process do to every file directly in `dir` (a canonical
    /// absolute path); None when not every file may be read, nor every one written.
    pub(crate) fn grant(&self, dir: &str) -> Option<DirGrant> {
        let comps = dir_comps(dir)?;
        let covers = |list: &[Pattern]| {
            list.iter().any(|p| match p {
                Pattern::Comps(p) => reach(p, 0, &comps, 0, true) == Reach::Any,
                Pattern::Opaque => false,
            })
        };
        let (read, write) = (covers(&self.read), covers(&self.write));
        if !read && !write {
            return None;
        }
        let mut except = BTreeSet::new();
        for p in &self.deny {
            let Pattern::Comps(p) = p else {
                return None;
            };
            match reach(p, 0, &comps, 0, false) {
                Reach::Never => {}
                Reach::Any => return None,
                Reach::Names(names) => except.extend(names),
            }
        }
        if except.iter().any(|n| n.len() >= DIR_NAME_LEN) {
            return None;
        }
        Some(DirGrant {
            read,
            write,
            except,
        })
    }
}
