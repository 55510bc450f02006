//! Errors raised while compiling a policy.

/// Why a policy (or one of its path globs) was rejected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PolicyError {
    #[error("empty path glob")]
    EmptyGlob,
    #[error("path glob {pattern:?} must be absolute (start with `/`) or start with `**/`")]
    RelativeGlob { pattern: String },
    #[error(
        "path glob {pattern:?} contains {component:?}: paths are judged after canonicalisation, \
         so it would never match"
    )]
    NonCanonicalGlob { pattern: String, component: String },
    #[error("invalid path glob {pattern:?}")]
    InvalidGlob {
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("cannot build the matcher for {list}")]
    GlobSet {
        list: &'static str,
        #[source]
        source: globset::Error,
    },
    #[error("{rule}: port 0 is not a port (ports are 1..=65535)")]
    ZeroPort { rule: String },
    #[error("{rule}: an empty port list matches nothing (omit `ports` to allow any port)")]
    EmptyPorts { rule: String },
}
