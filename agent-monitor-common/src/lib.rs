//! Types shared by the kernel programs and the daemon.
//!
//! Wire-safe by construction: `#[repr(C)]`, `Copy`, explicit padding, integers only (no
//! `bool`, `Option` or Rust enums). Every event starts with an [`EventHeader`]; its `kind`
//! says which payload struct follows. Userspace copies events out of the ring buffer with
//! `read_unaligned` after checking the length.
#![no_std]

/// Bytes kept of a path argument (including the NUL). Longer paths are truncated and flagged.
pub const PATH_LEN: usize = 256;
/// Bytes kept of each argv entry (including the NUL).
pub const ARG_LEN: usize = 64;
/// argv entries kept per exec.
pub const MAX_ARGS: usize = 6;
/// `TASK_COMM_LEN` in the kernel.
pub const COMM_LEN: usize = 16;
/// Deepest cgroup level searched for a tagged ancestor.
pub const MAX_CGROUP_LEVEL: i32 = 16;

mod events;
pub mod layout;

pub use events::{
    CgroupEvent, EscapeEvent, EventHeader, ExecEvent, ExitEvent, FILE_EVENT_NO_PATHS,
    FILE_EVENT_ONE_PATH, FileEvent, NetEvent,
};

/// Event kinds (`EventHeader::kind`). Numbers are stable; retired numbers are never reused.
pub mod syscalls;

/// The kind of a ring-buffer event; [`EventHeader::kind`] holds its number (a `u32` on the
/// wire, so that an unknown number decodes to an error, never to undefined behaviour).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// [`ExecEvent`]: a tagged process ran a new image (`sched_process_exec`).
    Exec = 1,
    /// [`FileEvent`]: a tagged process opened, unlinked or renamed a file, or changed
    /// directory (reported at syscall exit, successful calls only).
    File = 2,
    /// [`NetEvent`]: connect, unconnected send or bind by a tagged process.
    Net = 3,
    /// [`ExitEvent`]: the last thread of a tagged process exited.
    Exit = 4,
    /// [`CgroupEvent`]: a cgroup v2 directory was created (any process).
    CgroupMkdir = 5,
    /// [`CgroupEvent`]: a cgroup v2 directory was removed (any process).
    CgroupRmdir = 6,
    /// [`EscapeEvent`]: a tagged process tried to leave or weaken its confinement
    /// (namespaces, mounts, bpf, ptrace, `io_uring`, raw sockets, signalling outside the agent,
    /// moving to another cgroup).
    Escape = 7,
}

impl EventKind {
    pub const ALL: [Self; 7] = [
        Self::Exec,
        Self::File,
        Self::Net,
        Self::Exit,
        Self::CgroupMkdir,
        Self::CgroupRmdir,
        Self::Escape,
    ];

    /// Its name in metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::File => "file",
            Self::Net => "net",
            Self::Exit => "exit",
            Self::CgroupMkdir => "cgroup_mkdir",
            Self::CgroupRmdir => "cgroup_rmdir",
            Self::Escape => "escape",
        }
    }

    pub fn from_u32(value: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u32 == value)
    }
}

/// [`EventKind`] numbers, for the kernel programs' headers.
pub mod kind {
    use super::EventKind;

    pub const EXEC: u32 = EventKind::Exec as u32;
    pub const FILE: u32 = EventKind::File as u32;
    pub const NET: u32 = EventKind::Net as u32;
    pub const EXIT: u32 = EventKind::Exit as u32;
    pub const CGROUP_MKDIR: u32 = EventKind::CgroupMkdir as u32;
    pub const CGROUP_RMDIR: u32 = EventKind::CgroupRmdir as u32;
    pub const ESCAPE: u32 = EventKind::Escape as u32;
}

/// `EscapeEvent::op`.
pub mod escape_op {
    /// A syscall from the escape list (`nr` says which); `args` are its first arguments when
    /// the kernel saw its entry (a syscall refused by the agent's seccomp filter has none).
    pub const SYSCALL: u32 = 1;
    /// The process was attached to another cgroup (`target` moved, `path` is the destination
    /// relative to the cgroup2 root).
    pub const CGROUP_MOVE: u32 = 2;
}

