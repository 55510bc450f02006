//! Engine tests, mostly against the example policy in the README and docs/SCOPES.md.

use std::net::IpAddr;

use super::*;

mod dirs;
mod files;
mod net;

const TGID: u32 = 4242;
const CTX: Context = Context { tgid: TGID };

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn cidr(net: &str, ports: Option<&[u16]>, protocol: RuleProtocol) -> ConnectRule {
    ConnectRule {
        target: ConnectTarget::Cidr(net.parse().unwrap()),
        ports: ports.map(<[u16]>::to_vec),
        protocol,
    }
}

fn example_spec() -> PolicySpec {
    PolicySpec {
        exec_allow: strings(&["/usr/bin/git", "/usr/bin/python3*", "/bin/sh"]),
        files: FileRules {
            baseline: true,
            read: strings(&["/workspace/**", "/etc/ssl/**"]),
            write: strings(&["/workspace/**", "/tmp/**"]),
            deny: strings(&["/etc/shadow", "/root/.ssh/**", "**/.env"]),
            list: strings(&["/srv"]),
        },
        connect: vec![
            cidr("10.0.0.0/8", Some(&[443]), RuleProtocol::Tcp),
            ConnectRule {
                target: ConnectTarget::Host("api.github.com".to_owned()),
                ports: Some(vec![443]),
                protocol: RuleProtocol::Tcp,
            },
            cidr("127.0.0.53/32", Some(&[53]), RuleProtocol::Udp),
        ],
        bind: vec![8080],
    }
}

fn example() -> CompiledPolicy {
    CompiledPolicy::compile(example_spec()).unwrap()
}

fn exec(path: &str) -> Activity<'_> {
    Activity::Exec { path }
}

fn file(path: &str, access: FileAccess) -> Activity<'_> {
    Activity::File { path, access }
}

fn net(op: NetOp, addr: &str, port: u16, protocol: Protocol) -> Activity<'static> {
    let addr: IpAddr = addr.parse().unwrap();
    Activity::Net {
        op,
        addr,
        port,
        protocol,
    }
}

/// The violation, or a panic naming the activity that was unexpectedly allowed.
fn violation(policy: &CompiledPolicy, activity: &Activity<'_>) -> Violation {
    match policy.evaluate(activity, CTX) {
        Verdict::Violation(v) => v,
        Verdict::Allowed => panic!("{activity:?} was allowed"),
    }
}

fn allowed(policy: &CompiledPolicy, activity: &Activity<'_>) -> bool {
    policy.evaluate(activity, CTX) == Verdict::Allowed
}

#[test]
fn exec_allow_list() {
    let p = example();
    assert!(allowed(&p, &exec("/usr/bin/git")));
    assert!(allowed(&p, &exec("/bin/sh")));
    assert!(allowed(&p, &exec("/usr/bin/python3.11")));
    assert!(!allowed(&p, &exec("/usr/bin/python3/x")));
    assert!(!allowed(&p, &exec("/usr/bin/git2")));
    let v = violation(&p, &exec("/usr/bin/curl"));
    assert_eq!(v.dimension, Dimension::Exec);
    assert_eq!(v.rule, "exec.allow");
    assert_eq!(v.reason, "/usr/bin/curl is not in exec.allow");
}

