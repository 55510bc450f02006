//! Manifest errors: every one names the file, and the line and column when known.

use std::error::Error;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use serde_saphyr::{DefaultMessageFormatter, MessageFormatter};

use super::ScopeSource;
use super::limits::Limit;
use crate::policy::PolicyError;

/// Why a manifest (or a scopes directory) could not be loaded.
///
/// The `Display` form is the complete one-line diagnostic, `file:LINE:COL: reason`
/// (or `file: reason` without a position), which `check` and the daemon print as is.
/// Underlying errors are therefore kept in fields rather than returned by `source()`:
/// chaining them as well would print their text twice.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScopeError {
    #[error("{}: cannot read the file: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("{}: cannot list the directory: {error}", path.display())]
    ReadDir { path: PathBuf, error: io::Error },
    /// Invalid YAML, or a value the manifest schema rejects.
    #[error("{origin}{}: {reason}", position(*at))]
    Yaml {
        origin: ScopeSource,
        /// 1-based line and column, when the reader knows them.
        at: Option<(usize, usize)>,
        /// What is wrong, after the path of the node it is about (`spec.ttl: ...`).
        reason: String,
    },
    /// The policy engine refused a spec that passed manifest validation.
    #[error("{origin}: scope {name:?}: {}", chain(error))]
    Policy {
        origin: ScopeSource,
        name: String,
        error: PolicyError,
    },
    /// Two scopes share a name; `first` is where the name was seen first.
    #[error("{origin}: duplicate scope name {name:?}, already defined in {first}")]
    DuplicateName {
        origin: ScopeSource,
        name: String,
        first: ScopeSource,
    },
    /// A namespaced `AgentScope` that would select more than pods of its namespace.
    #[error(
        "{origin}: a namespaced AgentScope selects only pods of its namespace: use spec.select.kubernetes without a namespace or with namespace {namespace:?} (a ClusterAgentScope may select anything)"
    )]
    Namespace {
        origin: ScopeSource,
        namespace: String,
    },
    /// A `spec.tools` entry or a call's scope that allows more than the scope itself.
    #[error("{origin}: scope {name:?}: {what}: {widening}")]
    Tool {
        origin: ScopeSource,
        name: String,
        /// `spec.tools.NAME`, `call NAME`.
        what: String,
        widening: super::subset::Widening,
    },
    #[error("{origin}: no AgentScope document in the file")]
    NoScope { origin: ScopeSource },
    /// Past one of the limits of `scope::limits`, checked before the text is parsed or the
    /// scope compiled.
    #[error("{origin}{}: {limit}", position(*at))]
    Limit {
        origin: ScopeSource,
        /// 1-based line and column, when the limit is about a place in the text.
        at: Option<(usize, usize)>,
        limit: Limit,
    },
}

impl ScopeError {
    /// The file the error is about (the directory for [`ScopeError::ReadDir`]); `None` for
    /// YAML submitted through the API.
    #[must_use]
    pub(crate) fn file(&self) -> Option<&Path> {
        match self {
            Self::Read { path, .. } | Self::ReadDir { path, .. } => Some(path),
            Self::Yaml { origin, .. }
            | Self::Policy { origin, .. }
            | Self::Tool { origin, .. }
            | Self::DuplicateName { origin, .. }
            | Self::NoScope { origin }
            | Self::Namespace { origin, .. }
            | Self::Limit { origin, .. } => origin.path(),
        }
    }

    /// Where the text the error is about came from (`None` for a directory).
    #[must_use]
    pub(crate) fn origin(&self) -> Option<ScopeSource> {
        match self {
            Self::Read { path, .. } => Some(ScopeSource::File(path.clone())),
            Self::ReadDir { .. } => None,
            Self::Yaml { origin, .. }
            | Self::Policy { origin, .. }
            | Self::Tool { origin, .. }
            | Self::DuplicateName { origin, .. }
            | Self::NoScope { origin }
            | Self::Namespace { origin, .. }
            | Self::Limit { origin, .. } => Some(origin.clone()),
        }
    }

    /// 1-based line and column, when the error has a position.
    #[must_use]
    pub(crate) fn at(&self) -> Option<(usize, usize)> {
        match self {
            Self::Yaml { at, .. } | Self::Limit { at, .. } => *at,
            _ => None,
        }
    }

    /// 1-based line, when the error has a position.
    #[cfg(test)]
    pub(crate) fn line(&self) -> Option<usize> {
        match self {
            Self::Yaml { at, .. } | Self::Limit { at, .. } => at.map(|(line, _)| line),
            _ => None,
        }
    }

    /// 1-based column, when the error has a position.
    #[cfg(test)]
    pub(crate) fn column(&self) -> Option<usize> {
        match self {
            Self::Yaml { at, .. } | Self::Limit { at, .. } => at.map(|(_, column)| column),
            _ => None,
        }
    }

    /// The reader's `error`, about the node at `path` (`spec.files.write[1]`; `None` for
    /// the document itself and for syntax errors).
    pub(super) fn yaml(
        origin: &ScopeSource,
        error: &serde_saphyr::Error,
        path: Option<String>,
    ) -> Self {
        let at = error.location().and_then(|location| {
            Some((
                usize::try_from(location.line()).ok()?,
                usize::try_from(location.column()).ok()?,
            ))
        });
        // The message alone: the position leads the diagnostic instead.
        let message = printable(&DefaultMessageFormatter.format_message(error));
        let reason = match path {
            Some(path) => format!("{path}: {message}"),
            None => message,
        };
        Self::Yaml {
            origin: origin.clone(),
            at,
            reason,
        }
    }
}

fn position(at: Option<(usize, usize)>) -> String {
    at.map(|(line, column)| format!(":{line}:{column}"))
        .unwrap_or_default()
}

/// `text` with control characters escaped, so that a diagnostic stays one line (the
/// reader's message can quote the manifest).
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// An error and its causes on one line, for messages that cannot carry a `source()`.
pub(crate) fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let _ = write!(text, ": {next}");
        cause = next.source();
    }
    text
}
