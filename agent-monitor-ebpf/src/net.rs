//! Network hooks: cgroup `sock_addr` programs attached at the cgroup2 root, so they see every
//! process; an untagged one is allowed after the tag lookup. Return 1 lets the call proceed,
//! 0 makes it fail with EPERM (enforcement lands with the enforce mode).

use agent_monitor_common::{NetEvent, kind, net_op};
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

use crate::{
    maps::emit,
    tag::{current_agent, header},
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

macro_rules! sock_hook {
    ($name:ident, $attach:ident, $op:expr, $family:expr) => {
        #[cgroup_sock_addr($attach)]
        pub fn $name(ctx: SockAddrContext) -> i32 {
            try_sock_addr(&ctx, $op, $family)
        }
    };
}

sock_hook!(connect4, connect4, net_op::CONNECT, AF_INET);
sock_hook!(connect6, connect6, net_op::CONNECT, AF_INET6);
sock_hook!(sendmsg4, sendmsg4, net_op::SEND, AF_INET);
sock_hook!(sendmsg6, sendmsg6, net_op::SEND, AF_INET6);
sock_hook!(bind4, bind4, net_op::BIND, AF_INET);
sock_hook!(bind6, bind6, net_op::BIND, AF_INET6);

#[inline(always)]
fn try_sock_addr(ctx: &SockAddrContext, op: u32, family: u32) -> i32 {
    let Some(agent) = current_agent() else {
        return 1;
    };
    // SAFETY: the kernel hands a valid `bpf_sock_addr`; fields are read with the 4-byte loads
    // the verifier's context rewriting expects.
    let sa = unsafe { &*ctx.sock_addr };
    let mut addr = [0u8; 16];
    if family == AF_INET {
        addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    } else {
        let words = [
            sa.user_ip6[0],
            sa.user_ip6[1],
            sa.user_ip6[2],
            sa.user_ip6[3],
        ];
        for (i, w) in words.iter().enumerate() {
            addr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
    }
    // user_port holds the port in network byte order in its low 16 bits.
    #[expect(clippy::cast_possible_truncation, reason = "ports are 16-bit")]
    let port = u16::from_be(sa.user_port as u16);
    let event = NetEvent {
        header: header(kind::NET, &agent),
        op,
        family,
        protocol: sa.protocol,
        port,
        pad0: 0,
        addr,
        allowed: 1,
        pad1: 0,
    };
    emit(&event);
    1
}
