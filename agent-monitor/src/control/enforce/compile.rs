//! A scope -> the kernel's view of it: network rules by prefix (each merged with every
//! wider prefix that contains it, so the longest match alone decides), bind ports, and the
//! (device, inode) of allowed binaries and denied files as they exist at load time.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use agent_monitor_common::{
    MAX_HOST_RULES, MAX_PORT_RULES, NetRule, PortRule, config_flags, proto_bits,
};
use ipnet::IpNet;

use crate::{
    policy::{ConnectRule, ConnectTarget, RuleProtocol, compile_glob},
    scope::{Mode, OnViolation, Scope},
};

/// Walks stop after this many directory entries per pattern: a glob over a huge tree is
/// left to the daemon's path-based check.
const WALK_LIMIT: usize = 20_000;

#[derive(Debug, thiserror::Error)]
#[expect(
    clippy::enum_variant_names,
    reason = "every compile error is a kernel limit exceeded"
)]
pub(crate) enum CompileError {
    #[error(
        "network rules for {cidr} allow more than {MAX_PORT_RULES} distinct ports; use fewer ports or a port-free rule"
    )]
    TooManyPorts { cidr: IpNet },
    #[error("network rules for host {host} allow more than {MAX_PORT_RULES} distinct ports")]
    TooManyHostPorts { host: String },
    #[error("{count} host: rules; at most {MAX_HOST_RULES} are enforced per scope")]
    TooManyHostRules { count: usize },
}

/// A file identity in the kernel's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FileId {
    pub(crate) dev: u32,
    pub(crate) ino: u64,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct KernelScope {
    pub(crate) mode: u32,
    pub(crate) on_violation: u32,
    pub(crate) flags: u32,
    /// (prefix length over the 128-bit key address, key address, rule).
    pub(crate) net: Vec<(u32, [u8; 16], NetRule)>,
    /// One rule per `host:` entry, in declaration order (the kernel's host rule index).
    pub(crate) host: Vec<NetRule>,
    pub(crate) bind: Vec<u16>,
    pub(crate) exec_allow: Vec<FileId>,
    pub(crate) file_deny: Vec<FileId>,
}

pub(crate) fn compile(scope: &Scope) -> Result<KernelScope, CompileError> {
    let declared = scope.policy.declared();
    let (exec_allow, exec_complete) = expand(&declared.exec_allow);
    let (file_deny, _) = expand(&declared.files.deny);
    let host = host_rules(&declared.connect)?;
    // With `ask`, an exec outside the allow set waits for a person instead of being
    // killed: the kernel holds it as it holds a glob's possible match.
    let mut flags = if exec_complete && scope.on_violation != OnViolation::Ask {
        0
    } else {
        config_flags::EXEC_DEFER
    };
    if !host.is_empty() {
        flags |= config_flags::DNS;
    }
    Ok(KernelScope {
        mode: match scope.mode {
            Mode::Audit => agent_monitor_common::mode::AUDIT,
            Mode::Enforce => agent_monitor_common::mode::ENFORCE,
        },
        on_violation: match scope.on_violation {
            OnViolation::Alert => agent_monitor_common::on_violation::ALERT,
            // The kernel's fallback for what cannot be refused is the kill.
            // `ask`: the kernel holds what it would hold for a kill; what it kills by identity
            // (files.deny, escapes) stays a kill.
            OnViolation::KillProcess | OnViolation::Refuse | OnViolation::Ask => {
                agent_monitor_common::on_violation::KILL_PROCESS
            }
            OnViolation::KillAgent => agent_monitor_common::on_violation::KILL_AGENT,
        },
        // Paths outside the allow-lists are only known to the daemon: the kernel holds such
        // opens until it has judged them (the kill happens before the caller sees the fd).
        flags: flags | config_flags::FILE_HOLD,
        net: net_rules(&declared.connect)?,
        host,
        bind: declared.bind.clone(),
        exec_allow,
        file_deny,
    })
}

/// The kernel's `dev_t` (`MKDEV`: major << 20 | minor) from a userspace `st_dev`.
pub(crate) fn kernel_dev(st_dev: u64) -> u32 {
    let (major, minor) = (libc::major(st_dev), libc::minor(st_dev));
    (major << 20) | (minor & 0xf_ffff)
}

fn file_id(path: &Path) -> Option<FileId> {
    let m = fs::metadata(path).ok()?;
    m.is_file().then(|| FileId {
        dev: kernel_dev(m.dev()),
        ino: m.ino(),
    })
}

