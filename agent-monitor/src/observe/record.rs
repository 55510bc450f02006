//! Event and violation records: one JSON object per line in the audit log,
//! `events` and stdout. Field names follow OCSF's File System / Network / Process Activity
//! where one fits. Their times: `clock`; their JSON lines: `json`.

use std::{borrow::Cow, sync::Arc, time::SystemTime};

use serde::Serialize;

use crate::policy::{FileAccess, Violation};

mod clock;
mod json;
mod short;

pub(crate) use clock::{Clock, Rfc3339Cache, parse_rfc3339_nanos, rfc3339};
pub(crate) use json::{Shared, decimal, write_record};
pub(crate) use short::ShortStr;

/// Serializes an enum as its `name()`: the one spelling records, logs and metrics use.
macro_rules! serialize_by_name {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }
    )*};
}

serialize_by_name!(Kind, Action);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Exec,
    File,
    Connect,
    Send,
    Bind,
    Escape,
    /// Task lifecycle (revoked, degraded): not an activity of a process.
    Task,
    /// A person's decision on a held operation (`onViolation: ask`), or its timeout.
    Approval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    Allowed,
    Violation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    None,
    Blocked,
    /// Refused by Landlock before it happened (the call failed with EACCES, EPERM or EXDEV).
    Refused,
    KilledProcess,
    KilledAgent,
    /// Held (stopped, or for a network call refused) until a person decides
    /// (`onViolation: ask`).
    Held,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::File => "file",
            Self::Connect => "connect",
            Self::Send => "send",
            Self::Bind => "bind",
            Self::Escape => "escape",
            Self::Task => "task",
            Self::Approval => "approval",
        }
    }
}

impl Action {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Blocked => "blocked",
            Self::Refused => "refused",
            Self::KilledProcess => "killed-process",
            Self::KilledAgent => "killed-agent",
            Self::Held => "held",
        }
    }
}

/// The mechanism that decided a record's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Layer {
    /// The agent's Landlock domain (agents started by `exec`).
    Landlock,
    /// The agent's seccomp filter (agents started by `exec`).
    Seccomp,
    /// A cgroup socket hook (connect, send, bind).
    CgroupHook,
    /// A kernel program's identity check or hold (SIGKILL or SIGSTOP at the syscall).
    Ebpf,
    /// The daemon, after judging the event's path; or its resolver refusing a name.
    Daemon,
}

/// Who a record's agent is: one shared allocation, made once per task and scope version
/// (by the pipeline; once per record elsewhere). A record holds one reference to it rather
/// than one per name: each is a locked increment when the record is made and a decrement
/// when it is written, which were most of an event's cost once nothing was copied.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub(crate) struct AgentRef(Arc<AgentNames>);

#[derive(Debug, Clone, Serialize)]
pub(crate) struct AgentNames {
    pub(crate) scope: Arc<str>,
    pub(crate) task: Arc<str>,
    pub(crate) owner: Arc<str>,
    pub(crate) identity: Option<Arc<str>>,
}

impl AgentRef {
    pub(crate) fn new(names: AgentNames) -> Self {
        Self(Arc::new(names))
    }

    /// The agent of a record made outside the pipeline (a lifecycle notice, a DNS refusal,
    /// an approval): its strings are allocated here.
    pub(crate) fn of(scope: &crate::scope::Scope, task: &str) -> Self {
        Self::new(AgentNames::of(scope, Arc::from(task)))
    }

    /// The same allocation (so the same names).
    pub(crate) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The names, to change (tests build records field by field).
    #[cfg(test)]
    pub(crate) fn names_mut(&mut self) -> &mut AgentNames {
        Arc::make_mut(&mut self.0)
    }
}

impl AgentNames {
    pub(crate) fn of(scope: &crate::scope::Scope, task: Arc<str>) -> Self {
        Self {
            scope: Arc::from(scope.name.as_str()),
            task,
            owner: Arc::from(scope.owner.as_str()),
            identity: scope.identity.as_deref().map(Arc::from),
        }
    }
}

impl std::ops::Deref for AgentRef {
    type Target = AgentNames;

    fn deref(&self) -> &AgentNames {
        &self.0
    }
}

/// The `kubernetes` object of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct KubernetesRef {
    pub(crate) namespace: String,
    pub(crate) pod: String,
    pub(crate) container: String,
    pub(crate) pod_uid: String,
    pub(crate) container_id: String,
}

