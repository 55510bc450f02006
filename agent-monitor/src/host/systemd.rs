//! systemd's readiness protocol (`Type=notify`): one datagram to `$NOTIFY_SOCKET`. The unit
//! is ready when the status socket answers, so `systemctl start` returns once clients can
//! talk to the daemon, and a daemon that cannot load its programs fails the start.

use std::{
    io,
    os::unix::net::{SocketAddr, UnixDatagram},
    path::Path,
    time::Duration,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum NotifyError {
    #[error("sd_notify to {socket}: {source}")]
    Send {
        socket: String,
        #[source]
        source: io::Error,
    },
    #[error("the status socket {0} did not answer within {1:?}")]
    NotListening(String, Duration),
}

/// Sends `state` (e.g. `READY=1`) when systemd asked for it; Ok(false) when it did not
/// (no `$NOTIFY_SOCKET`: run by hand, by the tests, in a pod).
pub(crate) fn notify(state: &str) -> Result<bool, NotifyError> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => notify_to(&socket, state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` to the notification socket `socket` (`@name` for an abstract one).
pub(crate) fn notify_to(socket: &std::ffi::OsStr, state: &str) -> Result<(), NotifyError> {
    let name = socket.to_string_lossy().into_owned();
    let err = |source| NotifyError::Send {
        socket: name.clone(),
        source,
    };
    let addr = match name.strip_prefix('@') {
        // An abstract socket (systemd's default for units).
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(abstract_name.as_bytes()).map_err(err)?
        }
        None => SocketAddr::from_pathname(Path::new(socket)).map_err(err)?,
    };
    let sock = UnixDatagram::unbound().map_err(err)?;
    sock.send_to_addr(state.as_bytes(), &addr).map_err(err)?;
    Ok(())
}

/// Waits until the status socket accepts connections, then tells systemd `READY=1`.
pub(crate) async fn ready_when_listening(
    socket: &Path,
    limit: Duration,
) -> Result<bool, NotifyError> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::net::UnixStream::connect(socket).await.is_err() {
        if tokio::time::Instant::now() >= deadline {
            return Err(NotifyError::NotListening(
                socket.display().to_string(),
                limit,
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    notify(&format!(
        "READY=1\nSTATUS=listening on {}\nMAINPID={}",
        socket.display(),
        std::process::id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_sends_one_datagram_to_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        notify_to(path.as_os_str(), "READY=1").expect("sent");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn notify_sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("am-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let server = UnixDatagram::bind_addr(&addr).expect("bind");
        notify_to(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").expect("sent");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
