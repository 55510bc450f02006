//! The declared side of a report: a scope's entries, and which of the policy's rules each
//! one is.

use std::{collections::HashMap, net::IpAddr};

use serde::Serialize;

use crate::{
    observe::record::{Kind, NetObject},
    policy::{
        Activity, CompiledPolicy, ConnectRule, ConnectTarget, NetOp, PolicySpec, Protocol,
        RuleList, RuleProtocol, RuleRef, canonical_host,
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EntryKind {
    /// Grants something; unused ones can be removed.
    Allow,
    /// `files.deny`: a use is an attempt that was refused.
    Deny,
}

/// One declared scope entry and how often it was used.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EntryUse {
    /// e.g. `exec.allow[0]`.
    pub(crate) rule: String,
    /// The entry as written, e.g. `/usr/bin/git` or `10.0.0.0/8 tcp ports 443`.
    pub(crate) entry: String,
    pub(crate) kind: EntryKind,
    pub(crate) uses: u64,
}

/// The declared entries, and which one each of the policy's rules is.
pub(super) struct Declared {
    pub(super) entries: Vec<EntryUse>,
    index: HashMap<RuleRef, usize>,
}

/// A connect rule as reports show it, e.g. `10.0.0.0/8 tcp ports [443]`.
pub(crate) fn connect_entry(rule: &ConnectRule) -> String {
    let target = match &rule.target {
        ConnectTarget::Cidr(net) => net.to_string(),
        ConnectTarget::Host(h) => h.clone(),
    };
    let proto = match rule.protocol {
        RuleProtocol::Tcp => "tcp",
        RuleProtocol::Udp => "udp",
        RuleProtocol::Any => "any",
    };
    match &rule.ports {
        Some(p) => format!("{target} {proto} ports {p:?}"),
        None => format!("{target} {proto} any port"),
    }
}

impl Declared {
    pub(super) fn new(spec: &PolicySpec) -> Self {
        let mut d = Self {
            entries: Vec::new(),
            index: HashMap::new(),
        };
        let mut push = |list: RuleList, i: usize, entry: String, kind| {
            d.index.insert(RuleRef { list, index: i }, d.entries.len());
            d.entries.push(EntryUse {
                rule: format!("{}[{i}]", list.name()),
                entry,
                kind,
                uses: 0,
            });
        };
        let lists: [(RuleList, &[String], EntryKind); 4] = [
            (RuleList::ExecAllow, &spec.exec_allow, EntryKind::Allow),
            (RuleList::FilesRead, &spec.files.read, EntryKind::Allow),
            (RuleList::FilesWrite, &spec.files.write, EntryKind::Allow),
            (RuleList::FilesDeny, &spec.files.deny, EntryKind::Deny),
        ];
        for (list, patterns, kind) in lists {
            for (i, p) in patterns.iter().enumerate() {
                push(list, i, p.clone(), kind);
            }
        }
        for (i, rule) in spec.connect.iter().enumerate() {
            push(RuleList::Connect, i, connect_entry(rule), EntryKind::Allow);
        }
        for (i, port) in spec.bind.iter().enumerate() {
            push(RuleList::Bind, i, port.to_string(), EntryKind::Allow);
        }
        d
    }

    /// The entries among `rules` (the policy's matches).
    pub(super) fn entries_of(&self, rules: &[RuleRef]) -> Vec<usize> {
        rules
            .iter()
            .filter_map(|r| self.index.get(r).copied())
            .collect()
    }

    pub(super) fn net_hits(
        &self,
        policy: &CompiledPolicy,
        kind: Kind,
        net: &NetObject,
    ) -> Vec<usize> {
        let protocol = match &*net.protocol {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => Protocol::Other(0),
        };
        let op = match kind {
            Kind::Bind => NetOp::Bind,
            Kind::Send => NetOp::Send,
            _ => NetOp::Connect,
        };
        let mut rules = net
            .address
            .parse::<IpAddr>()
            .map(|addr| {
                policy.matching(&Activity::Net {
                    op,
                    addr,
                    port: net.port,
                    protocol,
                })
            })
            .unwrap_or_default();
        if op != NetOp::Bind
            && let Some(host) = &net.host
        {
            rules.extend(policy.hosts_matching(&canonical_host(host), net.port, protocol));
        }
        self.entries_of(&rules)
    }
}
