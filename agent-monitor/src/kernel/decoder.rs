//! Ring-buffer records -> owned events. Every record is length-checked before it is copied
//! out with `read_unaligned`; a short or unknown record is an error, never a panic.

use std::{
    ffi::OsStr,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::ffi::OsStrExt as _,
    path::PathBuf,
};

use crate::observe::record::ShortStr;
use agent_monitor_common::{
    CgroupEvent, EscapeEvent, EventHeader, EventKind, ExecEvent, ExitEvent, FILE_EVENT_NO_PATHS,
    FileEvent, NetEvent, bytes::until_nul, escape_op, file_op, flags, net_op,
};
use aya::Pod;

/// `RESOLVE_IN_ROOT` (include/uapi/linux/openat2.h).
const RESOLVE_IN_ROOT: u32 = 0x10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    #[error("record of {len} bytes is shorter than its {what} ({need} bytes)")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("unknown {what} {value}")]
    UnknownValue { what: &'static str, value: u32 },
}

#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) agent: u32,
    pub(crate) time_ns: u64,
    pub(crate) pid: u32,
    pub(crate) tgid: u32,
    pub(crate) ppid: u32,
    pub(crate) truncated: bool,
    /// A path could not be read from the caller's memory.
    pub(crate) path_fault: bool,
    /// What the kernel already did about it.
    pub(crate) kernel: KernelDid,
    pub(crate) cgroup_id: u64,
    /// Inline: a name is at most 15 bytes, and a `String` was an allocation per event.
    pub(crate) comm: ShortStr,
}

/// The kernel's own action on an event, from the header flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one field per header flag, as the kernel sets them"
)]
pub(crate) struct KernelDid {
    /// SIGKILL sent before the syscall returned.
    pub(crate) killed: bool,
    /// The operation was refused (EPERM).
    pub(crate) blocked: bool,
    /// The process was stopped (SIGSTOP) for the daemon to decide.
    pub(crate) held: bool,
    /// The syscall failed with EACCES, EPERM or EXDEV: refused before it had any effect
    /// (by Landlock, for an agent started under it).
    pub(crate) refused: bool,
}

/// A file's (device, inode), the device in the kernel's `dev_t` encoding.
pub(crate) type FileId = (u32, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileOp {
    Open {
        flags: u32,
        /// openat2 with `RESOLVE_IN_ROOT`: an absolute path starts at the dirfd, and `..`
        /// stops there.
        in_root: bool,
    },
    Unlink,
    Rename,
    Chdir,
    /// connect(2) to a Unix-domain socket; `abstract_name`: no file (Linux abstract name).
    ConnectUnix {
        abstract_name: bool,
    },
    /// listen(2) on the socket behind `dirfd`.
    Listen,
    /// truncate(2) (`path`) or ftruncate(2) (`dirfd`).
    Truncate,
    /// link(2): `path` is the existing file, `path2` the new name.
    Link,
    /// mkdir, mknod, symlink (refused only); `mode` holds the file type bits.
    Make {
        mode: u32,
    },
    /// A refused execve(2).
    Exec,
}

impl FileOp {
    /// Its name in metrics (the hook that saw it).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Open { .. } => "open",
            Self::Unlink => "unlink",
            Self::Rename => "rename",
            Self::Chdir => "chdir",
            Self::ConnectUnix { .. } => "connect_unix",
            Self::Listen => "listen",
            Self::Truncate => "truncate",
            Self::Link => "link",
            Self::Make { .. } => "make",
            Self::Exec => "exec",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetOp {
    Connect,
    Send,
    Bind,
}

impl NetOp {
    /// Its name in metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Send => "sendmsg",
            Self::Bind => "bind",
        }
    }
}

