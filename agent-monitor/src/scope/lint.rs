//! Warnings about valid scopes that are probably not what their author meant (`check`).
//!
//! Each warning has a stable code (docs/SCOPES.md lists them) and, when the node can be
//! found again in the text, the line and column of the entry it is about. Whether two
//! globs overlap is decided on sample paths (each glob with its wildcards filled in), so a
//! warning is a hint for a reviewer, never a proof.

#[cfg(test)]
mod tests;

use std::fmt;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

use super::Scope;
use crate::policy::{BASELINE_READ, ConnectTarget, PolicySpec, RuleProtocol, compile_glob};

/// One warning about one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Warning {
    /// Stable short code, e.g. `exec-writable`.
    pub(crate) code: &'static str,
    /// 1-based line and column of the node it is about, when it could be found.
    pub(crate) at: Option<(usize, usize)>,
    pub(crate) scope: String,
    pub(crate) message: String,
}

impl fmt::Display for Warning {
    /// `LINE:COL: warning[CODE]: scope NAME: MESSAGE` (without the file).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, column)) = self.at {
            write!(f, "{line}:{column}: ")?;
        }
        write!(
            f,
            "warning[{}]: scope {}: {}",
            self.code, self.scope, self.message
        )
    }
}

/// Positions of the nodes warnings are about, read from the document's text. Only what
/// lints point at is read; anything else (and any shape that does not fit) is ignored.
#[derive(Debug, Default, Deserialize)]
struct Doc {
    #[serde(default)]
    spec: Option<SpecAt>,
}

type At = Spanned<IgnoredAny>;

#[derive(Debug, Default, Deserialize)]
struct SpecAt {
    #[serde(default)]
    select: Option<SelectAt>,
    #[serde(default)]
    exec: Option<ExecAt>,
    #[serde(default)]
    files: Option<FilesAt>,
    #[serde(default)]
    network: Option<NetworkAt>,
}

#[derive(Debug, Default, Deserialize)]
struct SelectAt {
    #[serde(default)]
    cgroup: Option<At>,
}

#[derive(Debug, Default, Deserialize)]
struct ExecAt {
    #[serde(default)]
    allow: Option<Vec<At>>,
}

#[derive(Debug, Default, Deserialize)]
struct FilesAt {
    #[serde(default)]
    read: Option<Vec<At>>,
    #[serde(default)]
    write: Option<Vec<At>>,
    #[serde(default)]
    deny: Option<Vec<At>>,
}

#[derive(Debug, Default, Deserialize)]
struct NetworkAt {
    #[serde(default)]
    connect: Option<Vec<At>>,
}

/// Where each node is: `None` when the text could not be read again for positions.
struct Positions(Option<SpecAt>);

impl Positions {
    fn read(text: &str) -> Self {
        let docs = serde_saphyr::from_multiple_with_options::<Doc>(text, super::yaml_options());
        Self(docs.ok().and_then(|docs| docs.into_iter().next()?.spec))
    }

    fn of(at: &At) -> Option<(usize, usize)> {
        let line = usize::try_from(at.referenced.line()).ok()?;
        let column = usize::try_from(at.referenced.column()).ok()?;
        (line > 0).then_some((line, column))
    }

    fn entry(list: Option<&Vec<At>>, index: usize) -> Option<(usize, usize)> {
        Self::of(list?.get(index)?)
    }

    fn exec(&self, index: usize) -> Option<(usize, usize)> {
        let spec = self.0.as_ref()?;
        Self::entry(spec.exec.as_ref()?.allow.as_ref(), index)
    }

    fn files(&self, list: &str, index: usize) -> Option<(usize, usize)> {
        let files = self.0.as_ref()?.files.as_ref()?;
        let list = match list {
            "read" => files.read.as_ref(),
            "write" => files.write.as_ref(),
            _ => files.deny.as_ref(),
        };
        Self::entry(list, index)
    }

    fn connect(&self, index: usize) -> Option<(usize, usize)> {
        let network = self.0.as_ref()?.network.as_ref()?;
        Self::entry(network.connect.as_ref(), index)
    }

    fn select(&self) -> Option<(usize, usize)> {
        Self::of(self.0.as_ref()?.select.as_ref()?.cgroup.as_ref()?)
    }
}

const GLOB_CHARS: &[char] = &['*', '?', '[', '{'];

/// Whether `glob` matches `path` as the engine does (a trailing `/**` also matches the
/// directory itself).
fn matches(glob: &str, path: &str) -> bool {
    glob.strip_suffix("/**") == Some(path)
        || compile_glob(glob).is_ok_and(|g| g.compile_matcher().is_match(path))
}