/// File operations (`FileEvent::op`).
pub mod file_op {
    /// open, openat, openat2, creat: `flags` holds the open flags.
    pub const OPEN: u32 = 1;
    /// unlink, unlinkat, rmdir.
    pub const UNLINK: u32 = 2;
    /// rename, renameat, renameat2: `path2`/`dirfd2` hold the destination.
    pub const RENAME: u32 = 3;
    /// chdir (`path` set) or fchdir (`dirfd` set, `path` empty): keeps the process table's cwd.
    pub const CHDIR: u32 = 4;
    /// connect to a Unix-domain socket: `path` is the socket's (`open_flags` 1: an abstract
    /// name, no file); `dirfd2` is the connecting socket (its inode in `dir2_ino`).
    pub const CONNECT_UNIX: u32 = 5;
    /// listen(2): `dirfd` is the socket's descriptor (its port is looked up by the daemon).
    pub const LISTEN: u32 = 6;
    /// truncate (`path` set) or ftruncate (`dirfd` is the descriptor, `path` empty).
    pub const TRUNCATE: u32 = 7;
    /// link, linkat: `path` is the existing file, `path2`/`dirfd2` the new name.
    pub const LINK: u32 = 8;
    /// mkdir, mkdirat, mknod, mknodat, symlink, symlinkat: `path` names what was to be made.
    /// Reported only when refused (`flags::REFUSED`).
    pub const MAKE: u32 = 9;
    /// execve, execveat: reported here only when refused (`flags::REFUSED`); a successful
    /// exec is an exec event.
    pub const EXEC: u32 = 10;
}

/// Network operations (`NetEvent::op`), one per cgroup `sock_addr` hook family.
pub mod net_op {
    pub const CONNECT: u32 = 1;
    /// sendmsg/sendto with an address on an unconnected UDP socket.
    pub const SEND: u32 = 2;
    pub const BIND: u32 = 3;
}

/// `EventHeader::flags` bits.
pub mod flags {
    /// A path or argument did not fit and was cut.
    pub const TRUNCATED: u32 = 1;
    /// The kernel sent SIGKILL to the process before the syscall returned to it.
    pub const KILLED: u32 = 2;
    /// The kernel refused the operation (EPERM).
    pub const BLOCKED: u32 = 4;
    /// The kernel stopped the process (SIGSTOP) until the daemon decides.
    pub const HELD: u32 = 8;
    /// A path could not be read from the caller's memory (even after the syscall faulted
    /// it in): the daemon must not guess it.
    pub const PATH_FAULT: u32 = 16;
    /// The syscall failed with EACCES, EPERM or EXDEV (`ret` holds it): for an agent
    /// started under Landlock, the kernel refused it before it had any effect.
    pub const REFUSED: u32 = 32;
}

/// `AgentConfig::mode`.
pub mod mode {
    pub const AUDIT: u32 = 0;
    pub const ENFORCE: u32 = 1;
}

/// `AgentConfig::on_violation`.
pub mod on_violation {
    pub const ALERT: u32 = 0;
    pub const KILL_PROCESS: u32 = 1;
    pub const KILL_AGENT: u32 = 2;
}

/// `AgentConfig::flags` bits.
pub mod config_flags {
    /// exec.allow has globs that may match files created after load: an exec whose inode
    /// is not in the allow set is held (SIGSTOP) for the daemon rather than killed.
    pub const EXEC_DEFER: u32 = 1;
    /// Opens the kernel cannot judge by identity (not on the deny list, not a file already
    /// found readable) are held (SIGSTOP) at syscall exit until the daemon judges the path.
    pub const FILE_HOLD: u32 = 2;
    /// The scope has `host:` rules: the agent's UDP port-53 traffic goes to the daemon's
    /// resolver for it (`AgentConfig::dns_port4/6`), and addresses it learned there
    /// (`DNS_LEARNED`) are reachable under the matching host rule (`HOST_RULES`).
    pub const DNS: u32 = 4;
}

