//! Scope manifests: parsing and validating `AgentScope` YAML into compiled scopes.
//!
//! Validation happens while deserializing (see `values`), so every rejection carries
//! the file, line and column of the offending node.

pub(crate) mod crd;
mod error;
mod every_error;
pub(crate) mod kubernetes;
pub(crate) mod learn;
pub(crate) mod limits;
pub(crate) mod lint;
mod manifest;
mod net;
pub(crate) mod subset;
#[cfg(test)]
mod tests;
mod values;
mod yaml;

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::GlobMatcher;

pub(crate) use error::ScopeError;
pub(crate) use every_error::check_file;
pub(crate) use manifest::{ApprovalSpec, Mode, OnViolation, ScopeSpec, ToolSpec};
use values::NonEmpty;
pub(crate) use values::Ttl;
pub(crate) use yaml::options as yaml_options;

use crate::policy::CompiledPolicy;
use manifest::Manifest;

/// A validated, compiled scope.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub(crate) name: String,
    pub(crate) owner: String,
    pub(crate) identity: Option<String>,
    pub(crate) mode: Mode,
    pub(crate) ttl: Option<Duration>,
    pub(crate) on_violation: OnViolation,
    pub(crate) select_cgroup: Option<GlobMatcher>,
    pub(crate) policy: CompiledPolicy,
    /// Where it came from.
    pub(crate) source: ScopeSource,
    pub(crate) spec: ScopeSpec,
    /// `spec.tools`, each compiled as the scope a call to that tool runs under (same name,
    /// owner, mode and `onViolation`; proven a subset of this one).
    pub(crate) tools: std::collections::BTreeMap<String, std::sync::Arc<Scope>>,
}

impl Scope {
    /// Its `spec.approval`, defaults filled in.
    #[must_use]
    pub(crate) fn approval(&self) -> ApprovalSpec {
        self.spec.approval.unwrap_or_default()
    }

    /// Whether its violations are held for a person's decision.
    #[must_use]
    pub(crate) fn asks(&self) -> bool {
        self.mode == Mode::Enforce && self.on_violation == OnViolation::Ask
    }

    /// This scope with entries added to its declared lists (a task's just-in-time grant),
    /// compiled again.
    ///
    /// # Errors
    /// When the widened lists do not compile.
    pub(crate) fn widened(
        &self,
        add: impl FnOnce(&mut crate::policy::PolicySpec),
    ) -> Result<Self, crate::policy::PolicyError> {
        let mut spec = self.policy.declared().clone();
        add(&mut spec);
        let aliases = real_paths(&spec.exec_allow);
        let policy = CompiledPolicy::compile(spec)?.with_exec_aliases(&aliases)?;
        Ok(Self {
            policy,
            ..self.clone()
        })
    }

    /// Its `select.kubernetes`, if it has one.
    pub(crate) fn kubernetes(&self) -> Option<&kubernetes::KubernetesSelect> {
        self.spec.select.as_ref()?.kubernetes.as_ref()
    }
}

/// Where a scope's YAML came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScopeSource {
    /// A manifest file.
    File(PathBuf),
    /// YAML submitted through the API with a task (`scope_yaml`), shown as `<inline>`.
    Inline,
    /// An `AgentScope` (with its namespace) or `ClusterAgentScope` object, rendered as a
    /// manifest (`crd::render`). Boxed: every scope error carries a source.
    Resource(Box<ResourceRef>),
}

/// A Kubernetes object a scope came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ResourceRef {
    /// None for a `ClusterAgentScope`.
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
}

impl ScopeSource {
    /// The file, if it came from one.
    #[must_use]
    pub(crate) fn path(&self) -> Option<&Path> {
        match self {
            Self::File(path) => Some(path),
            Self::Inline | Self::Resource(_) => None,
        }
    }
}

impl From<&Path> for ScopeSource {
    fn from(path: &Path) -> Self {
        Self::File(path.to_owned())
    }
}

