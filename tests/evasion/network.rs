//! Network: reaching an out-of-scope server by another address spelling, without connect,
//! below the socket-address hooks, over Unix-domain sockets, and listening where the scope
//! does not allow. The target servers count every byte that reaches them.

use std::{
    io::{ErrorKind, Read as _},
    os::unix::net::{UnixDatagram, UnixListener},
};

use agent_monitor_e2e::s;

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
    each(
        &["v6", "mapped", "any4", "any6", "lo2", "fastopen"],
        |technique| {
            let run = env.py(&[CONNECT], &[&port, technique]);
            let got = env.tcp_received();
            env.assert_nothing_received(technique, &got, &run);
            env.assert_eperm(&run, "send");
            env.violation(&run, "connect", |r| {
                r["net"]["port"].as_u64() == Some(u64::from(env.target_port()))
            });
        },
    );
}

#[test]
fn udp_sendto_sendmsg_sendmmsg_without_connect() {
    let env = Env::start();
    let port = env.udp_target_port().to_string();
    each(
        &["sendto", "sendmsg", "sendmmsg", "v6", "mapped"],
        |technique| {
            let run = env.py(&[UDP], &[&port, technique]);
            let got = env.udp_received();
            env.assert_nothing_received(technique, &got, &run);
            env.assert_eperm(&run, "send");
            env.violation(&run, "send", |r| {
                r["net"]["port"].as_u64() == Some(u64::from(env.udp_target_port()))
            });
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
        env.violation(&run, "escape", |r| r.to_string().contains("socket"));
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
            if technique.starts_with("stream") {
                env.violation(&run, "connect", |r| s(r, "/net/address") == p(path));
            } else {
                env.violation(&run, "escape", |r| s(r, "/escape/syscall") == "socket");
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
    each(&["tcp", "udp", "v6", "autobind"], |technique| {
        let run = env.py(&[LISTEN], &[&port, technique]);
        if technique.starts_with("autobind") {
            // No bind call: the listen itself is held until the daemon judged the port.
            env.assert_stopped(&run, "listen");
        } else {
            env.assert_eperm(&run, "listen");
        }
        env.violation(&run, "bind", |_| true);
    });
}