/// `host:` rules kept per agent in the kernel (`HOST_RULES` indexes 0..this).
pub const MAX_HOST_RULES: u32 = 16;

/// The DNS port the kernel redirects for agents with `config_flags::DNS`.
pub const DNS_PORT: u16 = 53;

/// Protocol bits in `PortRule::protos` and `NetRule::any_port_protos`.
pub mod proto_bits {
    pub const TCP: u16 = 1;
    pub const UDP: u16 = 2;
}

/// Entries kept per CIDR in `NetRule`.
pub const MAX_PORT_RULES: usize = 16;

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Events written to the ring buffer.
    pub const EMITTED: u32 = 0;
    /// Events lost because the ring buffer was full.
    pub const DROPPED: u32 = 1;
    /// Tagged pids that could not be recorded (pid map full).
    pub const PID_MAP_FULL: u32 = 2;
    /// Opens not re-reported: the same process, file and access within the window.
    pub const DEDUPED: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// An escape syscall seen at entry, completed at exit (`PENDING_ESCAPE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EscapeEntry {
    pub args: [u64; 3],
    /// Header flags decided at entry (`KILLED`).
    pub flags: u32,
    pub pad0: u32,
}

/// Value of the pid map: which agent a thread belongs to, and its parent process.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PidTag {
    pub agent: u32,
    pub ppid: u32,
}

/// Per-agent enforcement settings (`AGENT_CONFIG`, keyed by slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AgentConfig {
    pub mode: u32,
    pub on_violation: u32,
    pub flags: u32,
    /// Number of `host:` rules in `HOST_RULES` for this slot (at most `MAX_HOST_RULES`).
    pub host_rules: u32,
    /// With `config_flags::DNS`: the UDP port of the daemon's resolver for this agent on
    /// 127.0.0.1 (IPv4 and IPv4-mapped destinations) and on `::1` (IPv6 destinations);
    /// host byte order, 0 when there is none (the query is then refused with EPERM).
    pub dns_port4: u32,
    pub dns_port6: u32,
    /// The `slot` of the `FILE_OK` keys that hold for the scope written now: the slot itself
    /// for the task's own scope, a tag (`READ_TAG_BIT` set) for each tool scope a call
    /// switches to. Files found readable under one scope are then not taken as readable
    /// under another, and a switch forgets none of them.
    pub read_tag: u32,
    pub pad0: u32,
}

/// Set in every `AgentConfig::read_tag` that is not a slot.
pub const READ_TAG_BIT: u32 = 1 << 31;

/// One allowed port for some protocols.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PortRule {
    pub port: u16,
    pub protos: u16,
}

/// What a CIDR allows (`NET_RULES` value). The daemon merges into each prefix the rules of
/// every wider prefix that contains it, so the longest match alone decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NetRule {
    /// Protocols allowed on any port.
    pub any_port_protos: u16,
    pub count: u16,
    pub ports: [PortRule; MAX_PORT_RULES],
}

/// `NET_RULES` key data (after the LPM prefix length): the slot in network byte order,
/// then the address as IPv6 (IPv4 as `::ffff:a.b.c.d`). Prefix length = 32 + address bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NetKey {
    pub slot_be: [u8; 4],
    pub addr: [u8; 16],
}

/// `HOST_RULES` key: one `host:` rule of one agent (index in declaration order among the
/// scope's host rules).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostRuleKey {
    pub slot: u32,
    pub index: u32,
}

/// `DNS_LEARNED` key: an address one agent's resolver answered for a name allowed by one
/// of its host rules. IPv4 as `::ffff:a.b.c.d`, as in `NetKey`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LearnedKey {
    pub slot: u32,
    pub index: u32,
    pub addr: [u8; 16],
}

/// `DNS_LEARNED` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Learned {
    /// `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`) after which the address is no longer allowed.
    pub expires_ns: u64,
}

/// `DNS_ORIGIN` value, keyed by socket cookie: where a redirected DNS query was going, so
/// the reply can be given that source again (resolvers check it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DnsOrigin {
    /// `user_ip4` (first four bytes) or `user_ip6` as the hook saw them (network order).
    pub addr: [u8; 16],
    /// `user_port` as the hook saw it (network byte order in the low 16 bits).
    pub port: u32,
    /// `AF_INET` or `AF_INET6`.
    pub family: u32,
}

