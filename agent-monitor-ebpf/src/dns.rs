//! The kernel half of DNS-name egress. For an agent whose scope has `host:` rules
//! (`config_flags::DNS`), every UDP datagram to port 53, whatever server it names, is
//! rewritten to the daemon's resolver for that agent (127.0.0.1 or ::1, the agent's own
//! port); the server the agent named is kept per socket and put back as the source of the
//! reply. The daemon writes each allowed answer into `DNS_LEARNED` before replying, so the
//! address is reachable by the time the agent can know it.

use agent_monitor_common::{
    AgentConfig, DnsOrigin, HostRuleKey, LearnedKey, MAX_HOST_RULES, NetRule, config_flags,
};
use aya_ebpf::{
    cty::c_void,
    helpers::generated::{bpf_get_socket_cookie, bpf_ktime_get_ns},
    programs::SockAddrContext,
};

use crate::{
    enforce::agent_config,
    maps::{DNS_LEARNED, DNS_ORIGIN, HOST_RULES},
    net::{AF_INET, AF_INET6, port_allowed},
    steps::search_steps,
    tag::current_agent_uncached,
};

const LOOPBACK4: [u8; 4] = [127, 0, 0, 1];
const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const MAPPED_LOOPBACK4: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];

/// The agent's settings when it has the DNS path.
#[inline(always)]
pub fn dns_config(slot: u32) -> Option<AgentConfig> {
    let cfg = agent_config::<false>(slot)?;
    (cfg.flags & config_flags::DNS != 0).then_some(cfg)
}

fn is_mapped(addr: &[u8; 16]) -> bool {
    addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff
}

/// The destination as the hook sees it: IPv4 in the first four bytes, or IPv6.
#[inline(always)]
pub fn read_addr(ctx: &SockAddrContext, family: u32) -> [u8; 16] {
    // SAFETY: the kernel hands a valid `bpf_sock_addr`; 4-byte loads as the verifier's
    // context rewriting expects.
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
    addr
}

#[inline(always)]
fn write_addr(ctx: &SockAddrContext, family: u32, addr: &[u8; 16], port_be: u32) {
    // SAFETY: as in `read_addr`; connect, sendmsg and recvmsg programs may write
    // `user_ip4`/`user_ip6`/`user_port` (kernel fact: that is how sock_addr programs
    // redirect, and how recvmsg programs set the source the caller sees).
    let sa = unsafe { &mut *ctx.sock_addr };
    if family == AF_INET {
        sa.user_ip4 = u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]);
    } else {
        for i in 0..4 {
            sa.user_ip6[i] = u32::from_ne_bytes([
                addr[i * 4],
                addr[i * 4 + 1],
                addr[i * 4 + 2],
                addr[i * 4 + 3],
            ]);
        }
    }
    sa.user_port = port_be;
}

fn port_be(port: u32) -> u32 {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the daemon writes 16-bit ports"
    )]
    u32::from((port as u16).to_be())
}

/// Sends a DNS query to the agent's resolver in the daemon instead of `addr`. Returns false
/// when there is no resolver for this family (the caller refuses the query).
#[inline(always)]
pub fn redirect(ctx: &SockAddrContext, cfg: &AgentConfig, family: u32, addr: &[u8; 16]) -> bool {
    // SAFETY: see `read_addr`.
    let user_port = unsafe { (*ctx.sock_addr).user_port };
    // A connect6 to ::ffff:a.b.c.d stays an IPv4 flow; it is sent to 127.0.0.1 as mapped.
    // (sendmsg6 never sees a mapped address: the kernel hands those to sendmsg4.)
    let mapped = family == AF_INET6 && is_mapped(addr);
    let (port, target) = if family == AF_INET {
        (
            cfg.dns_port4,
            [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        )
    } else if mapped {
        (cfg.dns_port4, MAPPED_LOOPBACK4)
    } else {
        (cfg.dns_port6, LOOPBACK6)
    };
    if port == 0 {
        return false;
    }
    let origin = DnsOrigin {
        addr: *addr,
        port: user_port,
        family,
    };
    // SAFETY: the helper takes the program's context; the cookie identifies the socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    if DNS_ORIGIN.insert(cookie, origin, 0).is_err() {
        return false;
    }
    write_addr(ctx, family, &target, port_be(port));
    true
}

