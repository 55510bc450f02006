//! Network hooks: cgroup `sock_addr` programs attached at the cgroup2 root, so they see every
//! process; an untagged one is allowed after the tag lookup. Return 1 lets the call proceed,
//! 0 makes it fail with EPERM: an enforced agent's out-of-scope connect, unconnected send
//! or bind is refused in the kernel, whatever the daemon is doing.

use agent_monitor_common::MAX_PORT_RULES;
use agent_monitor_common::{
    BindKey, DNS_PORT, NetEvent, NetKey, NetRule, flags, kind, net_op, proto_bits,
};
use aya_ebpf::{
    cty::c_void, macros::cgroup_sock_addr, maps::lpm_trie::Key, programs::SockAddrContext,
};

use crate::{
    dns::{dns_config, learned_rule, read_addr, redirect, try_recvmsg},
    enforce::enforced_uncached,
    maps::{BIND_PORTS, NET_RULES, emit},
    steps::search_steps,
    tag::{current_agent_uncached, header},
};

pub const AF_INET: u32 = 2;
pub const AF_INET6: u32 = 10;
const IPPROTO_UDP: u32 = 17;

// `port_step` masks its index with `MAX_PORT_RULES - 1`.
const _: () = assert!(MAX_PORT_RULES.is_power_of_two());

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

#[cgroup_sock_addr(recvmsg4)]
pub fn recvmsg4(ctx: SockAddrContext) -> i32 {
    try_recvmsg(&ctx, AF_INET)
}

#[cgroup_sock_addr(recvmsg6)]
pub fn recvmsg6(ctx: SockAddrContext) -> i32 {
    try_recvmsg(&ctx, AF_INET6)
}

#[inline(always)]
fn try_sock_addr(ctx: &SockAddrContext, op: u32, family: u32) -> i32 {
    let Some(agent) = current_agent_uncached() else {
        return 1;
    };
    let addr = read_addr(ctx, family);
    // SAFETY: see `read_addr`.
    let sa = unsafe { &*ctx.sock_addr };
    // user_port holds the port in network byte order in its low 16 bits.
    #[expect(clippy::cast_possible_truncation, reason = "ports are 16-bit")]
    let port = u16::from_be(sa.user_port as u16);
    let protocol = sa.protocol;
    let dns = dns_config(agent.slot);
    if let Some(cfg) = &dns
        && op != net_op::BIND
        && protocol == IPPROTO_UDP
        && port == DNS_PORT
    {
        // DNS-name egress: the query goes to the daemon's resolver for this agent, which
        // judges the name and records what it refuses; the packet itself is not reported.
        return i32::from(
            redirect(ctx, cfg, family, &addr) || enforced_uncached(agent.slot).is_none(),
        );
    }
    // A destination learned from the agent's own DNS answers, under a host rule that
    // allows this port: computed in audit mode too, so the record names the host.
    let host_rule = match (&dns, op, protocol_bit(protocol)) {
        (Some(cfg), net_op::CONNECT | net_op::SEND, Some(bit)) => {
            learned_rule(agent.slot, cfg, &key_addr(family, &addr), port, bit)
        }
        _ => 0,
    };
    let allowed = host_rule != 0
        || enforced_uncached(agent.slot).is_none()
        || in_scope(agent.slot, op, family, &addr, port, protocol);
    let mut event = NetEvent {
        header: header(kind::NET, &agent),
        op,
        family,
        protocol,
        port,
        pad0: 0,
        addr,
        allowed: u32::from(allowed),
        host_rule,
    };
    if !allowed {
        event.header.flags |= flags::BLOCKED;
    }
    emit(&event);
    i32::from(allowed)
}

/// The scope's network rules, compiled by the daemon into `NET_RULES` and `BIND_PORTS`.
#[inline(always)]
fn in_scope(slot: u32, op: u32, family: u32, addr: &[u8; 16], port: u16, protocol: u32) -> bool {
    if op == net_op::BIND {
        // Port 0 is an ephemeral port, as a connect gets implicitly; a listen on it is
        // judged by the port the kernel picked (sys_exit_listen).
        if port == 0 {
            return true;
        }
        let key = BindKey {
            slot,
            port: u32::from(port),
        };
        return BIND_PORTS.get_ptr(key).is_some();
    }
    let Some(bit) = protocol_bit(protocol) else {
        return false;
    };
    let data = NetKey {
        slot_be: slot.to_be_bytes(),
        addr: key_addr(family, addr),
    };
    let Some(rule) = NET_RULES.get(Key::new(32 + 128, data)) else {
        return false;
    };
    port_allowed(rule, port, bit)
}

fn protocol_bit(protocol: u32) -> Option<u16> {
    match protocol {
        6 => Some(proto_bits::TCP),
        17 => Some(proto_bits::UDP),
        _ => None,
    }
}

/// One key space for both families: IPv4 as ::ffff:a.b.c.d, which is also how an
/// IPv4-mapped IPv6 destination arrives at connect6.
#[inline(always)]
fn key_addr(family: u32, addr: &[u8; 16]) -> [u8; 16] {
    if family == AF_INET {
        let mut out = [0u8; 16];
        out[10] = 0xff;
        out[11] = 0xff;
        out[12..].copy_from_slice(&addr[..4]);
        out
    } else {
        *addr
    }
}

/// Whether a rule allows this port for this protocol bit.
#[inline(always)]
pub fn port_allowed(rule: &NetRule, port: u16, bit: u16) -> bool {
    if rule.any_port_protos & bit != 0 {
        return true;
    }
    let mut search = PortSearch {
        rule,
        port,
        bit,
        found: 0,
    };
    search_steps(
        u32::from(rule.count).min(MAX_PORT_RULES as u32),
        MAX_PORT_RULES as u32,
        port_step,
        (&raw mut search).cast(),
    );
    search.found != 0
}

/// What one step of [`port_allowed`]'s search reads and where it leaves the answer.
#[repr(C)]
struct PortSearch<'a> {
    rule: &'a NetRule,
    port: u16,
    bit: u16,
    found: u32,
}

/// One port entry of [`port_allowed`]'s search: returns 1 (stop) once it matches.
extern "C" fn port_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `port_allowed` passes its own `PortSearch`.
    let search = unsafe { &mut *ctx.cast::<PortSearch<'_>>() };
    // Verifier workaround: the index is masked so the array access is visibly in bounds.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "masked to the array's size"
    )]
    let Some(p) = search.rule.ports.get(index as usize & (MAX_PORT_RULES - 1)) else {
        return 1;
    };
    if p.port == search.port && p.protos & search.bit != 0 {
        search.found = 1;
        return 1;
    }
    0
}
