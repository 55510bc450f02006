//! Manifest errors: every one names the file, and the line and column when known.

use std::error::Error;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

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
    #[error("{}: {reason}", position(path, *line, *column))]
    Yaml {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        /// `serde_yaml`'s message without its own "at line L column C" suffix.
        reason: String,
        error: serde_yaml::Error,
    },
    /// The policy engine refused a spec that passed manifest validation.
    #[error("{}: scope {name:?}: {}", path.display(), chain(error))]
    Policy {
        path: PathBuf,
        name: String,
        error: PolicyError,
    },
    /// Two scopes share a name; `first` is where the name was seen first.
    #[error("{}: duplicate scope name {name:?}, already defined in {}", path.display(), first.display())]
    DuplicateName {
        path: PathBuf,
        name: String,
        first: PathBuf,
    },
    #[error("{}: no AgentScope document in the file", path.display())]
    NoScope { path: PathBuf },
}

impl ScopeError {
    /// The file the error is about (the directory for [`ScopeError::ReadDir`]).
    #[must_use]
    pub(crate) fn file(&self) -> &Path {
        match self {
            Self::Read { path, .. }
            | Self::ReadDir { path, .. }
            | Self::Yaml { path, .. }
            | Self::Policy { path, .. }
            | Self::DuplicateName { path, .. }
            | Self::NoScope { path } => path,
        }
    }

    /// 1-based line, when the error has a position.
    #[cfg(test)]
    pub(crate) fn line(&self) -> Option<usize> {
        match self {
            Self::Yaml { line, .. } => *line,
            _ => None,
        }
    }

    /// 1-based column, when the error has a position.
    #[cfg(test)]
    pub(crate) fn column(&self) -> Option<usize> {
        match self {
            Self::Yaml { column, .. } => *column,
            _ => None,
        }
    }

    pub(crate) fn yaml(path: &Path, error: serde_yaml::Error) -> Self {
        let location = error.location();
        let mut reason = error.to_string();
        if let Some(location) = &location {
            // serde_yaml appends its own (1-based) position; ours leads the line instead.
            let suffix = format!(" at line {} column {}", location.line(), location.column());
            if let Some(at) = reason.find(&suffix) {
                reason.replace_range(at..at + suffix.len(), "");
            }
        }
        Self::Yaml {
            path: path.to_owned(),
            line: location.as_ref().map(serde_yaml::Location::line),
            column: location.as_ref().map(serde_yaml::Location::column),
            reason,
            error,
        }
    }
}

fn position(path: &Path, line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("{}:{line}:{column}", path.display()),
        _ => path.display().to_string(),
    }
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
