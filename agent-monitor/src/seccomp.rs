//! The seccomp filter `agent-monitor exec` installs in the agent before exec: syscalls the
//! kernel hooks cannot stop before they take effect (a signal sent at `sys_enter` lands
//! after the syscall ran) are refused outright, with EPERM. The filter is inherited by
//! every child and cannot be removed. The kernel's `sys_exit` escape hooks still see each
//! refused call (it returns -EPERM) and report it.
//!
//! Numbers are x86-64's. Other ABIs (i386 through `int 0x80`, x32) are refused with ENOSYS:
//! their numbers differ, and a filter keyed on x86-64 numbers would not hold for them.

/// One classic-BPF instruction (`struct sock_filter`).
pub type Insn = libc::sock_filter;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;

// `struct seccomp_data`: nr @0, arch @4, args[i] @16 + 8i (low half first, little endian).
const NR: u32 = 0;
const ARCH: u32 = 4;
const fn arg(i: u32) -> u32 {
    16 + 8 * i
}

const NR_SOCKET: u32 = 41;
const NR_KILL: u32 = 62;
const NR_TKILL: u32 = 200;
const NR_TGKILL: u32 = 234;
const NR_PIDFD_OPEN: u32 = 434;
/// clone3 can start a child in another cgroup (`CLONE_INTO_CGROUP`); with ENOSYS the C
/// library falls back to clone, which cannot.
const NR_CLONE3: u32 = 435;

const AF_UNIX: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const AF_PACKET: u32 = 17;
const SOCK_RAW: u32 = 3;

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

/// `nr` with `arg(i)` (low 32 bits) equal to one of `values`: refused with `e`.
fn deny_if_arg(out: &mut Vec<Insn>, nr: u32, i: u32, values: &[u32], e: i32) {
    if values.is_empty() {
        return;
    }
    let n = u8::try_from(values.len()).unwrap_or(u8::MAX).min(200);
    out.push(stmt(LD_W_ABS, NR));
    out.push(jump(JEQ_K, nr, 0, n + 2));
    out.push(stmt(LD_W_ABS, arg(i)));
    for (idx, v) in values.iter().take(usize::from(n)).enumerate() {
        let idx = u8::try_from(idx).unwrap_or(0);
        let last = idx + 1 == n;
        out.push(jump(JEQ_K, *v, n - 1 - idx, u8::from(last)));
    }
    out.push(errno(e));
}

