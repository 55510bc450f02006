//! Sockets as the kernel knows them. Where a process's socket listens: descriptor -> socket
//! inode -> `/proc/<pid>/net/tcp*` (for a `listen` on a socket that was never bound, where
//! the kernel picked the port itself and no bind hook saw it). What a Unix socket is
//! connected to: its peer's bound name, from `sock_diag` (for a held connect, judged by the
//! socket it reached, not by the path string and cwd the process passed).

use std::{
    ffi::OsStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::PathBuf,
};

/// The local address of the TCP socket behind descriptor `fd` of thread `thread` (process
/// `tgid`), from the process's own network namespace view.
pub(crate) fn local_tcp_addr(tgid: u32, thread: u32, fd: i32) -> Option<(IpAddr, u16)> {
    let link = std::fs::read_link(format!("/proc/{thread}/fd/{fd}"))
        .or_else(|_| std::fs::read_link(format!("/proc/{tgid}/fd/{fd}")))
        .ok()?;
    let inode: u64 = link
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    ["tcp", "tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(format!("/proc/{tgid}/net/{table}")).ok()?;
        find_inode(&text, inode)
    })
}

/// Finds the local address of the row with this inode in a `/proc/net/tcp{,6}` table.
pub(crate) fn find_inode(table: &str, inode: u64) -> Option<(IpAddr, u16)> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(9)?.parse::<u64>().ok()? != inode {
            return None;
        }
        parse_local(f.get(1)?)
    })
}

/// `0100007F:1F90` (IPv4, each 32-bit word in host order) or 32 hex digits (IPv6).
fn parse_local(field: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some((ip, port))
}

/// The name a Unix socket is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UnixName {
    Path(PathBuf),
    /// An abstract name (without its leading NUL).
    Abstract(Vec<u8>),
}

/// The name of the socket the Unix socket with inode `ino` is connected to: the name of
/// the listener whose queue holds the connection (not accepted yet, as while its connect is
/// held), else its peer's bound name (an accepted connection carries the listener's). None
/// when the kernel does not know it here (another network namespace, not connected, gone).
pub(crate) fn unix_peer_name(ino: u64) -> Option<UnixName> {
    let ino = u32::try_from(ino).ok()?;
    // Listening sockets with their names and the clients queued on them (`ICONS`).
    for msg in sock_diag(0, 1 << TCP_LISTEN, UDIAG_SHOW_NAME | UDIAG_SHOW_ICONS)? {
        let queued = msg.attr(UNIX_DIAG_ICONS).is_some_and(|icons| {
            icons
                .chunks_exact(4)
                .any(|c| c.try_into().ok().map(u32::from_ne_bytes) == Some(ino))
        });
        if queued {
            return msg.attr(UNIX_DIAG_NAME).and_then(name);
        }
    }
    let peer = sock_diag(ino, u32::MAX, UDIAG_SHOW_PEER)?
        .first()?
        .attr(UNIX_DIAG_PEER)
        .and_then(|v| Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?)))
        .filter(|p| *p != 0)?;
    sock_diag(peer, u32::MAX, UDIAG_SHOW_NAME)?
        .first()?
        .attr(UNIX_DIAG_NAME)
        .and_then(name)
}

const TCP_LISTEN: u32 = 10;
const UDIAG_SHOW_NAME: u32 = 1;
const UDIAG_SHOW_PEER: u32 = 4;
const UDIAG_SHOW_ICONS: u32 = 8;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;

/// A bound name as `UNIX_DIAG_NAME` gives it (an abstract one starts with NUL).
fn name(raw: &[u8]) -> Option<UnixName> {
    if let (0, rest) = raw.split_first()? {
        return Some(UnixName::Abstract(rest.to_vec()));
    }
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    Some(UnixName::Path(PathBuf::from(OsStr::from_bytes(
        &raw[..end],
    ))))
}

/// One socket in a `sock_diag` answer: its attributes.
struct DiagMsg {
    attrs: Vec<(u16, Vec<u8>)>,
}