/// A path `glob` matches: its wildcards filled in (`*` and `**` as `x`, a class or an
/// alternation as its first choice).
fn sample(glob: &str) -> String {
    let mut out = String::new();
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                out.push('x');
            }
            '?' => out.push('x'),
            '[' => {
                let negated = chars.next_if(|c| matches!(c, '!' | '^')).is_some();
                let mut class = String::new();
                for c in chars.by_ref() {
                    if c == ']' && !class.is_empty() {
                        break;
                    }
                    class.push(c);
                }
                let pick = if negated {
                    "xyz0".chars().find(|c| !class.contains(*c))
                } else {
                    class.chars().next()
                };
                out.push(pick.unwrap_or('x'));
            }
            '{' => {
                let mut depth = 1;
                let mut taking = true;
                for c in chars.by_ref() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 1 => break,
                        '}' => depth -= 1,
                        ',' if depth == 1 => taking = false,
                        _ if taking => out.push(c),
                        _ => {}
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The directory a glob starts from: its literal part up to the last `/` before a
/// wildcard.
fn literal_dir(glob: &str) -> &str {
    let literal = glob.find(GLOB_CHARS).map_or(glob, |at| &glob[..at]);
    literal.rfind('/').map_or("", |at| &literal[..at])
}

/// Whether some path is matched by both globs, judged on samples: each glob's own sample,
/// and a suffix glob (`**/.env`) placed under the other's directory.
fn overlap(a: &str, b: &str) -> bool {
    let mut candidates = vec![sample(a), sample(b)];
    for (suffix, other) in [(a, b), (b, a)] {
        if let Some(rest) = suffix.strip_prefix("**/") {
            candidates.push(format!("{}/{}", literal_dir(other), sample(rest)));
        }
    }
    candidates
        .iter()
        .any(|path| matches(a, path) && matches(b, path))
}

/// Lints one scope. `text` is its document (other documents may be there, blanked or
/// not: positions are read from its first document); `earlier` are the scopes before it
/// in the same file, which the daemon tries first when it adopts a cgroup.
#[must_use]
pub(crate) fn lint(scope: &Scope, text: &str, earlier: &[Scope]) -> Vec<Warning> {
    let at = Positions::read(text);
    let spec = scope.policy.declared();
    let mut out = Lints {
        scope: &scope.name,
        out: Vec::new(),
    };
    exec_writable(&mut out, spec, &at);
    everything(&mut out, spec, &at);
    deny_shadows(&mut out, spec, &at);
    connect_any(&mut out, spec, &at);
    host_dns(&mut out, spec, &at);
    select_unused(&mut out, scope, earlier, &at);
    ask(&mut out, scope);
    out.out
}

/// `onViolation: ask` trades Landlock's refusal before the fact for a hold after the
/// syscall, and some violations can never be asked about.
fn ask(out: &mut Lints<'_>, scope: &Scope) {
    if scope.on_violation != crate::scope::OnViolation::Ask {
        return;
    }
    if scope.mode != crate::scope::Mode::Enforce {
        out.warn(
            "ask-audit",
            None,
            "onViolation: ask has no effect in audit mode (nothing is held)".to_owned(),
        );
        return;
    }
    out.warn(
        "ask-holds",
        None,
        "onViolation: ask gives exec tasks no Landlock file rules: an out-of-scope open is \
         held (stopped at the syscall's exit) for a decision instead of refused before it \
         happens; files.deny and escape syscalls are never asked (they stay kills or \
         refusals), and an unlink, rename, truncate or link that already happened is \
         handled as with kill-process"
            .to_owned(),
    );
}

struct Lints<'a> {
    scope: &'a str,
    out: Vec<Warning>,
}

impl Lints<'_> {
    fn warn(&mut self, code: &'static str, at: Option<(usize, usize)>, message: String) {
        self.out.push(Warning {
            code,
            at,
            scope: self.scope.to_owned(),
            message,
        });
    }
}

fn exec_writable(out: &mut Lints<'_>, spec: &PolicySpec, at: &Positions) {
    for (index, exec) in spec.exec_allow.iter().enumerate() {
        let writable = spec.files.write.iter().enumerate().find(|(_, write)| {
            overlap(write, exec) || matches(write, literal_dir(exec)) && exec.contains(GLOB_CHARS)
        });
        if let Some((w, write)) = writable {
            out.warn(
                "exec-writable",
                at.exec(index),
                format!(
                    "exec.allow[{index}] {exec} is writable (files.write[{w}] {write}): the agent could run anything it writes there"
                ),
            );
        }
    }
}

fn everything(out: &mut Lints<'_>, spec: &PolicySpec, at: &Positions) {
    for (list, entries, code) in [
        ("read", &spec.files.read, "read-everything"),
        ("write", &spec.files.write, "write-everything"),
    ] {
        for (index, glob) in entries.iter().enumerate() {
            if glob == "/**" {
                out.warn(
                    code,
                    at.files(list, index),
                    format!(
                        "files.{list}[{index}] {glob} allows {list}s of every file; only files.deny limits it"
                    ),
                );
            }
        }
    }
}