/// The whole filter. `daemon` is the monitor's pid and `daemon_threads` its thread ids:
/// signals to them (and `kill(-1)`, which reaches every process) are refused.
pub fn filter(daemon: u32, daemon_threads: &[u32]) -> Vec<Insn> {
    let mut f = vec![
        stmt(LD_W_ABS, ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        errno(libc::ENOSYS),
        stmt(LD_W_ABS, NR),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        errno(libc::ENOSYS),
        jump(JEQ_K, NR_CLONE3, 0, 1),
        errno(libc::ENOSYS),
    ];
    // Whatever their arguments: namespaces, mounts, bpf, ptrace and other processes'
    // memory, `io_uring`, kernel modules and kexec, file handles, reboot.
    for s in crate::escape::SYSCALLS.iter().filter(|s| s.always_refused) {
        f.push(jump(JEQ_K, s.nr, 0, 1));
        f.push(errno(libc::EPERM));
    }
    // socket(AF_PACKET, ..) and socket(AF_INET/AF_INET6, SOCK_RAW, ..).
    deny_if_arg(&mut f, NR_SOCKET, 0, &[AF_PACKET], libc::EPERM);
    f.extend([
        stmt(LD_W_ABS, NR),
        jump(JEQ_K, NR_SOCKET, 0, 7),
        stmt(LD_W_ABS, arg(1)),
        stmt(AND_K, 0xf),
        jump(JEQ_K, SOCK_RAW, 0, 4),
        stmt(LD_W_ABS, arg(0)),
        jump(JEQ_K, AF_INET, 1, 0),
        jump(JEQ_K, AF_INET6, 0, 1),
        errno(libc::EPERM),
    ]);
    // socket(AF_UNIX, SOCK_DGRAM): a datagram to a path is delivered by the sendto that
    // names it, before any hook could judge the path (stream sockets connect first, and
    // the connect is held until judged).
    f.extend([
        stmt(LD_W_ABS, NR),
        jump(JEQ_K, NR_SOCKET, 0, 6),
        stmt(LD_W_ABS, arg(0)),
        jump(JEQ_K, AF_UNIX, 0, 4),
        stmt(LD_W_ABS, arg(1)),
        stmt(AND_K, 0xf),
        jump(JEQ_K, SOCK_DGRAM, 0, 1),
        errno(libc::EPERM),
    ]);
    // Signals: kill(-1) and anything aimed at the daemon (its process or its group).
    let minus = |p: u32| 0u32.wrapping_sub(p);
    deny_if_arg(
        &mut f,
        NR_KILL,
        0,
        &[u32::MAX, daemon, minus(daemon)],
        libc::EPERM,
    );
    deny_if_arg(&mut f, NR_TGKILL, 0, &[daemon], libc::EPERM);
    deny_if_arg(&mut f, NR_PIDFD_OPEN, 0, &[daemon], libc::EPERM);
    let mut tids: Vec<u32> = daemon_threads.to_vec();
    tids.push(daemon);
    tids.sort_unstable();
    tids.dedup();
    deny_if_arg(&mut f, NR_TKILL, 0, &tids, libc::EPERM);
    f.push(stmt(RET_K, RET_ALLOW));
    f
}

/// Thread ids of a process, from /proc.
pub fn threads_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Installs `filter` on the calling thread. Async-signal-safe (prctl only): for `pre_exec`.
/// Without `CAP_SYS_ADMIN` the kernel requires `no_new_privs` first.
pub fn install(filter: &[Insn]) -> std::io::Result<()> {
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

    /// A tiny classic-BPF interpreter for the instructions the filter uses, so the tests
    /// check what the filter decides, not how it is spelled.
    fn run(f: &[Insn], nr: u32, args: [u64; 3]) -> u32 {
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
                AND_K => acc &= insn.k,
                JEQ_K | JGE_K => {
                    let taken = if insn.code == JEQ_K {
                        acc == insn.k
                    } else {
                        acc >= insn.k
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                RET_K => return insn.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    const EPERM: u32 = RET_ERRNO | 1;

    #[test]
    fn escapes_are_refused_and_ordinary_calls_pass() {
        let f = filter(4242, &[4243]);
        assert_eq!(run(&f, 321, [0; 3]), EPERM, "bpf");
        assert_eq!(run(&f, 272, [0x2_0000, 0, 0]), EPERM, "unshare");
        assert_eq!(run(&f, 425, [8, 0, 0]), EPERM, "io_uring_setup");
        assert_eq!(run(&f, 0, [0; 3]), RET_ALLOW, "read");
        assert_eq!(run(&f, 257, [0; 3]), RET_ALLOW, "openat");
        assert_eq!(run(&f, 56, [0; 3]), RET_ALLOW, "clone");
        assert_eq!(
            run(&f, NR_CLONE3, [0; 3]),
            RET_ERRNO | 0x26,
            "clone3: ENOSYS"
        );
        assert_eq!(run(&f, 0x4000_0000, [0; 3]), RET_ERRNO | 0x26, "x32");
    }

    #[test]
    fn sockets_by_family_and_type() {
        let f = filter(1, &[]);
        assert_eq!(run(&f, NR_SOCKET, [2, 1, 0]), RET_ALLOW, "TCP");
        assert_eq!(run(&f, NR_SOCKET, [10, 2 | 0x80000, 0]), RET_ALLOW, "UDP6");
        assert_eq!(run(&f, NR_SOCKET, [1, 1, 0]), RET_ALLOW, "unix");
        assert_eq!(run(&f, NR_SOCKET, [2, 3, 1]), EPERM, "raw");
        assert_eq!(
            run(&f, NR_SOCKET, [10, 3 | 0x800, 58]),
            EPERM,
            "raw6 nonblock"
        );
        assert_eq!(run(&f, NR_SOCKET, [17, 3, 0]), EPERM, "packet");
        assert_eq!(
            run(&f, NR_SOCKET, [1, 3, 0]),
            RET_ALLOW,
            "unix SOCK_RAW is no such thing"
        );
    }

    #[test]
    fn signals_never_reach_the_daemon() {
        let f = filter(4242, &[4243, 4244]);
        assert_eq!(run(&f, NR_KILL, [4242, 9, 0]), EPERM);
        assert_eq!(
            run(&f, NR_KILL, [u64::from(u32::MAX), 9, 0]),
            EPERM,
            "kill(-1)"
        );
        assert_eq!(
            run(&f, NR_KILL, [u64::from(0u32.wrapping_sub(4242)), 9, 0]),
            EPERM,
            "the daemon's process group"
        );
        assert_eq!(run(&f, NR_KILL, [777, 9, 0]), RET_ALLOW, "another process");
        assert_eq!(run(&f, NR_TKILL, [4244, 9, 0]), EPERM);
        assert_eq!(run(&f, NR_TKILL, [4245, 9, 0]), RET_ALLOW);
        assert_eq!(run(&f, NR_TGKILL, [4242, 4243, 9]), EPERM);
        assert_eq!(run(&f, NR_PIDFD_OPEN, [4242, 0, 0]), EPERM);
        assert_eq!(run(&f, NR_PIDFD_OPEN, [5, 0, 0]), RET_ALLOW);
    }
}