impl fmt::Display for ScopeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => path.display().fmt(f),
            Self::Inline => f.write_str("<inline>"),
            Self::Resource(r) => match &r.namespace {
                Some(namespace) => write!(f, "AgentScope {namespace}/{}", r.name),
                None => write!(f, "ClusterAgentScope {}", r.name),
            },
        }
    }
}

/// Parses every document of `text`. `source` names the text in errors and in
/// [`Scope::source`]. The limits (`limits`: size, nesting, documents) are checked first, then
/// syntax and schema errors anywhere in the text, then the first document that does not
/// compile or repeats a name.
///
/// # Errors
/// A [`ScopeError`] for a limit, invalid YAML or schema, a duplicate name, or no document.
pub(crate) fn parse_str(
    text: &str,
    source: impl Into<ScopeSource>,
) -> Result<Vec<Scope>, ScopeError> {
    let source = source.into();
    check_text(text, &source)?;
    // Empty documents (e.g. after a trailing `---`) are not scopes and are skipped.
    let manifests: Vec<Manifest> = yaml::documents(text, &source)?;
    let mut scopes: Vec<Scope> = Vec::new();
    for manifest in manifests {
        let scope = compile(manifest, &source)?;
        if scopes.iter().any(|s| s.name == scope.name) {
            return Err(ScopeError::DuplicateName {
                origin: source.clone(),
                name: scope.name,
                first: source,
            });
        }
        scopes.push(scope);
    }
    if scopes.is_empty() {
        return Err(ScopeError::NoScope { origin: source });
    }
    Ok(scopes)
}

/// The limits a text is held to before it is parsed: its size (a file's or an inline
/// scope's), its nesting, its number of documents.
fn check_text(text: &str, source: &ScopeSource) -> Result<(), ScopeError> {
    let limit = |at, limit| ScopeError::Limit {
        origin: source.clone(),
        at,
        limit,
    };
    let max = match source {
        ScopeSource::File(_) | ScopeSource::Resource(_) => limits::MAX_FILE_BYTES,
        ScopeSource::Inline => limits::MAX_INLINE_BYTES,
    };
    if text.len() > max {
        return Err(limit(
            None,
            limits::Limit::Size {
                bytes: text.len(),
                max,
            },
        ));
    }
    if let Some(at) = limits::too_deep(text) {
        return Err(limit(Some(at), limits::Limit::Depth));
    }
    let separators = text
        .split('\n')
        .filter(|line| line.starts_with("---"))
        .count();
    if separators > limits::MAX_DOCUMENTS {
        return Err(limit(None, limits::Limit::Documents));
    }
    Ok(())
}

/// Reads and parses one manifest file; a file larger than `limits::MAX_FILE_BYTES` is
/// refused unread.
///
/// # Errors
/// As [`parse_str`], plus [`ScopeError::Read`].
pub(crate) fn parse_file(path: &Path) -> Result<Vec<Scope>, ScopeError> {
    parse_str(&read_file(path)?, path)
}

/// A manifest file's text; a file larger than `limits::MAX_FILE_BYTES` is refused unread.
fn read_file(path: &Path) -> Result<String, ScopeError> {
    let read = |error| ScopeError::Read {
        path: path.to_owned(),
        error,
    };
    let file = fs::File::open(path).map_err(read)?;
    // At most one byte more than the limit: enough to know it is past it, also for a file
    // that grows or a special file whose size says nothing.
    let cap = limits::MAX_FILE_BYTES as u64 + 1;
    let size = file.metadata().map(|m| m.len()).map_err(read)?;
    let mut text = String::new();
    if size < cap {
        file.take(cap).read_to_string(&mut text).map_err(read)?;
    }
    if size >= cap || text.len() > limits::MAX_FILE_BYTES {
        return Err(ScopeError::Limit {
            origin: ScopeSource::File(path.to_owned()),
            at: None,
            limit: limits::Limit::Size {
                bytes: usize::try_from(size.max(text.len() as u64)).unwrap_or(usize::MAX),
                max: limits::MAX_FILE_BYTES,
            },
        });
    }
    Ok(text)
}

