//! The upstream resolver: where it is, and the one socket the daemon asks it through.
//!
//! Every agent's allowed questions go out through a single UDP socket per address family
//! (bound once, connected to the upstream, so only its datagrams are read). Each question
//! is sent under a fresh random id that no other question in flight has; one reading task
//! hands a reply to the question with that id when the reply echoes the same question,
//! and the agent gets it back under its own id. A reply to nothing (late, after the
//! timeout; forged) is dropped. A silent upstream therefore costs one descriptor and, per
//! question in flight (at most `IN_FLIGHT`), one table entry (the question and a
//! channel: well under 1 KiB) for at most [`TIMEOUT`].

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hickory_proto::op::{Message, MessageType, Query};
use tokio::{net::UdpSocket, sync::oneshot};

use super::DnsError;

/// How long the upstream has to answer before the agent gets SERVFAIL.
const TIMEOUT: Duration = Duration::from_secs(4);

/// How many random ids are tried for a question before giving up (with at most
/// `IN_FLIGHT` of 65,536 ids taken, the first nearly always is free).
const ID_TRIES: usize = 16;

/// `--dns-upstream`: `ADDR`, `ADDR:PORT` or `[V6]:PORT` (port 53 when absent).
pub(crate) fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{text:?} is not an address or address:port"))
}

/// The first `nameserver` of a resolv.conf, on port 53.
pub(crate) fn upstream_from_resolv_conf(path: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next())
            .flatten()
            // A link-local address may carry a zone (`fe80::1%eth0`), which is not kept.
            .and_then(|ns| ns.split('%').next()?.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// The upstream and the one socket the daemon asks it through (opened at the first
/// question; a failed open is tried again at the next).
pub(crate) struct Upstream {
    addr: SocketAddr,
    conn: Mutex<Option<Arc<Conn>>>,
}

/// The socket and the questions waiting for its replies, by the id they were sent under.
struct Conn {
    socket: UdpSocket,
    waiting: Mutex<HashMap<u16, Waiting>>,
    /// Numbers the questions, so that a question's place is freed only by its own asker
    /// (an answered id may already belong to the next question when its asker wakes).
    asked: AtomicU64,
}

struct Waiting {
    number: u64,
    /// The question section a reply must echo.
    queries: Vec<Query>,
    reply: oneshot::Sender<Vec<u8>>,
}

/// A question's place in the table, freed when its asker stops waiting (answered, timed
/// out, or its task cancelled).
struct Place<'a> {
    conn: &'a Conn,
    id: u16,
    number: u64,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut waiting = lock(&self.conn.waiting);
        if waiting
            .get(&self.id)
            .is_some_and(|w| w.number == self.number)
        {
            waiting.remove(&self.id);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A random query id (getrandom; a hash of a fresh `RandomState` should that fail).
fn random_id() -> u16 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut id = [0u8; 2];
    // SAFETY: writes at most 2 bytes into a buffer of 2.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n == 2 {
        return u16::from_be_bytes(id);
    }
    let h = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    h.to_be_bytes()[0..2]
        .try_into()
        .map_or(0, u16::from_be_bytes)
}

impl Upstream {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            conn: Mutex::new(None),
        }
    }

    /// Questions waiting for a reply now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        lock(&self.conn)
            .as_ref()
            .map_or(0, |c| lock(&c.waiting).len())
    }

    /// Asks the upstream `packet` (an agent's query, whose question section is `queries`)
    /// under a fresh id and returns the reply under the packet's own id.
    pub(crate) async fn ask(&self, packet: &[u8], queries: &[Query]) -> Result<Vec<u8>, DnsError> {
        let io = |source| DnsError::Upstream {
            upstream: self.addr,
            source,
        };
        let Some(own_id) = packet.get(..2) else {
            return Err(DnsError::Malformed("a query without an id".into()));
        };
        let conn = self.conn().map_err(io)?;
        let (tx, rx) = oneshot::channel();
        let (id, number) = conn
            .reserve(queries, tx)
            .ok_or_else(|| io(std::io::Error::other("no free query id")))?;
        let _place = Place {
            conn: &conn,
            id,
            number,
        };
        let mut out = packet.to_vec();
        out[..2].copy_from_slice(&id.to_be_bytes());
        conn.socket.send(&out).await.map_err(io)?;
        match tokio::time::timeout(TIMEOUT, rx).await {
            Ok(Ok(mut reply)) => {
                reply[..2].copy_from_slice(own_id);
                Ok(reply)
            }
            Ok(Err(_)) => Err(io(std::io::Error::other("the question was dropped"))),
            Err(_) => Err(DnsError::Timeout(self.addr)),
        }
    }

    /// The socket, opened (and its reading task started) at the first call.
    fn conn(&self) -> std::io::Result<Arc<Conn>> {
        let mut slot = lock(&self.conn);
        if let Some(conn) = slot.as_ref() {
            return Ok(Arc::clone(conn));
        }
        let local: SocketAddr = if self.addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = std::net::UdpSocket::bind(local)?;
        // Connected: the kernel passes on only the upstream's datagrams.
        socket.connect(self.addr)?;
        socket.set_nonblocking(true)?;
        let conn = Arc::new(Conn {
            socket: UdpSocket::from_std(socket)?,
            waiting: Mutex::new(HashMap::new()),
            asked: AtomicU64::new(0),
        });
        tokio::spawn(read(Arc::clone(&conn)));
        tracing::debug!(upstream = %self.addr, "upstream socket open");
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }
}