/// The files the patterns name now. Returns whether the set is complete: false when a
/// pattern has globs (a matching file may appear later) or could not be walked.
fn expand(patterns: &[String]) -> (Vec<FileId>, bool) {
    const GLOB: &[char] = &['*', '?', '[', '{'];
    let mut ids = HashSet::new();
    let mut complete = true;
    for pattern in patterns {
        if !pattern.contains(GLOB) {
            ids.extend(file_id(Path::new(pattern)));
            continue;
        }
        complete = false;
        // The literal directory the glob starts from.
        let literal: PathBuf = Path::new(pattern)
            .components()
            .take_while(|c| !c.as_os_str().to_string_lossy().contains(GLOB))
            .collect();
        if literal.as_os_str().len() <= 1 {
            continue; // `**/x` or `/*...`: no bounded place to look; the daemon checks paths.
        }
        let Ok(glob) = compile_glob(pattern) else {
            continue;
        };
        let matcher = glob.compile_matcher();
        let depth = if pattern.contains("**") {
            usize::MAX
        } else {
            pattern.matches('/').count() - literal.components().count() + 1
        };
        walk(&literal, depth, &mut |p| {
            if matcher.is_match(p) {
                ids.extend(file_id(p));
            }
        });
    }
    let mut ids: Vec<FileId> = ids.into_iter().collect();
    ids.sort_unstable();
    (ids, complete)
}

fn walk(root: &Path, depth: usize, visit: &mut impl FnMut(&Path)) {
    let mut queue = vec![(root.to_path_buf(), 0usize)];
    let mut seen = 0;
    while let Some((dir, d)) = queue.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > WALK_LIMIT {
                return;
            }
            let path = entry.path();
            visit(&path);
            if d + 1 < depth && entry.file_type().is_ok_and(|t| t.is_dir()) {
                queue.push((path, d + 1));
            }
        }
    }
}

fn bits(p: RuleProtocol) -> u16 {
    match p {
        RuleProtocol::Tcp => proto_bits::TCP,
        RuleProtocol::Udp => proto_bits::UDP,
        RuleProtocol::Any => proto_bits::TCP | proto_bits::UDP,
    }
}

/// Prefix length and key address (IPv4 as `::ffff:a.b.c.d`).
fn key_of(net: &IpNet) -> (u32, [u8; 16]) {
    match net {
        IpNet::V4(v4) => (
            96 + u32::from(v4.prefix_len()),
            v4.network().to_ipv6_mapped().octets(),
        ),
        IpNet::V6(v6) => (u32::from(v6.prefix_len()), v6.network().octets()),
    }
}

