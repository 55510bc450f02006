//! Network: reaching an out-of-scope server by another address spelling, without connect,
//! below the socket-address hooks, over Unix-domain sockets, and listening where the scope
//! does not allow. The target servers count every byte that reaches them.

use std::{
    io::{ErrorKind, Read as _},
    os::unix::net::{UnixDatagram, UnixListener},
};

use agent_monitor_e2e::Expected;

use crate::common::{Env, each, p};

const CONNECT: &str = include_str!("cases/net_connect.py");
const UDP: &str = include_str!("cases/net_udp.py");
const RAW: &str = include_str!("cases/net_raw.py");
const UNIX: &str = include_str!("cases/net_unix.py");
const LISTEN: &str = include_str!("cases/net_listen.py");

#[test]
fn ipv6_mapped_unspecified_and_other_loopback_addresses() {
    let env = Env::start();
    let port = env.target_port().to_string();
    // The record names the address as the agent spelled it.
    each(
        &[
            ("v6", "::1"),
            ("mapped", "::ffff:127.0.0.1"),
            ("any4", "0.0.0.0"),
            ("any6", "::"),
            ("lo2", "127.0.0.2"),
            ("fastopen", "127.0.0.1"),
        ],
        |(technique, address)| {
            let run = env.py(&[CONNECT], &[&port, technique]);
            let got = env.tcp_received();
            env.assert_nothing_received(technique, &got, &run);
            env.assert_eperm(&run, "send");
            env.expect(&run, &env.blocked_connect(address));
        },
    );
}

#[test]
fn udp_sendto_sendmsg_sendmmsg_without_connect() {
    let env = Env::start();
    let port = env.udp_target_port().to_string();
    each(
        &[
            ("sendto", "127.0.0.1"),
            ("sendmsg", "127.0.0.1"),
            ("sendmmsg", "127.0.0.1"),
            ("v6", "::1"),
            // The kernel sends a datagram to a mapped address on its IPv4 path: the
            // sendmsg4 hook sees (and the record names) the IPv4 address.
            ("mapped", "127.0.0.1"),
        ],
        |(technique, address)| {
            let run = env.py(&[UDP], &[&port, technique]);
            let got = env.udp_received();
            env.assert_nothing_received(technique, &got, &run);
            env.assert_eperm(&run, "send");
            env.expect(
                &run,
                &Expected::violation("send", "network", "network.connect")
                    .address(address)
                    .port(env.udp_target_port())
                    .protocol("udp")
                    .action("blocked")
                    .layer("cgroup-hook"),
            );
        },
    );
}

#[test]
fn raw_and_packet_sockets() {
    let env = Env::start();
    let port = env.udp_target_port().to_string();
    each(&["raw4", "raw6", "packet"], |technique| {
        let run = env.py(&[RAW], &[&port, technique]);
        let got = env.udp_received();
        env.assert_nothing_received(technique, &got, &run);
        env.assert_eperm(&run, "socket");
        env.expect(&run, &Env::seccomp_refused("socket"));
    });
}

#[test]
fn unix_sockets_outside_the_scope() {
    let env = Env::start();
    // A stand-in for a container runtime's socket: outside every files rule.
    let stream_path = env.outside.join("runtime.sock");
    let listener = UnixListener::bind(&stream_path).expect("bind unix stream");
    listener.set_nonblocking(true).expect("nonblocking");
    let dgram_path = env.outside.join("log.sock");
    let dgram = UnixDatagram::bind(&dgram_path).expect("bind unix dgram");
    dgram.set_nonblocking(true).expect("nonblocking");
    each(
        &[("stream", &stream_path), ("dgram", &dgram_path)],
        |(technique, path)| {
            let run = env.py(&[UNIX], &[p(path), technique]);
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(true).expect("nonblocking");
                        while let Ok(n @ 1..) = conn.read(&mut buf) {
                            got.extend_from_slice(&buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("accept: {e}"),
                }
            }
            while let Ok(n) = dgram.recv(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            env.assert_nothing_received(technique, &got, &run);
            env.assert_stopped(&run, "send");
            if technique == "stream" {
                // A Unix socket's path is judged against files.write: the connect is held
                // at the syscall (layer ebpf) and the daemon kills the agent.
                env.expect(
                    &run,
                    &Expected::violation("connect", "files", "files.write")
                        .family("unix")
                        .address(p(path))
                        .path(p(path))
                        .access("write")
                        .action("killed-process")
                        .layer("ebpf"),
                );
            } else {
                env.expect(&run, &Env::seccomp_refused("socket"));
            }
        },
    );
}

#[test]
fn listening_on_a_port_outside_the_scope() {
    let env = Env::start();
    let other = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    assert_ne!(other, env.bind_port);
    let port = other.to_string();
    each(
        &[
            ("tcp", "tcp"),
            ("udp", "udp"),
            ("v6", "tcp"),
            ("autobind", "tcp"),
        ],
        |(technique, protocol)| {
            let run = env.py(&[LISTEN], &[&port, technique]);
            let want = Expected::violation("bind", "network", "network.bind").protocol(protocol);
            if technique == "autobind" {
                // No bind call: the listen itself is held until the daemon judged the port
                // the kernel gave the socket (an ephemeral one, not known here).
                env.assert_stopped(&run, "listen");
                env.expect(
                    &run,
                    &want
                        .family("inet")
                        .address("0.0.0.0")
                        .action("killed-process")
                        .layer("ebpf"),
                );
            } else {
                env.assert_eperm(&run, "listen");
                env.expect(
                    &run,
                    &want.port(other).action("blocked").layer("cgroup-hook"),
                );
            }
        },
    );
}
