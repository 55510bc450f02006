//! The x86-64 syscall table: the one list of syscall numbers and what the monitor does with
//! each. The kernel programs dispatch on [`nr`]; the daemon attaches its hooks from each
//! entry's [`Hook`], builds the agents' seccomp allow-list from its [`Class`], and names
//! syscalls in records by it. Numbers from the kernel's
//! `arch/x86/entry/syscalls/syscall_64.tbl` (up to Linux 6.18).

/// What the agents' seccomp filter does with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Ordinary software needs it and it cannot reach outside the task.
    Allow,
    /// Allowed with some arguments only (the daemon's seccomp conditions).
    Args,
    /// Refused with EPERM: it changes the kernel, the machine or other processes, or hands
    /// the agent a file the file rules never judged.
    Refuse,
    /// Refused with ENOSYS, so that the C library falls back to an older call.
    Enosys,
}

/// Which kernel program watches a syscall (beyond the refusal of a [`Class::Refuse`] or
/// [`Class::Args`] one, which `sys_exit_refused` records when no other program does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    None,
    /// `sys_exit_file` at `syscalls:sys_exit_<name>`; `required`: every architecture has it
    /// (the legacy `open`, `rename`, ... do not).
    File {
        required: bool,
    },
    /// `sys_exit_escape` at `syscalls:sys_exit_<tracepoint>`, and `sys_enter_escape` at entry
    /// too when `entry` (signals: judged before a killed target leaves the pid map). No
    /// tracepoint: judged only as a name (the ring behind `io_uring_enter` can only come from
    /// a refused `io_uring_setup`).
    Escape {
        tracepoint: Option<&'static str>,
        entry: bool,
    },
}

pub struct Syscall {
    pub nr: u32,
    pub name: &'static str,
    pub class: Class,
    pub hook: Hook,
}

macro_rules! table {
    (@hook) => {
        Hook::None
    };
    (@hook $hook:expr) => {
        $hook
    };
    ($($nr:literal $name:ident $class:ident $(=> $hook:expr)?;)*) => {
        /// Syscall numbers by the kernel's names.
        #[expect(non_upper_case_globals, reason = "the kernel's syscall names")]
        pub mod nr {
            $(pub const $name: i32 = $nr;)*
        }

        /// Every x86-64 syscall, by number.
        pub const TABLE: &[Syscall] = &[
            $(Syscall {
                nr: $nr,
                name: stringify!($name),
                class: Class::$class,
                hook: table!(@hook $($hook)?),
            },)*
        ];
    };
}

use Hook::{Escape, File};

