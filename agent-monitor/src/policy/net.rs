//! Network rules: declared connect rules and their compiled, address-only form.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use super::{PolicyError, Protocol};

/// The protocol a connect rule applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RuleProtocol {
    #[default]
    Tcp,
    Udp,
    Any,
}

impl RuleProtocol {
    pub(crate) fn admits(self, observed: Protocol) -> bool {
        match self {
            Self::Tcp => observed == Protocol::Tcp,
            Self::Udp => observed == Protocol::Udp,
            Self::Any => true,
        }
    }
}

/// Where a connect rule allows traffic to go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ConnectTarget {
    Cidr(IpNet),
    /// A lowercase DNS name, optionally starting with `*.`.
    Host(String),
}

/// One declared `network.connect` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub(crate) struct ConnectRule {
    #[serde(flatten)]
    pub(crate) target: ConnectTarget,
    /// `None` allows any port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ports: Option<Vec<u16>>,
    pub(crate) protocol: RuleProtocol,
}

/// A CIDR rule ready for matching observed addresses.
#[derive(Debug, Clone)]
pub(crate) struct CidrRule {
    /// Its index in `network.connect`.
    pub(crate) index: usize,
    net: IpNet,
    ports: Option<Vec<u16>>,
    protocol: RuleProtocol,
}

impl CidrRule {
    /// Compiles the CIDR rules; `host:` rules cannot match an address and are skipped.
    pub(crate) fn compile_all(rules: &[ConnectRule]) -> Result<Vec<Self>, PolicyError> {
        let mut compiled = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            if let Some(ports) = &rule.ports {
                let name = || format!("network.connect[{index}].ports");
                if ports.is_empty() {
                    return Err(PolicyError::EmptyPorts { rule: name() });
                }
                if ports.contains(&0) {
                    return Err(PolicyError::ZeroPort { rule: name() });
                }
            }
            if let ConnectTarget::Cidr(net) = rule.target {
                compiled.push(Self {
                    index,
                    net: canonical_net(net),
                    ports: rule.ports.clone(),
                    protocol: rule.protocol,
                });
            }
        }
        Ok(compiled)
    }

    /// `addr` must already be canonical (IPv4-mapped IPv6 turned into IPv4).
    pub(crate) fn admits(&self, addr: IpAddr, port: u16, protocol: Protocol) -> bool {
        self.net.contains(&addr)
            && self
                .ports
                .as_ref()
                .is_none_or(|ports| ports.contains(&port))
            && self.protocol.admits(protocol)
    }
}

/// Rewrites an IPv6 network inside `::ffff:0:0/96` as the IPv4 network it maps, since
/// observed IPv4-mapped addresses are judged as IPv4.
fn canonical_net(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else { return net };
    let Some(v4) = v6.network().to_ipv4_mapped() else {
        return net;
    };
    match v6.prefix_len().checked_sub(96) {
        Some(prefix) => Ipv4Net::new(v4, prefix).map_or(net, IpNet::V4),
        None => net,
    }
}

/// A DNS name as `host:` rules are written: lowercase, without the root's trailing dot.
pub(crate) fn canonical_host(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    lower.strip_suffix('.').unwrap_or(&lower).to_owned()
}

/// The pattern of a learning task's internal host rule: every name (see `scope::learn`).
/// No manifest can hold it: `*` alone is no valid `host:`.
pub(crate) const ANY_HOST: &str = "*";

/// Whether a `host:` pattern allows a canonical name. A pattern is an exact name
/// (`api.example.com`) or `*.` + a name (`*.example.com`), which matches every name below it
/// at any depth (`a.example.com`, `x.y.example.com`) but not the name itself.
pub(crate) fn host_matches(pattern: &str, name: &str) -> bool {
    if pattern == ANY_HOST {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .strip_suffix(suffix)
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        None => name == pattern,
    }
}

/// Checks that every `network.bind` entry is a real port.
pub(crate) fn check_bind(ports: &[u16]) -> Result<(), PolicyError> {
    if ports.contains(&0) {
        return Err(PolicyError::ZeroPort {
            rule: "network.bind".to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("a valid network")
    }

    #[test]
    fn mapped_v6_networks_become_v4() {
        assert_eq!(canonical_net(net("::ffff:10.0.0.0/104")), net("10.0.0.0/8"));
        assert_eq!(canonical_net(net("::ffff:0:0/96")), net("0.0.0.0/0"));
        // A prefix wider than the mapped range stays IPv6.
        assert_eq!(canonical_net(net("::/64")), net("::/64"));
        assert_eq!(canonical_net(net("fd00::/8")), net("fd00::/8"));
    }
}