impl DiagMsg {
    fn attr(&self, kind: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(t, _)| *t == kind)
            .map(|(_, v)| v.as_slice())
    }
}

/// A `SOCK_DIAG_BY_FAMILY` request for Unix sockets: the socket `ino`, or with `ino` 0
/// every socket in `states` (a dump).
fn sock_diag(ino: u32, states: u32, show: u32) -> Option<Vec<DiagMsg>> {
    const NETLINK_SOCK_DIAG: i32 = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let flags = if ino == 0 {
        NLM_F_REQUEST | NLM_F_DUMP
    } else {
        NLM_F_REQUEST
    };
    // nlmsghdr (16) + unix_diag_req { family u8, protocol u8, pad u16, states u32, ino u32,
    // show u32, cookie [u32; 2] } (24).
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&flags.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.extend_from_slice(&[1, 0, 0, 0]); // AF_UNIX, protocol, pad
    req.extend_from_slice(&states.to_ne_bytes());
    req.extend_from_slice(&ino.to_ne_bytes());
    req.extend_from_slice(&show.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // no cookie
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    // SAFETY: the buffer is valid for its length; the kernel copies it.
    let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if usize::try_from(sent).ok()? != req.len() {
        return None;
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = usize::try_from(n).ok()?;
        let mut at = 0;
        while at + 16 <= n {
            let word = |o: usize| -> Option<u32> {
                Some(u32::from_ne_bytes(
                    buf.get(at + o..at + o + 4)?.try_into().ok()?,
                ))
            };
            let len = usize::try_from(word(0)?).ok()?;
            let kind = u16::from_ne_bytes(buf.get(at + 4..at + 6)?.try_into().ok()?);
            if len < 16 || at + len > n {
                return None;
            }
            match kind {
                NLMSG_DONE => return Some(out),
                NLMSG_ERROR => return (!out.is_empty()).then_some(out),
                _ => out.push(DiagMsg {
                    attrs: attrs(buf.get(at + 32..at + len)?),
                }),
            }
            at += (len + 3) & !3;
        }
        if ino != 0 {
            return Some(out);
        }
    }
}

/// The rtattrs `{ len u16, type u16, data }` after a `unix_diag_msg`.
fn attrs(mut rest: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]);
        if len < 4 || len > rest.len() {
            break;
        }
        out.push((kind, rest[4..len].to_vec()));
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_socket_is_named_by_what_it_reached() {
        use std::os::unix::{
            fs::MetadataExt as _,
            net::{UnixListener, UnixStream},
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        // Reached through a symlink: the answer is the bound name, queued or accepted.
        std::os::unix::fs::symlink(&path, dir.path().join("link")).expect("symlink");
        let client = UnixStream::connect(dir.path().join("link")).expect("connect");
        let ino = std::fs::metadata(format!("/proc/self/fd/{}", client.as_raw_fd()))
            .expect("stat the socket")
            .ino();
        assert_eq!(unix_peer_name(ino), Some(UnixName::Path(path.clone())));
        let _accepted = listener.accept().expect("accept");
        assert_eq!(unix_peer_name(ino), Some(UnixName::Path(path)), "accepted");
        let (a, _b) = UnixStream::pair().expect("pair");
        let unnamed = std::fs::metadata(format!("/proc/self/fd/{}", a.as_raw_fd()))
            .expect("stat")
            .ino();
        assert_eq!(unix_peer_name(unnamed), None, "a peer with no name");
        assert_eq!(unix_peer_name(1), None, "no such socket");
    }

    #[test]
    fn rows_are_found_by_inode() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n\
             1: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1633 1 0 100 0 0 10 0\n";
        assert_eq!(
            find_inode(table, 4242),
            Some((IpAddr::V4(Ipv4Addr::LOCALHOST), 8080))
        );
        assert_eq!(
            find_inode(table, 1633),
            Some((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 2024))
        );
        assert_eq!(find_inode(table, 7), None);
        let v6 = "header\n 0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 99 1\n";
        assert_eq!(
            find_inode(v6, 99),
            Some((IpAddr::V6(Ipv6Addr::LOCALHOST), 80))
        );
    }
}
