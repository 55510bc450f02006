//! The network dimension.

use super::*;

#[test]
fn connect_by_cidr_port_and_protocol() {
    let p = example();
    assert!(allowed(
        &p,
        &net(NetOp::Connect, "10.1.2.3", 443, Protocol::Tcp)
    ));
    assert!(allowed(
        &p,
        &net(NetOp::Send, "10.255.255.255", 443, Protocol::Tcp)
    ));
    assert!(allowed(
        &p,
        &net(NetOp::Send, "127.0.0.53", 53, Protocol::Udp)
    ));
    let v = violation(&p, &net(NetOp::Connect, "10.1.2.3", 80, Protocol::Tcp));
    assert_eq!(v.dimension, Dimension::Network);
    assert_eq!(v.rule, "network.connect");
    assert_eq!(
        v.reason,
        "connect to 10.1.2.3:80 (tcp) is not in network.connect"
    );
    let v = violation(&p, &net(NetOp::Connect, "11.0.0.1", 443, Protocol::Tcp));
    assert_eq!(v.rule, "network.connect");
    // Protocol mismatch, both ways.
    let v = violation(&p, &net(NetOp::Send, "10.1.2.3", 443, Protocol::Udp));
    assert_eq!(
        v.reason,
        "send to 10.1.2.3:443 (udp) is not in network.connect"
    );
    assert!(!allowed(
        &p,
        &net(NetOp::Connect, "127.0.0.53", 53, Protocol::Tcp)
    ));
    // Loopback is not special.
    assert!(!allowed(
        &p,
        &net(NetOp::Connect, "127.0.0.1", 443, Protocol::Tcp)
    ));
    assert!(!allowed(
        &p,
        &net(NetOp::Connect, "::1", 443, Protocol::Tcp)
    ));
}

#[test]
fn ipv4_mapped_ipv6_is_judged_as_ipv4() {
    let p = example();
    assert!(allowed(
        &p,
        &net(NetOp::Connect, "::ffff:10.9.8.7", 443, Protocol::Tcp)
    ));
    let v = violation(
        &p,
        &net(NetOp::Connect, "::ffff:11.0.0.1", 443, Protocol::Tcp),
    );
    assert_eq!(
        v.reason,
        "connect to 11.0.0.1:443 (tcp) is not in network.connect"
    );
    // A v6 rule written in mapped form admits the v4 peer too.
    let q = CompiledPolicy::compile(PolicySpec {
        connect: vec![cidr("::ffff:192.168.0.0/112", None, RuleProtocol::Tcp)],
        ..example_spec()
    })
    .unwrap();
    assert!(allowed(
        &q,
        &net(NetOp::Connect, "192.168.3.4", 22, Protocol::Tcp)
    ));
    assert!(!allowed(
        &q,
        &net(NetOp::Connect, "192.169.0.1", 22, Protocol::Tcp)
    ));
}

#[test]
fn ipv6_rules_and_absent_ports() {
    let p = CompiledPolicy::compile(PolicySpec {
        connect: vec![
            cidr("2001:db8::/32", None, RuleProtocol::Any),
            cidr("192.0.2.0/24", None, RuleProtocol::Tcp),
        ],
        ..example_spec()
    })
    .unwrap();
    assert!(allowed(
        &p,
        &net(NetOp::Connect, "2001:db8::1", 1, Protocol::Tcp)
    ));
    assert!(allowed(
        &p,
        &net(NetOp::Send, "2001:db8:ffff::1", 65535, Protocol::Udp)
    ));
    assert!(allowed(
        &p,
        &net(NetOp::Send, "2001:db8::1", 0, Protocol::Other(132))
    ));
    assert!(allowed(
        &p,
        &net(NetOp::Connect, "192.0.2.9", 8443, Protocol::Tcp)
    ));
    assert!(!allowed(
        &p,
        &net(NetOp::Connect, "192.0.2.9", 8443, Protocol::Other(132))
    ));
    let v = violation(&p, &net(NetOp::Connect, "2001:db9::1", 443, Protocol::Tcp));
    assert_eq!(
        v.reason,
        "connect to [2001:db9::1]:443 (tcp) is not in network.connect"
    );
}

#[test]
fn host_rules_never_allow_but_are_kept() {
    let p = example();
    let hosts: Vec<_> = p.host_rules().collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        hosts[0].target,
        ConnectTarget::Host("api.github.com".to_owned())
    );
    // 140.82.112.0/20 is GitHub's, but a host rule does not admit addresses.
    assert!(!allowed(
        &p,
        &net(NetOp::Connect, "140.82.112.3", 443, Protocol::Tcp)
    ));
}

#[test]
fn bind_list() {
    let p = example();
    assert!(allowed(
        &p,
        &net(NetOp::Bind, "0.0.0.0", 8080, Protocol::Tcp)
    ));
    assert!(allowed(&p, &net(NetOp::Bind, "::", 8080, Protocol::Udp)));
    let v = violation(&p, &net(NetOp::Bind, "127.0.0.1", 8081, Protocol::Tcp));
    assert_eq!(v.dimension, Dimension::Network);
    assert_eq!(v.rule, "network.bind");
    assert_eq!(v.reason, "bind to port 8081 (tcp) is not in network.bind");
    // A connect rule is no licence to listen.
    assert!(!allowed(
        &p,
        &net(NetOp::Bind, "10.0.0.1", 443, Protocol::Tcp)
    ));
}
