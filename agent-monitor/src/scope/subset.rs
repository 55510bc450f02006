//! The proof that a sub-scope (an MCP tool's `spec.tools` entry, a call's scope) allows
//! nothing its parent does not: every entry is checked against the parent's entries of the
//! dimensions that allow the same thing, by rules that are sound and simple. An entry none
//! of them provably covers is a widening, named in the error; being unsure refuses.
//! `files.deny` of the parent is never lifted (the sub-scope's compiled form adds it).

use std::fmt;

use ipnet::IpNet;

use super::manifest::{ExecSpec, FilesSpec, NetworkSpec};
use super::values::PathGlob;
use crate::policy::{ConnectRule, ConnectTarget, RuleProtocol};

/// The lists a sub-scope declares (a tool's or a call's).
pub(crate) struct Lists<'a> {
    pub(crate) exec: &'a ExecSpec,
    pub(crate) files: &'a FilesSpec,
    pub(crate) network: &'a NetworkSpec,
}

impl<'a> Lists<'a> {
    pub(crate) fn of(spec: &'a super::ScopeSpec) -> Self {
        Self {
            exec: &spec.exec,
            files: &spec.files,
            network: &spec.network,
        }
    }
}

/// An entry of the sub-scope that its parent does not provably allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Widening {
    /// `files.write[0]: /ws/**`.
    pub(crate) entry: String,
    pub(crate) why: &'static str,
}

impl fmt::Display for Widening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} widens the parent scope: {}", self.entry, self.why)
    }
}

/// Every entry of `sub` is allowed by `parent`; the first one that is not, otherwise.
pub(crate) fn check(parent: &Lists<'_>, sub: &Lists<'_>) -> Result<(), Widening> {
    let widening = |list: &str, i: usize, value: &dyn fmt::Display, why| Widening {
        entry: format!("{list}[{i}]: {value}"),
        why,
    };
    if sub.files.baseline && !parent.files.baseline {
        return Err(Widening {
            entry: "files.baseline: true".into(),
            why: "the parent scope has the runtime baseline off",
        });
    }
    let pf = parent.files;
    // What the policy lets each list allow: writable implies readable, readable (and
    // exec.allow) implies listable.
    let exec: Vec<&PathGlob> = parent.exec.allow.iter().collect();
    let write: Vec<&PathGlob> = pf.write.iter().collect();
    let read: Vec<&PathGlob> = pf
        .read
        .iter()
        .chain(&pf.write)
        .chain(&parent.exec.allow)
        .collect();
    let list: Vec<&PathGlob> = read.iter().copied().chain(&pf.list).collect();
    let checks: [(&str, &[PathGlob], &[&PathGlob], &'static str); 4] = [
        (
            "exec.allow",
            &sub.exec.allow,
            &exec,
            "no exec.allow entry of the parent covers it",
        ),
        (
            "files.write",
            &sub.files.write,
            &write,
            "no files.write entry of the parent covers it",
        ),
        (
            "files.read",
            &sub.files.read,
            &read,
            "no files.read, files.write or exec.allow entry of the parent covers it",
        ),
        (
            "files.list",
            &sub.files.list,
            &list,
            "no files.list, files.read, files.write or exec.allow entry of the parent covers it",
        ),
    ];
    for (name, entries, by, why) in checks {
        for (i, entry) in entries.iter().enumerate() {
            if !by.iter().any(|p| glob_covers(p.as_str(), entry.as_str())) {
                return Err(widening(name, i, entry, why));
            }
        }
    }
    for (i, rule) in sub.network.connect.iter().enumerate() {
        if !parent
            .network
            .connect
            .iter()
            .any(|p| rule_covers(&p.0, &rule.0))
        {
            return Err(widening(
                "network.connect",
                i,
                &rule_text(&rule.0),
                "no network.connect rule of the parent allows all of its destinations, ports \
                 and protocols",
            ));
        }
    }
    for (i, port) in sub.network.bind.iter().enumerate() {
        if !parent.network.bind.iter().any(|p| p.0 == port.0) {
            return Err(widening(
                "network.bind",
                i,
                &port.0,
                "the parent's network.bind does not list the port",
            ));
        }
    }
    Ok(())
}

const GLOB_CHARS: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

/// Whether every path `entry` matches is matched by `parent` (globs compiled with `*` not
/// crossing `/`): the same glob; `DIR/**` over anything under `DIR/`; `DIR/*` over one
/// component under `DIR/` without `**`. `DIR` must be literal.
pub(crate) fn glob_covers(parent: &str, entry: &str) -> bool {
    if parent == entry {
        return true;
    }
    if let Some(dir) = parent.strip_suffix("**")
        && dir.ends_with('/')
        && !dir.contains(GLOB_CHARS)
    {
        return entry.starts_with(dir);
    }
    if let Some(dir) = parent.strip_suffix('*')
        && dir.ends_with('/')
        && !dir.contains(GLOB_CHARS)
        && let Some(rest) = entry.strip_prefix(dir)
    {
        return !rest.is_empty() && !rest.contains('/') && !rest.contains("**");
    }
    false
}

/// Whether `parent` allows every destination, port and protocol `rule` does.
fn rule_covers(parent: &ConnectRule, rule: &ConnectRule) -> bool {
    let protocol = parent.protocol == RuleProtocol::Any || parent.protocol == rule.protocol;
    let ports = match (&parent.ports, &rule.ports) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(p), Some(r)) => r.iter().all(|port| p.contains(port)),
    };
    let target = match (&parent.target, &rule.target) {
        (ConnectTarget::Cidr(p), ConnectTarget::Cidr(r)) => cidr_covers(p, r),
        (ConnectTarget::Host(p), ConnectTarget::Host(r)) => host_covers(p, r),
        _ => false,
    };
    protocol && ports && target
}