impl Conn {
    /// A fresh id no question in flight has, for this one, and the question's number;
    /// None when no free id was found.
    fn reserve(&self, queries: &[Query], reply: oneshot::Sender<Vec<u8>>) -> Option<(u16, u64)> {
        let number = self.asked.fetch_add(1, Ordering::Relaxed);
        let mut waiting = lock(&self.waiting);
        for _ in 0..ID_TRIES {
            let id = random_id();
            if let std::collections::hash_map::Entry::Vacant(place) = waiting.entry(id) {
                place.insert(Waiting {
                    number,
                    queries: queries.to_vec(),
                    reply,
                });
                return Some((id, number));
            }
        }
        None
    }

    /// Hands a reply to the question waiting under its id, if the reply echoes that
    /// question; anything else is dropped.
    fn deliver(&self, reply: &[u8]) {
        let Ok(message) = Message::from_vec(reply) else {
            return;
        };
        if message.metadata.message_type != MessageType::Response {
            return;
        }
        let mut waiting = lock(&self.waiting);
        let id = message.metadata.id;
        if waiting
            .get(&id)
            .is_some_and(|w| w.queries == message.queries)
            && let Some(w) = waiting.remove(&id)
        {
            // The asker may have stopped waiting just now: nothing to do then.
            let _ = w.reply.send(reply.to_vec());
        }
    }
}

/// Reads the upstream's replies for as long as the daemon runs.
async fn read(conn: Arc<Conn>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        match conn.socket.recv(&mut buf).await {
            Ok(n) => conn.deliver(&buf[..n]),
            Err(e) => {
                // ECONNREFUSED: an earlier datagram found no upstream (the questions
                // waiting time out). Nothing here is fatal.
                tracing::debug!(error = %e, "upstream socket receive");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{Message, OpCode},
        rr::{Name, RecordType},
    };

    use super::*;

    fn query(name: &str, id: u16) -> (Vec<u8>, Vec<Query>) {
        let mut m = Message::query();
        m.metadata.id = id;
        m.add_query(Query::query(
            Name::from_ascii(name).expect("name"),
            RecordType::A,
        ));
        (m.to_vec().expect("encodes"), m.queries.clone())
    }

    /// The reply an upstream gives to `packet` (its id and question echoed).
    fn reply_to(packet: &[u8]) -> Vec<u8> {
        let q = Message::from_vec(packet).expect("parses");
        let mut m = Message::response(q.metadata.id, OpCode::Query);
        m.add_queries(q.queries.iter().cloned());
        m.to_vec().expect("encodes")
    }

    #[tokio::test]
    async fn questions_share_one_socket_and_get_their_own_replies() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let upstream = Arc::new(Upstream::new(server.local_addr().expect("addr")));
        let names = ["a.example.test.", "b.example.test.", "c.example.test."];
        let asks: Vec<_> = names
            .iter()
            .map(|name| {
                let (packet, queries) = query(name, 0x1234);
                let upstream = Arc::clone(&upstream);
                tokio::spawn(async move { upstream.ask(&packet, &queries).await })
            })
            .collect();
        let mut buf = vec![0u8; 4096];
        let mut sources = Vec::new();
        let mut got = Vec::new();
        for _ in 0..names.len() {
            let (n, from) = server.recv_from(&mut buf).await.expect("recv");
            sources.push(from);
            got.push(buf[..n].to_vec());
        }
        assert!(
            sources.iter().all(|s| *s == sources[0]),
            "one socket: {sources:?}"
        );
        let ids: std::collections::HashSet<u16> = got
            .iter()
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect();
        assert_eq!(ids.len(), names.len(), "a fresh id per question");
        // A forged reply (an id in flight, another question) is not taken for an answer;
        // the real replies come back in reverse order.
        let mut forged = reply_to(&query("evil.test.", 0).0);
        forged[..2].copy_from_slice(&got[0][..2]);
        server.send_to(&forged, sources[0]).await.expect("send");
        for packet in got.iter().rev() {
            server
                .send_to(&reply_to(packet), sources[0])
                .await
                .expect("send");
        }
        for (name, ask) in names.iter().zip(asks) {
            let reply = ask.await.expect("task").expect("answered");
            let m = Message::from_vec(&reply).expect("parses");
            assert_eq!(m.metadata.id, 0x1234, "the agent's own id");
            assert_eq!(m.queries[0].name().to_ascii(), *name);
        }
        assert_eq!(upstream.waiting(), 0);
    }

    #[tokio::test]
    async fn a_silent_upstream_times_out_and_frees_the_place() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let upstream = Upstream::new(server.local_addr().expect("addr"));
        let (packet, queries) = query("a.example.test.", 7);
        let got = upstream.ask(&packet, &queries).await;
        assert!(matches!(got, Err(DnsError::Timeout(_))), "{got:?}");
        assert_eq!(upstream.waiting(), 0);
    }

    #[test]
    fn upstream_addresses_parse_with_and_without_port() {
        assert_eq!(
            parse_upstream("127.0.0.53"),
            Ok("127.0.0.53:53".parse().expect("addr"))
        );
        assert_eq!(
            parse_upstream("127.0.0.1:5353"),
            Ok("127.0.0.1:5353".parse().expect("addr"))
        );
        assert_eq!(parse_upstream("::1"), Ok("[::1]:53".parse().expect("addr")));
        assert_eq!(
            parse_upstream("[::1]:54"),
            Ok("[::1]:54".parse().expect("addr"))
        );
        assert!(parse_upstream("dns.example").is_err());
    }

    #[test]
    fn first_nameserver_of_resolv_conf() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "# comment\nsearch example.org\nnameserver fe80::1%eth0\nnameserver 10.0.0.2\n",
        )
        .expect("write");
        assert_eq!(
            upstream_from_resolv_conf(&path),
            Some("[fe80::1]:53".parse().expect("addr"))
        );
        std::fs::write(&path, "options ndots:1\n").expect("write");
        assert_eq!(upstream_from_resolv_conf(&path), None);
    }
}
