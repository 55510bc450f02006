//! The ring-buffer event structs: the [`EventHeader`] every event starts with and the
//! payload struct its `kind` names.

use crate::{ARG_LEN, COMM_LEN, MAX_ARGS, PATH_LEN};

/// The fixed part of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    pub kind: u32,
    /// Agent slot (the task) the process belongs to; 0 for untagged (cgroup events only).
    pub agent: u32,
    /// `bpf_ktime_get_boot_ns` (`CLOCK_BOOTTIME`).
    pub time_ns: u64,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// Parent process id as tracked by the kernel side (0 when not known).
    pub ppid: u32,
    pub flags: u32,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

/// `kind::EXEC`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Number of argv entries captured (at most `MAX_ARGS`).
    pub argc: u32,
    pub pad0: u32,
    /// The name the kernel resolved the image from (`bprm->filename`).
    pub filename: [u8; PATH_LEN],
    pub args: [[u8; ARG_LEN]; MAX_ARGS],
}

/// `kind::FILE`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileEvent {
    pub header: EventHeader,
    pub op: u32,
    /// open flags (`O_*`) for `OPEN`, `AT_REMOVEDIR` for `UNLINK`, rename flags for `RENAME`.
    pub open_flags: u32,
    /// Directory fd `path` is relative to (`AT_FDCWD` = -100 for the cwd).
    pub dirfd: i32,
    pub dirfd2: i32,
    /// Syscall return value (the new fd for opens).
    pub ret: i64,
    /// What `dirfd` and `dirfd2` referred to when the syscall ran (device and inode; 0 when
    /// `AT_FDCWD` or not found): the daemon names a directory the process has closed since.
    pub dir_dev: u32,
    pub dir2_dev: u32,
    pub dir_ino: u64,
    pub dir2_ino: u64,
    /// For `OPEN`: the file the new descriptor refers to (0 when not found).
    pub file_dev: u32,
    /// For `OPEN` by openat2: `how.resolve` (`RESOLVE_*`; `RESOLVE_IN_ROOT` makes an absolute
    /// path start at `dirfd`); 0 otherwise.
    pub resolve: u32,
    pub file_ino: u64,
    pub path: [u8; PATH_LEN],
    pub path2: [u8; PATH_LEN],
}

/// A file event is sent without the path fields it does not use: `FILE_EVENT_NO_PATHS`
/// bytes when it has neither path (fchdir, listen), `FILE_EVENT_ONE_PATH` without `path2`
/// (all but rename). The reader zero-fills what was not sent.
pub const FILE_EVENT_NO_PATHS: usize = core::mem::size_of::<FileEvent>() - 2 * PATH_LEN;
pub const FILE_EVENT_ONE_PATH: usize = core::mem::size_of::<FileEvent>() - PATH_LEN;

/// `kind::NET`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetEvent {
    pub header: EventHeader,
    pub op: u32,
    /// `AF_INET` or `AF_INET6`.
    pub family: u32,
    /// `IPPROTO_TCP`, `IPPROTO_UDP`, ...
    pub protocol: u32,
    /// Host byte order.
    pub port: u16,
    pub pad0: u16,
    /// IPv4 in the first four bytes, or the IPv6 address; network byte order.
    pub addr: [u8; 16],
    /// What the kernel did: 1 allowed, 0 refused.
    pub allowed: u32,
    /// 1 + the index of the `host:` rule under which the agent learned this address from
    /// its own DNS answer (unexpired); 0 when no learned address matched.
    pub host_rule: u32,
}

/// `kind::ESCAPE`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EscapeEvent {
    pub header: EventHeader,
    pub op: u32,
    /// Syscall number (x86-64 numbering) for `SYSCALL`.
    pub nr: u32,
    /// The syscall's first three arguments (0 when not seen).
    pub args: [u64; 3],
    /// Syscall return value (`SYSCALL`), 0 for `CGROUP_MOVE`.
    pub ret: i64,
    /// `CGROUP_MOVE`: the thread moved. `SYSCALL`: 1 when the entry was seen (args valid).
    pub target: u32,
    /// `CGROUP_MOVE`: 1 when the kernel found the destination outside the agent's cgroup.
    pub outside: u32,
    /// `CGROUP_MOVE`: the destination cgroup's id.
    pub cgroup_id: u64,
    pub path: [u8; PATH_LEN],
}

/// `kind::EXIT`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
}

/// `kind::CGROUP_MKDIR` / `kind::CGROUP_RMDIR` (cgroup v2 hierarchy only).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupEvent {
    pub header: EventHeader,
    pub id: u64,
    pub level: u32,
    pub pad0: u32,
    /// Path relative to the cgroup2 root, e.g. `/agents/a1`.
    pub path: [u8; PATH_LEN],
}