/// The outcome of loading a directory: what loaded, and what was skipped and why.
#[derive(Debug, Default)]
pub(crate) struct LoadReport {
    pub(crate) scopes: Vec<Scope>,
    pub(crate) errors: Vec<ScopeError>,
}

/// Loads every `*.yaml` and `*.yml` file of `dir` in name order. A bad file is
/// reported and skipped as a whole; the others still load. Of two files declaring the
/// same scope name, the first in name order wins and the second is reported.
/// Hidden files (editor and tooling leftovers) are ignored.
#[must_use]
pub(crate) fn load_dir(dir: &Path) -> LoadReport {
    let mut report = LoadReport::default();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            report.errors.push(ScopeError::ReadDir {
                path: dir.to_owned(),
                error,
            });
            return report;
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) if is_manifest(&entry.path()) => files.push(entry.path()),
            Ok(_) => {}
            Err(error) => report.errors.push(ScopeError::ReadDir {
                path: dir.to_owned(),
                error,
            }),
        }
    }
    files.sort();

    let mut defined_in: HashMap<String, PathBuf> = HashMap::new();
    for path in files {
        let scopes = match parse_file(&path) {
            Ok(scopes) => scopes,
            Err(error) => {
                report.errors.push(error);
                continue;
            }
        };
        if let Some((name, first)) = scopes
            .iter()
            .find_map(|s| defined_in.get(&s.name).map(|first| (&s.name, first)))
        {
            report.errors.push(ScopeError::DuplicateName {
                origin: ScopeSource::File(path.clone()),
                name: name.clone(),
                first: ScopeSource::File(first.clone()),
            });
            continue;
        }
        for scope in &scopes {
            defined_in.insert(scope.name.clone(), path.clone());
        }
        report.scopes.extend(scopes);
    }
    report
}

/// [`load_dir`], then the scopes of Kubernetes objects (`crd::render`d texts) in the order
/// given. An object that does not parse is reported like a bad file; one whose name a file
/// or an earlier object already has is reported as a duplicate (files win); a namespaced
/// object must select pods of its own namespace.
#[must_use]
pub(crate) fn load_all(dir: &Path, resources: &[(ResourceRef, String)]) -> LoadReport {
    let mut report = load_dir(dir);
    for (resource, text) in resources {
        let source = ScopeSource::Resource(Box::new(resource.clone()));
        let scopes = match parse_str(text, source.clone()) {
            Ok(scopes) => scopes,
            Err(error) => {
                report.errors.push(error);
                continue;
            }
        };
        for scope in scopes {
            if let Some(first) = report.scopes.iter().find(|s| s.name == scope.name) {
                report.errors.push(ScopeError::DuplicateName {
                    origin: source.clone(),
                    name: scope.name.clone(),
                    first: first.source.clone(),
                });
            } else if let Some(namespace) = &resource.namespace
                && scope
                    .kubernetes()
                    .and_then(|k| k.namespace.as_ref())
                    .map(|n| &n.0)
                    != Some(namespace)
            {
                report.errors.push(ScopeError::Namespace {
                    origin: source.clone(),
                    namespace: namespace.clone(),
                });
            } else {
                report.scopes.push(scope);
            }
        }
    }
    report
}

fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .is_none_or(|name| name.as_encoded_bytes().starts_with(b"."));
    let yaml = path
        .extension()
        .is_some_and(|ext| ext == "yaml" || ext == "yml");
    // `is_file` follows symlinks, as in a Kubernetes ConfigMap mount.
    !hidden && yaml && path.is_file()
}

