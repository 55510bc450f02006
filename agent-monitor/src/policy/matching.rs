//! Which declared rules an activity matches: the one evaluation of a scope's rules behind
//! the verdict's rule name, the declared-against-used report and the DNS names an agent's
//! resolver may answer.

use globset::Candidate;

use super::{
    Activity, CompiledPolicy, ConnectTarget, FileAccess, NetOp, Protocol, net::host_matches,
};

/// A declared list of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RuleList {
    ExecAllow,
    FilesRead,
    FilesWrite,
    FilesDeny,
    FilesList,
    Connect,
    Bind,
}

impl RuleList {
    /// As the manifest spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ExecAllow => "exec.allow",
            Self::FilesRead => "files.read",
            Self::FilesWrite => "files.write",
            Self::FilesDeny => "files.deny",
            Self::FilesList => "files.list",
            Self::Connect => "network.connect",
            Self::Bind => "network.bind",
        }
    }
}

/// One declared entry: its list and its index there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RuleRef {
    pub(crate) list: RuleList,
    pub(crate) index: usize,
}

impl CompiledPolicy {
    /// Every declared entry that matches `activity`, allowing or denying, in list order. A
    /// file read also matches `files.read`, a listing `files.read` and `files.list`; every
    /// file access matches `files.deny` and `files.write` entries. A rename or hard link
    /// matches through both of its paths. Connect and send match the CIDR rules that admit
    /// them (`host:` rules match names: [`Self::hosts_matching`]).
    pub(crate) fn matching(&self, activity: &Activity<'_>) -> Vec<RuleRef> {
        let mut out = Vec::new();
        match *activity {
            Activity::Exec { path } => {
                add(
                    &mut out,
                    RuleList::ExecAllow,
                    self.exec.matching(&Candidate::new(path)),
                );
            }
            Activity::File { path, access } => self.file_matching(&mut out, path, access),
            Activity::Rename { from, to } | Activity::Link { from, to } => {
                self.file_matching(&mut out, from, FileAccess::Write);
                self.file_matching(&mut out, to, FileAccess::Create);
            }
            Activity::Net {
                op: NetOp::Bind,
                port,
                ..
            } => add(
                &mut out,
                RuleList::Bind,
                self.declared
                    .bind
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| **p == port)
                    .map(|(i, _)| i),
            ),
            Activity::Net {
                addr,
                port,
                protocol,
                ..
            } => {
                let addr = addr.to_canonical();
                add(
                    &mut out,
                    RuleList::Connect,
                    self.connect
                        .iter()
                        .filter(|r| r.admits(addr, port, protocol))
                        .map(|r| r.index),
                );
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The `host:` connect rules that allow a connect or send to `port` over `protocol` of
    /// an address learned under a canonical DNS name (lowercase, no trailing dot), in
    /// declaration order.
    pub(crate) fn hosts_matching(&self, name: &str, port: u16, protocol: Protocol) -> Vec<RuleRef> {
        let mut out = Vec::new();
        add(
            &mut out,
            RuleList::Connect,
            self.declared
                .connect
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    matches!(&r.target, ConnectTarget::Host(h) if host_matches(h, name))
                        && r.ports.as_ref().is_none_or(|p| p.contains(&port))
                        && r.protocol.admits(protocol)
                })
                .map(|(i, _)| i),
        );
        out
    }

    fn file_matching(&self, out: &mut Vec<RuleRef>, path: &str, access: FileAccess) {
        let c = Candidate::new(path);
        add(out, RuleList::FilesDeny, self.deny.matching(&c));
        add(out, RuleList::FilesWrite, self.write.matching(&c));
        if matches!(access, FileAccess::Read | FileAccess::List) {
            add(out, RuleList::FilesRead, self.read.matching(&c));
        }
        if access == FileAccess::List {
            add(out, RuleList::FilesList, self.list.matching(&c));
        }
    }
}

fn add(out: &mut Vec<RuleRef>, list: RuleList, indexes: impl IntoIterator<Item = usize>) {
    out.extend(indexes.into_iter().map(|index| RuleRef { list, index }));
}
