//! The `network` part of a manifest: CIDRs, host names, ports and connect rules.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::{self, Deserializer, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Serialize};

use super::values::{FromScalar, ValueError, deserialize_scalar};
use crate::policy::{ConnectRule, ConnectTarget, RuleProtocol};

/// `cidr:` of a connect rule. A bare address is taken as a single host (/32 or /128).
struct Cidr(IpNet);

impl FromScalar for Cidr {
    const EXPECTING: &'static str = "a CIDR such as 10.0.0.0/8";
    fn from_scalar(text: &str) -> Result<Self, ValueError> {
        let net = match text.parse::<IpNet>() {
            Ok(net) => net,
            Err(source) => match text.parse::<IpAddr>() {
                Ok(addr) => IpNet::from(addr),
                Err(_) => {
                    return Err(ValueError::Cidr {
                        text: text.to_owned(),
                        source,
                    });
                }
            },
        };
        // `10.1.2.3/8` is most likely a typo for a host or a network: refuse to guess.
        if net.trunc() != net {
            return Err(ValueError::CidrHostBits {
                text: text.to_owned(),
                network: net.trunc(),
            });
        }
        Ok(Self(net))
    }
}

/// `host:` of a connect rule: a lowercase DNS name, optionally `*.` + a DNS name.
struct HostName(String);

impl FromScalar for HostName {
    const EXPECTING: &'static str = "a DNS name such as api.example.com or *.example.com";
    fn from_scalar(text: &str) -> Result<Self, ValueError> {
        let fail = |why| ValueError::Host {
            text: text.to_owned(),
            why,
        };
        let lower = text.to_ascii_lowercase();
        // A fully qualified name may end with the root's dot; the name is the same.
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let labels = name.strip_prefix("*.").unwrap_or(name);
        if labels.is_empty() {
            return Err(fail("empty"));
        }
        if name.len() > 253 {
            return Err(fail("longer than 253 characters"));
        }
        if labels.parse::<IpAddr>().is_ok() {
            return Err(fail("an address, not a name: use `cidr:`"));
        }
        for label in labels.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(fail("each label must be 1 to 63 characters"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(fail("a label cannot start or end with '-'"));
            }
            if label == "*" {
                return Err(fail(
                    "`*` is only allowed as the whole first label (`*.example.com`)",
                ));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(fail("labels may only contain a-z, 0-9 and '-'"));
            }
        }
        Ok(Self(name.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_scalar(deserializer)
    }
}

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_scalar(deserializer)
    }
}

/// A port number, 1..=65535. Read as any scalar, so that a negative number reaches the
/// visitor and is refused with the port rules rather than as "not an unsigned integer".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub(crate) struct Port(pub(crate) u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number 1..=65535")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Port, E> {
                match u16::try_from(n) {
                    Ok(port) if port != 0 => Ok(Port(port)),
                    _ => Err(E::custom(ValueError::Port(n.into()))),
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Port, E> {
                u64::try_from(n).map_or_else(
                    |_| Err(E::custom(ValueError::Port(n.into()))),
                    |n| self.visit_u64(n),
                )
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

/// One `network.connect` entry, validated (exactly one of `cidr` / `host`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub(crate) struct ConnectRuleSpec(pub(crate) ConnectRule);

/// The entry as written, before the cross-field checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnectRule {
    cidr: Option<Cidr>,
    host: Option<HostName>,
    ports: Option<Vec<Port>>,
    #[serde(default)]
    protocol: RuleProtocol,
}

impl<'de> Deserialize<'de> for ConnectRuleSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RuleVisitor;
        impl<'de> Visitor<'de> for RuleVisitor {
            type Value = ConnectRuleSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a connect rule {cidr | host, ports?, protocol?}")
            }
            // Checking here, inside the mapping, gives the error the mapping's position.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ConnectRuleSpec, A::Error> {
                let raw = RawConnectRule::deserialize(MapAccessDeserializer::new(map))?;
                let target = match (raw.cidr, raw.host) {
                    (Some(Cidr(net)), None) => ConnectTarget::Cidr(net),
                    (None, Some(HostName(host))) => ConnectTarget::Host(host),
                    (Some(_), Some(_)) => {
                        return Err(de::Error::custom("set either `cidr` or `host`, not both"));
                    }
                    (None, None) => return Err(de::Error::custom("set `cidr` or `host`")),
                };
                if raw.ports.as_ref().is_some_and(Vec::is_empty) {
                    return Err(de::Error::custom(
                        "`ports: []` matches nothing: omit `ports` to allow any port",
                    ));
                }
                Ok(ConnectRuleSpec(ConnectRule {
                    target,
                    ports: raw
                        .ports
                        .map(|ports| ports.into_iter().map(|Port(p)| p).collect()),
                    protocol: raw.protocol,
                }))
            }
        }
        deserializer.deserialize_map(RuleVisitor)
    }
}
