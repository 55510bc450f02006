//! The manifest schema (docs/SCOPES.md). Unknown fields are errors everywhere.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::{fmt, time::Duration};

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::kubernetes::KubernetesSelect;
use super::limits::{Limit, MAX_LIST_ENTRIES};
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
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Record violations, stop nothing.
    #[default]
    Audit,
    /// Refuse out-of-scope network activity and apply `onViolation`.
    Enforce,
}

/// What an enforcing scope does to the agent on a violation.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
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
    /// What the kernel holds (an open, an exec, a Unix connect, a listen) waits, stopped,
    /// for a person's decision (`approve`/`deny`); a refused network connect or send
    /// becomes a request whose approval lets the retry through. What cannot be held
    /// (files.deny, escape syscalls, an unlink or rename that already happened) is handled
    /// as with `kill-process`.
    Ask,
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
            Self::Ask => "ask",
        })
    }
}

/// `spec`, validated; serializes back to the manifest's shape (camelCase keys).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// How requests of `onViolation: ask` are answered when nobody decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) approval: Option<ApprovalSpec>,
    /// MCP tools (`agent-monitor mcp`): a tool's own scope, a subset of this one, binds the
    /// server while a call to it runs; a tool not listed is refused (docs/SCOPES.md).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub(crate) tools: BTreeMap<ToolName, ToolSpec>,
}

/// A key of `spec.tools`: an MCP tool's name.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct ToolName(String);

impl ToolName {
    #[must_use]
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ToolName {
    type Error = &'static str;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        // MCP tool names are short identifiers; this keeps records and errors readable.
        let valid = (1..=128).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
        if valid {
            Ok(Self(name))
        } else {
            Err("a tool name is 1 to 128 of A-Z, a-z, 0-9, '_', '-', '.' and '/'")
        }
    }
}

impl From<ToolName> for String {
    fn from(name: ToolName) -> Self {
        name.0
    }
}

/// One entry of `spec.tools`: what the server may do while a call to that tool runs. Mode
/// and `onViolation` are the scope's; `files.deny` of the scope stays in force.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) exec: ExecSpec,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) files: FilesSpec,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) network: NetworkSpec,
}

/// `spec.approval`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ApprovalSpec {
    /// A request nobody answered within this is denied (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout: Option<Ttl>,
    /// Requests one task may have pending at once (default 8); past that, `ask` is
    /// `kill-process`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_pending: Option<u16>,
}

impl ApprovalSpec {
    pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_mins(1);
    pub(crate) const DEFAULT_MAX_PENDING: usize = 8;

    #[must_use]
    pub(crate) fn timeout(self) -> Duration {
        self.timeout.map_or(Self::DEFAULT_TIMEOUT, Ttl::duration)
    }

    #[must_use]
    pub(crate) fn max_pending(self) -> usize {
        self.max_pending
            .map_or(Self::DEFAULT_MAX_PENDING, usize::from)
    }
}

/// `spec.select`: agents the daemon discovers by itself, by cgroup path or as containers of
/// this node's Kubernetes pods (exactly one of the two).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, try_from = "SelectFields")]
pub(crate) struct Select {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cgroup: Option<CgroupGlob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kubernetes: Option<KubernetesSelect>,
}

#[derive(Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecSpec {
    #[serde(default, deserialize_with = "bounded_list")]
    pub(crate) allow: Vec<PathGlob>,
}

/// `spec.files`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilesSpec {
    #[serde(default = "baseline_default")]
    pub(crate) baseline: bool,
    #[serde(default, deserialize_with = "bounded_list")]
    pub(crate) read: Vec<PathGlob>,
    #[serde(default, deserialize_with = "bounded_list")]
    pub(crate) write: Vec<PathGlob>,
    #[serde(default, deserialize_with = "bounded_list")]
    pub(crate) deny: Vec<PathGlob>,
    /// Directories whose entries may be listed without their contents being readable.
    #[serde(default, deserialize_with = "bounded_list")]
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

/// A list of at most `limits::MAX_LIST_ENTRIES` entries (a list written without a value is
/// empty): reading stops at the first entry past the limit, so a list of 100,000 entries
/// costs no more than one of 4,097.
fn bounded_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Entries<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Entries<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list")
        }

        fn visit_none<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }

        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<T>, D::Error> {
            deserializer.deserialize_seq(self)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut entries = Vec::new();
            while let Some(entry) = seq.next_element()? {
                if entries.len() == MAX_LIST_ENTRIES {
                    return Err(de::Error::custom(Limit::ListEntries));
                }
                entries.push(entry);
            }
            Ok(entries)
        }
    }

    deserializer.deserialize_option(Entries(PhantomData))
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkSpec {
    #[serde(default, deserialize_with = "bounded_list")]
    pub(crate) connect: Vec<ConnectRuleSpec>,
    /// Ports the agent may listen on; empty allows none.
    #[serde(default, deserialize_with = "bounded_list")]
    pub(crate) bind: Vec<Port>,
}

impl ScopeSpec {
    /// How many entries its lists hold together.
    #[must_use]
    pub(crate) fn entries(&self) -> usize {
        let tools: usize = self
            .tools
            .values()
            .map(|t| ToolSpec::entries_of(&t.exec, &t.files, &t.network))
            .sum();
        tools + ToolSpec::entries_of(&self.exec, &self.files, &self.network)
    }

    /// The scope a call to a tool runs under: the tool's lists, the scope's mode,
    /// `onViolation` and `files.deny` (which a tool cannot lift).
    #[must_use]
    pub(crate) fn for_tool(&self, tool: &ToolSpec) -> Self {
        let mut files = tool.files.clone();
        for deny in &self.files.deny {
            if !files.deny.iter().any(|d| d.as_str() == deny.as_str()) {
                files.deny.push(deny.clone());
            }
        }
        Self {
            mode: self.mode,
            ttl: None,
            on_violation: self.on_violation,
            select: None,
            exec: tool.exec.clone(),
            files,
            network: tool.network.clone(),
            tools: BTreeMap::new(),
            approval: self.approval,
        }
    }
}

impl ToolSpec {
    /// The lists of a scope (a call's `--scope`), as a sub-scope of another.
    #[must_use]
    pub(crate) fn of(spec: &ScopeSpec) -> Self {
        Self {
            exec: spec.exec.clone(),
            files: spec.files.clone(),
            network: spec.network.clone(),
        }
    }

    fn entries_of(exec: &ExecSpec, files: &FilesSpec, network: &NetworkSpec) -> usize {
        exec.allow.len()
            + files.read.len()
            + files.write.len()
            + files.deny.len()
            + files.list.len()
            + network.connect.len()
            + network.bind.len()
    }
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
