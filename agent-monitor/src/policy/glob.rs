//! Path globs: validation and precompiled sets.
//!
//! Semantics: `*` and `?` never cross a `/`, `**` spans any number of components, and a
//! trailing `/**` also matches the directory itself (`/workspace/**` covers `/workspace`).

use globset::{Candidate, Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::PolicyError;

/// Compiles `pattern` with the project's glob semantics (`*` stays within a component).
///
/// # Errors
/// [`PolicyError::InvalidGlob`] when the syntax is wrong.
pub(crate) fn compile_glob(pattern: &str) -> Result<Glob, PolicyError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|source| PolicyError::InvalidGlob {
            pattern: pattern.to_owned(),
            source,
        })
}

/// Checks a file or exec path glob: non-empty, absolute (or starting with `**/`), made of
/// canonical components, and syntactically valid.
///
/// # Errors
/// The [`PolicyError`] naming the first problem found.
pub(crate) fn check_path_glob(pattern: &str) -> Result<(), PolicyError> {
    if pattern.is_empty() {
        return Err(PolicyError::EmptyGlob);
    }
    if !pattern.starts_with('/') && !pattern.starts_with("**/") {
        return Err(PolicyError::RelativeGlob {
            pattern: pattern.to_owned(),
        });
    }
    // The root glob "/" is the only one allowed an empty (trailing) component.
    if pattern != "/" {
        // The first piece is "" (absolute) or "**" (relative suffix): both fine.
        for component in pattern.split('/').skip(1) {
            if matches!(component, "" | "." | "..") {
                let shown = if component.is_empty() {
                    "an empty component (`//` or a trailing `/`)"
                } else {
                    component
                };
                return Err(PolicyError::NonCanonicalGlob {
                    pattern: pattern.to_owned(),
                    component: shown.to_owned(),
                });
            }
        }
    }
    compile_glob(pattern).map(drop)
}

/// The globs of one declared list, compiled into one set.
#[derive(Debug, Clone)]
pub(crate) struct PatternSet {
    set: GlobSet,
    /// Index in the declared list for each glob in `set` (a `/**` entry adds two globs).
    owners: Vec<usize>,
}

impl PatternSet {
    pub(crate) fn compile<S: AsRef<str>>(
        list: &'static str,
        patterns: &[S],
    ) -> Result<Self, PolicyError> {
        Self::compile_aliased(list, patterns, &[])
    }

    /// Also matches each alias `(pattern, index)` as the declared entry `index` (an exec
    /// entry's symlink target).
    pub(crate) fn compile_aliased<S: AsRef<str>>(
        list: &'static str,
        patterns: &[S],
        aliases: &[(String, usize)],
    ) -> Result<Self, PolicyError> {
        let mut builder = GlobSetBuilder::new();
        let mut owners = Vec::with_capacity(patterns.len());
        let all = patterns
            .iter()
            .map(AsRef::as_ref)
            .enumerate()
            .chain(aliases.iter().map(|(p, i)| (*i, p.as_str())));
        for (index, pattern) in all {
            check_path_glob(pattern)?;
            builder.add(compile_glob(pattern)?);
            owners.push(index);
            // globset's trailing `/**` needs a `/` after the prefix; add the bare directory.
            if let Some(dir) = pattern.strip_suffix("/**")
                && !dir.is_empty()
            {
                builder.add(compile_glob(dir)?);
                owners.push(index);
            }
        }
        let set = builder
            .build()
            .map_err(|source| PolicyError::GlobSet { list, source })?;
        Ok(Self { set, owners })
    }

    pub(crate) fn is_match(&self, path: &Candidate<'_>) -> bool {
        self.set.is_match_candidate(path)
    }

    /// Every declared index that matches, in order.
    pub(crate) fn matching(&self, path: &Candidate<'_>) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .set
            .matches_candidate(path)
            .into_iter()
            .filter_map(|glob| self.owners.get(glob).copied())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The lowest declared index that matches, for naming the rule in a violation.
    pub(crate) fn first_match(&self, path: &Candidate<'_>) -> Option<usize> {
        self.set
            .matches_candidate(path)
            .into_iter()
            .filter_map(|glob| self.owners.get(glob).copied())
            .min()
    }
}