/// The process of a record. Its names are one allocation shared with the process table's
/// entry while they stay the same (see [`AgentRef`]).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProcessRef {
    pub(crate) pid: u32,
    pub(crate) tid: u32,
    pub(crate) ppid: u32,
    #[serde(flatten)]
    pub(crate) names: Arc<ProcessNames>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProcessNames {
    pub(crate) comm: Arc<str>,
    pub(crate) exe: Option<Arc<str>>,
    pub(crate) cgroup: Option<Arc<str>>,
}

impl std::ops::Deref for ProcessRef {
    type Target = ProcessNames;

    fn deref(&self) -> &ProcessNames {
        &self.names
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FileObject {
    pub(crate) path: String,
    pub(crate) access: FileAccess,
    /// Rename destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) new_path: Option<String>,
    /// False when the path could not be resolved exactly (see `resolve`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) unresolved: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct NetObject {
    /// `inet` or `inet6`.
    pub(crate) family: &'static str,
    /// `tcp`, `udp` or the protocol number.
    pub(crate) protocol: Cow<'static, str>,
    pub(crate) address: ShortStr,
    pub(crate) port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<String>,
}

/// `kind: escape`: what the agent tried.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct EscapeObject {
    /// `syscall` or `cgroup-move`.
    pub(crate) technique: &'static str,
    /// The syscall's name (`bpf`, `unshare`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) syscall: Option<String>,
    /// Its first arguments (absent for a signal syscall refused before its entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) args: Option<Vec<u64>>,
    /// Its return value (-1 is EPERM: refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) result: Option<i64>,
    /// `cgroup-move`: the destination cgroup and the thread moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) moved_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ExecObject {
    /// The image that runs (for a script: its interpreter).
    pub(crate) path: String,
    pub(crate) argv: Vec<String>,
    /// The script that was executed, when the image is its interpreter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) script: Option<String>,
}

/// The tool call a record belongs to (`agent-monitor mcp`, docs/SCOPES.md): the client's
/// JSON-RPC request id, the tool, a digest of its arguments; the call's own record (`kind:
/// task`, `task.event: call-ended`) also says how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct CallRef {
    pub(crate) id: String,
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) end: Option<CallEnd>,
}

/// How a call ended: `ok`, `error` (a JSON-RPC error answer), `cancelled`, `server-died`,
/// `refused` (a tool `spec.tools` does not list: it never reached the server); for a call
/// that is a process (`exec --call`), `ok` or why it was ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct CallEnd {
    pub(crate) outcome: String,
    pub(crate) duration_ms: u64,
    /// Events and violations of the server while the call ran.
    pub(crate) events: u64,
    pub(crate) violations: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Record {
    pub(crate) time: ShortStr,
    pub(crate) kind: Kind,
    pub(crate) verdict: Verdict,
    pub(crate) action: Action,
    /// What decided `action` (absent when nothing was done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) layer: Option<Layer>,
    /// What `onViolation` did after a refusal (`killed-process`, `killed-agent`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) after: Option<Action>,
    pub(crate) agent: AgentRef,
    /// The tool call in flight when it happened (`agent-monitor mcp`). This and the other
    /// objects most records lack are boxed: every record is moved into its batch, and
    /// inline they were most of its size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) call: Option<Box<CallRef>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) process: Option<ProcessRef>,
    /// Namespace, pod and container of an agent selected by `select.kubernetes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kubernetes: Option<Box<KubernetesRef>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<FileObject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) net: Option<NetObject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) exec: Option<ExecObject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) escape: Option<Box<EscapeObject>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) violation: Option<Violation>,
    /// For `kind: task`: what happened to the task and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) task: Option<Box<TaskEvent>>,
    /// How many actions this record stands for, when it aggregates several (refused DNS
    /// questions: 1 for a name's first question, then the repeats since its previous
    /// record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) count: Option<u64>,
    /// A path or argument was longer than the kernel side keeps.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) truncated: bool,
    /// `onViolation: ask`: the request a held record opened, or (`kind: approval`) its
    /// decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) approval: Option<Box<ApprovalObject>>,
}

/// The `approval` object of a record.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ApprovalObject {
    /// The request's id (`agent-monitor holds`).
    pub(crate) id: u64,
    /// `pending`, `approved`, `denied`, `timeout` (denied: nobody answered) or `ended` (the
    /// task ended first).
    pub(crate) decision: &'static str,
    /// The rule the held operation fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rule: Option<String>,
    /// The approved entry was added to the task's scope until it ends (`--for-task`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) for_task: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) approver_uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) approver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    /// How long the agent waited for the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) waited_ms: Option<u64>,
    /// The exact entry added to the task's scope (`for_task`), e.g. `files.read /etc/x`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) grant: Option<String>,
}