/// Indexes into `TAG_STATE` (u64 each, written by the daemon after every tag change).
pub mod tag_state {
    /// How many cgroups are tagged: 0 lets every hook return at once.
    pub const TAGGED: u32 = 0;
    /// Bumped after every tag change; cached cgroup verdicts of older generations are stale.
    pub const GENERATION: u32 = 1;
    /// The de-duplication clock: whole seconds of `CLOCK_BOOTTIME`, written by the daemon at
    /// start and every 200 ms. An array read instead of a clock read per open (reading the
    /// clock costs about 70 ns in a VM).
    pub const EPOCH: u32 = 2;
    /// Bumped by the kernel programs after every change of an existing pid tag (a tag
    /// removed when its task is freed, a tag given at fork): each CPU's cached last tagged
    /// thread of an older generation is stale.
    pub const PIDS: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// `CGROUP_VERDICT` value: a cgroup's agent slot (0: none) as of a tag generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupVerdict {
    pub generation: u64,
    pub slot: u32,
    pub pad0: u32,
}

/// `RECENT_OPENS` key: one process's access of one file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OpenKey {
    pub tgid: u32,
    /// `O_ACCMODE | O_CREAT | O_TRUNC` bits of the open.
    pub access: u32,
    pub dev: u32,
    pub pad0: u32,
    pub ino: u64,
}

/// `BIND_PORTS` key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BindKey {
    pub slot: u32,
    pub port: u32,
}

/// A file identity for one agent (`EXEC_ALLOW`, `FILE_DENY`, `FILE_OK` keys). `dev` is the kernel's
/// internal encoding (`MKDEV(major, minor)` = major << 20 | minor).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub slot: u32,
    pub dev: u32,
    pub ino: u64,
}

/// Bytes of a file name a `DIR_NAMES` key holds (NUL included): a name the daemon would
/// have to keep longer than this rules a directory out of `DIR_OK`.
pub const DIR_NAME_LEN: usize = 28;

/// `DIR_NAMES` key: a file name that a `DIR_OK` entry with `dir_ok::NAMED` does not cover
/// under this read tag (a `files.deny` entry such as `**/.env` names it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NameKey {
    pub slot: u32,
    /// The name, NUL-padded.
    pub name: [u8; DIR_NAME_LEN],
}

/// `DIR_OK` value bits: every file of the directory may be read (`READ`), written or made
/// (`WRITE`) under the read tag; with `NAMED`, every file but those whose names
/// `DIR_NAMES` holds for that tag.
pub mod dir_ok {
    pub const READ: u8 = 1;
    pub const WRITE: u8 = 2;
    pub const NAMED: u8 = 4;
}

/// Structure offsets read from the running kernel's BTF by the daemon and written into the
/// object's frozen `.rodata` (`STRUCT_OFFSETS`) before the programs load, so the kernel side
/// can follow task -> open file -> inode without per-kernel builds, and the verifier knows
/// every offset as a constant.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    pub task_files: u32,
    pub task_mm: u32,
    pub files_fdt: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub mm_exe_file: u32,
    /// `files_struct.fd_array` and its length (`NR_OPEN_DEFAULT`): the descriptor table a
    /// process starts with, in place until it outgrows it.
    pub files_fd_array: u32,
    pub files_fd_array_len: u32,
    /// `file.f_mode`: whether an open file was opened for writing (`FMODE_WRITE`), whatever
    /// flags the caller passed.
    pub file_mode: u32,
    /// `file.f_path.dentry`, `dentry.d_parent`, `dentry.d_inode` and `dentry.d_name.name`:
    /// the directory an opened file was found in, and the name it was found under.
    pub file_dentry: u32,
    pub dentry_parent: u32,
    pub dentry_inode: u32,
    pub dentry_name: u32,
    /// Non-zero once the daemon has filled the offsets in.
    pub valid: u32,
}

