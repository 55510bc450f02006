//! The `network.connect` part of a diff: rules paired by target (the same, a supernet or
//! subnet, a wildcard host covering a name), then their ports and protocol compared.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::ScopeDiff;
use crate::policy::{ConnectRule, ConnectTarget, RuleProtocol, host_matches};

/// A connect rule as a reviewer reads it: `10.0.0.0/24:443`, `api.example.com:443,8443`,
/// `127.0.0.53/32:53/udp`, `10.0.0.0/8` (any port, tcp).
pub(crate) fn show_rule(rule: &ConnectRule) -> String {
    let mut text = match &rule.target {
        ConnectTarget::Cidr(IpNet::V6(net)) if rule.ports.is_some() => format!("[{net}]"),
        ConnectTarget::Cidr(net) => net.to_string(),
        ConnectTarget::Host(host) => host.clone(),
    };
    if let Some(ports) = &rule.ports {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        text.push(':');
        text.push_str(&ports.join(","));
    }
    match rule.protocol {
        RuleProtocol::Tcp => {}
        RuleProtocol::Udp => text.push_str("/udp"),
        RuleProtocol::Any => text.push_str("/any"),
    }
    text
}

/// How one aspect of a rule changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rel {
    Same,
    Wider,
    Narrower,
    /// Neither contains the other.
    Other,
}

fn target_rel(old: &ConnectTarget, new: &ConnectTarget) -> Option<Rel> {
    match (old, new) {
        _ if old == new => Some(Rel::Same),
        (ConnectTarget::Cidr(o), ConnectTarget::Cidr(n)) if n.contains(o) => Some(Rel::Wider),
        (ConnectTarget::Cidr(o), ConnectTarget::Cidr(n)) if o.contains(n) => Some(Rel::Narrower),
        (ConnectTarget::Host(o), ConnectTarget::Host(n)) if host_covers(n, o) => Some(Rel::Wider),
        (ConnectTarget::Host(o), ConnectTarget::Host(n)) if host_covers(o, n) => {
            Some(Rel::Narrower)
        }
        _ => None,
    }
}

/// Whether host pattern `wide` allows every name `narrow` does.
fn host_covers(wide: &str, narrow: &str) -> bool {
    match narrow.strip_prefix("*.") {
        // `*.a.example.com` names are all below `example.com`.
        Some(suffix) => wide.starts_with("*.") && host_matches(wide, suffix) || wide == narrow,
        None => host_matches(wide, narrow),
    }
}

fn port_rel(old: Option<&Vec<u16>>, new: Option<&Vec<u16>>) -> Rel {
    match (old, new) {
        (None, None) => Rel::Same,
        (Some(_), None) => Rel::Wider,
        (None, Some(_)) => Rel::Narrower,
        (Some(o), Some(n)) => {
            let (o, n): (BTreeSet<u16>, BTreeSet<u16>) =
                (o.iter().copied().collect(), n.iter().copied().collect());
            match (n.is_superset(&o), o.is_superset(&n)) {
                (true, true) => Rel::Same,
                (true, false) => Rel::Wider,
                (false, true) => Rel::Narrower,
                (false, false) => Rel::Other,
            }
        }
    }
}

fn protocol_rel(old: RuleProtocol, new: RuleProtocol) -> Rel {
    match (old, new) {
        _ if old == new => Rel::Same,
        (_, RuleProtocol::Any) => Rel::Wider,
        (RuleProtocol::Any, _) => Rel::Narrower,
        _ => Rel::Other,
    }
}

