//! From a decoded event to what the policy judges and the record shows: the object
//! resolved (paths, sockets, escape attempts) and the scope's verdict on it.

use std::{
    ffi::OsStr, fmt::Write as _, net::IpAddr, os::unix::ffi::OsStrExt as _, path::Path, sync::Arc,
};

use super::{Header, dirs::DirIndex};
use crate::{
    host::mounts::Protected,
    kernel::decoder::{Event, FileOp, NetOp as WireNetOp},
    observe::record::{
        EscapeObject, ExecObject, FileObject, Kind, NetObject, ProcessRef, ShortStr,
    },
    pipeline::proctable::ProcInfo,
    pipeline::resolve::{AT_FDCWD, Actor, Follow, Resolved, resolve},
    policy::{
        Activity, Context, Dimension, FileAccess, NetOp, Protocol, Verdict as PolicyVerdict,
        Violation,
    },
    scope::Scope,
};

mod file;

pub(super) use file::name_denied;
use file::{Named, file};

/// What one event asks the policy, with what the record shows of its object.
pub(super) struct Judged {
    pub(crate) kind: Kind,
    pub(crate) file: Option<FileObject>,
    pub(crate) net: Option<NetObject>,
    pub(crate) exec: Option<ExecObject>,
    pub(crate) escape: Option<EscapeObject>,
    /// A verdict reached without the scope (escape attempts).
    pub(crate) preset: Option<PolicyVerdict>,
}

/// The verdict on a described event: escape attempts and writes to the monitor's own
/// filesystems first, then addresses the agent's resolver learned, then the scope; a kernel
/// kill the path alone does not explain is a violation too. May turn the record into an
/// escape (`judged.kind`).
pub(super) fn verdict(
    judged: &mut Judged,
    event: &Event,
    h: &Header,
    scope: &Scope,
    protected: &Protected,
    learned: Option<String>,
) -> Option<Violation> {
    let ctx = Context { tgid: h.tgid };
    let from_protected = judged
        .file
        .as_ref()
        .and_then(|f| crate::control::escape::judge_protected(protected, &f.path, f.access));
    let verdict = match (judged.preset.take(), from_protected, learned) {
        (Some(v), _, _) => v,
        (None, Some(v), _) => {
            // A write into the monitor's own filesystems is an escape attempt.
            judged.kind = Kind::Escape;
            judged.escape = Some(EscapeObject {
                technique: "protected-fs",
                syscall: None,
                args: None,
                result: None,
                cgroup: None,
                moved_pid: None,
            });
            v
        }
        // The kernel found the address among those the agent's own resolver answered for a
        // host rule allowing this port and protocol, unexpired.
        (None, None, Some(host)) => {
            if let Some(net) = &mut judged.net {
                net.host = Some(host);
            }
            PolicyVerdict::Allowed
        }
        (None, None, None) => match judged.file.as_ref().filter(|f| f.unresolved) {
            Some(f) => scope.policy.judge_unresolved(&f.path, f.access),
            None => evaluate(scope, judged, event, ctx),
        },
    };
    match verdict {
        // The kernel judged by identity what the path alone does not show (a hard link to
        // a denied file, a renamed binary): its kill is the verdict.
        PolicyVerdict::Allowed if h.kernel.killed => match kernel_verdict(judged) {
            PolicyVerdict::Violation(v) => Some(v),
            PolicyVerdict::Allowed => None,
        },
        PolicyVerdict::Allowed => None,
        PolicyVerdict::Violation(v) => Some(v),
    }
}

fn evaluate(scope: &Scope, judged: &Judged, event: &Event, ctx: Context) -> PolicyVerdict {
    match event {
        // An exec, or a refused one (a file event that names the image).
        _ if judged.exec.is_some() => {
            let path = judged
                .exec
                .as_ref()
                .map(|e| e.path.as_str())
                .unwrap_or_default();
            scope.policy.evaluate(&Activity::Exec { path }, ctx)
        }
        Event::File {
            op: FileOp::Listen, ..
        } => {
            let Some(n) = &judged.net else {
                return PolicyVerdict::Allowed;
            };
            let Ok(addr) = n.address.parse::<IpAddr>() else {
                return PolicyVerdict::Allowed;
            };
            let activity = Activity::Net {
                op: NetOp::Bind,
                addr,
                port: n.port,
                protocol: Protocol::Tcp,
            };
            scope.policy.evaluate(&activity, ctx)
        }
        Event::File { .. } => {
            let Some(f) = &judged.file else {
                return PolicyVerdict::Allowed;
            };
            let activity = match &f.new_path {
                Some(to) if f.access == FileAccess::Link => Activity::Link { from: &f.path, to },
                Some(to) => Activity::Rename { from: &f.path, to },
                None => Activity::File {
                    path: &f.path,
                    access: f.access,
                },
            };
            scope.policy.evaluate(&activity, ctx)
        }
        Event::Net {
            op,
            addr,
            port,
            protocol,
            ..
        } => {
            let op = match op {
                WireNetOp::Connect => NetOp::Connect,
                WireNetOp::Send => NetOp::Send,
                WireNetOp::Bind => NetOp::Bind,
            };
            let protocol = match protocol {
                6 => Protocol::Tcp,
                17 => Protocol::Udp,
                p => Protocol::Other(*p),
            };
            scope.policy.evaluate(
                &Activity::Net {
                    op,
                    addr: *addr,
                    port: *port,
                    protocol,
                },
                ctx,
            )
        }
        _ => PolicyVerdict::Allowed,
    }
}