table! {
    0 read Allow;
    1 write Allow;
    2 open Allow => File { required: false };
    3 close Allow;
    4 stat Allow;
    5 fstat Allow;
    6 lstat Allow;
    7 poll Allow;
    8 lseek Allow;
    9 mmap Allow;
    10 mprotect Allow;
    11 munmap Allow;
    12 brk Allow;
    13 rt_sigaction Allow;
    14 rt_sigprocmask Allow;
    15 rt_sigreturn Allow;
    16 ioctl Allow;
    17 pread64 Allow;
    18 pwrite64 Allow;
    19 readv Allow;
    20 writev Allow;
    21 access Allow;
    22 pipe Allow;
    23 select Allow;
    24 sched_yield Allow;
    25 mremap Allow;
    26 msync Allow;
    27 mincore Allow;
    28 madvise Allow;
    29 shmget Allow;
    30 shmat Allow;
    31 shmctl Allow;
    32 dup Allow;
    33 dup2 Allow;
    34 pause Allow;
    35 nanosleep Allow;
    36 getitimer Allow;
    37 alarm Allow;
    38 setitimer Allow;
    39 getpid Allow;
    40 sendfile Allow;
    41 socket Args => Escape { tracepoint: Some("socket"), entry: false };
    42 connect Allow => File { required: true };
    43 accept Allow;
    44 sendto Allow;
    45 recvfrom Allow;
    46 sendmsg Allow;
    47 recvmsg Allow;
    48 shutdown Allow;
    49 bind Allow;
    50 listen Allow => File { required: true };
    51 getsockname Allow;
    52 getpeername Allow;
    53 socketpair Allow;
    54 setsockopt Allow;
    55 getsockopt Allow;
    56 clone Args;
    57 fork Allow;
    58 vfork Allow;
    59 execve Allow => File { required: true };
    60 exit Allow;
    61 wait4 Allow;
    62 kill Args => Escape { tracepoint: Some("kill"), entry: true };
    63 uname Allow;
    64 semget Allow;
    65 semop Allow;
    66 semctl Allow;
    67 shmdt Allow;
    68 msgget Allow;
    69 msgsnd Allow;
    70 msgrcv Allow;
    71 msgctl Allow;
    72 fcntl Allow;
    73 flock Allow;
    74 fsync Allow;
    75 fdatasync Allow;
    76 truncate Allow => File { required: true };
    77 ftruncate Allow => File { required: true };
    78 getdents Allow;
    79 getcwd Allow;
    80 chdir Allow => File { required: true };
    81 fchdir Allow => File { required: true };
    82 rename Allow => File { required: false };
    83 mkdir Allow => File { required: false };
    84 rmdir Allow => File { required: false };
    85 creat Allow => File { required: false };
    86 link Allow => File { required: false };
    87 unlink Allow => File { required: false };
    88 symlink Allow => File { required: false };
    89 readlink Allow;
    90 chmod Allow;
    91 fchmod Allow;
    92 chown Allow;
    93 fchown Allow;
    94 lchown Allow;
    95 umask Allow;
    96 gettimeofday Allow;
    97 getrlimit Allow;
    98 getrusage Allow;
    99 sysinfo Allow;
    100 times Allow;
    101 ptrace Refuse => Escape { tracepoint: Some("ptrace"), entry: false };
    102 getuid Allow;
    103 syslog Refuse;
    104 getgid Allow;
    105 setuid Allow;
    106 setgid Allow;
    107 geteuid Allow;
    108 getegid Allow;
    109 setpgid Allow;
    110 getppid Allow;
    111 getpgrp Allow;
    112 setsid Allow;
    113 setreuid Allow;
    114 setregid Allow;
    115 getgroups Allow;
    116 setgroups Allow;
    117 setresuid Allow;
    118 getresuid Allow;
    119 setresgid Allow;
    120 getresgid Allow;
    121 getpgid Allow;
    122 setfsuid Allow;
    123 setfsgid Allow;
    124 getsid Allow;
    125 capget Allow;
    126 capset Allow;
    127 rt_sigpending Allow;
    128 rt_sigtimedwait Allow;
    129 rt_sigqueueinfo Args;
    130 rt_sigsuspend Allow;
    131 sigaltstack Allow;
    132 utime Allow;
    133 mknod Args => File { required: false };
    134 uselib Refuse;
    135 personality Allow;
    136 ustat Allow;
    137 statfs Allow;
    138 fstatfs Allow;
    139 sysfs Allow;
    140 getpriority Allow;
    141 setpriority Args;
    142 sched_setparam Args;
    143 sched_getparam Allow;
    144 sched_setscheduler Args;
    145 sched_getscheduler Allow;
    146 sched_get_priority_max Allow;
    147 sched_get_priority_min Allow;
    148 sched_rr_get_interval Allow;
    149 mlock Allow;
    150 munlock Allow;
    151 mlockall Allow;
    152 munlockall Allow;
    153 vhangup Refuse;
    154 modify_ldt Refuse;
    155 pivot_root Refuse => Escape { tracepoint: Some("pivot_root"), entry: false };
    156 _sysctl Refuse;
    157 prctl Args;
    158 arch_prctl Allow;
    159 adjtimex Refuse;
    160 setrlimit Allow;
    161 chroot Refuse => Escape { tracepoint: Some("chroot"), entry: false };
    162 sync Allow;
    163 acct Refuse => Escape { tracepoint: Some("acct"), entry: false };
    164 settimeofday Refuse;
    165 mount Refuse => Escape { tracepoint: Some("mount"), entry: false };
    166 umount2 Refuse => Escape { tracepoint: Some("umount"), entry: false };
    167 swapon Refuse => Escape { tracepoint: Some("swapon"), entry: false };
    168 swapoff Refuse;
    169 reboot Refuse => Escape { tracepoint: Some("reboot"), entry: false };
    170 sethostname Refuse;
    171 setdomainname Refuse;
    172 iopl Refuse;
    173 ioperm Refuse;
    174 create_module Refuse;
    175 init_module Refuse => Escape { tracepoint: Some("init_module"), entry: false };
    176 delete_module Refuse => Escape { tracepoint: Some("delete_module"), entry: false };
    177 get_kernel_syms Refuse;
    178 query_module Refuse;
    179 quotactl Refuse;
    180 nfsservctl Refuse;
    181 getpmsg Refuse;
    182 putpmsg Refuse;
    183 afs_syscall Refuse;
    184 tuxcall Refuse;
    185 security Refuse;
    186 gettid Allow;
    187 readahead Allow;
    188 setxattr Allow;
    189 lsetxattr Allow;
    190 fsetxattr Allow;
    191 getxattr Allow;
    192 lgetxattr Allow;
    193 fgetxattr Allow;
    194 listxattr Allow;
    195 llistxattr Allow;
    196 flistxattr Allow;
    197 removexattr Allow;
    198 lremovexattr Allow;
    199 fremovexattr Allow;
    200 tkill Args => Escape { tracepoint: Some("tkill"), entry: true };
    201 time Allow;
    202 futex Allow;
    203 sched_setaffinity Args;
    204 sched_getaffinity Allow;
    205 set_thread_area Allow;
    206 io_setup Allow;
    207 io_destroy Allow;
    208 io_getevents Allow;
    209 io_submit Allow;
    210 io_cancel Allow;
    211 get_thread_area Allow;
    212 lookup_dcookie Refuse;
    213 epoll_create Allow;
    214 epoll_ctl_old Refuse;
    215 epoll_wait_old Refuse;
    216 remap_file_pages Allow;
    217 getdents64 Allow;
    218 set_tid_address Allow;
    219 restart_syscall Allow;
    220 semtimedop Allow;
    221 fadvise64 Allow;
    222 timer_create Allow;
    223 timer_settime Allow;
    224 timer_gettime Allow;
    225 timer_getoverrun Allow;
    226 timer_delete Allow;
    227 clock_settime Refuse;
    228 clock_gettime Allow;
    229 clock_getres Allow;
    230 clock_nanosleep Allow;
    231 exit_group Allow;
    232 epoll_wait Allow;
    233 epoll_ctl Allow;
    234 tgkill Args => Escape { tracepoint: Some("tgkill"), entry: true };
    235 utimes Allow;
    236 vserver Refuse;
    237 mbind Allow;
    238 set_mempolicy Allow;
    239 get_mempolicy Allow;
    240 mq_open Allow;
    241 mq_unlink Allow;
    242 mq_timedsend Allow;
    243 mq_timedreceive Allow;
    244 mq_notify Allow;
    245 mq_getsetattr Allow;
    246 kexec_load Refuse => Escape { tracepoint: Some("kexec_load"), entry: false };
    247 waitid Allow;
    248 add_key Refuse;
    249 request_key Refuse;
    250 keyctl Refuse;
    251 ioprio_set Args;
    252 ioprio_get Allow;
    253 inotify_init Allow;
    254 inotify_add_watch Allow;
    255 inotify_rm_watch Allow;
    256 migrate_pages Refuse;
    257 openat Allow => File { required: true };
    258 mkdirat Allow => File { required: true };
    259 mknodat Args => File { required: true };
    260 fchownat Allow;
    261 futimesat Allow;
    262 newfstatat Allow;
    263 unlinkat Allow => File { required: true };
    264 renameat Allow => File { required: false };
    265 linkat Allow => File { required: true };
    266 symlinkat Allow => File { required: true };
    267 readlinkat Allow;
    268 fchmodat Allow;
    269 faccessat Allow;
    270 pselect6 Allow;
    271 ppoll Allow;
    272 unshare Refuse => Escape { tracepoint: Some("unshare"), entry: false };
    273 set_robust_list Allow;
    274 get_robust_list Allow;
    275 splice Allow;
    276 tee Allow;
    277 sync_file_range Allow;
    278 vmsplice Allow;
    279 move_pages Refuse;
    280 utimensat Allow;
    281 epoll_pwait Allow;
    282 signalfd Allow;
    283 timerfd_create Allow;
    284 eventfd Allow;
    285 fallocate Allow;
    286 timerfd_settime Allow;
    287 timerfd_gettime Allow;
    288 accept4 Allow;
    289 signalfd4 Allow;
    290 eventfd2 Allow;
    291 epoll_create1 Allow;
    292 dup3 Allow;
    293 pipe2 Allow;
    294 inotify_init1 Allow;
    295 preadv Allow;
    296 pwritev Allow;
    297 rt_tgsigqueueinfo Args;
    298 perf_event_open Refuse => Escape { tracepoint: Some("perf_event_open"), entry: false };
    299 recvmmsg Allow;
    300 fanotify_init Refuse => Escape { tracepoint: Some("fanotify_init"), entry: false };
    301 fanotify_mark Refuse;
    302 prlimit64 Args;
    303 name_to_handle_at Refuse;
    304 open_by_handle_at Refuse => Escape { tracepoint: Some("open_by_handle_at"), entry: false };
    305 clock_adjtime Refuse;
    306 syncfs Allow;
    307 sendmmsg Allow;
    308 setns Refuse => Escape { tracepoint: Some("setns"), entry: false };
    309 getcpu Allow;
    310 process_vm_readv Refuse => Escape { tracepoint: Some("process_vm_readv"), entry: false };
    311 process_vm_writev Refuse => Escape { tracepoint: Some("process_vm_writev"), entry: false };
    312 kcmp Refuse;
    313 finit_module Refuse => Escape { tracepoint: Some("finit_module"), entry: false };
    314 sched_setattr Args;
    315 sched_getattr Allow;
    316 renameat2 Allow => File { required: true };
    317 seccomp Allow;
    318 getrandom Allow;
    319 memfd_create Allow;
    320 kexec_file_load Refuse => Escape { tracepoint: Some("kexec_file_load"), entry: false };
    321 bpf Refuse => Escape { tracepoint: Some("bpf"), entry: false };
    322 execveat Allow => File { required: true };
    323 userfaultfd Refuse => Escape { tracepoint: Some("userfaultfd"), entry: false };
    324 membarrier Allow;
    325 mlock2 Allow;
    326 copy_file_range Allow;
    327 preadv2 Allow;
    328 pwritev2 Allow;
    329 pkey_mprotect Allow;
    330 pkey_alloc Allow;
    331 pkey_free Allow;
    332 statx Allow;
    333 io_pgetevents Allow;
    334 rseq Allow;
    424 pidfd_send_signal Args;
    425 io_uring_setup Refuse => Escape { tracepoint: Some("io_uring_setup"), entry: false };
    426 io_uring_enter Refuse => Escape { tracepoint: None, entry: false };
    427 io_uring_register Refuse => Escape { tracepoint: None, entry: false };
    428 open_tree Refuse => Escape { tracepoint: Some("open_tree"), entry: false };
    429 move_mount Refuse => Escape { tracepoint: Some("move_mount"), entry: false };
    430 fsopen Refuse => Escape { tracepoint: Some("fsopen"), entry: false };
    431 fsconfig Refuse => Escape { tracepoint: Some("fsconfig"), entry: false };
    432 fsmount Refuse => Escape { tracepoint: Some("fsmount"), entry: false };
    433 fspick Refuse => Escape { tracepoint: Some("fspick"), entry: false };
    434 pidfd_open Args => Escape { tracepoint: Some("pidfd_open"), entry: true };
    435 clone3 Enosys;
    436 close_range Allow;
    437 openat2 Allow => File { required: true };
    438 pidfd_getfd Refuse => Escape { tracepoint: Some("pidfd_getfd"), entry: false };
    439 faccessat2 Allow;
    440 process_madvise Refuse;
    441 epoll_pwait2 Allow;
    442 mount_setattr Refuse => Escape { tracepoint: Some("mount_setattr"), entry: false };
    443 quotactl_fd Refuse;
    444 landlock_create_ruleset Allow;
    445 landlock_add_rule Allow;
    446 landlock_restrict_self Allow;
    447 memfd_secret Allow;
    448 process_mrelease Refuse;
    449 futex_waitv Allow;
    450 set_mempolicy_home_node Allow;
    451 cachestat Allow;
    452 fchmodat2 Allow;
    453 map_shadow_stack Allow;
    454 futex_wake Allow;
    455 futex_wait Allow;
    456 futex_requeue Allow;
    457 statmount Allow;
    458 listmount Allow;
    459 lsm_get_self_attr Allow;
    460 lsm_set_self_attr Refuse;
    461 lsm_list_modules Allow;
    462 mseal Allow;
    463 setxattrat Allow;
    464 getxattrat Allow;
    465 listxattrat Allow;
    466 removexattrat Allow;
    467 open_tree_attr Refuse;
    468 file_getattr Allow;
    469 file_setattr Allow;
}