/// What `net_rules` merges: a rule applies to every prefix it contains (the reference the
/// supernet walk is tested against).
#[cfg(test)]
fn contains(wide: &IpNet, narrow: &IpNet) -> bool {
    wide.prefix_len() <= narrow.prefix_len()
        && wide.contains(&narrow.network())
        && matches!(
            (wide, narrow),
            (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
        )
}

/// The ports and protocols of each `host:` rule; the addresses come from the agent's own
/// DNS answers (`DNS_LEARNED`, written by the daemon's resolver).
pub(crate) fn host_rules(rules: &[ConnectRule]) -> Result<Vec<NetRule>, CompileError> {
    let hosts: Vec<(&String, &ConnectRule)> = rules
        .iter()
        .filter_map(|r| match &r.target {
            ConnectTarget::Host(h) => Some((h, r)),
            ConnectTarget::Cidr(_) => None,
        })
        .collect();
    if hosts.len() > MAX_HOST_RULES as usize {
        return Err(CompileError::TooManyHostRules { count: hosts.len() });
    }
    hosts
        .into_iter()
        .map(|(host, rule)| {
            let mut out = NetRule::default();
            match &rule.ports {
                None => out.any_port_protos = bits(rule.protocol),
                Some(ports) => {
                    let mut ports = ports.clone();
                    ports.sort_unstable();
                    ports.dedup();
                    if ports.len() > MAX_PORT_RULES {
                        return Err(CompileError::TooManyHostPorts { host: host.clone() });
                    }
                    for (i, port) in ports.into_iter().enumerate() {
                        out.ports[i] = PortRule {
                            port,
                            protos: bits(rule.protocol),
                        };
                        out.count += 1;
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

/// CIDR rules; `host:` rules are compiled by [`host_rules`].
pub(crate) fn net_rules(
    rules: &[ConnectRule],
) -> Result<Vec<(u32, [u8; 16], NetRule)>, CompileError> {
    let cidrs: Vec<(IpNet, &ConnectRule)> = rules
        .iter()
        .filter_map(|r| match &r.target {
            ConnectTarget::Cidr(net) => Some((net.trunc(), r)),
            ConnectTarget::Host(_) => None,
        })
        .collect();
    let prefixes: BTreeMap<(u32, [u8; 16]), IpNet> =
        cidrs.iter().map(|(n, _)| (key_of(n), *n)).collect();
    let mut by_prefix: HashMap<IpNet, Vec<&ConnectRule>> = HashMap::new();
    for (net, rule) in &cidrs {
        by_prefix.entry(*net).or_default().push(rule);
    }
    let mut out = Vec::new();
    for ((len, addr), net) in prefixes {
        let mut any: u16 = 0;
        let mut ports: BTreeMap<u16, u16> = BTreeMap::new();
        // Only the prefix itself and its supernets contain it: at most 33 (IPv4) or 129
        // (IPv6) lookups, where a pass over every rule per prefix made a task start
        // quadratic in its rules (0.3 s at 4,092 CIDR rules, release build).
        let wider = std::iter::successors(Some(net), |n| n.supernet().map(|s| s.trunc()));
        for rule in wider.filter_map(|w| by_prefix.get(&w)).flatten() {
            match &rule.ports {
                None => any |= bits(rule.protocol),
                Some(list) => list
                    .iter()
                    .for_each(|p| *ports.entry(*p).or_default() |= bits(rule.protocol)),
            }
        }
        if ports.len() > MAX_PORT_RULES {
            return Err(CompileError::TooManyPorts { cidr: net });
        }
        let mut rule = NetRule {
            any_port_protos: any,
            ..NetRule::default()
        };
        for (i, (port, protos)) in ports.into_iter().enumerate() {
            rule.ports[i] = PortRule { port, protos };
            rule.count += 1;
        }
        out.push((len, addr, rule));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn rule(cidr: &str, ports: Option<&[u16]>, protocol: RuleProtocol) -> ConnectRule {
        ConnectRule {
            target: ConnectTarget::Cidr(cidr.parse().expect("cidr")),
            ports: ports.map(<[u16]>::to_vec),
            protocol,
        }
    }

    /// The longest prefix matching an address, as the kernel's LPM trie picks it.
    fn lookup(rules: &[(u32, [u8; 16], NetRule)], addr: IpAddr) -> Option<&NetRule> {
        let key = match addr {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let key = u128::from_be_bytes(key);
        rules
            .iter()
            .filter(|(len, a, _)| {
                let mask = if *len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                key & mask == u128::from_be_bytes(*a) & mask
            })
            .max_by_key(|(len, _, _)| *len)
            .map(|(_, _, r)| r)
    }

    fn allows(rules: &[(u32, [u8; 16], NetRule)], addr: &str, port: u16, bit: u16) -> bool {
        lookup(rules, addr.parse().expect("ip")).is_some_and(|r| {
            r.any_port_protos & bit != 0
                || r.ports[..usize::from(r.count)]
                    .iter()
                    .any(|p| p.port == port && p.protos & bit != 0)
        })
    }

    #[test]
    fn narrower_prefixes_inherit_wider_rules() {
        let rules = net_rules(&[
            rule("10.0.0.0/8", Some(&[443]), RuleProtocol::Tcp),
            rule("10.1.0.0/16", Some(&[80]), RuleProtocol::Tcp),
            rule("127.0.0.53/32", Some(&[53]), RuleProtocol::Udp),
        ])
        .expect("compiles");
        let tcp = proto_bits::TCP;
        assert!(
            allows(&rules, "10.1.2.3", 443, tcp),
            "the /8 rule still applies inside the /16"
        );
        assert!(allows(&rules, "10.1.2.3", 80, tcp));
        assert!(
            !allows(&rules, "10.2.0.1", 80, tcp),
            "80 is only allowed inside the /16"
        );
        assert!(!allows(&rules, "11.0.0.1", 443, tcp));
        assert!(allows(&rules, "127.0.0.53", 53, proto_bits::UDP));
        assert!(
            !allows(&rules, "127.0.0.53", 53, tcp),
            "udp rule does not allow tcp"
        );
        assert!(
            allows(&rules, "::ffff:10.9.9.9", 443, tcp),
            "IPv4-mapped IPv6 is judged as IPv4"
        );
    }

    #[test]
    fn supernet_walk_merges_exactly_the_containing_rules() {
        // Nested and disjoint prefixes of both families, some repeated with other ports.
        let cidrs = [
            "0.0.0.0/0",
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.0/24",
            "10.1.2.3/32",
            "10.1.2.3/32",
            "10.2.0.0/15",
            "192.168.0.0/16",
            "192.168.7.128/25",
            "::/0",
            "2001:db8::/32",
            "2001:db8:1::/48",
            "2001:db8:1::1/128",
        ];
        let rules: Vec<ConnectRule> = cidrs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let port = u16::try_from(1000 + i).expect("port");
                let (ports, protocol) = match i % 3 {
                    0 => (None, RuleProtocol::Udp),
                    1 => (Some(vec![port]), RuleProtocol::Tcp),
                    _ => (Some(vec![port, 443]), RuleProtocol::Any),
                };
                rule(c, ports.as_deref(), protocol)
            })
            .collect();
        let compiled = net_rules(&rules).expect("compiles");
        for (len, addr, got) in &compiled {
            let net = cidrs
                .iter()
                .map(|c| c.parse::<IpNet>().expect("cidr").trunc())
                .find(|n| key_of(n) == (*len, *addr))
                .expect("a declared prefix");
            let (mut any, mut ports) = (0u16, BTreeMap::<u16, u16>::new());
            for r in &rules {
                let ConnectTarget::Cidr(wide) = &r.target else {
                    continue;
                };
                if contains(&wide.trunc(), &net) {
                    match &r.ports {
                        None => any |= bits(r.protocol),
                        Some(list) => {
                            for p in list {
                                *ports.entry(*p).or_default() |= bits(r.protocol);
                            }
                        }
                    }
                }
            }
            assert_eq!(got.any_port_protos, any, "{net}");
            let got_ports: BTreeMap<u16, u16> = got.ports[..usize::from(got.count)]
                .iter()
                .map(|p| (p.port, p.protos))
                .collect();
            assert_eq!(got_ports, ports, "{net}");
        }
        assert_eq!(
            compiled.len(),
            cidrs.len() - 1,
            "one entry per distinct prefix"
        );
    }

    #[test]
    fn port_free_rules_and_ipv6() {
        let rules = net_rules(&[rule("2001:db8::/32", None, RuleProtocol::Any)]).expect("compiles");
        assert!(allows(&rules, "2001:db8::1", 1, proto_bits::TCP));
        assert!(allows(&rules, "2001:db8::1", 9, proto_bits::UDP));
        assert!(!allows(&rules, "2001:db9::1", 1, proto_bits::TCP));
    }

    #[test]
    fn host_rules_keep_declaration_order_ports_and_protocol() {
        let host = |h: &str, ports: Option<&[u16]>, protocol| ConnectRule {
            target: ConnectTarget::Host(h.into()),
            ports: ports.map(<[u16]>::to_vec),
            protocol,
        };
        let rules = host_rules(&[
            host("a.example.test", Some(&[443, 80, 443]), RuleProtocol::Tcp),
            rule("10.0.0.0/8", None, RuleProtocol::Any),
            host("*.example.test", None, RuleProtocol::Udp),
        ])
        .expect("compiles");
        assert_eq!(rules.len(), 2, "CIDR rules are not host rules");
        assert_eq!(rules[0].count, 2, "duplicate ports merged");
        assert_eq!(
            (rules[0].ports[0].port, rules[0].ports[0].protos),
            (80, proto_bits::TCP)
        );
        assert_eq!(rules[0].ports[1].port, 443);
        assert_eq!(rules[0].any_port_protos, 0);
        assert_eq!(rules[1].any_port_protos, proto_bits::UDP);
        let many: Vec<ConnectRule> = (0..=MAX_HOST_RULES)
            .map(|i| host(&format!("h{i}.test"), None, RuleProtocol::Tcp))
            .collect();
        assert!(
            host_rules(&many).is_err(),
            "more host rules than the kernel keeps"
        );
    }

    #[test]
    fn too_many_ports_is_an_error_not_a_silent_cut() {
        let ports: Vec<u16> = (1..=17).collect();
        assert!(net_rules(&[rule("10.0.0.0/8", Some(&ports), RuleProtocol::Tcp)]).is_err());
    }

    #[test]
    fn expand_finds_literal_and_globbed_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = fs::canonicalize(dir.path()).expect("canon");
        fs::write(d.join("tool"), "").expect("write");
        fs::create_dir(d.join("sub")).expect("mkdir");
        fs::write(d.join("sub/key"), "").expect("write");
        let hard = d.join("hard");
        fs::hard_link(d.join("tool"), &hard).expect("link");
        let (ids, complete) = expand(&[d.join("tool").display().to_string()]);
        assert!(complete);
        assert_eq!(
            ids,
            vec![file_id(&hard).expect("id")],
            "a hard link is the same identity"
        );
        let (ids, complete) = expand(&[format!("{}/sub/**", d.display())]);
        assert!(!complete);
        assert_eq!(ids, vec![file_id(&d.join("sub/key")).expect("id")]);
        let (ids, _) = expand(&["**/.env".to_string()]);
        assert!(
            ids.is_empty(),
            "no bounded walk for a pattern without a literal directory"
        );
    }
}
