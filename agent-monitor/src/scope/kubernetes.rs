//! `spec.select.kubernetes`: which containers on this node are agents of a scope.
//!
//! ```yaml
//! select:
//!   kubernetes:
//!     namespace: agents           # optional; any namespace when absent
//!     podLabels: {app: coder}     # optional; every label must match
//!     container: agent            # optional; every container of the pod when absent
//! ```
//!
//! At least one of `namespace` and `podLabels` is required: a selector that names neither
//! would make every container of every pod on the node an agent. Values are checked with
//! Kubernetes' own syntax rules while the YAML is read, so errors carry a line and column.

use std::{collections::BTreeMap, fmt};

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, Visitor},
};

/// `spec.select.kubernetes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct KubernetesSelect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) namespace: Option<DnsLabel>,
    #[serde(
        default,
        deserialize_with = "super::manifest::null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub(crate) pod_labels: BTreeMap<LabelKey, LabelValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) container: Option<DnsLabel>,
}

/// What a selector is matched against: one container of one pod.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) labels: &'a BTreeMap<String, String>,
    pub(crate) container: &'a str,
}

impl KubernetesSelect {
    /// Why this selector is unusable, if it is (checked after the fields parsed).
    pub(crate) fn problem(&self) -> Option<&'static str> {
        (self.namespace.is_none() && self.pod_labels.is_empty()).then_some(
            "select.kubernetes must name a namespace or podLabels (it would select every container on the node)",
        )
    }

    pub(crate) fn matches(&self, c: Candidate<'_>) -> bool {
        self.namespace.as_ref().is_none_or(|n| n.0 == c.namespace)
            && self.container.as_ref().is_none_or(|n| n.0 == c.container)
            && self
                .pod_labels
                .iter()
                .all(|(k, v)| c.labels.get(&k.0).is_some_and(|have| *have == v.0))
    }
}

/// An RFC 1123 label: namespaces and container names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub(crate) struct DnsLabel(pub(crate) String);

/// A label key: `[prefix/]name`, prefix a DNS subdomain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub(crate) struct LabelKey(pub(crate) String);

/// A label value: empty or a name of up to 63 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub(crate) struct LabelValue(pub(crate) String);

fn dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn label_name(s: &str) -> bool {
    let inner = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    (1..=63).contains(&s.len())
        && s.bytes().all(inner)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => {
            prefix.len() <= 253 && prefix.split('.').all(dns_label) && label_name(name)
        }
        None => label_name(s),
    }
}

/// One validated string scalar; the check runs in the visitor so that the YAML reader
/// reports the scalar's position.
macro_rules! checked_string {
    ($ty:ident, $expecting:literal, $check:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        let check: fn(&str) -> bool = $check;
                        if check(s) {
                            Ok($ty(s.to_owned()))
                        } else {
                            Err(E::custom(format!("invalid {}: {s:?}", $expecting)))
                        }
                    }
                }
                d.deserialize_str(V)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_string!(
    DnsLabel,
    "name (1-63 of a-z, 0-9 and '-', starting and ending alphanumeric)",
    dns_label
);
checked_string!(
    LabelKey,
    "label key ([dns-prefix/]name, name 1-63 of alphanumerics, '-', '_', '.')",
    label_key
);
checked_string!(
    LabelValue,
    "label value (empty, or 1-63 of alphanumerics, '-', '_', '.')",
    |s| s.is_empty() || label_name(s)
);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<KubernetesSelect, serde_saphyr::Error> {
        serde_saphyr::from_str_with_options(yaml, crate::scope::yaml_options())
    }

    #[test]
    fn matches_namespace_labels_and_container() {
        let s = parse("namespace: agents\npodLabels: {app: coder, tier: a}\ncontainer: agent\n")
            .expect("parses");
        assert_eq!(s.problem(), None);
        let labels: BTreeMap<String, String> = [("app", "coder"), ("tier", "a"), ("x", "y")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let c = |namespace, container| Candidate {
            namespace,
            labels: &labels,
            container,
        };
        assert!(s.matches(c("agents", "agent")));
        assert!(!s.matches(c("default", "agent")));
        assert!(!s.matches(c("agents", "sidecar")));
        let fewer: BTreeMap<String, String> = [("app".to_owned(), "coder".to_owned())].into();
        assert!(!s.matches(Candidate {
            namespace: "agents",
            labels: &fewer,
            container: "agent"
        }));
    }

    #[test]
    fn absent_fields_match_anything() {
        let s = parse("namespace: agents\n").expect("parses");
        let none = BTreeMap::new();
        assert!(s.matches(Candidate {
            namespace: "agents",
            labels: &none,
            container: "whatever"
        }));
    }

    #[test]
    fn an_empty_selector_is_a_problem() {
        let s = parse("container: agent\n").expect("parses");
        assert!(s.problem().is_some());
    }

    #[test]
    fn values_are_checked_with_positions() {
        let e = parse("namespace: Agents\n").expect_err("uppercase");
        assert!(e.to_string().contains("invalid name"), "{e}");
        assert_eq!(e.location().map(|l| (l.line(), l.column())), Some((1, 12)));
        let e = parse("podLabels:\n  \"-bad\": x\n").expect_err("key");
        assert!(e.to_string().contains("invalid label key"), "{e}");
        let e = parse("podLabels:\n  app: \"a b\"\n").expect_err("value");
        assert!(e.to_string().contains("invalid label value"), "{e}");
        let e = parse("namespace: a\npodLabel: {}\n").expect_err("unknown field");
        assert!(e.to_string().contains("unknown field `podLabel`"), "{e}");
        assert!(parse("podLabels: {app.kubernetes.io/name: coder, empty: \"\"}\n").is_ok());
    }
}