impl Offsets {
    /// No offsets: the object's default, kept when the daemon cannot read BTF (the kernel
    /// side then has no file identity).
    pub const NONE: Self = Self {
        task_files: 0,
        task_mm: 0,
        files_fdt: 0,
        fdt_fd: 0,
        file_inode: 0,
        inode_ino: 0,
        inode_sb: 0,
        sb_dev: 0,
        mm_exe_file: 0,
        files_fd_array: 0,
        files_fd_array_len: 0,
        file_mode: 0,
        file_dentry: 0,
        dentry_parent: 0,
        dentry_inode: 0,
        dentry_name: 0,
        valid: 0,
    };
}

/// argv captured at execve entry, consumed at `sched_process_exec`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecArgs {
    pub argc: u32,
    pub flags: u32,
    pub args: [[u8; ARG_LEN]; MAX_ARGS],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], Copy, made of integers and byte arrays with
    // explicit padding, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::PidTag {}
    unsafe impl aya::Pod for super::AgentConfig {}
    unsafe impl aya::Pod for super::NetRule {}
    unsafe impl aya::Pod for super::NetKey {}
    unsafe impl aya::Pod for super::BindKey {}
    unsafe impl aya::Pod for super::HostRuleKey {}
    unsafe impl aya::Pod for super::LearnedKey {}
    unsafe impl aya::Pod for super::Learned {}
    unsafe impl aya::Pod for super::DnsOrigin {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::NameKey {}
    unsafe impl aya::Pod for super::ExecArgs {}
    unsafe impl aya::Pod for super::FileEvent {}
    unsafe impl aya::Pod for super::EscapeEvent {}
    unsafe impl aya::Pod for super::ExecEvent {}
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::NetEvent {}
    unsafe impl aya::Pod for super::ExitEvent {}
    unsafe impl aya::Pod for super::CgroupEvent {}
}

/// Helpers for byte fields.
pub mod bytes {
    /// The bytes before the first NUL (all of them when there is none).
    #[must_use]
    pub fn until_nul(buf: &[u8]) -> &[u8] {
        match buf.iter().position(|b| *b == 0) {
            Some(n) => &buf[..n],
            None => buf,
        }
    }
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, size_of};

    use super::*;

    // The kernel reserves ring-buffer records at 8-byte boundaries and the layout is shared
    // with C-like code: sizes are part of the wire contract.
    #[test]
    fn wire_sizes_are_stable() {
        let h = size_of::<EventHeader>();
        assert_eq!(h, 56);
        assert_eq!(
            size_of::<ExecEvent>(),
            h + 8 + PATH_LEN + ARG_LEN * MAX_ARGS
        );
        assert_eq!(size_of::<FileEvent>(), h + 24 + 40 + 2 * PATH_LEN);
        assert_eq!(size_of::<NetEvent>(), h + 16 + 16 + 8);
        assert_eq!(size_of::<ExitEvent>(), h);
        assert_eq!(size_of::<EscapeEvent>(), h + 8 + 24 + 8 + 8 + 8 + PATH_LEN);
        assert_eq!(size_of::<EscapeEntry>(), 32);
        assert_eq!(size_of::<CgroupEvent>(), h + 16 + PATH_LEN);
        assert_eq!(size_of::<NetKey>(), 20);
        assert_eq!(size_of::<InodeKey>(), 16);
        assert_eq!(size_of::<NetRule>(), 4 + 4 * MAX_PORT_RULES);
        assert_eq!(size_of::<AgentConfig>(), 32);
        assert_eq!(size_of::<LearnedKey>(), 24);
        assert_eq!(size_of::<DnsOrigin>(), 24);
        for align in [
            align_of::<ExecEvent>(),
            align_of::<FileEvent>(),
            align_of::<NetEvent>(),
            align_of::<CgroupEvent>(),
        ] {
            assert_eq!(8 % align, 0);
        }
    }

    #[test]
    fn until_nul_stops_at_first_nul() {
        assert_eq!(bytes::until_nul(b"abc\0def"), b"abc");
        assert_eq!(bytes::until_nul(b"abc"), b"abc");
        assert_eq!(bytes::until_nul(b"\0"), b"");
    }
}