/// What an escape event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EscapeWhat {
    /// A syscall from the escape list (x86-64 number); `args` unless it was a signal syscall
    /// refused before its entry.
    Syscall {
        nr: u32,
        args: Option<[u64; 3]>,
        ret: i64,
    },
    /// Thread `moved` was attached to cgroup `path` (relative to the cgroup2 root).
    /// `outside`: the kernel already found it outside the agent's cgroup.
    CgroupMove {
        moved: u32,
        cgroup_id: u64,
        path: String,
        outside: bool,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum Event {
    Exec {
        header: Header,
        filename: PathBuf,
        argv: Vec<String>,
    },
    File {
        header: Header,
        op: FileOp,
        dirfd: i32,
        path: PathBuf,
        dirfd2: i32,
        path2: PathBuf,
        ret: i64,
        /// What `dirfd`, `dirfd2` and (for an open) the new descriptor referred to when
        /// the syscall ran: (device, inode), the kernel's `dev_t` encoding.
        dir: Option<FileId>,
        dir2: Option<FileId>,
        opened: Option<FileId>,
    },
    Net {
        header: Header,
        op: NetOp,
        addr: IpAddr,
        port: u16,
        protocol: u8,
        /// 1 + the index of the host rule under which the agent learned `addr` from its own
        /// DNS answer; 0: none.
        host_rule: u32,
    },
    Exit {
        header: Header,
    },
    Escape {
        header: Header,
        what: EscapeWhat,
    },
    CgroupMkdir {
        id: u64,
        path: String,
    },
    CgroupRmdir {
        id: u64,
    },
}

impl Event {
    pub(crate) fn kind(&self) -> EventKind {
        match self {
            Self::Exec { .. } => EventKind::Exec,
            Self::File { .. } => EventKind::File,
            Self::Net { .. } => EventKind::Net,
            Self::Exit { .. } => EventKind::Exit,
            Self::Escape { .. } => EventKind::Escape,
            Self::CgroupMkdir { .. } => EventKind::CgroupMkdir,
            Self::CgroupRmdir { .. } => EventKind::CgroupRmdir,
        }
    }

    pub(crate) fn header(&self) -> Option<&Header> {
        match self {
            Self::Exec { header, .. }
            | Self::File { header, .. }
            | Self::Net { header, .. }
            | Self::Exit { header }
            | Self::Escape { header, .. } => Some(header),
            Self::CgroupMkdir { .. } | Self::CgroupRmdir { .. } => None,
        }
    }
}

/// A whole T from the start of a record.
fn read<T: Pod>(buf: &[u8], what: &'static str) -> Result<T, DecodeError> {
    read_prefix(buf, size_of::<T>(), what)
}

/// A T from the start of a record that holds at least `min` of its bytes (a file event
/// leaves out the paths it does not use): what was not sent reads as zeros.
fn read_prefix<T: Pod>(buf: &[u8], min: usize, what: &'static str) -> Result<T, DecodeError> {
    if buf.len() < min {
        return Err(DecodeError::Short {
            what,
            len: buf.len(),
            need: min,
        });
    }
    // SAFETY: `Pod`: every byte pattern, all-zero included, is a valid T, and at most
    // size_of::<T>() bytes are copied into it.
    unsafe {
        let mut value: T = core::mem::zeroed();
        let n = buf.len().min(size_of::<T>());
        core::ptr::copy_nonoverlapping(buf.as_ptr(), (&raw mut value).cast::<u8>(), n);
        Ok(value)
    }
}

fn path(buf: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(until_nul(buf)))
}

fn text(buf: &[u8]) -> String {
    String::from_utf8_lossy(until_nul(buf)).into_owned()
}

fn header(h: &EventHeader) -> Header {
    Header {
        agent: h.agent,
        time_ns: h.time_ns,
        pid: h.pid,
        tgid: h.tgid,
        ppid: h.ppid,
        truncated: h.flags & flags::TRUNCATED != 0,
        path_fault: h.flags & flags::PATH_FAULT != 0,
        kernel: KernelDid {
            killed: h.flags & flags::KILLED != 0,
            blocked: h.flags & flags::BLOCKED != 0,
            held: h.flags & flags::HELD != 0,
            refused: h.flags & flags::REFUSED != 0,
        },
        cgroup_id: h.cgroup_id,
        comm: ShortStr::from(&*String::from_utf8_lossy(until_nul(&h.comm))),
    }
}

