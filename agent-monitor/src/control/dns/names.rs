//! Which `host:` rules allow a DNS name (pure).
//!
//! A rule is an exact name (`api.example.com`) or `*.` + a name (`*.example.com`). The
//! wildcard matches every name below it, at any depth (`a.example.com`,
//! `x.y.example.com`), but not the name itself: `example.com` needs its own rule. Names
//! compare case-insensitively, with or without the root's trailing dot.

use crate::policy::{ConnectRule, ConnectTarget};

/// The host rules of a scope, in declaration order: index `i` is the kernel's
/// `HostRuleKey::index` and `NetEvent::host_rule - 1`.
pub(crate) fn host_patterns(rules: &[ConnectRule]) -> Vec<String> {
    rules
        .iter()
        .filter_map(|r| match &r.target {
            ConnectTarget::Host(h) => Some(h.clone()),
            ConnectTarget::Cidr(_) => None,
        })
        .collect()
}

pub(crate) use crate::policy::{canonical_host as canonical, host_matches as matches};

/// The indexes of every pattern that allows `name` (canonical).
pub(crate) fn matching(patterns: &[String], name: &str) -> Vec<u32> {
    patterns
        .iter()
        .enumerate()
        .filter(|(_, p)| matches(p, name))
        .filter_map(|(i, _)| u32::try_from(i).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_match_only_themselves() {
        assert!(matches("a.example.test", "a.example.test"));
        assert!(!matches("a.example.test", "b.example.test"));
        assert!(!matches("a.example.test", "x.a.example.test"));
        assert!(!matches("example.test", "badexample.test"));
    }

    #[test]
    fn wildcards_match_subdomains_not_the_apex() {
        assert!(matches("*.example.test", "a.example.test"));
        assert!(matches("*.example.test", "x.y.example.test"));
        assert!(!matches("*.example.test", "example.test"), "apex");
        assert!(!matches("*.example.test", "notexample.test"));
        assert!(!matches("*.example.test", ".example.test"), "empty label");
        assert!(!matches("*.example.test", "a.example.test.evil"));
    }

    #[test]
    fn names_are_canonicalised_before_matching() {
        assert_eq!(canonical("A.Example.TEST."), "a.example.test");
        assert_eq!(canonical("."), "");
        let patterns = vec!["a.example.test".to_owned(), "*.example.test".to_owned()];
        assert_eq!(
            matching(&patterns, &canonical("A.EXAMPLE.test.")),
            vec![0, 1]
        );
        assert_eq!(matching(&patterns, "b.example.test"), vec![1]);
        assert!(matching(&patterns, "example.test").is_empty());
    }
}
