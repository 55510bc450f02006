//! The upstream resolver: where it is, and one question asked of it over UDP.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use tokio::net::UdpSocket;

use super::DnsError;

/// How long the upstream has to answer before the agent gets SERVFAIL.
const TIMEOUT: Duration = Duration::from_secs(4);

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

/// Sends `packet` to the upstream from a fresh socket and returns the first reply that
/// carries the same id (anything else arriving on the socket is ignored).
pub(crate) async fn ask(upstream: SocketAddr, packet: &[u8]) -> Result<Vec<u8>, DnsError> {
    let io = |source| DnsError::Upstream { upstream, source };
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(upstream).await.map_err(io)?;
    socket.send(packet).await.map_err(io)?;
    let mut buf = vec![0u8; 65_535];
    let wait = async {
        loop {
            let n = socket.recv(&mut buf).await?;
            if n >= 2 && packet.len() >= 2 && buf[..2] == packet[..2] {
                return Ok::<usize, std::io::Error>(n);
            }
        }
    };
    match tokio::time::timeout(TIMEOUT, wait).await {
        Ok(Ok(n)) => Ok(buf[..n].to_vec()),
        Ok(Err(source)) => Err(io(source)),
        Err(_) => Err(DnsError::Timeout(upstream)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