/// `kind: gap`: records this daemon made and could not write (the audit log fell too far
/// behind: a full, failing or stalled disk, or a full record queue). Written before the
/// next record that does get in: `lost` records made after `since` and before `time` are
/// missing from the log (they are counted in `audit_records_dropped`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Gap {
    pub(crate) time: String,
    pub(crate) kind: &'static str,
    pub(crate) lost: u64,
    pub(crate) since: String,
    pub(crate) reason: &'static str,
}

impl Gap {
    pub(crate) fn new(lost: u64, since: SystemTime, now: SystemTime) -> Self {
        Self {
            time: rfc3339(now),
            kind: "gap",
            lost,
            since: rfc3339(since),
            reason: "records were made that the audit log could not take (a full, failing or \
                     stalled disk, or a full record queue); they were dropped and counted in \
                     audit_records_dropped",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskEvent {
    pub(crate) event: &'static str,
    pub(crate) reason: String,
}

impl Record {
    /// A task lifecycle record.
    pub(crate) fn lifecycle(
        agent: AgentRef,
        event: &'static str,
        reason: &str,
        action: Action,
    ) -> Self {
        Self {
            time: rfc3339(SystemTime::now()).into(),
            kind: Kind::Task,
            verdict: if event == "degraded" {
                Verdict::Violation
            } else {
                Verdict::Allowed
            },
            action,
            layer: None,
            after: None,
            agent,
            call: None,
            process: None,
            kubernetes: None,
            file: None,
            net: None,
            exec: None,
            escape: None,
            violation: None,
            task: Some(Box::new(TaskEvent {
                event,
                reason: reason.to_string(),
            })),
            count: None,
            truncated: false,
            approval: None,
        }
    }

    /// One line for humans (`--log-format text`).
    pub(crate) fn summary(&self) -> String {
        let object = if let Some(f) = &self.file {
            match &f.new_path {
                Some(to) => format!("{:?} {} -> {}", f.access, f.path, to),
                None => format!("{:?} {}", f.access, f.path),
            }
        } else if let Some(n) = &self.net {
            format!("{}/{} {}:{}", n.family, n.protocol, n.address, n.port)
        } else if let Some(e) = &self.exec {
            format!("{} {:?}", e.path, e.argv)
        } else if let Some(e) = &self.escape {
            match (&e.syscall, &e.cgroup) {
                (Some(name), _) => format!("{name}() = {}", e.result.unwrap_or(0)),
                (None, Some(cg)) => format!("moved to {cg}"),
                (None, None) => e.technique.to_string(),
            }
        } else {
            String::new()
        };
        let verdict = match &self.violation {
            Some(v) => format!("VIOLATION [{}] {}", v.rule, v.reason),
            None => "allowed".to_string(),
        };
        let (pid, comm) = self.process.as_ref().map_or((0, ""), |p| (p.pid, &*p.comm));
        let object = match &self.task {
            Some(t) => format!("{} ({})", t.event, t.reason),
            None => object,
        };
        format!(
            "{} {:?} task={} scope={} pid={} comm={} {} -> {} action={:?}",
            self.time,
            self.kind,
            self.agent.task,
            self.agent.scope,
            pid,
            comm,
            object,
            verdict,
            self.action
        )
    }
}

#[cfg(test)]
impl Record {
    /// A record with placeholder agent and process, for tests that set the fields they need.
    pub(crate) fn sample(kind: Kind, verdict: Verdict) -> Self {
        Self {
            time: ShortStr::new(),
            kind,
            verdict,
            layer: None,
            after: None,
            action: Action::None,
            agent: AgentRef::new(AgentNames {
                scope: "s".into(),
                task: "t".into(),
                owner: "o".into(),
                identity: None,
            }),
            call: None,
            process: Some(ProcessRef {
                pid: 1,
                tid: 1,
                ppid: 0,
                names: Arc::new(ProcessNames {
                    comm: "c".into(),
                    exe: None,
                    cgroup: None,
                }),
            }),
            file: None,
            net: None,
            exec: None,
            escape: None,
            violation: None,
            task: None,
            kubernetes: None,
            count: None,
            truncated: false,
            approval: None,
        }
    }
}
