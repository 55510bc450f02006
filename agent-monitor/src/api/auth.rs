//! Who may use the socket. The peer's credentials come from the kernel (`SO_PEERCRED` and
//! `SO_PEERGROUPS`, taken when the connection is accepted) and are checked on every request:
//!
//! - a process inside an agent's cgroup is refused whatever its uid (`agent_forbidden`);
//! - otherwise uid 0, or a member of the configured socket group (`run --socket-group`,
//!   primary or supplementary group), may use every endpoint; anyone else is refused
//!   (`forbidden`). The socket file (mode 0660, owner root, that group) already keeps
//!   others out; this check holds even if its mode is loosened.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::Arc,
};

use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use tokio::net::UnixStream;

use super::{Api, error::ApiError};

/// The other end of a connection, as the kernel saw it at `connect(2)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Peer {
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) pid: Option<u32>,
    /// Supplementary groups (`SO_PEERGROUPS`).
    pub(crate) groups: Vec<u32>,
    /// A pidfd of the very process that connected (`SO_PEERPIDFD`, Linux >= 6.5): its pid
    /// cannot be taken over by another process while this is open.
    pub(crate) pidfd: Option<Arc<OwnedFd>>,
}

impl Peer {
    pub(crate) fn of(stream: &UnixStream) -> Self {
        let Ok(cred) = stream.peer_cred() else {
            return Self::default();
        };
        Self {
            uid: Some(cred.uid()),
            gid: Some(cred.gid()),
            pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
            groups: peer_groups(stream.as_raw_fd()).unwrap_or_default(),
            pidfd: peer_pidfd(stream.as_raw_fd()).map(Arc::new),
        }
    }

    /// Whether the process that connected still runs (with its pidfd; without one, as on a
    /// kernel before 6.5, its pid is trusted).
    fn alive(&self) -> bool {
        self.pidfd.as_ref().is_none_or(|fd| {
            // SAFETY: signal 0 through a pidfd only checks that the process exists.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    0,
                    std::ptr::null::<libc::siginfo_t>(),
                    0u32,
                )
            };
            rc == 0
        })
    }

    pub(super) fn in_group(&self, gid: u32) -> bool {
        self.gid == Some(gid) || self.groups.contains(&gid)
    }
}

/// `SO_PEERGROUPS` (Linux >= 4.13): the peer's supplementary groups at connect time.
fn peer_groups(fd: RawFd) -> Option<Vec<u32>> {
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * 4).ok()?;
        // SAFETY: the buffer is `len` bytes long and outlives the call.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        if rc == 0 {
            groups.truncate(usize::try_from(len).ok()? / 4);
            return Some(groups);
        }
        let err = std::io::Error::last_os_error();
        // ERANGE: `len` now holds the size needed.
        if err.raw_os_error() == Some(libc::ERANGE) && groups.len() < 65536 {
            groups.resize(usize::try_from(len).ok()? / 4 + 1, 0);
            continue;
        }
        return None;
    }
}

/// `SO_PEERPIDFD`: a pidfd of the peer that connected.
fn peer_pidfd(fd: RawFd) -> Option<OwnedFd> {
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut pidfd: libc::c_int = -1;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).ok()?;
    // SAFETY: the buffer is an int, `len` its size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&raw mut pidfd).cast(),
            &raw mut len,
        )
    };
    // SAFETY: on success the kernel gave us a new descriptor we now own.
    (rc == 0 && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) })
}

/// A group name (or number) to its gid.
pub(crate) fn resolve_group(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    let cname = CString::new(name).ok()?;
    let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; `buf` outlives the use of `grp`.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            grp.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &raw mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: getgrnam_r succeeded and filled `grp`.
    Some(unsafe { grp.assume_init() }.gr_gid)
}

/// Checks the peer before any handler runs.
pub(crate) async fn authorize(
    State(api): State<Arc<Api>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<Peer>()
        .cloned()
        .unwrap_or_default();
    if let Err(e) = check(&api, &peer) {
        tracing::debug!(?peer, error = e.error, "status socket request refused");
        if let Some(id) = decision_of(&request) {
            // An agent (or an unverifiable peer) trying to decide on a hold: on the record.
            let approver = crate::control::approval::Approver {
                uid: peer.uid,
                name: None,
                note: None,
            };
            let why = format!("{}: {} (pid {:?})", e.error, e.message, peer.pid);
            api.shared.refused_decision(id, &approver, &why);
        }
        return e.into_response();
    }
    next.run(request).await
}

/// The hold a request decides on (`POST /v1/holds/{id}/approve|deny`).
fn decision_of(request: &Request) -> Option<u64> {
    if request.method() != axum::http::Method::POST {
        return None;
    }
    let rest = request.uri().path().strip_prefix("/v1/holds/")?;
    let (id, verb) = rest.split_once('/')?;
    matches!(verb, "approve" | "deny")
        .then(|| id.parse().ok())
        .flatten()
}

pub(crate) fn check(api: &Api, peer: &Peer) -> Result<(), ApiError> {
    // An agent, even running as root, must not steer or read its monitor. A peer that
    // cannot be verified (gone before its check, its cgroup unreadable) is refused too: it
    // may have been an agent that handed its connection on.
    let Some(pid) = peer.pid else {
        return Err(unverified());
    };
    match api.shared.is_agent_process(pid) {
        // The cgroup read was the connecting process's only if it still runs.
        Some(false) if peer.alive() => {}
        Some(true) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "agent_forbidden",
                "agents may not use the status socket",
            ));
        }
        _ => return Err(unverified()),
    }
    let allowed = peer.uid == Some(0) || api.group.is_some_and(|g| peer.in_group(g));
    if !allowed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the status socket is for root and the socket group",
        ));
    }
    Ok(())
}

fn unverified() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "peer_unverified",
        "the connecting process is gone: it cannot be told from an agent",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs a `root` group with gid 0 in the host's group database (every Linux has one).
    #[test]
    fn host_groups_resolve() {
        assert_eq!(
            resolve_group("root"),
            Some(0),
            "this test needs group root = gid 0"
        );
        assert_eq!(resolve_group("1234"), Some(1234));
        assert_eq!(resolve_group("no-such-group-here"), None);
    }

    /// Needs Linux >= 6.5 (`SO_PEERPIDFD`), as the status socket's peer check does.
    #[test]
    fn host_a_peer_that_exited_is_not_alive() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let me = Peer {
            pidfd: peer_pidfd(a.as_raw_fd()).map(Arc::new),
            ..Peer::default()
        };
        assert!(
            me.pidfd.is_some(),
            "this test needs SO_PEERPIDFD (Linux >= 6.5)"
        );
        assert!(me.alive(), "this process");
        // A child connects, then exits before its check.
        let path = tempfile::tempdir().expect("tempdir");
        let sock = path.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?})",
                    sock.display().to_string()
                ),
            ])
            .spawn()
            .expect("python3");
        let (conn, _) = listener.accept().expect("accept");
        child.wait().expect("wait");
        let gone = Peer {
            pidfd: peer_pidfd(conn.as_raw_fd()).map(Arc::new),
            ..Peer::default()
        };
        assert!(!gone.alive(), "the connecting process has exited");
        drop(b);
    }

    /// Needs `SO_PEERGROUPS` (Linux >= 4.13).
    #[test]
    fn host_peer_groups_of_a_socket_pair() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let groups = peer_groups(a.as_raw_fd()).expect("SO_PEERGROUPS");
        // SAFETY: getgroups(0, NULL) only returns the count.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        assert_eq!(groups.len(), usize::try_from(n).expect("count"));
    }
}
