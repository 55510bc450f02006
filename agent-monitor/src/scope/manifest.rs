//! The manifest schema (docs/SCOPES.md). Unknown fields are errors everywhere.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use super::kubernetes::KubernetesSelect;
use super::net::{ConnectRuleSpec, Port};
use super::values::{CgroupGlob, NonEmpty, PathGlob, ScopeName, Ttl};
use crate::policy::{FileRules, PolicySpec};

/// One YAML document.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Manifest {
    #[serde(rename = "apiVersion")]
    _api_version: ApiVersion,
    #[serde(rename = "kind")]
    _kind: Kind,
    pub(super) metadata: Metadata,
    pub(super) spec: ScopeSpec,
}

#[derive(Debug, Deserialize)]
enum ApiVersion {
    #[serde(rename = "agent-monitor.dev/v1")]
    V1,
}

#[derive(Debug, Deserialize)]
enum Kind {
    AgentScope,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Metadata {
    pub(super) name: ScopeName,
    /// The accountable human sponsor.
    pub(super) owner: NonEmpty,
    /// Workload identity (e.g. a SPIFFE ID).
    #[serde(default)]
    pub(super) identity: Option<NonEmpty>,
}

/// What happens to out-of-scope activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Record violations, stop nothing.
    #[default]
    Audit,
    /// Refuse out-of-scope network activity and apply `onViolation`.
    Enforce,
}

/// What an enforcing scope does to the agent on a violation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum OnViolation {
    Alert,
    /// What the kernel refused before it happened (Landlock, cgroup socket hooks, seccomp)
    /// is recorded and nothing is killed; what only a kill can stop (a denied file inside
    /// an allowed tree, an adopted agent) is stopped as with `kill-process`.
    Refuse,
    #[default]
    KillProcess,
    KillAgent,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Audit => "audit",
            Self::Enforce => "enforce",
        })
    }
}

impl fmt::Display for OnViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Alert => "alert",
            Self::Refuse => "refuse",
            Self::KillProcess => "kill-process",
            Self::KillAgent => "kill-agent",
        })
    }
}

/// `spec`, validated; serializes back to the manifest's shape (camelCase keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ScopeSpec {
    #[serde(default)]
    pub(crate) mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ttl: Option<Ttl>,
    #[serde(default)]
    pub(crate) on_violation: OnViolation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) select: Option<Select>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) exec: ExecSpec,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) files: FilesSpec,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) network: NetworkSpec,
}

/// `spec.select`: agents the daemon discovers by itself, by cgroup path or as containers of
/// this node's Kubernetes pods (exactly one of the two).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "SelectFields")]
pub(crate) struct Select {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cgroup: Option<CgroupGlob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kubernetes: Option<KubernetesSelect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectFields {
    #[serde(default)]
    cgroup: Option<CgroupGlob>,
    #[serde(default)]
    kubernetes: Option<KubernetesSelect>,
}

impl TryFrom<SelectFields> for Select {
    type Error = &'static str;

    fn try_from(f: SelectFields) -> Result<Self, Self::Error> {
        match (&f.cgroup, &f.kubernetes) {
            (Some(_), Some(_)) | (None, None) => {
                Err("select needs exactly one of `cgroup` and `kubernetes`")
            }
            (None, Some(k)) if k.problem().is_some() => Err(k.problem().unwrap_or_default()),
            _ => Ok(Self {
                cgroup: f.cgroup,
                kubernetes: f.kubernetes,
            }),
        }
    }
}

/// `spec.exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) allow: Vec<PathGlob>,
}

/// `spec.files`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilesSpec {
    #[serde(default = "baseline_default")]
    pub(crate) baseline: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) read: Vec<PathGlob>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) write: Vec<PathGlob>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) deny: Vec<PathGlob>,
    /// Directories whose entries may be listed without their contents being readable.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) list: Vec<PathGlob>,
}

/// A section or list written without a value (`exec:`, `read:`) is the same as an absent
/// one.
pub(super) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn baseline_default() -> bool {
    true
}

impl Default for FilesSpec {
    fn default() -> Self {
        Self {
            baseline: baseline_default(),
            read: Vec::new(),
            write: Vec::new(),
            deny: Vec::new(),
            list: Vec::new(),
        }
    }
}

/// `spec.network`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) connect: Vec<ConnectRuleSpec>,
    /// Ports the agent may listen on; empty allows none.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) bind: Vec<Port>,
}

impl ScopeSpec {
    /// The engine's view of this spec.
    #[must_use]
    pub(crate) fn policy_spec(&self) -> PolicySpec {
        let globs = |list: &[PathGlob]| list.iter().map(|g| g.as_str().to_owned()).collect();
        PolicySpec {
            exec_allow: globs(&self.exec.allow),
            files: FileRules {
                baseline: self.files.baseline,
                read: globs(&self.files.read),
                write: globs(&self.files.write),
                deny: globs(&self.files.deny),
                list: globs(&self.files.list),
            },
            connect: self
                .network
                .connect
                .iter()
                .map(|rule| rule.0.clone())
                .collect(),
            bind: self.network.bind.iter().map(|port| port.0).collect(),
        }
    }
}
