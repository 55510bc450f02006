//! DNS-name egress, the daemon's half: one resolver per agent whose scope has `host:`
//! rules. The kernel sends the agent's UDP port-53 traffic here (see the kernel crate's
//! `dns.rs`); each question is judged against the agent's host rules. An allowed one is
//! forwarded to the upstream resolver, and every A/AAAA address of the answer is written
//! into `DNS_LEARNED` for (agent, rule) with the answer's TTL (at least `--dns-min-ttl`)
//! *before* the answer is sent on: the agent cannot know an address before it may use it.
//! A question outside the scope is answered REFUSED (or NXDOMAIN) in enforce mode,
//! forwarded unlearned in audit mode, and recorded as a violation either way.
//!
//! An agent cannot make this work grow without bound: each resolver socket is read by one
//! task, which judges a question and answers a refusal itself; only questions for the
//! upstream get a task of their own, at most [`AGENT_IN_FLIGHT`] per agent and
//! [`IN_FLIGHT`] for all agents together (each waits at most the upstream's timeout).
//! Beyond that a question is answered SERVFAIL at once and counted
//! (`dns_refused_overload`); the socket's receive buffer is the bounded queue in front of
//! the reading task, and the kernel drops what does not fit in it. All questions for the
//! upstream go out through one socket ([`upstream::Upstream`]), matched to their replies by
//! a fresh random id and the question. Out-of-scope questions are aggregated per agent and
//! name ([`aggregate`]: a name's first question recorded at once, repeats counted into one
//! record per interval); the records wait in a queue of [`RECORD_QUEUE`]; more are counted
//! as dropped records.

mod aggregate;
mod answer;
pub(crate) mod names;
pub(crate) mod record;
mod upstream;

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use agent_monitor_common::{Learned, LearnedKey};
use aya::maps::{HashMap as BpfHashMap, MapData};
use hickory_proto::op::ResponseCode;
use tokio::{
    net::UdpSocket,
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::AbortHandle,
};

pub(crate) use aggregate::{Asked, INTERVAL as RECORD_INTERVAL};
pub(crate) use answer::Refusal;
pub(crate) use upstream::{parse_upstream, upstream_from_resolv_conf};

use crate::scope::{Mode, Scope};

/// Questions of one agent waiting for the upstream at most.
pub(crate) const AGENT_IN_FLIGHT: usize = 32;
/// Questions of all agents waiting for the upstream at most (each holds a task and an
/// entry in the upstream socket's table for up to the upstream timeout).
pub(crate) const IN_FLIGHT: usize = 128;
/// Out-of-scope records waiting to be made at most.
pub(crate) const RECORD_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum DnsError {
    #[error("malformed DNS message: {0}")]
    Malformed(String),
    #[error("building a DNS message: {0}")]
    Build(String),
    #[error("the upstream reply does not answer the question")]
    Mismatch,
    #[error("upstream resolver {upstream}: {source}")]
    Upstream {
        upstream: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("upstream resolver {0} did not answer in time")]
    Timeout(SocketAddr),
    #[error("binding the resolver socket for agent slot {slot} on {addr}: {source}")]
    Bind {
        slot: u32,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("the DNS resolver needs the daemon's async runtime")]
    NoRuntime,
}

/// `run --dns-*`.
#[derive(Debug, Clone)]
pub(crate) struct DnsSettings {
    /// Where allowed questions go; None answers them SERVFAIL.
    pub(crate) upstream: Option<SocketAddr>,
    /// An address stays allowed at least this long after the answer, whatever its TTL.
    pub(crate) min_ttl: Duration,
    pub(crate) refusal: Refusal,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            upstream: None,
            min_ttl: Duration::from_secs(5),
            refusal: Refusal::Refused,
        }
    }
}

/// The agent's resolver ports (127.0.0.1 and `::1`); 0 when there is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DnsPorts {
    pub(crate) v4: u16,
    pub(crate) v6: u16,
}

/// Questions refused (or, in audit mode, let through) because no host rule allows them:
/// what one record says.
#[derive(Debug, Clone)]
pub(crate) struct OutOfScope {
    pub(crate) slot: u32,
    pub(crate) name: String,
    /// The question types asked (`A`, or `A,AAAA` for several).
    pub(crate) qtype: String,
    pub(crate) enforced: bool,
    pub(crate) upstream: Option<SocketAddr>,
    /// The questions this record stands for.
    pub(crate) count: u64,
    pub(crate) asked: Asked,
}

/// What an agent learned: the name an address came from and until when it is allowed.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    expires_ns: u64,
}

