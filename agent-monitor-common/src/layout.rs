//! Where the kernel programs find the fields of the tracepoint records they read.
//!
//! The daemon reads each offset from the tracepoint's tracefs `format` file before loading
//! and writes the layout into the programs' read-only global `TRACEPOINT_LAYOUT` (frozen
//! `.rodata`): the verifier sees the offsets as constants, so the programs still load each
//! field straight from the record, with no helper call. [`TracepointLayout::DEFAULT`] is the
//! layout of Linux 6.18 (and the object's initial value).

/// Byte offsets of the record fields the kernel programs read. Every field is a plain
/// offset from the start of the record; the `__data_loc` ones hold the offset of the 32-bit
/// location word (`offset | length << 16`) of a variable-length string.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointLayout {
    /// `syscalls:sys_enter_*`: `int __syscall_nr`.
    pub sys_enter_nr: u32,
    /// `syscalls:sys_enter_*`: the first argument; argument `n` is [`SYSCALL_ARG_SIZE`]
    /// bytes further per index.
    pub sys_enter_args: u32,
    /// `syscalls:sys_exit_*`: `int __syscall_nr`.
    pub sys_exit_nr: u32,
    /// `syscalls:sys_exit_*`: `long ret`.
    pub sys_exit_ret: u32,
    /// `sched:sched_process_fork`: `pid_t child_pid`.
    pub fork_child_pid: u32,
    /// `sched:sched_process_exec`: `__data_loc char[] filename`.
    pub exec_filename: u32,
    /// `sched:sched_process_exec`: `pid_t old_pid`.
    pub exec_old_pid: u32,
    /// `sched:sched_process_exit`: `bool group_dead`.
    pub exit_group_dead: u32,
    /// `sched:sched_process_free`: `pid_t pid`.
    pub free_pid: u32,
    /// `cgroup:cgroup_mkdir` and `cgroup:cgroup_rmdir`: `int root`.
    pub cgroup_root: u32,
    /// `cgroup:cgroup_mkdir` and `cgroup:cgroup_rmdir`: `int level`.
    pub cgroup_level: u32,
    /// `cgroup:cgroup_mkdir` and `cgroup:cgroup_rmdir`: `u64 id`.
    pub cgroup_id: u32,
    /// `cgroup:cgroup_mkdir` and `cgroup:cgroup_rmdir`: `__data_loc char[] path`.
    pub cgroup_path: u32,
    /// `cgroup:cgroup_attach_task`: `u64 dst_id`.
    pub attach_dst_id: u32,
    /// `cgroup:cgroup_attach_task`: `int pid`.
    pub attach_pid: u32,
    /// `cgroup:cgroup_attach_task`: `__data_loc char[] dst_path`.
    pub attach_dst_path: u32,
}

/// Bytes per syscall argument in a `sys_enter_*` record (`unsigned long args[]`).
pub const SYSCALL_ARG_SIZE: u32 = 8;

/// The highest field offset the programs can load directly: each load is compiled for
/// every aligned offset up to this one, and the verifier keeps only the one the layout
/// names. The daemon refuses a layout that puts a field further.
pub const MAX_FIELD_OFFSET: u32 = 64;

impl TracepointLayout {
    /// Linux 6.18 (x86-64), from the tracefs `format` files.
    pub const DEFAULT: Self = Self {
        sys_enter_nr: 8,
        sys_enter_args: 16,
        sys_exit_nr: 8,
        sys_exit_ret: 16,
        fork_child_pid: 20,
        exec_filename: 8,
        exec_old_pid: 16,
        exit_group_dead: 32,
        free_pid: 12,
        cgroup_root: 8,
        cgroup_level: 12,
        cgroup_id: 16,
        cgroup_path: 24,
        attach_dst_id: 16,
        attach_pid: 24,
        attach_dst_path: 28,
    };

    /// Offset of syscall argument `n` in a `sys_enter_*` record.
    #[must_use]
    pub const fn sys_arg(&self, n: u32) -> u32 {
        self.sys_enter_args + SYSCALL_ARG_SIZE * n
    }
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, u32 fields only, no padding.
unsafe impl aya::Pod for TracepointLayout {}
