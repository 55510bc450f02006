//! The seccomp filter `agent-monitor exec` installs in the agent before exec: an
//! allow-list. Ordinary syscalls pass; the ones that reach outside the task (the kernel,
//! the machine, other processes, descriptors the file rules never judged) are refused with
//! EPERM, some depending on their arguments (`conditions`). The filter is inherited by
//! every child and cannot be removed; the kernel's `sys_exit` hooks see each refused call
//! (it returns -EPERM) and report it. The table is `agent_monitor_common::syscalls::TABLE`; seccompiler compiles
//! it.
//!
//! Numbers are x86-64's. Other ABIs (i386 through `int 0x80`, x32) and numbers past the
//! table are refused with ENOSYS: a filter keyed on x86-64 numbers would not hold for
//! them, and ENOSYS is what the C library expects of a syscall the kernel lacks.

use std::collections::BTreeMap;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond,
    SeccompFilter, SeccompRule, TargetArch,
};

use agent_monitor_common::syscalls::{Class, MAX_NR, TABLE};

/// One classic-BPF instruction (`struct sock_filter`).
pub(crate) type Insn = libc::sock_filter;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SeccompError {
    #[error("building the seccomp rule of {syscall}: {source}")]
    Rule {
        syscall: &'static str,
        source: seccompiler::BackendError,
    },
    #[error("compiling the seccomp allow-list: {0}")]
    Compile(seccompiler::BackendError),
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

// `struct seccomp_data`: nr @0, arch @4.
const NR: u32 = 0;
const ARCH: u32 = 4;

const SIGCONT: u64 = 18;
const CLONE_FILES: u64 = 0x400;
const CLONE_THREAD: u64 = 0x1_0000;
/// `CLONE_NEW{NS,CGROUP,UTS,IPC,USER,PID,NET}`: `clone` must not make namespaces
/// (`unshare` may not either).
const CLONE_NEW: u64 = 0x7e02_0000;
const S_IFMT: u64 = 0o170_000;
const PR_SET_MM: u64 = 35;

const fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

fn errno(e: i32) -> Insn {
    stmt(RET_K, RET_ERRNO | (e.unsigned_abs() & 0xffff))
}

fn cond(arg: u8, len: Len, op: Op, value: u64) -> Cond {
    // Only an argument index above 5 fails, and every index here is below.
    Cond::new(arg, len, op, value).unwrap_or_else(|_| unreachable!("argument index {arg}"))
}

/// `arg` (an int) is none of `values`.
fn none_of(arg: u8, values: &[u64]) -> Vec<Cond> {
    values
        .iter()
        .map(|v| cond(arg, Len::Dword, Op::Ne, *v))
        .collect()
}

/// When a syscall of class `Args` is allowed: any one of the returned rules (each a list of
/// conditions that must all hold). `daemon` is the monitor's pid, `threads` its thread ids.
fn conditions(name: &str, daemon: u64, threads: &[u64]) -> Vec<Vec<Cond>> {
    let minus = |p: u64| u64::from(0u32.wrapping_sub(u32::try_from(p).unwrap_or(0)));
    let q = |arg, op, v| cond(arg, Len::Qword, op, v);
    let d = |arg, op, v| cond(arg, Len::Dword, op, v);
    let own = |arg| vec![vec![d(arg, Op::Eq, 0)]];
    match name {
        // A child process with the parent's descriptor table would keep a descriptor its
        // opener was killed for; threads share it anyway. No namespaces.
        "clone" => vec![
            vec![q(0, Op::MaskedEq(CLONE_FILES | CLONE_NEW), 0)],
            vec![
                q(0, Op::MaskedEq(CLONE_THREAD), CLONE_THREAD),
                q(0, Op::MaskedEq(CLONE_NEW), 0),
            ],
        ],
        // Stream and datagram sockets of the families the hooks judge; Unix datagrams are
        // delivered by the very sendto that names their path, before any hook could judge
        // it; route netlink for interface lists (getifaddrs).
        "socket" => {
            let mut rules = Vec::new();
            for (family, ty) in [(1, 1), (1, 5), (2, 1), (2, 2), (10, 1), (10, 2)] {
                rules.push(vec![d(0, Op::Eq, family), d(1, Op::MaskedEq(0xf), ty)]);
            }
            rules.push(vec![d(0, Op::Eq, 16), d(2, Op::Eq, 0)]);
            rules
        }
        // Signals: never to the daemon (its process, its group, its threads) or to every
        // process (-1); never SIGCONT, which would resume an operation the kernel holds for
        // the daemon's verdict. Landlock's signal scope keeps the rest inside the agent.
        "kill" => {
            let mut c = none_of(0, &[daemon, minus(daemon), u64::from(u32::MAX)]);
            c.push(d(1, Op::Ne, SIGCONT));
            vec![c]
        }
        "tkill" => {
            let mut tids: Vec<u64> = threads.to_vec();
            tids.push(daemon);
            let mut c = none_of(0, &tids);
            c.push(d(1, Op::Ne, SIGCONT));
            vec![c]
        }
        "tgkill" | "rt_tgsigqueueinfo" => vec![vec![d(0, Op::Ne, daemon), d(2, Op::Ne, SIGCONT)]],
        "rt_sigqueueinfo" => vec![vec![d(0, Op::Ne, daemon), d(1, Op::Ne, SIGCONT)]],
        "pidfd_send_signal" => vec![vec![d(1, Op::Ne, SIGCONT)]],
        "pidfd_open" => vec![vec![d(0, Op::Ne, daemon)]],
        // Regular files, FIFOs and sockets; never device nodes.
        "mknod" | "mknodat" => {
            let arg = if name == "mknod" { 1 } else { 2 };
            [0, 0o100_000, 0o010_000, 0o140_000]
                .into_iter()
                .map(|t| vec![d(arg, Op::MaskedEq(S_IFMT), t)])
                .collect()
        }
        // Limits, priorities and scheduling of the caller itself only (0), never of
        // another process such as the daemon.
        "prlimit64" | "sched_setscheduler" | "sched_setparam" | "sched_setattr"
        | "sched_setaffinity" => own(0),
        "setpriority" | "ioprio_set" => own(1),
        // PR_SET_MM rewrites what /proc and the kernel report as the process's image.
        "prctl" => vec![vec![d(0, Op::Ne, PR_SET_MM)]],
        _ => Vec::new(),
    }
}

/// The whole filter. `daemon` is the monitor's pid and `daemon_threads` its thread ids:
/// signals to them (and `kill(-1)`, which reaches every process) are refused.
pub(crate) fn filter(daemon: u32, daemon_threads: &[u32]) -> Result<Vec<Insn>, SeccompError> {
    let daemon = u64::from(daemon);
    let threads: Vec<u64> = daemon_threads.iter().copied().map(u64::from).collect();
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for s in TABLE {
        let allowed = match s.class {
            Class::Allow => Vec::new(),
            Class::Args => conditions(s.name, daemon, &threads)
                .into_iter()
                .map(|c| {
                    SeccompRule::new(c).map_err(|source| SeccompError::Rule {
                        syscall: s.name,
                        source,
                    })
                })
                .collect::<Result<_, _>>()?,
            Class::Refuse | Class::Enosys => continue,
        };
        rules.insert(i64::from(s.nr), allowed);
    }
    let eperm = u32::try_from(libc::EPERM).unwrap_or(1);
    let allow_list = SeccompFilter::new(
        rules,
        SeccompAction::Errno(eperm),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(SeccompError::Compile)?;
    let program: seccompiler::BpfProgram = allow_list.try_into().map_err(SeccompError::Compile)?;
    // Before the allow-list: other ABIs, unknown numbers and the ENOSYS class.
    let mut f = vec![
        stmt(LD_W_ABS, ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        errno(libc::ENOSYS),
        stmt(LD_W_ABS, NR),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        errno(libc::ENOSYS),
        jump(JGE_K, MAX_NR + 1, 0, 1),
        errno(libc::ENOSYS),
    ];
    for s in TABLE.iter().filter(|s| s.class == Class::Enosys) {
        f.push(jump(JEQ_K, s.nr, 0, 1));
        f.push(errno(libc::ENOSYS));
    }
    f.extend(program.into_iter().map(|i| Insn {
        code: i.code,
        jt: i.jt,
        jf: i.jf,
        k: i.k,
    }));
    Ok(f)
}

/// Installs `filter` on the calling thread. Async-signal-safe (prctl only): for `pre_exec`.
/// Without `CAP_SYS_ADMIN` the kernel requires `no_new_privs` first.
pub(crate) fn install(filter: &[Insn]) -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::E2BIG))?,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `filter`, alive for the call; the kernel copies it.
    let set = || unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            std::ptr::from_ref(&prog),
        )
    };
    if set() == 0 {
        return Ok(());
    }
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 || set() != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RET_ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = RET_ERRNO | 1;
    const ENOSYS: u32 = RET_ERRNO | 0x26;

    /// A classic-BPF interpreter for the instructions the filter uses, so the tests check
    /// what the filter decides, not how it is spelled.
    fn run(f: &[Insn], nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&AUDIT_ARCH_X86_64.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let insn = f[pc];
            pc += 1;
            match insn.code {
                LD_W_ABS => {
                    let k = insn.k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().expect("4 bytes"));
                }
                // BPF_ALU | BPF_AND | BPF_K
                0x54 => acc &= insn.k,
                // BPF_JMP | BPF_JA
                0x05 => pc += insn.k as usize,
                // JEQ, JGE, JGT (| BPF_K)
                0x15 | 0x35 | 0x25 => {
                    let taken = match insn.code {
                        0x15 => acc == insn.k,
                        0x35 => acc >= insn.k,
                        _ => acc > insn.k,
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                RET_K => return insn.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn nr(name: &str) -> u32 {
        agent_monitor_common::syscalls::by_name(name)
            .expect("known syscall")
            .nr
    }

    fn call(f: &[Insn], name: &str, args: &[u64]) -> u32 {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        run(f, nr(name), a)
    }

    /// `PTRACE_SECCOMP_GET_FILTER` (include/uapi/linux/ptrace.h; not in the libc crate).
    const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;

    /// The filter a process really carries, read back from the kernel, decides every
    /// syscall of the table by its class. Needs root (`PTRACE_SECCOMP_GET_FILTER` requires
    /// `CAP_SYS_ADMIN`).
    #[test]
    fn the_installed_filter_decides_every_syscall_by_its_class() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (PTRACE_SECCOMP_GET_FILTER)"
        );
        let f = filter(4242, &[4243]).expect("filter");
        // SAFETY: the child makes raw syscalls only (no allocation, no locks) and exits.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork");
        if child == 0 {
            // SAFETY: async-signal-safe calls in the forked child.
            unsafe {
                libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
                let code = i32::from(install(&f).is_err());
                libc::raise(libc::SIGSTOP);
                libc::_exit(code);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(child, &raw mut status, 0) }, child);
        assert!(libc::WIFSTOPPED(status), "the child stopped: {status:#x}");
        // SAFETY: the child is our tracee and stopped; a null buffer asks for the length.
        let len = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                child,
                0,
                std::ptr::null_mut::<Insn>(),
            )
        };
        let mut installed = vec![stmt(0, 0); usize::try_from(len).expect("a filter is installed")];
        // SAFETY: the buffer holds `len` instructions, as the kernel just said.
        let got =
            unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, child, 0, installed.as_mut_ptr()) };
        // SAFETY: ending our own stopped child.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, &raw mut status, 0);
        }
        assert_eq!(got, len);
        for s in TABLE {
            let want = run(&f, s.nr, [0; 6]);
            assert_eq!(run(&installed, s.nr, [0; 6]), want, "{}", s.name);
            match s.class {
                Class::Refuse => assert_eq!(want, EPERM, "{} is refused", s.name),
                Class::Enosys => assert_eq!(want, ENOSYS, "{}", s.name),
                Class::Allow => assert_eq!(want, RET_ALLOW, "{}", s.name),
                Class::Args => {}
            }
        }
        assert_eq!(
            run(&installed, MAX_NR + 1, [0; 6]),
            ENOSYS,
            "unknown syscalls"
        );
    }

    #[test]
    fn every_syscall_gets_its_class() {
        let f = filter(4242, &[4243]).expect("filter");
        for s in TABLE {
            let got = run(&f, s.nr, [0; 6]);
            match s.class {
                Class::Allow => assert_eq!(got, RET_ALLOW, "{}", s.name),
                Class::Refuse => assert_eq!(got, EPERM, "{}", s.name),
                Class::Enosys => assert_eq!(got, ENOSYS, "{}", s.name),
                // Decided by arguments: below.
                Class::Args => {}
            }
        }
        assert_eq!(run(&f, MAX_NR + 1, [0; 6]), ENOSYS, "unknown number");
        assert_eq!(run(&f, 0x4000_0000, [0; 6]), ENOSYS, "x32");
        assert!(f.len() < 4096, "{} instructions", f.len());
    }

    #[test]
    fn clone_shares_no_descriptor_table_and_makes_no_namespace() {
        let f = filter(1, &[]).expect("filter");
        let fork = 0x0120_0011; // CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
        let thread = 0x003d_0f00; // what pthread_create passes
        assert_eq!(call(&f, "clone", &[fork]), RET_ALLOW, "fork");
        assert_eq!(call(&f, "clone", &[thread]), RET_ALLOW, "thread");
        assert_eq!(call(&f, "clone", &[0x4111]), RET_ALLOW, "vfork");
        assert_eq!(
            call(&f, "clone", &[CLONE_FILES | 0x11]),
            EPERM,
            "CLONE_FILES"
        );
        assert_eq!(
            call(&f, "clone", &[0x1000_0000 | 0x11]),
            EPERM,
            "CLONE_NEWUSER"
        );
        assert_eq!(
            call(&f, "clone", &[thread | 0x4000_0000]),
            EPERM,
            "a thread in a new network namespace"
        );
    }

    #[test]
    fn sockets_by_family_and_type() {
        let f = filter(1, &[]).expect("filter");
        assert_eq!(call(&f, "socket", &[2, 1, 0]), RET_ALLOW, "TCP");
        assert_eq!(call(&f, "socket", &[10, 2 | 0x80000, 0]), RET_ALLOW, "UDP6");
        assert_eq!(
            call(&f, "socket", &[1, 1 | 0x800, 0]),
            RET_ALLOW,
            "unix stream"
        );
        assert_eq!(call(&f, "socket", &[1, 5, 0]), RET_ALLOW, "unix seqpacket");
        assert_eq!(call(&f, "socket", &[16, 3, 0]), RET_ALLOW, "route netlink");
        assert_eq!(call(&f, "socket", &[16, 3, 9]), EPERM, "audit netlink");
        assert_eq!(call(&f, "socket", &[2, 3, 1]), EPERM, "raw");
        assert_eq!(call(&f, "socket", &[2, 10, 0x300]), EPERM, "SOCK_PACKET");
        assert_eq!(call(&f, "socket", &[17, 3, 0]), EPERM, "packet");
        assert_eq!(call(&f, "socket", &[1, 2, 0]), EPERM, "unix datagram");
        assert_eq!(call(&f, "socket", &[40, 1, 0]), EPERM, "vsock");
    }

    #[test]
    fn signals_never_reach_the_daemon_and_nothing_resumes_a_hold() {
        let f = filter(4242, &[4243, 4244]).expect("filter");
        assert_eq!(call(&f, "kill", &[4242, 9]), EPERM);
        assert_eq!(
            call(&f, "kill", &[u64::from(u32::MAX), 9]),
            EPERM,
            "kill(-1)"
        );
        assert_eq!(
            call(&f, "kill", &[u64::from(0u32.wrapping_sub(4242)), 9]),
            EPERM,
            "the daemon's process group"
        );
        assert_eq!(call(&f, "kill", &[777, 9]), RET_ALLOW, "another process");
        assert_eq!(call(&f, "kill", &[777, 18]), EPERM, "SIGCONT");
        assert_eq!(call(&f, "tkill", &[4244, 9]), EPERM);
        assert_eq!(call(&f, "tkill", &[4245, 9]), RET_ALLOW);
        assert_eq!(call(&f, "tgkill", &[4242, 4243, 9]), EPERM);
        assert_eq!(call(&f, "tgkill", &[5, 5, 18]), EPERM, "SIGCONT");
        assert_eq!(call(&f, "rt_sigqueueinfo", &[4242, 19, 0]), EPERM);
        assert_eq!(call(&f, "rt_sigqueueinfo", &[5, 10, 0]), RET_ALLOW);
        assert_eq!(call(&f, "pidfd_send_signal", &[3, 18, 0, 0]), EPERM);
        assert_eq!(call(&f, "pidfd_open", &[4242, 0]), EPERM);
        assert_eq!(call(&f, "pidfd_open", &[5, 0]), RET_ALLOW);
    }

    #[test]
    fn only_the_caller_itself_may_change_its_limits_and_priority() {
        let f = filter(4242, &[]).expect("filter");
        assert_eq!(call(&f, "prlimit64", &[0, 7, 1, 0]), RET_ALLOW);
        assert_eq!(call(&f, "prlimit64", &[4242, 7, 1, 0]), EPERM);
        assert_eq!(call(&f, "setpriority", &[0, 0, 10]), RET_ALLOW);
        assert_eq!(call(&f, "setpriority", &[0, 4242, 19]), EPERM);
        assert_eq!(call(&f, "sched_setscheduler", &[4242, 5, 0]), EPERM);
        assert_eq!(call(&f, "sched_setscheduler", &[0, 0, 0]), RET_ALLOW);
        assert_eq!(call(&f, "ioprio_set", &[1, 4242, 3 << 13]), EPERM);
        assert_eq!(call(&f, "mknod", &[0, 0o010_644, 0]), RET_ALLOW, "FIFO");
        assert_eq!(
            call(&f, "mknod", &[0, 0o020_600, 0x10b]),
            EPERM,
            "char device"
        );
        assert_eq!(
            call(&f, "mknodat", &[0, 0, 0o060_600, 0]),
            EPERM,
            "block device"
        );
        assert_eq!(call(&f, "prctl", &[PR_SET_MM, 13]), EPERM);
        assert_eq!(call(&f, "prctl", &[15, 0]), RET_ALLOW, "PR_SET_NAME");
    }
}
