//! Where a process's socket listens: descriptor -> socket inode -> `/proc/<pid>/net/tcp*`.
//! For a `listen` on a socket that was never bound, where the kernel picked the port itself
//! and no bind hook saw it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The local address of the TCP socket behind descriptor `fd` of thread `thread` (process
/// `tgid`), from the process's own network namespace view.
pub fn local_tcp_addr(tgid: u32, thread: u32, fd: i32) -> Option<(IpAddr, u16)> {
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
pub fn find_inode(table: &str, inode: u64) -> Option<(IpAddr, u16)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