fn cidr_covers(parent: &IpNet, net: &IpNet) -> bool {
    parent.contains(net)
}

/// `*.example.com` covers `a.example.com` and `*.a.example.com`; a name covers itself.
fn host_covers(parent: &str, host: &str) -> bool {
    if parent == host {
        return true;
    }
    parent.strip_prefix("*.").is_some_and(|domain| {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        bare.strip_suffix(domain)
            .is_some_and(|label| label.ends_with('.') && label.len() > 1)
    })
}

fn rule_text(rule: &ConnectRule) -> String {
    serde_json::to_string(rule).unwrap_or_else(|_| "a connect rule".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_cover_only_what_is_provably_under_them() {
        assert!(glob_covers("/ws/**", "/ws/out/**"));
        assert!(glob_covers("/ws/**", "/ws/a.txt"));
        assert!(glob_covers("/**", "/etc/passwd"));
        assert!(glob_covers("/ws/*", "/ws/a.txt"));
        assert!(glob_covers("/ws/*", "/ws/*.md"));
        assert!(glob_covers("/ws/a.txt", "/ws/a.txt"));
        assert!(
            !glob_covers("/ws/**", "/ws"),
            "the directory itself is not under it"
        );
        assert!(!glob_covers("/ws/**", "/wsx/a"));
        assert!(!glob_covers("/ws/*", "/ws/a/b"));
        assert!(!glob_covers("/ws/*", "/ws/**"));
        assert!(!glob_covers("/ws/a.txt", "/ws/*"));
        assert!(
            !glob_covers("/w*/**", "/ws/a"),
            "unsure: a glob in the directory"
        );
        assert!(!glob_covers("/ws/**", "**/a"));
    }

    #[test]
    fn hosts_and_cidrs() {
        assert!(host_covers("*.example.com", "api.example.com"));
        assert!(host_covers("*.example.com", "*.api.example.com"));
        assert!(!host_covers("*.example.com", "example.com"));
        assert!(!host_covers("*.example.com", "badexample.com"));
        assert!(!host_covers("api.example.com", "*.example.com"));
        let net = |s: &str| s.parse::<IpNet>().expect("net");
        assert!(cidr_covers(&net("10.0.0.0/8"), &net("10.1.0.0/16")));
        assert!(!cidr_covers(&net("10.1.0.0/16"), &net("10.0.0.0/8")));
    }

    const SCOPE: &str = "apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {name: srv, owner: o}
spec:
  mode: enforce
  files:
    read: [/ws/**]
    write: [/ws/out/**]
    deny: [/ws/.env]
  network:
    connect: [{cidr: 10.0.0.0/8, ports: [443]}]
  tools:
    read_text_file:
      files: {read: [/ws/**]}
TOOL
";

    fn parse(tool: &str) -> Result<Vec<crate::scope::Scope>, crate::scope::ScopeError> {
        crate::scope::parse_str(&SCOPE.replace("TOOL", tool), std::path::Path::new("t.yaml"))
    }

    #[test]
    fn a_tool_scope_compiles_with_the_parents_deny() {
        let scopes =
            parse("    fetch:\n      network: {connect: [{cidr: 10.1.0.0/16, ports: [443]}]}")
                .expect("a subset compiles");
        let tool = &scopes[0].tools["read_text_file"];
        assert_eq!(tool.name, "srv");
        assert_eq!(tool.owner, "o");
        assert!(
            tool.spec
                .files
                .deny
                .iter()
                .any(|d| d.as_str() == "/ws/.env"),
            "the parent's deny stays in force"
        );
        assert!(tool.spec.files.write.is_empty());
        assert!(scopes[0].tools.contains_key("fetch"));
    }

    #[test]
    fn a_widening_tool_is_refused_naming_the_entry() {
        for (tool, entry) in [
            (
                "    w:\n      files: {write: [/ws/**]}",
                "files.write[0]: /ws/**",
            ),
            (
                "    r:\n      files: {read: [/etc/**]}",
                "files.read[0]: /etc/**",
            ),
            (
                "    x:\n      exec: {allow: [/bin/sh]}",
                "exec.allow[0]: /bin/sh",
            ),
            (
                "    n:\n      network: {connect: [{cidr: 10.0.0.0/8, ports: [80]}]}",
                "network.connect[0]",
            ),
            (
                "    b:\n      network: {bind: [8080]}",
                "network.bind[0]: 8080",
            ),
        ] {
            let e = parse(tool).expect_err(tool).to_string();
            assert!(
                e.contains(entry) && e.contains("spec.tools."),
                "{tool}: {e}"
            );
        }
    }
}
