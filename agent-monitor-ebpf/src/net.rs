//! Network hooks: cgroup `sock_addr` programs attached at the cgroup2 root, so they see every
//! process; an untagged one is allowed after the tag lookup. Return 1 lets the call proceed,
//! 0 makes it fail with EPERM: an enforced agent's out-of-scope connect, unconnected send
//! or bind is refused in the kernel, whatever the daemon is doing.

use agent_monitor_common::{BindKey, NetEvent, NetKey, flags, kind, net_op, proto_bits};
use aya_ebpf::{macros::cgroup_sock_addr, maps::lpm_trie::Key, programs::SockAddrContext};

use crate::{
    enforce::enforced,
    maps::{BIND_PORTS, NET_RULES, emit},
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
    let allowed = enforced(agent.slot).is_none()
        || in_scope(agent.slot, op, family, &addr, port, sa.protocol);
    let mut event = NetEvent {
        header: header(kind::NET, &agent),
        op,
        family,
        protocol: sa.protocol,
        port,
        pad0: 0,
        addr,
        allowed: u32::from(allowed),
        pad1: 0,
    };
    if !allowed {
        event.header.flags |= flags::BLOCKED;
    }
    emit(&event, agent.slot);
    i32::from(allowed)
}

/// The scope's network rules, compiled by the daemon into `NET_RULES` and `BIND_PORTS`.
#[inline(always)]
fn in_scope(slot: u32, op: u32, family: u32, addr: &[u8; 16], port: u16, protocol: u32) -> bool {
    if op == net_op::BIND {
        let key = BindKey {
            slot,
            port: u32::from(port),
        };
        return BIND_PORTS.get_ptr(key).is_some();
    }
    let bit = match protocol {
        6 => proto_bits::TCP,
        17 => proto_bits::UDP,
        _ => return false,
    };
    // One key space for both families: IPv4 as ::ffff:a.b.c.d, which is also how an
    // IPv4-mapped IPv6 destination arrives at connect6.
    let mut data = NetKey {
        slot_be: slot.to_be_bytes(),
        addr: [0; 16],
    };
    if family == AF_INET {
        data.addr[10] = 0xff;
        data.addr[11] = 0xff;
        data.addr[12..].copy_from_slice(&addr[..4]);
    } else {
        data.addr = *addr;
    }
    let Some(rule) = NET_RULES.get(Key::new(32 + 128, data)) else {
        return false;
    };
    if rule.any_port_protos & bit != 0 {
        return true;
    }
    // Verifier workaround: a constant bound, with the rule count checked inside.
    for i in 0..agent_monitor_common::MAX_PORT_RULES {
        if i >= usize::from(rule.count) {
            break;
        }
        let p = rule.ports[i];
        if p.port == port && p.protos & bit != 0 {
            return true;
        }
    }
    false
}