#[test]
fn glob_semantics() {
    let p = example();
    for path in [
        "/workspace",
        "/workspace/x",
        "/workspace/a/b/c",
        "/workspace/.git/HEAD",
    ] {
        assert!(allowed(&p, &file(path, FileAccess::Write)), "{path}");
    }
    assert!(!allowed(&p, &file("/workspace2", FileAccess::Read)));
    assert!(!allowed(&p, &file("/workspacex/a", FileAccess::Read)));
    assert_eq!(
        violation(&p, &file("/.env", FileAccess::Read)).rule,
        "files.deny[2]: **/.env"
    );
    assert_eq!(
        violation(&p, &file("/workspace/app/.env", FileAccess::Read)).rule,
        "files.deny[2]: **/.env"
    );
    // `**/.env` names the file, not a suffix of its name.
    assert!(allowed(&p, &file("/workspace/app/x.env", FileAccess::Read)));
    // `*` and `?` stay within one component.
    let q = CompiledPolicy::compile(PolicySpec {
        exec_allow: strings(&["/opt/*/bin/tool", "/opt/?"]),
        ..example_spec()
    })
    .unwrap();
    assert!(allowed(&q, &exec("/opt/a/bin/tool")));
    assert!(!allowed(&q, &exec("/opt/a/b/bin/tool")));
    assert!(allowed(&q, &exec("/opt/x")));
    assert!(!allowed(&q, &exec("/opt/xy")));
    // A middle `**` spans zero or more components.
    let r = CompiledPolicy::compile(PolicySpec {
        exec_allow: strings(&["/nix/store/**/bin/*"]),
        ..example_spec()
    })
    .unwrap();
    assert!(allowed(&r, &exec("/nix/store/bin/git")));
    assert!(allowed(&r, &exec("/nix/store/abc-git/bin/git")));
    assert!(!allowed(&r, &exec("/nix/store/abc-git/lib/git")));
}

#[test]
fn empty_policy_allows_nothing_but_the_baseline() {
    let p = CompiledPolicy::compile(PolicySpec {
        exec_allow: vec![],
        files: FileRules {
            baseline: true,
            read: vec![],
            write: vec![],
            deny: vec![],
            list: vec![],
        },
        connect: vec![],
        bind: vec![],
    })
    .unwrap();
    assert_eq!(violation(&p, &exec("/bin/sh")).rule, "exec.allow");
    assert_eq!(
        violation(&p, &file("/workspace/a", FileAccess::Read)).rule,
        "files.read"
    );
    assert_eq!(
        violation(&p, &net(NetOp::Connect, "10.0.0.1", 1, Protocol::Tcp)).rule,
        "network.connect"
    );
    assert_eq!(
        violation(&p, &net(NetOp::Bind, "0.0.0.0", 1, Protocol::Tcp)).rule,
        "network.bind"
    );
    assert!(allowed(
        &p,
        &file("/lib/x86_64-linux-gnu/libc.so.6", FileAccess::Read)
    ));
}

#[test]
fn declared_entries_are_exposed() {
    let p = example();
    assert_eq!(p.declared(), &example_spec());
    assert_eq!(p.declared().files.deny[1], "/root/.ssh/**");
    assert_eq!(p.declared().bind, [8080]);
}

#[test]
fn compile_rejects_bad_globs_and_ports() {
    let with_exec = |glob: &str| {
        CompiledPolicy::compile(PolicySpec {
            exec_allow: strings(&[glob]),
            ..example_spec()
        })
        .unwrap_err()
    };
    assert!(matches!(with_exec(""), PolicyError::EmptyGlob));
    assert!(matches!(
        with_exec("usr/bin/git"),
        PolicyError::RelativeGlob { .. }
    ));
    assert!(matches!(
        with_exec("*.sh"),
        PolicyError::RelativeGlob { .. }
    ));
    assert!(matches!(
        with_exec("/usr/bin/"),
        PolicyError::NonCanonicalGlob { .. }
    ));
    assert!(matches!(
        with_exec("/usr//bin"),
        PolicyError::NonCanonicalGlob { .. }
    ));
    assert!(matches!(
        with_exec("/usr/../bin"),
        PolicyError::NonCanonicalGlob { .. }
    ));
    assert!(matches!(
        with_exec("/usr/./bin"),
        PolicyError::NonCanonicalGlob { .. }
    ));
    assert!(matches!(
        with_exec("/usr/bin/[a"),
        PolicyError::InvalidGlob { .. }
    ));
    assert!(check_path_glob("/").is_ok());
    assert!(check_path_glob("**/.env").is_ok());
    assert!(check_path_glob("/**").is_ok());

    let err = CompiledPolicy::compile(PolicySpec {
        bind: vec![0],
        ..example_spec()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "network.bind: port 0 is not a port (ports are 1..=65535)"
    );
    let err = CompiledPolicy::compile(PolicySpec {
        connect: vec![cidr("10.0.0.0/8", Some(&[]), RuleProtocol::Tcp)],
        ..example_spec()
    })
    .unwrap_err();
    assert!(
        matches!(err, PolicyError::EmptyPorts { ref rule } if rule == "network.connect[0].ports")
    );
}

#[test]
fn violation_serializes_lowercase() {
    let v = violation(&example(), &exec("/usr/bin/curl"));
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["dimension"], "exec");
    assert_eq!(serde_json::to_value(FileAccess::Unlink).unwrap(), "unlink");
    assert_eq!(serde_json::to_value(NetOp::Bind).unwrap(), "bind");
    let rule = serde_json::to_value(&example_spec().connect[2]).unwrap();
    assert_eq!(
        rule,
        serde_json::json!({"cidr": "127.0.0.53/32", "ports": [53], "protocol": "udp"})
    );
}