/// Resolves the event's object and updates the process table; None for events that only
/// keep the table (chdir) or report nothing (a move inside the agent's cgroup).
pub(super) fn describe(
    event: &Event,
    h: &Header,
    proc: &mut ProcInfo,
    dirs: &mut DirIndex,
    task_cgroup: &str,
) -> Option<Judged> {
    fn actor<'a>(h: &Header, proc: &'a ProcInfo) -> Actor<'a> {
        Actor {
            tgid: h.tgid,
            tid: h.pid,
            cwd: proc.cwd.as_deref(),
        }
    }
    match event {
        Event::Exec { filename, argv, .. } => Some(exec(h, proc, filename, argv)),
        Event::File {
            op: FileOp::Chdir,
            dirfd,
            path,
            dir,
            ..
        } => {
            proc.cwd = if path.as_os_str().is_empty() {
                // fchdir: the directory the descriptor was opened as, when it was seen;
                // otherwise /proc is read when a relative path needs it (not once per
                // fchdir, which costs a syscall).
                dir.and_then(|id| dirs.get(id)).map(Path::to_path_buf)
            } else {
                let r = resolve(&actor(h, proc), *dirfd, path, Follow::Last);
                // An unreadable chdir target leaves the cwd unknown (then /proc is asked).
                (r.exact && !h.path_fault).then_some(r.path)
            };
            None
        }
        Event::File {
            op: FileOp::ConnectUnix { abstract_name },
            path,
            dir2,
            ..
        } => {
            // What the socket reached, as the kernel knows it: no path trick, symlink or
            // cwd the process changed since can make it look like another socket.
            let reached = dir2.and_then(|(_, ino)| crate::host::sockets::unix_peer_name(ino));
            Some(unix_connect(
                &actor(h, proc),
                *abstract_name,
                path,
                reached.as_ref(),
            ))
        }
        Event::File {
            op: FileOp::Listen,
            dirfd,
            ..
        } => listening(h, *dirfd),
        Event::File {
            op,
            dirfd,
            path,
            dirfd2,
            path2,
            ret,
            dir,
            dir2,
            opened,
            ..
        } => Some(file(
            &actor(h, proc),
            dirs,
            h.kernel.held,
            *op,
            Named {
                dirfd: *dirfd,
                path,
                dir: *dir,
            },
            Named {
                dirfd: *dirfd2,
                path: path2,
                dir: *dir2,
            },
            (*ret, *opened),
        )),
        Event::Net {
            op,
            addr,
            port,
            protocol,
            ..
        } => Some(net(*op, addr, *port, *protocol)),
        Event::Escape { what, .. } => {
            let (object, verdict) = crate::control::escape::judge(what, task_cgroup)?;
            Some(Judged {
                kind: Kind::Escape,
                file: None,
                net: None,
                exec: None,
                escape: Some(object),
                preset: Some(verdict),
            })
        }
        Event::Exit { .. } | Event::CgroupMkdir { .. } | Event::CgroupRmdir { .. } => None,
    }
}

/// A connect, send or bind the cgroup hooks reported.
fn net(op: WireNetOp, addr: &IpAddr, port: u16, protocol: u8) -> Judged {
    Judged {
        kind: match op {
            WireNetOp::Connect => Kind::Connect,
            WireNetOp::Send => Kind::Send,
            WireNetOp::Bind => Kind::Bind,
        },
        net: Some(NetObject {
            family: if addr.is_ipv4() { "inet" } else { "inet6" },
            protocol: match protocol {
                6 => "tcp".into(),
                17 => "udp".into(),
                p => p.to_string().into(),
            },
            address: display_addr(addr),
            port,
            host: None,
        }),
        file: None,
        exec: None,
        escape: None,
        preset: None,
    }
}

/// An exec: the image's path (kept as the process's exe) and argv.
fn exec(h: &Header, proc: &mut ProcInfo, filename: &Path, argv: &[String]) -> Judged {
    let actor = Actor {
        tgid: h.tgid,
        tid: h.pid,
        cwd: proc.cwd.as_deref(),
    };
    let r = resolve(&actor, AT_FDCWD, filename, Follow::Last);
    // The image that runs is what exec.allow judges: for a script (`#!`), its interpreter,
    // which /proc names while the process runs it.
    let (image, script) = match std::fs::read_link(format!("/proc/{}/exe", h.tgid)) {
        Ok(image) if image.is_absolute() && image != r.path => (image, Some(r.path)),
        _ => (r.path, None),
    };
    let path = image.to_string_lossy().into_owned();
    proc.exe = Some(image);
    proc.argv = argv.to_vec();
    Judged {
        kind: Kind::Exec,
        exec: Some(ExecObject {
            path,
            argv: argv.to_vec(),
            script: script.map(|s| s.to_string_lossy().into_owned()),
        }),
        file: None,
        net: None,
        escape: None,
        preset: None,
    }
}

