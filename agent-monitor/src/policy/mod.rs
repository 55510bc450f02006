//! The policy engine: judges one observed activity against a compiled scope.
//!
//! Pure (no I/O, no clock): compiled once when a scope loads, evaluated per event with
//! precompiled glob sets. Allow-list posture: whatever no rule allows is a violation.

mod baseline;
mod dirs;
mod error;
mod files;
mod glob;
mod matching;
mod net;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

pub(crate) use baseline::{READ as BASELINE_READ, WRITE as BASELINE_WRITE};
pub(crate) use dirs::DirGrant;
pub(crate) use error::PolicyError;
pub(crate) use glob::{check_path_glob, compile_glob};
pub(crate) use matching::{RuleList, RuleRef};
pub(crate) use net::{
    ANY_HOST, ConnectRule, ConnectTarget, RuleProtocol, canonical_host, host_matches,
};

use baseline::Baseline;
use glob::PatternSet;
use net::CidrRule;

/// How a file was accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FileAccess {
    Read,
    Write,
    Create,
    Unlink,
    /// A rename seen on one path only; judged like a write. Prefer [`Activity::Rename`].
    Rename,
    /// A hard link (see [`Activity::Link`]).
    Link,
    /// A truncate: judged like a write.
    Truncate,
    /// A directory opened to read its entries: allowed where reading is, and for the
    /// directories `files.list` names (names, not contents).
    List,
}

impl FileAccess {
    /// Every access, in declaration order.
    pub(crate) const ALL: [Self; 8] = [
        Self::Read,
        Self::Write,
        Self::Create,
        Self::Unlink,
        Self::Rename,
        Self::Link,
        Self::Truncate,
        Self::List,
    ];

    /// The name records and reports use (as serde writes it).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Create => "create",
            Self::Unlink => "unlink",
            Self::Rename => "rename",
            Self::Link => "link",
            Self::Truncate => "truncate",
            Self::List => "list",
        }
    }
}

impl fmt::Display for FileAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A network operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NetOp {
    Connect,
    Send,
    Bind,
}

impl fmt::Display for NetOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Send => "send",
            Self::Bind => "bind",
        })
    }
}

/// The observed L4 protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Protocol {
    Tcp,
    Udp,
    /// Any other IP protocol, by number.
    Other(u8),
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp => f.write_str("tcp"),
            Self::Udp => f.write_str("udp"),
            Self::Other(number) => write!(f, "ip protocol {number}"),
        }
    }
}

/// One thing an agent process did, with canonical paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activity<'a> {
    Exec {
        path: &'a str,
    },
    File {
        path: &'a str,
        access: FileAccess,
    },
    /// rename: the source is judged as an unlink, the destination as a create.
    Rename {
        from: &'a str,
        to: &'a str,
    },
    /// A hard link: the existing file must be readable (the new name reaches nothing more),
    /// the new name creatable.
    Link {
        from: &'a str,
        to: &'a str,
    },
    Net {
        op: NetOp,
        addr: IpAddr,
        port: u16,
        protocol: Protocol,
    },
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Context {
    /// The acting process; its own `/proc/<tgid>` tree is part of the read baseline.
    pub(crate) tgid: u32,
}

/// The scope dimension a violation falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Dimension {
    Exec,
    Files,
    Network,
    /// Confinement itself: namespaces, mounts, bpf, ptrace, cgroup moves, the monitor's own
    /// filesystems. Never in any scope.
    Escape,
}

/// The outcome of judging one activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    Violation(Violation),
}

/// What was broken and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Violation {
    pub(crate) dimension: Dimension,
    /// The rule that refused it, e.g. `exec.allow` or `files.deny[2]: **/.env`.
    pub(crate) rule: String,
    /// One human-readable sentence.
    pub(crate) reason: String,
}

impl Verdict {
    /// Runs the next check only while everything so far is allowed.
    fn and_then(self, next: impl FnOnce() -> Self) -> Self {
        match self {
            Self::Allowed => next(),
            violation @ Self::Violation(_) => violation,
        }
    }

    pub(crate) fn violation(dimension: Dimension, rule: impl Into<String>, reason: String) -> Self {
        Self::Violation(Violation {
            dimension,
            rule: rule.into(),
            reason,
        })
    }
}

/// The `files` part of a declared policy (the default grants nothing, not even the baseline).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct FileRules {
    /// Grant the runtime baseline (shared libraries, locale, `/dev/null`, own `/proc`).
    pub(crate) baseline: bool,
    pub(crate) read: Vec<String>,
    pub(crate) write: Vec<String>,
    pub(crate) deny: Vec<String>,
    /// Directories that may be listed (their entries' names), not read.
    pub(crate) list: Vec<String>,
}

/// A declared policy: the input of [`CompiledPolicy::compile`], kept for reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct PolicySpec {
    pub(crate) exec_allow: Vec<String>,
    pub(crate) files: FileRules,
    pub(crate) connect: Vec<ConnectRule>,
    pub(crate) bind: Vec<u16>,
}

