//! The loaded scopes. A reload replaces what parsed and keeps the last good version of a
//! scope whose file no longer does.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Serialize;

use crate::scope::{self, Scope};

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct ScopeProblem {
    pub(crate) file: PathBuf,
    pub(crate) error: String,
}

#[derive(Debug, Default)]
pub(crate) struct Catalog {
    scopes: BTreeMap<String, Arc<Scope>>,
    problems: Vec<ScopeProblem>,
}

impl Catalog {
    pub(crate) fn load(dir: &Path) -> Self {
        let mut c = Self::default();
        c.reload(dir);
        c
    }

    /// Re-reads the directory. Returns the names whose definition changed or appeared.
    pub(crate) fn reload(&mut self, dir: &Path) -> Vec<String> {
        let report = scope::load_dir(dir);
        let failed: Vec<PathBuf> = report
            .errors
            .iter()
            .filter_map(|e| e.file().map(Path::to_path_buf))
            .collect();
        self.problems = report
            .errors
            .iter()
            .map(|e| ScopeProblem {
                file: e.file().unwrap_or(dir).to_path_buf(),
                error: e.to_string(),
            })
            .collect();
        for p in &self.problems {
            tracing::error!(file = %p.file.display(), error = %p.error, "scope file rejected");
        }
        let mut next: BTreeMap<String, Arc<Scope>> = BTreeMap::new();
        // Keep scopes whose file failed this time: the last good version stays in force.
        for (name, s) in &self.scopes {
            if failed.iter().any(|f| s.source.path() == Some(f.as_path())) {
                tracing::warn!(scope = %name, "keeping the last good version of this scope");
                next.insert(name.clone(), Arc::clone(s));
            }
        }
        let mut changed = Vec::new();
        for s in report.scopes {
            if next.contains_key(&s.name) {
                continue;
            }
            changed.push(s.name.clone());
            next.insert(s.name.clone(), Arc::new(s));
        }
        self.scopes = next;
        changed
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Scope>> {
        self.scopes.get(name).cloned()
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Scope>> {
        self.scopes.values()
    }

    pub(crate) fn problems(&self) -> &[ScopeProblem] {
        &self.problems
    }
}