/// The highest number in [`TABLE`]: anything above is a syscall this build does not know
/// (refused with ENOSYS, as the kernel answers for a syscall it lacks).
pub const MAX_NR: u32 = 469;

pub fn by_nr(nr: u32) -> Option<&'static Syscall> {
    TABLE
        .binary_search_by_key(&nr, |s| s.nr)
        .ok()
        .and_then(|i| TABLE.get(i))
}

pub fn by_name(name: &str) -> Option<&'static Syscall> {
    TABLE.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Class::{Allow, Args, Enosys, Refuse};

    #[test]
    fn the_table_is_sorted_unique_and_ends_at_max_nr() {
        assert!(TABLE.windows(2).all(|w| w[0].nr < w[1].nr));
        assert_eq!(TABLE.last().map(|s| s.nr), Some(MAX_NR));
        assert_eq!(by_nr(257).map(|s| s.name), Some("openat"));
        assert_eq!(by_name("clone3").map(|s| s.class), Some(Enosys));
    }

    #[test]
    fn what_reaches_outside_the_task_is_not_simply_allowed() {
        for name in [
            "ptrace",
            "bpf",
            "mount",
            "unshare",
            "setns",
            "pidfd_getfd",
            "fanotify_init",
            "userfaultfd",
            "acct",
            "swapon",
            "io_uring_setup",
            "open_by_handle_at",
            "perf_event_open",
            "keyctl",
            "process_vm_readv",
            "kexec_load",
            "chroot",
        ] {
            assert_eq!(by_name(name).map(|s| s.class), Some(Refuse), "{name}");
        }
        for name in [
            "clone",
            "socket",
            "kill",
            "mknod",
            "prlimit64",
            "setpriority",
            "sched_setscheduler",
            "ioprio_set",
            "rt_sigqueueinfo",
        ] {
            assert_eq!(by_name(name).map(|s| s.class), Some(Args), "{name}");
        }
        for name in [
            "read",
            "openat",
            "execve",
            "landlock_restrict_self",
            "seccomp",
            "rseq",
        ] {
            assert_eq!(by_name(name).map(|s| s.class), Some(Allow), "{name}");
        }
    }
}