fn deny_shadows(out: &mut Lints<'_>, spec: &PolicySpec, at: &Positions) {
    let files = &spec.files;
    let allowed: Vec<&str> = files
        .read
        .iter()
        .chain(&files.write)
        .map(String::as_str)
        .collect();
    let reachable: Vec<&str> = allowed
        .iter()
        .copied()
        .chain(files.list.iter().map(String::as_str))
        .chain(spec.exec_allow.iter().map(String::as_str))
        .chain(BASELINE_READ.iter().copied().filter(|_| files.baseline))
        .collect();
    for (index, deny) in files.deny.iter().enumerate() {
        let place = at.files("deny", index);
        let everything = deny == "/**"
            || deny == "**"
            || (!allowed.is_empty() && allowed.iter().all(|glob| matches(deny, &sample(glob))));
        if everything {
            out.warn(
                "deny-shadows-everything",
                place,
                format!(
                    "files.deny[{index}] {deny} covers every files.read and files.write entry: the scope allows no file access beyond what the deny leaves"
                ),
            );
        } else if !reachable.iter().any(|glob| overlap(glob, deny)) {
            out.warn(
                "deny-shadows-nothing",
                place,
                format!(
                    "files.deny[{index}] {deny} matches nothing files.read, files.write, files.list, exec.allow{} allow: it denies nothing more",
                    if files.baseline { " or the baseline" } else { "" }
                ),
            );
        }
    }
}

fn connect_any(out: &mut Lints<'_>, spec: &PolicySpec, at: &Positions) {
    for (index, rule) in spec.connect.iter().enumerate() {
        if let ConnectTarget::Cidr(net) = rule.target
            && net.prefix_len() == 0
        {
            out.warn(
                "connect-any-address",
                at.connect(index),
                format!("network.connect[{index}] {net} allows every address"),
            );
        }
    }
}

/// With `host:` rules, the kernel sends every UDP datagram to port 53 to the agent's own
/// resolver, whatever server it names: a UDP port-53 `cidr:` rule then never lets the
/// agent reach that server over UDP, and a reviewer may think it does.
fn host_dns(out: &mut Lints<'_>, spec: &PolicySpec, at: &Positions) {
    let hosts = spec
        .connect
        .iter()
        .any(|rule| matches!(rule.target, ConnectTarget::Host(_)));
    if !hosts {
        return;
    }
    for (index, rule) in spec.connect.iter().enumerate() {
        let ConnectTarget::Cidr(net) = rule.target else {
            continue;
        };
        let udp = matches!(rule.protocol, RuleProtocol::Udp | RuleProtocol::Any);
        let dns = rule.ports.as_ref().is_none_or(|ports| ports.contains(&53));
        if udp && dns {
            out.warn(
                "host-dns-redirected",
                at.connect(index),
                format!(
                    "network.connect[{index}] allows UDP port 53 to {net}, but with host: rules every UDP datagram to port 53 goes to the agent's own resolver instead (which answers only names the host: rules allow): this rule never reaches a DNS server"
                ),
            );
        }
    }
}

/// A `select.cgroup` glob that can never adopt a cgroup: one with a component no cgroup
/// path has (empty, `.` or `..`), or one an earlier scope of the same file already covers
/// (the daemon adopts with the first scope that matches).
fn select_unused(out: &mut Lints<'_>, scope: &Scope, earlier: &[Scope], at: &Positions) {
    let Some(cgroup) = scope
        .spec
        .select
        .as_ref()
        .and_then(|select| select.cgroup.as_ref())
    else {
        return;
    };
    let glob = cgroup.to_string();
    let bad = glob.len() > 1
        && glob
            .split('/')
            .skip(1)
            .any(|part| matches!(part, "" | "." | ".."));
    if bad {
        out.warn(
            "select-unused",
            at.select(),
            format!(
                "select.cgroup {glob} can never match: cgroup paths have no empty, `.` or `..` component"
            ),
        );
        return;
    }
    let before = earlier.iter().find_map(|other| {
        let theirs = other.spec.select.as_ref()?.cgroup.as_ref()?.to_string();
        (theirs == glob || matches(&theirs, &sample(&glob))).then_some((other, theirs))
    });
    if let Some((other, theirs)) = before {
        out.warn(
            "select-unused",
            at.select(),
            format!(
                "select.cgroup {glob} is covered by scope {}'s select.cgroup {theirs} earlier in the file: the daemon adopts a matching cgroup with the first scope",
                other.name
            ),
        );
    }
}