/// Exec is judged on the canonical path of what really ran, so an entry that names a
/// symlink (`/bin/sh` -> `/usr/bin/dash`, `/bin/python3*` with `/bin` -> `usr/bin`) also
/// allows the file it points to *now*, at load time: re-pointing the link later gains an
/// agent nothing. Entries and directories that do not exist are kept as written.
fn real_paths(patterns: &[String]) -> Vec<(String, usize)> {
    const GLOB_CHARS: &[char] = &['*', '?', '[', '{'];
    let mut out: Vec<(String, usize)> = Vec::new();
    for (index, pattern) in patterns.iter().enumerate() {
        let real = if pattern.contains(GLOB_CHARS) {
            let Some((dir, name)) = pattern.rsplit_once('/') else {
                continue;
            };
            if dir.contains(GLOB_CHARS) || dir.is_empty() {
                continue;
            }
            fs::canonicalize(dir)
                .ok()
                .map(|d| format!("{}/{name}", d.display()))
        } else {
            fs::canonicalize(pattern)
                .ok()
                .map(|p| p.display().to_string())
        };
        if let Some(real) = real
            && !patterns.contains(&real)
            && !out.iter().any(|(r, _)| *r == real)
        {
            out.push((real, index));
        }
    }
    out
}

fn compile(manifest: Manifest, source: &ScopeSource) -> Result<Scope, ScopeError> {
    let Manifest { metadata, spec, .. } = manifest;
    let name = metadata.name.into_string();
    let entries = spec.entries();
    if entries > limits::MAX_SCOPE_ENTRIES {
        return Err(ScopeError::Limit {
            origin: source.clone(),
            at: None,
            limit: limits::Limit::ScopeEntries { name, entries },
        });
    }
    let owner = metadata.owner.into_string();
    let identity = metadata.identity.map(NonEmpty::into_string);
    let mut scope = compile_spec(spec, &name, source)?;
    scope.owner = owner;
    scope.identity = identity;
    let mut tools = std::collections::BTreeMap::new();
    for (tool, tool_spec) in &scope.spec.tools {
        let what = format!("spec.tools.{}", tool.as_str());
        tools.insert(
            tool.as_str().to_owned(),
            std::sync::Arc::new(narrowed(&scope, &what, tool_spec)?),
        );
    }
    scope.tools = tools;
    Ok(scope)
}

/// The scope of a tool or a call: `sub`'s lists under `parent`'s name, owner, mode,
/// `onViolation` and `files.deny`, once proven a subset of `parent` (`what` names `sub` in
/// the error: `spec.tools.write_file`, `call run_tests`).
///
/// # Errors
/// [`ScopeError::Tool`] naming the first entry that widens `parent`, or a policy error.
pub(crate) fn narrowed(parent: &Scope, what: &str, sub: &ToolSpec) -> Result<Scope, ScopeError> {
    let spec = parent.spec.for_tool(sub);
    subset::check(&subset::Lists::of(&parent.spec), &subset::Lists::of(&spec)).map_err(
        |widening| ScopeError::Tool {
            origin: parent.source.clone(),
            name: parent.name.clone(),
            what: what.to_owned(),
            widening,
        },
    )?;
    let compiled = compile_spec(spec, &parent.name, &parent.source)?;
    Ok(Scope {
        owner: parent.owner.clone(),
        identity: parent.identity.clone(),
        ..compiled
    })
}

/// A spec compiled into a scope named `name` (no owner yet, no tools).
fn compile_spec(spec: ScopeSpec, name: &str, source: &ScopeSource) -> Result<Scope, ScopeError> {
    let name = name.to_owned();
    let policy_spec = spec.policy_spec();
    let aliases = real_paths(&policy_spec.exec_allow);
    let policy = CompiledPolicy::compile(policy_spec)
        .and_then(|p| p.with_exec_aliases(&aliases))
        .map_err(|error| ScopeError::Policy {
            origin: source.clone(),
            name: name.clone(),
            error,
        })?;
    let select = spec
        .select
        .as_ref()
        .and_then(|select| select.cgroup.as_ref());
    Ok(Scope {
        owner: String::new(),
        identity: None,
        mode: spec.mode,
        ttl: spec.ttl.map(Ttl::duration),
        on_violation: spec.on_violation,
        select_cgroup: select.map(|glob| glob.matcher().clone()),
        policy,
        source: source.clone(),
        name,
        spec,
        tools: std::collections::BTreeMap::new(),
    })
}