pub(super) fn connect(d: &mut ScopeDiff, old: &[ConnectRule], new: &[ConnectRule]) {
    const DIM: &str = "network.connect";
    let removed: Vec<&ConnectRule> = old.iter().filter(|r| !new.contains(r)).collect();
    let added: Vec<&ConnectRule> = new.iter().filter(|r| !old.contains(r)).collect();
    let mut paired_added = vec![false; added.len()];
    for r in &removed {
        // The same target first, then one that contains it or that it contains.
        let same = added.iter().position(|a| a.target == r.target);
        let related = same.or_else(|| {
            added
                .iter()
                .position(|a| target_rel(&r.target, &a.target).is_some())
        });
        let Some(index) = related else {
            d.narrows(DIM, format!("removes connect {}", show_rule(r)))
                .values(show_rule(r), None);
            continue;
        };
        paired_added[index] = true;
        let a = added[index];
        let rels = [
            (
                "address",
                target_rel(&r.target, &a.target).unwrap_or(Rel::Other),
            ),
            ("ports", port_rel(r.ports.as_ref(), a.ports.as_ref())),
            ("protocol", protocol_rel(r.protocol, a.protocol)),
        ];
        let wider: Vec<&str> = rels
            .iter()
            .filter(|(_, rel)| matches!(rel, Rel::Wider | Rel::Other))
            .map(|(name, _)| *name)
            .collect();
        let narrower: Vec<&str> = rels
            .iter()
            .filter(|(_, rel)| matches!(rel, Rel::Narrower | Rel::Other))
            .map(|(name, _)| *name)
            .collect();
        let (from, to) = (show_rule(r), show_rule(a));
        if rels[0].1 == Rel::Same && rels[2].1 == Rel::Same {
            same_target_ports(d, r, a);
            continue;
        }
        let mixed = !wider.is_empty() && !narrower.is_empty();
        if !wider.is_empty() {
            let text = if mixed {
                format!("widens connect {from} to {to} ({})", wider.join(", "))
            } else {
                format!("widens connect {from} to {to}")
            };
            d.widens(DIM, text).values(from.clone(), to.clone());
        }
        if !narrower.is_empty() {
            let text = if mixed {
                format!("narrows connect {from} to {to} ({})", narrower.join(", "))
            } else {
                format!("narrows connect {from} to {to}")
            };
            d.narrows(DIM, text).values(from, to);
        }
    }
    for (a, paired) in added.iter().zip(paired_added) {
        if !paired {
            d.widens(DIM, format!("adds connect {}", show_rule(a)))
                .values(None, show_rule(a));
        }
    }
}

/// Ports added to or removed from a rule whose address and protocol stay.
fn same_target_ports(d: &mut ScopeDiff, old: &ConnectRule, new: &ConnectRule) {
    const DIM: &str = "network.connect";
    let target = show_rule(&ConnectRule {
        ports: None,
        ..old.clone()
    });
    let (from, to) = (show_rule(old), show_rule(new));
    let list = |ports: &BTreeSet<u16>| {
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    match (&old.ports, &new.ports) {
        (Some(o), None) => {
            let o: BTreeSet<u16> = o.iter().copied().collect();
            d.widens(
                DIM,
                format!(
                    "widens connect {target} from ports {} to any port",
                    list(&o)
                ),
            )
            .values(from, to);
        }
        (None, Some(n)) => {
            let n: BTreeSet<u16> = n.iter().copied().collect();
            d.narrows(
                DIM,
                format!(
                    "narrows connect {target} from any port to ports {}",
                    list(&n)
                ),
            )
            .values(from, to);
        }
        (Some(o), Some(n)) => {
            let (o, n): (BTreeSet<u16>, BTreeSet<u16>) =
                (o.iter().copied().collect(), n.iter().copied().collect());
            let more: BTreeSet<u16> = n.difference(&o).copied().collect();
            let fewer: BTreeSet<u16> = o.difference(&n).copied().collect();
            if !more.is_empty() {
                d.widens(
                    DIM,
                    format!("adds port {} to connect {target}", list(&more)),
                )
                .values(from.clone(), to.clone());
            }
            if !fewer.is_empty() {
                d.narrows(
                    DIM,
                    format!("removes port {} from connect {target}", list(&fewer)),
                )
                .values(from, to);
            }
        }
        (None, None) => {}
    }
}
