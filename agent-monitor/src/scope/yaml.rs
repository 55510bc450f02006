//! Reading YAML with serde-saphyr: the settings manifests (and the daemon's config file) are
//! read with, and every document of a stream with the path of the node an error is about.

use std::cell::RefCell;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};

use super::{ScopeError, ScopeSource};

/// How manifests and the daemon's config file are read.
#[must_use]
pub(crate) fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // YAML 1.2 booleans only (`true`, `false`): `no` or `off` is not a boolean.
        strict_booleans: true,
        // A diagnostic is one line with the position in front: no source excerpt.
        with_snippet: false,
        // The reader's own nesting limits, the same as the scan before it
        // (`limits::too_deep`).
        budget: serde_saphyr::budget! {
            max_depth: super::limits::MAX_DEPTH,
            flow_nesting_limit: super::limits::MAX_DEPTH,
        },
    }
}

/// Every non-empty document of `text`, in order; errors name `origin`.
///
/// The reader streams, so a document cut short by a syntax error would first meet the
/// schema (a misleading "missing field"); a schema-free pass over the whole stream reports
/// the syntax error first.
pub(super) fn documents<'de, T: Deserialize<'de>>(
    text: &'de str,
    origin: &ScopeSource,
) -> Result<Vec<T>, ScopeError> {
    serde_saphyr::from_multiple_with_options::<IgnoredAny>(text, options())
        .map_err(|error| ScopeError::yaml(origin, &error, None))?;
    FAILED_AT.set(None);
    serde_saphyr::from_multiple_with_options::<Tracked<T>>(text, options())
        .map(|documents| documents.into_iter().map(|Tracked(t)| t).collect())
        .map_err(|error| ScopeError::yaml(origin, &error, FAILED_AT.take()))
}

/// Whether `text` is well-formed YAML (any shape): the schema-free pass of [`documents`].
pub(super) fn well_formed(text: &str) -> bool {
    serde_saphyr::from_multiple_with_options::<IgnoredAny>(text, options()).is_ok()
}

thread_local! {
    /// The path of the node where the last document that failed on this thread stopped.
    /// serde-saphyr takes the documents of a stream through `Deserialize` alone (no seed), so
    /// the path tracked inside one document reaches [`documents`] here, beside the error,
    /// which keeps its position.
    static FAILED_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// One document, deserialized with its path tracked.
struct Tracked<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Tracked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut track = serde_path_to_error::Track::new();
        match T::deserialize(serde_path_to_error::Deserializer::new(
            deserializer,
            &mut track,
        )) {
            Ok(value) => Ok(Self(value)),
            Err(error) => {
                let path = track.path();
                FAILED_AT.set(path.iter().next().is_some().then(|| path.to_string()));
                Err(error)
            }
        }
    }
}
