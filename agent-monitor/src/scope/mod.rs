//! Scope manifests.