/// recvmsg4/6: a datagram from the agent's resolver in the daemon gets back the source
/// the agent sent its query to (glibc and most stub resolvers drop other replies).
/// Always returns 1: recvmsg programs cannot refuse.
#[inline(always)]
pub fn try_recvmsg(ctx: &SockAddrContext, family: u32) -> i32 {
    let Some(agent) = current_agent_uncached() else {
        return 1;
    };
    let Some(cfg) = dns_config(agent.slot) else {
        return 1;
    };
    let from = read_addr(ctx, family);
    // SAFETY: see `read_addr`.
    let user_port = unsafe { (*ctx.sock_addr).user_port };
    #[expect(clippy::cast_possible_truncation, reason = "ports are 16-bit")]
    let port = u32::from(u16::from_be(user_port as u16));
    let from_resolver = if family == AF_INET {
        from[..4] == LOOPBACK4 && port == cfg.dns_port4
    } else {
        (from == MAPPED_LOOPBACK4 && port == cfg.dns_port4)
            || (from == LOOPBACK6 && port == cfg.dns_port6)
    };
    if !from_resolver || port == 0 {
        return 1;
    }
    // SAFETY: as in `redirect`.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: the value is copied out.
    let Some(origin) = (unsafe { DNS_ORIGIN.get(cookie) }).copied() else {
        return 1;
    };
    if family == origin.family {
        write_addr(ctx, family, &origin.addr, origin.port);
    } else if family == AF_INET6 {
        // An IPv4 query from an IPv6 socket: the reply source is shown mapped.
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&origin.addr[..4]);
        write_addr(ctx, family, &addr, origin.port);
    }
    1
}

/// What one step of [`learned_rule`]'s search reads and where it leaves the answer.
#[repr(C)]
struct LearnedSearch {
    key: LearnedKey,
    now: u64,
    port: u16,
    bit: u16,
    /// 1 + the matching rule's index, 0 while none matched.
    found: u32,
}

/// 1 + the index of a host rule under which the agent learned `key_addr` (the `NetKey`
/// address form) from its own resolver, unexpired and allowing this port and protocol;
/// 0 when none does.
#[inline(always)]
pub fn learned_rule(slot: u32, cfg: &AgentConfig, key_addr: &[u8; 16], port: u16, bit: u16) -> u32 {
    let mut search = LearnedSearch {
        key: LearnedKey {
            slot,
            index: 0,
            addr: *key_addr,
        },
        // SAFETY: helper without arguments. CLOCK_MONOTONIC, as the daemon's expiry times.
        now: unsafe { bpf_ktime_get_ns() },
        port,
        bit,
        found: 0,
    };
    search_steps(
        cfg.host_rules.min(MAX_HOST_RULES),
        MAX_HOST_RULES,
        learned_step,
        (&raw mut search).cast(),
    );
    search.found
}

/// One host rule of [`learned_rule`]'s search: returns 1 (stop) once a rule matches.
extern "C" fn learned_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `learned_rule` passes its own `LearnedSearch`.
    let search = unsafe { &mut *ctx.cast::<LearnedSearch>() };
    #[expect(clippy::cast_possible_truncation, reason = "at most MAX_HOST_RULES")]
    let index = index as u32;
    search.key.index = index;
    // SAFETY: the value is copied out.
    let Some(learned) = (unsafe { DNS_LEARNED.get(search.key) }).copied() else {
        return 0;
    };
    if learned.expires_ns <= search.now {
        return 0;
    }
    let rule_key = HostRuleKey {
        slot: search.key.slot,
        index,
    };
    // SAFETY: the value is copied out.
    let rule: Option<NetRule> = unsafe { HOST_RULES.get(rule_key) }.copied();
    if rule.is_some_and(|r| port_allowed(&r, search.port, search.bit)) {
        search.found = index + 1;
        return 1;
    }
    0
}
