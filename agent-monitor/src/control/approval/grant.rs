//! Just-in-time grants (`approve --for-task`, and every approved network request): the
//! exact entry a held operation failed is added to its task's scope (a copy: the catalog's
//! scope and other tasks are unchanged) and to the kernel's view of the slot, until the task
//! ends.

use std::{net::IpAddr, os::unix::fs::MetadataExt as _, sync::Arc};

use ipnet::IpNet;

use super::Request;
use crate::{
    control::enforce::kernel_dev,
    control::state::Shared,
    observe::record::{Action, AgentRef, Record},
    policy::{ConnectRule, ConnectTarget, PolicySpec, RuleProtocol},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum GrantError {
    #[error("a {0} request has no exact entry to grant")]
    NoEntry(&'static str),
    #[error("task {0} ended")]
    TaskGone(String),
    #[error("the widened scope does not compile: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("writing the grant to the kernel: {0}")]
    Enforce(#[from] crate::control::enforce::EnforceError),
}

/// One exact entry of a scope list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Read(String),
    Write(String),
    Exec(String),
    Connect {
        addr: IpAddr,
        port: u16,
        protocol: RuleProtocol,
    },
}

impl Entry {
    /// The entry a request failed, if it names one exactly.
    pub(crate) fn of(r: &Request) -> Result<Self, GrantError> {
        use crate::policy::FileAccess;
        if let Some(e) = &r.exec {
            return Ok(Self::Exec(e.path.clone()));
        }
        if let Some(f) = &r.file
            && !f.unresolved
        {
            return Ok(match f.access {
                FileAccess::Read | FileAccess::List => Self::Read(f.path.clone()),
                _ => Self::Write(f.path.clone()),
            });
        }
        if let Some(n) = &r.net
            && let Ok(addr) = n.address.parse::<IpAddr>()
        {
            let protocol = match &*n.protocol {
                "tcp" => RuleProtocol::Tcp,
                "udp" => RuleProtocol::Udp,
                _ => return Err(GrantError::NoEntry(r.kind.name())),
            };
            return Ok(Self::Connect {
                addr,
                port: n.port,
                protocol,
            });
        }
        Err(GrantError::NoEntry(r.kind.name()))
    }

    /// As `agents` and the records show it.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Read(p) => format!("files.read {p}"),
            Self::Write(p) => format!("files.write {p}"),
            Self::Exec(p) => format!("exec.allow {p}"),
            Self::Connect {
                addr,
                port,
                protocol,
            } => format!("network.connect {addr} port {port} {protocol:?}").to_lowercase(),
        }
    }

    fn add_to(&self, spec: &mut PolicySpec) {
        match self {
            Self::Read(p) => spec.files.read.push(literal(p)),
            Self::Write(p) => spec.files.write.push(literal(p)),
            Self::Exec(p) => spec.exec_allow.push(literal(p)),
            Self::Connect {
                addr,
                port,
                protocol,
            } => spec.connect.push(ConnectRule {
                target: ConnectTarget::Cidr(IpNet::from(*addr)),
                ports: Some(vec![*port]),
                protocol: *protocol,
            }),
        }
    }
}

/// A new version of a task's scope, widened with the task's grants again.
///
/// # Errors
/// When the widened lists do not compile.
pub(crate) fn with_grants(
    scope: &crate::scope::Scope,
    entries: &[Entry],
) -> Result<crate::scope::Scope, crate::policy::PolicyError> {
    scope.widened(|spec| {
        for e in entries {
            e.add_to(spec);
        }
    })
}

/// A path as a glob that matches only itself.
fn literal(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('[');
            out.push(c);
            out.push(']');
        } else {
            out.push(c);
        }
    }
    out
}

impl Shared {
    /// Adds the request's exact entry to its task's scope and the kernel's view of the
    /// slot. Returns the entry as shown.
    pub(crate) fn grant(&self, r: &Request) -> Result<String, GrantError> {
        let entry = Entry::of(r)?;
        let widened = {
            let mut registry = self.registry();
            let task = registry
                .get_mut(&r.task)
                .ok_or_else(|| GrantError::TaskGone(r.task.clone()))?;
            let widened = Arc::new(task.scope.widened(|spec| entry.add_to(spec))?);
            task.scope = Arc::clone(&widened);
            task.grants.push(entry.describe());
            task.grant_entries.push(entry.clone());
            widened
        };
        if matches!(entry, Entry::Connect { .. }) {
            self.enforcer().widen_net(r.slot, &widened)?;
        }
        self.allow_identities(r.slot, std::slice::from_ref(&entry));
        Ok(entry.describe())
    }

    /// The kernel lets the next opens or execs of the granted files through (writes stay
    /// held and are judged by the widened scope). Again after a reload re-installs a slot.
    pub(crate) fn allow_identities(&self, slot: u32, entries: &[Entry]) {
        for entry in entries {
            let (Entry::Read(p) | Entry::Exec(p)) = entry else {
                continue;
            };
            let Ok(meta) = std::fs::metadata(p) else {
                continue;
            };
            let (dev, ino) = (kernel_dev(meta.dev()), meta.ino());
            if matches!(entry, Entry::Read(_)) {
                self.enforcer().allow_read(slot, dev, ino);
            } else {
                self.enforcer().allow_exec(slot, dev, ino);
            }
        }
    }

    /// The record of a task's grants ending (`why`: with the task, or with a new version of
    /// its scope).
    pub(crate) fn grants_revoked(&self, agent: AgentRef, grants: &[String], why: &str) {
        if grants.is_empty() {
            return;
        }
        let reason = format!("just-in-time grants end {why}: {}", grants.join(", "));
        self.push_record(Record::lifecycle(
            agent,
            "grants-revoked",
            &reason,
            Action::None,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_paths_match_only_themselves() {
        assert_eq!(literal("/etc/hostname"), "/etc/hostname");
        assert_eq!(literal("/tmp/a*b?[c]{d}"), "/tmp/a[*]b[?][[]c[]][{]d[}]");
        let glob = crate::policy::compile_glob(&literal("/tmp/a*b")).expect("glob");
        let m = glob.compile_matcher();
        assert!(m.is_match("/tmp/a*b"));
        assert!(!m.is_match("/tmp/axxb"));
    }

    #[test]
    fn entries_describe_the_exact_rule() {
        let c = Entry::Connect {
            addr: "127.0.0.1".parse().expect("addr"),
            port: 8080,
            protocol: RuleProtocol::Tcp,
        };
        assert_eq!(c.describe(), "network.connect 127.0.0.1 port 8080 tcp");
        let mut spec = PolicySpec::default();
        c.add_to(&mut spec);
        Entry::Read("/x/y".into()).add_to(&mut spec);
        assert_eq!(spec.files.read, ["/x/y"]);
        assert_eq!(spec.connect.len(), 1);
        assert_eq!(spec.connect[0].ports, Some(vec![8080]));
        assert_eq!(
            spec.connect[0].target,
            ConnectTarget::Cidr("127.0.0.1/32".parse().expect("net"))
        );
    }
}