struct Agent {
    patterns: Arc<Vec<String>>,
    enforced: bool,
    ports: DnsPorts,
    listeners: Vec<AbortHandle>,
}

struct Inner {
    settings: DnsSettings,
    runtime: Option<tokio::runtime::Handle>,
    map: Mutex<BpfHashMap<MapData, LearnedKey, Learned>>,
    agents: Mutex<HashMap<u32, Agent>>,
    learned: Mutex<HashMap<(u32, u32, IpAddr), Entry>>,
    /// The one socket every agent's questions go to the upstream through.
    upstream: Option<upstream::Upstream>,
    /// Out-of-scope questions counted for later records.
    aggregate: Mutex<aggregate::Aggregator>,
    out_of_scope: mpsc::Sender<OutOfScope>,
    /// Upstream questions in flight, all agents.
    in_flight: Arc<Semaphore>,
    /// Questions answered SERVFAIL because too many were in flight.
    overloaded: AtomicU64,
    /// Out-of-scope questions whose record did not fit in the queue.
    records_dropped: AtomicU64,
}

/// What the reading task does with one packet.
enum Step {
    /// Answer this now (a refusal, SERVFAIL, FORMERR).
    Reply(Vec<u8>),
    /// Ask the upstream; learn the answer for these host rules (none: do not learn).
    Forward {
        question: answer::Question,
        rules: Vec<u32>,
    },
    /// Nothing can be said (not even an id) or the agent is gone.
    Drop,
}