fn decode_escape(buf: &[u8]) -> Result<Event, DecodeError> {
    let e: EscapeEvent = read(buf, "escape event")?;
    let what = match e.op {
        escape_op::SYSCALL => EscapeWhat::Syscall {
            nr: e.nr,
            args: (e.target != 0).then_some(e.args),
            ret: e.ret,
        },
        escape_op::CGROUP_MOVE => EscapeWhat::CgroupMove {
            moved: e.target,
            cgroup_id: e.cgroup_id,
            path: text(&e.path),
            outside: e.outside != 0,
        },
        value => {
            return Err(DecodeError::UnknownValue {
                what: "escape op",
                value,
            });
        }
    };
    Ok(Event::Escape {
        header: header(&e.header),
        what,
    })
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per event kind and file operation"
)]
pub(crate) fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    let h: EventHeader = read(buf, "event header")?;
    let Some(kind) = EventKind::from_u32(h.kind) else {
        return Err(DecodeError::UnknownKind(h.kind));
    };
    match kind {
        EventKind::Exec => {
            let e: ExecEvent = read(buf, "exec event")?;
            let argc = (e.argc as usize).min(e.args.len());
            Ok(Event::Exec {
                header: header(&e.header),
                filename: path(&e.filename),
                argv: e.args[..argc].iter().map(|a| text(a)).collect(),
            })
        }
        EventKind::File => {
            let e: FileEvent = read_prefix(buf, FILE_EVENT_NO_PATHS, "file event")?;
            let op = match e.op {
                file_op::OPEN => FileOp::Open {
                    flags: e.open_flags,
                    in_root: e.resolve & RESOLVE_IN_ROOT != 0,
                },
                file_op::UNLINK => FileOp::Unlink,
                file_op::RENAME => FileOp::Rename,
                file_op::CHDIR => FileOp::Chdir,
                file_op::LISTEN => FileOp::Listen,
                file_op::CONNECT_UNIX => FileOp::ConnectUnix {
                    abstract_name: e.open_flags != 0,
                },
                file_op::TRUNCATE => FileOp::Truncate,
                file_op::LINK => FileOp::Link,
                file_op::MAKE => FileOp::Make { mode: e.open_flags },
                file_op::EXEC => FileOp::Exec,
                value => {
                    return Err(DecodeError::UnknownValue {
                        what: "file op",
                        value,
                    });
                }
            };
            let id = |dev: u32, ino: u64| (dev != 0 || ino != 0).then_some((dev, ino));
            Ok(Event::File {
                header: header(&e.header),
                op,
                dirfd: e.dirfd,
                path: path(&e.path),
                dirfd2: e.dirfd2,
                path2: path(&e.path2),
                ret: e.ret,
                dir: id(e.dir_dev, e.dir_ino),
                dir2: id(e.dir2_dev, e.dir2_ino),
                opened: id(e.file_dev, e.file_ino),
            })
        }
        EventKind::Net => {
            let e: NetEvent = read(buf, "net event")?;
            let op = match e.op {
                net_op::CONNECT => NetOp::Connect,
                net_op::SEND => NetOp::Send,
                net_op::BIND => NetOp::Bind,
                value => {
                    return Err(DecodeError::UnknownValue {
                        what: "net op",
                        value,
                    });
                }
            };
            let addr = match e.family {
                2 => IpAddr::V4(Ipv4Addr::new(e.addr[0], e.addr[1], e.addr[2], e.addr[3])),
                10 => IpAddr::V6(Ipv6Addr::from(e.addr)),
                value => {
                    return Err(DecodeError::UnknownValue {
                        what: "address family",
                        value,
                    });
                }
            };
            Ok(Event::Net {
                header: header(&e.header),
                op,
                addr,
                port: e.port,
                protocol: u8::try_from(e.protocol).unwrap_or(u8::MAX),
                host_rule: e.host_rule,
            })
        }
        EventKind::Exit => {
            let e: ExitEvent = read(buf, "exit event")?;
            Ok(Event::Exit {
                header: header(&e.header),
            })
        }
        EventKind::Escape => decode_escape(buf),
        EventKind::CgroupMkdir | EventKind::CgroupRmdir => {
            let e: CgroupEvent = read(buf, "cgroup event")?;
            Ok(if kind == EventKind::CgroupMkdir {
                Event::CgroupMkdir {
                    id: e.id,
                    path: text(&e.path),
                }
            } else {
                Event::CgroupRmdir { id: e.id }
            })
        }
    }
}

#[cfg(test)]
mod tests;