/// A policy ready for per-event evaluation.
#[derive(Debug, Clone)]
pub(crate) struct CompiledPolicy {
    declared: PolicySpec,
    exec: PatternSet,
    read: PatternSet,
    write: PatternSet,
    deny: PatternSet,
    list: PatternSet,
    baseline: Option<Baseline>,
    connect: Vec<CidrRule>,
    dirs: dirs::DirRules,
}

impl CompiledPolicy {
    /// Validates and compiles a declared policy.
    ///
    /// # Errors
    /// A [`PolicyError`] for the first invalid glob or port.
    pub(crate) fn compile(spec: PolicySpec) -> Result<Self, PolicyError> {
        net::check_bind(&spec.bind)?;
        Ok(Self {
            exec: PatternSet::compile("exec.allow", &spec.exec_allow)?,
            read: PatternSet::compile("files.read", &spec.files.read)?,
            write: PatternSet::compile("files.write", &spec.files.write)?,
            deny: PatternSet::compile("files.deny", &spec.files.deny)?,
            list: PatternSet::compile("files.list", &spec.files.list)?,
            baseline: if spec.files.baseline {
                Some(Baseline::compile()?)
            } else {
                None
            },
            connect: CidrRule::compile_all(&spec.connect)?,
            dirs: dirs::DirRules::new(
                &spec,
                spec.files
                    .baseline
                    .then_some((baseline::READ, baseline::WRITE)),
            ),
            declared: spec,
        })
    }

    /// Also allows each alias `(pattern, index)` as `exec.allow[index]`: the file an entry
    /// naming a symlink pointed to when the scope loaded.
    pub(crate) fn with_exec_aliases(
        mut self,
        aliases: &[(String, usize)],
    ) -> Result<Self, PolicyError> {
        self.exec = PatternSet::compile_aliased("exec.allow", &self.declared.exec_allow, aliases)?;
        Ok(self)
    }

    /// What the rules alone let any process do to every file directly in the directory
    /// `dir` (canonical): None when they do not let every file be read, nor written.
    #[must_use]
    pub(crate) fn dir_grant(&self, dir: &str) -> Option<DirGrant> {
        self.dirs.grant(dir)
    }

    /// Judges one activity of the process `ctx.tgid`.
    #[must_use]
    pub(crate) fn evaluate(&self, activity: &Activity<'_>, ctx: Context) -> Verdict {
        match *activity {
            Activity::Exec { path } => self.judge_exec(path),
            Activity::File { path, access } => self.judge_file(path, access, ctx.tgid),
            Activity::Rename { from, to } => self.judge_rename(from, to, ctx.tgid),
            Activity::Link { from, to } => self.judge_link(from, to, ctx.tgid),
            Activity::Net {
                op,
                addr,
                port,
                protocol,
            } => self.judge_net(op, addr, port, protocol),
        }
    }

    /// Everything declared, as compiled (for declared-vs-used reports and status).
    #[must_use]
    pub(crate) fn declared(&self) -> &PolicySpec {
        &self.declared
    }

    /// The `host:` connect rules (never allowing an address here: DNS-name egress is the
    /// resolver's and the kernel's).
    #[cfg(test)]
    pub(crate) fn host_rules(&self) -> impl Iterator<Item = &ConnectRule> + '_ {
        self.declared
            .connect
            .iter()
            .filter(|rule| matches!(rule.target, ConnectTarget::Host(_)))
    }

    fn judge_exec(&self, path: &str) -> Verdict {
        if self.exec.is_match(&globset::Candidate::new(path)) {
            Verdict::Allowed
        } else {
            Verdict::violation(
                Dimension::Exec,
                "exec.allow",
                format!("{path} is not in exec.allow"),
            )
        }
    }

    fn judge_net(&self, op: NetOp, addr: IpAddr, port: u16, protocol: Protocol) -> Verdict {
        match op {
            NetOp::Connect | NetOp::Send => {
                // An IPv4-mapped IPv6 peer is an IPv4 peer: judge it by the IPv4 rules.
                let addr = addr.to_canonical();
                if self
                    .connect
                    .iter()
                    .any(|rule| rule.admits(addr, port, protocol))
                {
                    Verdict::Allowed
                } else {
                    Verdict::violation(
                        Dimension::Network,
                        "network.connect",
                        format!(
                            "{op} to {} ({protocol}) is not in network.connect",
                            SocketAddr::new(addr, port)
                        ),
                    )
                }
            }
            NetOp::Bind => {
                // Port 0 asks the kernel for an ephemeral port, as a connect or send does
                // implicitly (pip's urllib3 binds [::1]:0 to probe for IPv6); a listen on it
                // is judged by the port it got.
                if port == 0 || self.declared.bind.contains(&port) {
                    Verdict::Allowed
                } else {
                    Verdict::violation(
                        Dimension::Network,
                        "network.bind",
                        format!("bind to port {port} ({protocol}) is not in network.bind"),
                    )
                }
            }
        }
    }
}