/// A connect to a Unix-domain socket, judged as a write of the socket file (connecting
/// needs write permission on it); an abstract name has no file and is judged as `@name`.
fn unix_connect(
    actor: &Actor<'_>,
    abstract_name: bool,
    path: &Path,
    reached: Option<&crate::host::sockets::UnixName>,
) -> Judged {
    use crate::host::sockets::UnixName;
    let (abstract_name, path) = match reached {
        Some(UnixName::Abstract(name)) => (true, Path::new(OsStr::from_bytes(name))),
        Some(UnixName::Path(p)) => (false, p.as_path()),
        None => (abstract_name, path),
    };
    let r = if abstract_name {
        Resolved {
            path: Path::new("@").join(path),
            exact: true,
            target: None,
        }
    } else {
        resolve(actor, AT_FDCWD, path, Follow::Last)
    };
    let address = if abstract_name {
        format!("@{}", path.display())
    } else {
        r.path.to_string_lossy().into_owned()
    };
    Judged {
        kind: Kind::Connect,
        file: Some(FileObject {
            path: address.clone(),
            access: FileAccess::Write,
            new_path: None,
            unresolved: !r.exact,
        }),
        net: Some(NetObject {
            family: "unix",
            protocol: "unix".into(),
            address: address.into(),
            port: 0,
            host: None,
        }),
        exec: None,
        escape: None,
        preset: None,
    }
}

/// A listen, judged as a bind of the port the kernel gave the socket (a `listen` without
/// `bind` picks one). None for a socket that is not TCP (a Unix socket).
fn listening(h: &Header, fd: i32) -> Option<Judged> {
    let (addr, port) = crate::host::sockets::local_tcp_addr(h.tgid, h.pid, fd)?;
    Some(Judged {
        kind: Kind::Bind,
        net: Some(NetObject {
            family: if addr.is_ipv4() { "inet" } else { "inet6" },
            protocol: "tcp".into(),
            address: display_addr(&addr),
            port,
            host: None,
        }),
        file: None,
        exec: None,
        escape: None,
        preset: None,
    })
}

/// The violation behind a kernel kill the path-based policy did not see.
fn kernel_verdict(judged: &Judged) -> PolicyVerdict {
    if let Some(e) = &judged.exec {
        return PolicyVerdict::violation(
            Dimension::Exec,
            "exec.allow",
            format!(
                "{} is not a binary exec.allow names (judged by device and inode)",
                e.path
            ),
        );
    }
    let path = judged.file.as_ref().map_or("", |f| f.path.as_str());
    PolicyVerdict::violation(
        Dimension::Files,
        "files.deny",
        format!("{path} is a file files.deny names (same device and inode) under another name"),
    )
}

/// The address as `Display` writes it, kept inline (no allocation).
fn display_addr(addr: &IpAddr) -> ShortStr {
    let mut out = ShortStr::new();
    match addr {
        // Dotted quad by hand: `Display` goes through the formatter for each octet, a share
        // of every connect's cost.
        IpAddr::V4(v4) => {
            let mut quad = [0u8; 15];
            let mut len = 0;
            let mut put = |b: u8| {
                quad[len] = b;
                len += 1;
            };
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    put(b'.');
                }
                let (h, t, u) = (octet / 100, octet / 10 % 10, octet % 10);
                if h > 0 {
                    put(b'0' + h);
                }
                if h > 0 || t > 0 {
                    put(b'0' + t);
                }
                put(b'0' + u);
            }
            // Digits and dots only: always a `str`.
            out.push_str(std::str::from_utf8(&quad[..len]).unwrap_or_default());
            out
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
            out
        }
    }
}

/// The record's process: its strings shared with the table's entry and the cgroup's path.
pub(super) fn process_ref(h: &Header, proc: &mut ProcInfo, cgroup: &Arc<str>) -> ProcessRef {
    ProcessRef {
        pid: h.tgid,
        tid: h.pid,
        ppid: if h.ppid != 0 { h.ppid } else { proc.ppid },
        // The header's name: the entry keeps the last one that was not empty.
        names: proc.names(&h.comm, cgroup),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for a in [
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::new(10, 99, 100, 255),
            Ipv4Addr::new(1, 20, 109, 250),
        ] {
            assert_eq!(display_addr(&IpAddr::V4(a)).as_str(), a.to_string());
        }
        for a in [
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xffff, 0xffff),
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0x1234, 0x5678, 0x9abc, 0xdef0),
            Ipv6Addr::new(
                0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
            ),
        ] {
            assert_eq!(display_addr(&IpAddr::V6(a)).as_str(), a.to_string());
        }
    }
}