fn refs(items: &[(RuleList, usize)]) -> Vec<RuleRef> {
    items
        .iter()
        .map(|&(list, index)| RuleRef { list, index })
        .collect()
}

#[test]
fn matching_names_every_declared_entry_an_activity_touches() {
    use RuleList::{Bind, Connect, ExecAllow, FilesDeny, FilesList, FilesRead, FilesWrite};
    let p = example();
    assert_eq!(
        p.matching(&file("/workspace/.env", FileAccess::Read)),
        refs(&[(FilesRead, 0), (FilesWrite, 0), (FilesDeny, 2)])
    );
    assert_eq!(
        p.matching(&file("/workspace/a", FileAccess::Write)),
        refs(&[(FilesWrite, 0)]),
        "a write does not use files.read"
    );
    assert_eq!(
        p.matching(&file("/srv", FileAccess::List)),
        refs(&[(FilesList, 0)])
    );
    assert_eq!(
        p.matching(&Activity::Rename {
            from: "/tmp/a",
            to: "/workspace/b"
        }),
        refs(&[(FilesWrite, 0), (FilesWrite, 1)])
    );
    assert_eq!(
        p.matching(&exec("/usr/bin/python3.12")),
        refs(&[(ExecAllow, 1)])
    );
    assert!(p.matching(&exec("/usr/bin/curl")).is_empty());
    assert_eq!(
        p.matching(&net(NetOp::Connect, "::ffff:10.1.2.3", 443, Protocol::Tcp)),
        refs(&[(Connect, 0)])
    );
    assert!(
        p.matching(&net(NetOp::Connect, "10.1.2.3", 443, Protocol::Udp))
            .is_empty()
    );
    assert_eq!(
        p.matching(&net(NetOp::Bind, "0.0.0.0", 8080, Protocol::Tcp)),
        refs(&[(Bind, 0)])
    );
    assert_eq!(
        p.hosts_matching("api.github.com", 443, Protocol::Tcp),
        refs(&[(Connect, 1)])
    );
    assert!(
        p.hosts_matching("api.github.com", 80, Protocol::Tcp)
            .is_empty()
    );
    assert!(
        p.hosts_matching("github.com", 443, Protocol::Tcp)
            .is_empty()
    );
}

#[test]
fn an_exec_alias_is_its_declared_entry() {
    let p = example()
        .with_exec_aliases(&[("/usr/bin/dash".to_owned(), 2)])
        .unwrap();
    assert_eq!(p.evaluate(&exec("/usr/bin/dash"), CTX), Verdict::Allowed);
    assert_eq!(
        p.matching(&exec("/usr/bin/dash")),
        refs(&[(RuleList::ExecAllow, 2)])
    );
    assert_eq!(
        p.declared().exec_allow.len(),
        3,
        "aliases are not declared entries"
    );
}