/// The per-agent resolvers and what each agent learned.
pub(crate) struct Resolver {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `bpf_ktime_get_ns`'s clock (`CLOCK_MONOTONIC`), in nanoseconds.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The kernel's key form of an address (IPv4 as `::ffff:a.b.c.d`).
fn key_octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl Resolver {
    /// `out_of_scope` (a channel of at most [`RECORD_QUEUE`]) receives every question no
    /// host rule allows (see [`record`]). Call inside the daemon's runtime: listeners are
    /// spawned on it.
    pub(crate) fn new(
        settings: DnsSettings,
        map: BpfHashMap<MapData, LearnedKey, Learned>,
        out_of_scope: mpsc::Sender<OutOfScope>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                upstream: settings.upstream.map(upstream::Upstream::new),
                aggregate: Mutex::new(aggregate::Aggregator::default()),
                settings,
                runtime: tokio::runtime::Handle::try_current().ok(),
                map: Mutex::new(map),
                agents: Mutex::new(HashMap::new()),
                learned: Mutex::new(HashMap::new()),
                out_of_scope,
                in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
                overloaded: AtomicU64::new(0),
                records_dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Questions answered SERVFAIL because too many were in flight.
    pub(crate) fn refused_overload(&self) -> u64 {
        self.inner.overloaded.load(Ordering::Relaxed)
    }

    /// Records of out-of-scope questions dropped because their queue was full.
    pub(crate) fn records_dropped(&self) -> u64 {
        self.inner.records_dropped.load(Ordering::Relaxed)
    }

    /// The records of the out-of-scope questions counted in the interval that ended (call
    /// every [`RECORD_INTERVAL`]).
    pub(crate) fn flush_out_of_scope(&self) -> Vec<OutOfScope> {
        lock(&self.inner.aggregate).flush()
    }

    /// Gives a slot its resolver when its scope has host rules (and takes it away when
    /// not); returns the ports for `AgentConfig`. Idempotent: a reload keeps the sockets,
    /// and forgets what was learned when the host rules changed (indexes may differ).
    pub(crate) fn open(&self, slot: u32, scope: &Scope) -> Result<DnsPorts, DnsError> {
        let patterns = names::host_patterns(&scope.policy.declared().connect);
        if patterns.is_empty() {
            self.close(slot);
            return Ok(DnsPorts::default());
        }
        let enforced = scope.mode == Mode::Enforce;
        let mut agents = lock(&self.inner.agents);
        if let Some(agent) = agents.get_mut(&slot) {
            if *agent.patterns != patterns {
                self.inner.forget(slot);
                agent.patterns = Arc::new(patterns);
            }
            agent.enforced = enforced;
            return Ok(agent.ports);
        }
        let runtime = self.inner.runtime.as_ref().ok_or(DnsError::NoRuntime)?;
        let _entered = runtime.enter();
        // Shared by the agent's IPv4 and IPv6 sockets.
        let agent_in_flight = Arc::new(Semaphore::new(AGENT_IN_FLIGHT));
        let mut ports = DnsPorts::default();
        let mut listeners = Vec::new();
        for ip in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ] {
            let addr = SocketAddr::new(ip, 0);
            let socket = match bind(addr) {
                Ok(s) => s,
                Err(source) if ip.is_ipv6() => {
                    // No ::1 here: IPv6 DNS of this agent is refused in the kernel instead.
                    tracing::warn!(slot, error = %source, "no IPv6 loopback for the agent's resolver");
                    continue;
                }
                Err(source) => {
                    for l in &listeners {
                        AbortHandle::abort(l);
                    }
                    return Err(DnsError::Bind { slot, addr, source });
                }
            };
            let port = socket.local_addr().map_or(0, |a| a.port());
            if ip.is_ipv4() {
                ports.v4 = port;
            } else {
                ports.v6 = port;
            }
            let task = tokio::spawn(listen(
                Arc::clone(&self.inner),
                slot,
                Arc::new(socket),
                Arc::clone(&agent_in_flight),
            ));
            listeners.push(task.abort_handle());
        }
        agents.insert(
            slot,
            Agent {
                patterns: Arc::new(patterns),
                enforced,
                ports,
                listeners,
            },
        );
        tracing::debug!(slot, ?ports, "agent resolver listening");
        Ok(ports)
    }

    /// Stops a slot's resolver and forgets everything it learned (kernel entries too).
    pub(crate) fn close(&self, slot: u32) {
        if let Some(agent) = lock(&self.inner.agents).remove(&slot) {
            for l in agent.listeners {
                l.abort();
            }
        }
        // What the agent's out-of-scope questions had counted is recorded now.
        let counted = lock(&self.inner.aggregate).close(slot);
        for q in counted {
            self.inner.queue_record(q);
        }
        self.inner.forget(slot);
    }

    /// The name under which a slot learned `addr` for its host rule `index`, if it did.
    pub(crate) fn host_of(&self, slot: u32, index: u32, addr: IpAddr) -> Option<String> {
        lock(&self.inner.learned)
            .get(&(slot, index, addr.to_canonical()))
            .map(|e| e.name.clone())
    }

    /// Removes expired entries (the kernel ignores them already; this frees the space).
    pub(crate) fn sweep(&self) {
        let now = monotonic_ns();
        let expired: Vec<(u32, u32, IpAddr)> = lock(&self.inner.learned)
            .iter()
            .filter(|(_, e)| e.expires_ns <= now)
            .map(|(k, _)| *k)
            .collect();
        let mut learned = lock(&self.inner.learned);
        let mut map = lock(&self.inner.map);
        for key in expired {
            // Checked again: an answer may have renewed it meanwhile.
            if learned.get(&key).is_some_and(|e| e.expires_ns <= now) {
                learned.remove(&key);
                let _ = map.remove(&LearnedKey {
                    slot: key.0,
                    index: key.1,
                    addr: key_octets(key.2),
                });
            }
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// One agent's resolver socket: refusals are answered here, upstream questions in tasks
/// of their own within the agent's and the daemon's bounds.
async fn listen(
    inner: Arc<Inner>,
    slot: u32,
    socket: Arc<UdpSocket>,
    agent_in_flight: Arc<Semaphore>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(slot, error = %e, "agent resolver receive");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let packet = &buf[..n];
        let reply = match inner.judge(slot, packet) {
            Step::Reply(reply) => reply,
            Step::Drop => continue,
            Step::Forward { question, rules } => {
                if let Some(permits) = permits(&agent_in_flight, &inner.in_flight) {
                    let (inner, socket, packet) =
                        (Arc::clone(&inner), Arc::clone(&socket), packet.to_vec());
                    tokio::spawn(async move {
                        let reply = inner.forward(slot, &question, &rules, &packet).await;
                        drop(permits);
                        if let Some(reply) = reply
                            && let Err(e) = socket.send_to(&reply, peer).await
                        {
                            tracing::debug!(slot, %peer, error = %e, "agent resolver reply");
                        }
                    });
                    continue;
                }
                // Too many in flight: SERVFAIL now (the stub asks again later).
                inner.overloaded.fetch_add(1, Ordering::Relaxed);
                let Ok(reply) = answer::error_reply(&question, ResponseCode::ServFail) else {
                    continue;
                };
                reply
            }
        };
        // Never waits: a reply that does not fit in the socket's buffer is dropped, as UDP
        // may drop it anyway (the agent's stub asks again).
        if let Err(e) = socket.try_send_to(&reply, peer) {
            tracing::debug!(slot, %peer, error = %e, "agent resolver reply");
        }
    }
}

/// A place for one more upstream question of this agent, and of all agents; None when
/// either is taken up.
fn permits(
    agent: &Arc<Semaphore>,
    all: &Arc<Semaphore>,
) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
    let mine = Arc::clone(agent).try_acquire_owned().ok()?;
    let global = Arc::clone(all).try_acquire_owned().ok()?;
    Some((mine, global))
}

impl Inner {
    /// Judges one query of an agent: answered at once (refused, no upstream, malformed) or
    /// to be forwarded. An out-of-scope question is queued for its record.
    fn judge(&self, slot: u32, packet: &[u8]) -> Step {
        let (patterns, enforced) = {
            let agents = lock(&self.agents);
            let Some(agent) = agents.get(&slot) else {
                return Step::Drop;
            };
            (Arc::clone(&agent.patterns), agent.enforced)
        };
        let Ok(question) = answer::parse_query(packet) else {
            return answer::format_error(packet).map_or(Step::Drop, Step::Reply);
        };
        let rules = names::matching(&patterns, &question.name);
        if rules.is_empty() {
            let q = OutOfScope {
                slot,
                name: question.name.clone(),
                qtype: question.qtype.to_string(),
                enforced,
                upstream: self.settings.upstream,
                count: 1,
                asked: Asked::First,
            };
            // A name's first question is recorded now; repeats are counted for later.
            if lock(&self.aggregate).question(&q) {
                self.queue_record(q);
            }
            if enforced {
                return answer::error_reply(&question, self.settings.refusal.code())
                    .map_or(Step::Drop, Step::Reply);
            }
        }
        if self.settings.upstream.is_none() {
            return answer::error_reply(&question, ResponseCode::ServFail)
                .map_or(Step::Drop, Step::Reply);
        }
        Step::Forward { question, rules }
    }

    /// Queues an out-of-scope record; counts it as dropped when the queue is full.
    fn queue_record(&self, q: OutOfScope) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.out_of_scope.try_send(q) {
            self.records_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Asks the upstream and learns the answer's addresses for `rules` before the reply
    /// goes to the agent; SERVFAIL when the upstream fails.
    async fn forward(
        &self,
        slot: u32,
        question: &answer::Question,
        rules: &[u32],
        packet: &[u8],
    ) -> Option<Vec<u8>> {
        let servfail = || answer::error_reply(question, ResponseCode::ServFail).ok();
        let upstream = self.upstream.as_ref()?;
        let reply = match upstream.ask(packet, question.queries()).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(slot, name = %question.name, error = %e, "upstream");
                return servfail();
            }
        };
        if !rules.is_empty() {
            match answer::addresses(question, &reply) {
                // Learned before the reply leaves: no race with the agent's connect.
                Ok(addrs) => self.learn(slot, rules, &question.name, &addrs),
                Err(e) => {
                    tracing::debug!(slot, name = %question.name, error = %e, "upstream reply not usable");
                    return servfail();
                }
            }
        }
        Some(reply)
    }

    fn learn(&self, slot: u32, rules: &[u32], name: &str, addrs: &[(IpAddr, u32)]) {
        let now = monotonic_ns();
        let min = u64::try_from(self.settings.min_ttl.as_nanos()).unwrap_or(u64::MAX);
        let mut learned = lock(&self.learned);
        let mut map = lock(&self.map);
        for (addr, ttl) in addrs {
            let addr = addr.to_canonical();
            let expires = now.saturating_add((u64::from(*ttl) * 1_000_000_000).max(min));
            for index in rules {
                let entry = learned.entry((slot, *index, addr)).or_insert(Entry {
                    name: name.to_owned(),
                    expires_ns: 0,
                });
                name.clone_into(&mut entry.name);
                entry.expires_ns = entry.expires_ns.max(expires);
                let key = LearnedKey {
                    slot,
                    index: *index,
                    addr: key_octets(addr),
                };
                let value = Learned {
                    expires_ns: entry.expires_ns,
                };
                if let Err(e) = map.insert(key, value, 0) {
                    tracing::warn!(slot, %addr, error = %e, "cannot learn an address (DNS_LEARNED full?); connects to it stay blocked");
                }
            }
        }
    }

    /// Forgets a slot's learned addresses, in the kernel too (also what a previous daemon
    /// wrote for it).
    fn forget(&self, slot: u32) {
        lock(&self.learned).retain(|k, _| k.0 != slot);
        let mut map = lock(&self.map);
        let keys: Vec<LearnedKey> = map.keys().flatten().filter(|k| k.slot == slot).collect();
        for k in keys {
            let _ = map.remove(&k);
        }
    }
}
