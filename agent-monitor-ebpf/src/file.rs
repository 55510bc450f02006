//! File hooks. One program, `sys_exit_file`, on the exit of every file syscall: it judges
//! the call by what it opened and emits it (reading its paths then) only when the call
//! succeeded and is not a repeat: a failed open touched nothing.
//!
//! There is no entry hook. The syscall's arguments are still in the task's saved user
//! registers at exit, so nothing is stashed between entry and exit: an entry program and a
//! per-thread map update and delete per call were a third of a tagged open's cost, and an
//! untagged open now runs one program instead of two.

use agent_monitor_common::{
    AgentConfig, FILE_EVENT_NO_PATHS, FILE_EVENT_ONE_PATH, FileEvent, InodeKey, OpenKey, PATH_LEN,
    config_flags, counter, dir_ok, file_op, flags, kind, syscalls::nr, tag_state,
};
use aya_ebpf::{
    helpers::{bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    enforce::{
        FMODE_READ, FMODE_WRITE, Opened, SIGKILL, dir_allows, enforced, fd_file, hold, kills,
        signal,
    },
    maps::{
        FILE_DENY, FILE_OK, FILE_SCRATCH, PROTECTED_DEVS, RECENT_OPENS, RECENT_OPENS_CPU,
        RECENT_OPENS_CPU_LEN, ReportedOpen, TAG_STATE, count, emit_prefix,
    },
    process::{syscall_args, tp_field, tp_offset},
    tag::{Agent, current_agent, header},
};

const AT_FDCWD: i32 = -100;
const O_ACCMODE: u32 = 0o3;
const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
/// The flags an open whose flags cannot be read is judged with.
const O_WRONLY_CREAT_TRUNC: u32 = O_WRONLY | O_CREAT | O_TRUNC;
const AF_UNIX: u16 = 1;

/// Errors that mean "refused" (Landlock answers EACCES, EPERM for scoped signals and
/// sockets, and EXDEV for a link or rename that would widen access).
const EPERM: i64 = 1;
const EACCES: i64 = 13;
const EXDEV: i64 = 18;
/// `RESOLVE_IN_ROOT` (include/uapi/linux/openat2.h).
const RESOLVE_IN_ROOT: u64 = 0x10;
/// `S_IFDIR` and `S_IFLNK`: what mkdir and symlink make (mknod passes its own mode).
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// One syscall's arguments, as argument indexes (None: not present).
struct Layout {
    op: u32,
    dirfd: Option<usize>,
    path: Option<usize>,
    dirfd2: Option<usize>,
    path2: Option<usize>,
    flags: Option<usize>,
    /// Flags implied by the syscall itself (creat = O_CREAT|O_WRONLY|O_TRUNC).
    fixed_flags: u32,
}

const fn layout(op: u32) -> Layout {
    Layout {
        op,
        dirfd: None,
        path: None,
        dirfd2: None,
        path2: None,
        flags: None,
        fixed_flags: 0,
    }
}

/// How to read each file syscall's arguments.
#[inline(always)]
fn layout_of(syscall: i32) -> Option<Layout> {
    Some(match syscall {
        // open(filename, flags, mode)
        nr::open => Layout {
            path: Some(0),
            flags: Some(1),
            ..layout(file_op::OPEN)
        },
        // openat(dfd, filename, flags, mode)
        nr::openat => Layout {
            dirfd: Some(0),
            path: Some(1),
            flags: Some(2),
            ..layout(file_op::OPEN)
        },
        // openat2(dfd, filename, how, size): flags are read from `how`.
        nr::openat2 => Layout {
            dirfd: Some(0),
            path: Some(1),
            ..layout(file_op::OPEN)
        },
        // creat(pathname, mode) == open(pathname, O_CREAT|O_WRONLY|O_TRUNC)
        nr::creat => Layout {
            path: Some(0),
            fixed_flags: 0o1101,
            ..layout(file_op::OPEN)
        },
        // unlink(pathname), rmdir(pathname) (AT_REMOVEDIR)
        nr::unlink => Layout {
            path: Some(0),
            ..layout(file_op::UNLINK)
        },
        nr::rmdir => Layout {
            path: Some(0),
            fixed_flags: 0x200,
            ..layout(file_op::UNLINK)
        },
        // unlinkat(dfd, pathname, flag)
        nr::unlinkat => Layout {
            dirfd: Some(0),
            path: Some(1),
            flags: Some(2),
            ..layout(file_op::UNLINK)
        },
        // rename(oldname, newname)
        nr::rename => Layout {
            path: Some(0),
            path2: Some(1),
            ..layout(file_op::RENAME)
        },
        // renameat(olddfd, oldname, newdfd, newname[, flags for renameat2])
        nr::renameat | nr::renameat2 => Layout {
            dirfd: Some(0),
            path: Some(1),
            dirfd2: Some(2),
            path2: Some(3),
            flags: if syscall == nr::renameat2 {
                Some(4)
            } else {
                None
            },
            ..layout(file_op::RENAME)
        },
        // chdir(filename), fchdir(fd): keep the process table's cwd right for relative
        // paths.
        nr::chdir => Layout {
            path: Some(0),
            ..layout(file_op::CHDIR)
        },
        nr::fchdir => Layout {
            dirfd: Some(0),
            ..layout(file_op::CHDIR)
        },
        // truncate(path, length), ftruncate(fd, length)
        nr::truncate => Layout {
            path: Some(0),
            ..layout(file_op::TRUNCATE)
        },
        nr::ftruncate => Layout {
            dirfd: Some(0),
            ..layout(file_op::TRUNCATE)
        },
        // link(oldname, newname), linkat(olddfd, oldname, newdfd, newname, flags)
        nr::link => Layout {
            path: Some(0),
            path2: Some(1),
            ..layout(file_op::LINK)
        },
        nr::linkat => Layout {
            dirfd: Some(0),
            path: Some(1),
            dirfd2: Some(2),
            path2: Some(3),
            flags: Some(4),
            ..layout(file_op::LINK)
        },
        // mkdir(path, mode), mkdirat(dfd, path, mode): `open_flags` carries the file type.
        nr::mkdir => Layout {
            path: Some(0),
            fixed_flags: S_IFDIR,
            ..layout(file_op::MAKE)
        },
        nr::mkdirat => Layout {
            dirfd: Some(0),
            path: Some(1),
            fixed_flags: S_IFDIR,
            ..layout(file_op::MAKE)
        },
        // mknod(path, mode, dev), mknodat(dfd, path, mode, dev): the mode's type bits.
        nr::mknod => Layout {
            path: Some(0),
            flags: Some(1),
            ..layout(file_op::MAKE)
        },
        nr::mknodat => Layout {
            dirfd: Some(0),
            path: Some(1),
            flags: Some(2),
            ..layout(file_op::MAKE)
        },
        // symlink(target, newname), symlinkat(target, newdfd, newname): the new name.
        nr::symlink => Layout {
            path: Some(1),
            fixed_flags: S_IFLNK,
            ..layout(file_op::MAKE)
        },
        nr::symlinkat => Layout {
            dirfd: Some(1),
            path: Some(2),
            fixed_flags: S_IFLNK,
            ..layout(file_op::MAKE)
        },
        // execve(filename, argv, envp), execveat(dfd, filename, argv, envp, flags): only a
        // failed exec still has its arguments in the saved registers at exit.
        nr::execve => Layout {
            path: Some(0),
            ..layout(file_op::EXEC)
        },
        nr::execveat => Layout {
            dirfd: Some(0),
            path: Some(1),
            flags: Some(4),
            ..layout(file_op::EXEC)
        },
        // listen(fd, backlog): a socket never bound gets its port from the kernel here,
        // where no bind hook runs; the daemon judges the port it got while the process is
        // held.
        nr::listen => Layout {
            dirfd: Some(0),
            ..layout(file_op::LISTEN)
        },
        _ => return None,
    })
}

/// What the call did, from its saved arguments.
struct Call {
    op: u32,
    open_flags: u32,
    /// openat2's `how.resolve`.
    resolve: u32,
    dirfd: i32,
    dirfd2: i32,
    path_ptr: u64,
    path2_ptr: u64,
}

/// connect(fd, uservaddr, addrlen): only Unix-domain addresses are reported here; inet
/// connects are judged by the cgroup `sock_addr` hooks, which can refuse them. A Unix
/// socket's path is judged like a file written to (connecting needs write permission on the
/// socket file).
#[inline(always)]
fn unix_connect(args: &[u64; 5]) -> Result<Option<Call>, i64> {
    let addr = args[1] as *const u8;
    // SAFETY: user memory through the helper.
    let family: u16 = unsafe { bpf_probe_read_user(addr.cast::<u16>()) }.map_err(i64::from)?;
    if family != AF_UNIX {
        return Ok(None);
    }
    // `struct sockaddr_un { sa_family_t; char sun_path[108]; }`: a leading NUL in sun_path
    // means an abstract name (no file), which follows it.
    // SAFETY: user memory through the helper, which fails cleanly on a bad address.
    let first: u8 = unsafe { bpf_probe_read_user(addr.wrapping_add(2)) }.map_err(i64::from)?;
    let start = if first == 0 {
        addr.wrapping_add(3)
    } else {
        addr.wrapping_add(2)
    };
    #[expect(clippy::cast_possible_truncation, reason = "an int argument")]
    let sock = args[0] as i32;
    Ok(Some(Call {
        op: file_op::CONNECT_UNIX,
        open_flags: u32::from(first == 0),
        resolve: 0,
        dirfd: AT_FDCWD,
        // The socket itself: the event carries its inode, and the daemon asks the kernel
        // what it is connected to.
        dirfd2: sock,
        path_ptr: start as u64,
        path2_ptr: 0,
    }))
}

#[inline(always)]
fn call_of(syscall: i32, args: &[u64; 5]) -> Result<Option<Call>, i64> {
    if syscall == nr::connect {
        return unix_connect(args);
    }
    let Some(l) = layout_of(syscall) else {
        return Ok(None);
    };
    let arg = |i: Option<usize>| i.and_then(|i| args.get(i).copied()).unwrap_or(0);
    #[expect(
        clippy::cast_possible_truncation,
        reason = "int arguments in 8-byte registers"
    )]
    let dirfd = |i: Option<usize>| {
        if i.is_some() { arg(i) as i32 } else { AT_FDCWD }
    };
    #[expect(clippy::cast_possible_truncation, reason = "open flags are an int")]
    let mut open_flags = l.fixed_flags | arg(l.flags) as u32;
    let mut resolve = 0;
    if syscall == nr::openat2 {
        // `struct open_how { u64 flags; u64 mode; u64 resolve; }` in user memory.
        // SAFETY: user memory through the helper.
        // An unreadable `how` (a page the agent unmapped or registered with userfaultfd
        // after the call) fails closed: judged as a write, never as a read.
        let how: u64 = unsafe { bpf_probe_read_user(args[2] as *const u64) }
            .unwrap_or(u64::from(O_WRONLY_CREAT_TRUNC));
        #[expect(clippy::cast_possible_truncation, reason = "open flags fit 32 bits")]
        {
            open_flags = how as u32;
        }
        // SAFETY: user memory through the helper; `resolve` is at offset 16. Unreadable:
        // RESOLVE_IN_ROOT, so the daemon names the file by its descriptor or flags the name
        // as inexact rather than trusting an absolute path.
        let resolve_bits: u64 =
            unsafe { bpf_probe_read_user((args[2] + 16) as *const u64) }.unwrap_or(RESOLVE_IN_ROOT);
        #[expect(clippy::cast_possible_truncation, reason = "RESOLVE_* fit 32 bits")]
        {
            resolve = resolve_bits as u32;
        }
    }
    Ok(Some(Call {
        op: l.op,
        open_flags,
        resolve,
        dirfd: dirfd(l.dirfd),
        dirfd2: dirfd(l.dirfd2),
        path_ptr: arg(l.path),
        path2_ptr: arg(l.path2),
    }))
}

/// Copies a user path at syscall exit: the syscall itself has copied it by then, so its page
/// is faulted in (a tracepoint cannot fault pages in; at entry an untouched page is
/// unreadable). A path that still cannot be read is flagged: the daemon must not guess it.
#[inline(always)]
fn copy_path(ptr: *const u8, buf: &mut [u8; PATH_LEN], header_flags: &mut u32) {
    if ptr.is_null() {
        buf[0] = 0;
        return;
    }
    // SAFETY: the helper copes with bad user pointers.
    match unsafe { bpf_probe_read_user_str_bytes(ptr, buf) } {
        Ok(s) if s.len() + 1 >= PATH_LEN => *header_flags |= flags::TRUNCATED,
        Ok(_) => {}
        Err(_) => {
            buf[0] = 0;
            *header_flags |= flags::PATH_FAULT;
        }
    }
}

/// Whether this open was already reported in the current second (`tag_state::EPOCH`);
/// records it as reported otherwise. This CPU's recent opens first, then the machine's.
#[inline(always)]
fn repeated(tgid: u32, open_flags: u32, dev: u32, ino: u64) -> bool {
    let key = OpenKey {
        tgid,
        access: open_flags & (O_ACCMODE | O_CREAT | O_TRUNC),
        dev,
        pad0: 0,
        ino,
    };
    let epoch = TAG_STATE.get(tag_state::EPOCH).copied().unwrap_or(0);
    #[expect(clippy::cast_possible_truncation, reason = "a hash's low bits")]
    let index =
        ((ino ^ u64::from(dev) ^ (u64::from(tgid) << 7)) as u32) & (RECENT_OPENS_CPU_LEN - 1);
    let mine = RECENT_OPENS_CPU.get_ptr_mut(index);
    if let Some(mine) = mine {
        // SAFETY: this CPU's slot, copied out.
        let seen = unsafe { *mine };
        if seen.epoch == epoch && seen.key == key {
            return true;
        }
    }
    // SAFETY: the value is copied out.
    let repeat = unsafe { RECENT_OPENS.get(key) }.copied() == Some(epoch);
    if !repeat && RECENT_OPENS.insert(key, epoch, 0).is_err() {
        return false;
    }
    if let Some(mine) = mine {
        // SAFETY: this CPU's slot; programs on one CPU do not interleave within one run.
        unsafe { *mine = ReportedOpen { key, epoch } };
    }
    repeat
}

/// The kernel's verdict on a successful open by an enforced agent, before the caller sees
/// the descriptor. By what was opened (device and inode), whatever path led to it:
/// symlinks, hard links, relative paths, /proc/self/root, a dirfd.
#[inline(always)]
fn judge_open(hflags: &mut u32, open_flags: u32, opened: Option<&Opened>, cfg: &AgentConfig) {
    let writes = open_flags & (O_ACCMODE | O_CREAT | O_TRUNC) != 0;
    if let Some(opened) = opened {
        let key = opened.key;
        // A denied file, or a write into the monitor's own filesystems (cgroupfs, bpffs,
        // tracefs): killed before the first byte moves.
        if FILE_DENY.get_ptr(key).is_some() || (writes && PROTECTED_DEVS.get_ptr(key.dev).is_some())
        {
            signal(SIGKILL);
            *hflags |= flags::KILLED;
            return;
        }
        // Readable under the scope written now (a tool call's scope has a tag of its own).
        let ok = InodeKey {
            slot: cfg.read_tag,
            ..key
        };
        if !writes && FILE_OK.get_ptr(ok).is_some() {
            return;
        }
        // Or in a directory every file of which it may read (write) under that scope.
        let access = if writes { dir_ok::WRITE } else { dir_ok::READ };
        if dir_allows(cfg.read_tag, opened, access) {
            return;
        }
    }
    // Only a path decides the rest (allow-list globs): the process waits, stopped, until
    // the daemon has judged the path of the descriptor it now holds.
    if cfg.flags & config_flags::FILE_HOLD != 0 {
        hold();
        *hflags |= flags::HELD;
    }
}

/// Attached to every `sys_exit_*` of the syscalls above (`FILE_EXITS` in the loader):
/// `int __syscall_nr` @8, `long ret` @16.
#[tracepoint]
pub fn sys_exit_file(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_file(&ctx);
    0
}

fn try_sys_exit_file(ctx: &TracePointContext) -> Result<(), i64> {
    let ret: i64 = tp_field(ctx, tp_offset!(sys_exit_ret));
    if ret < 0 {
        // A failed call touched nothing; one the kernel refused is reported (below).
        if ret != -EACCES && ret != -EPERM && ret != -EXDEV {
            return Ok(());
        }
        return refused(ctx, ret);
    }
    let Some(agent) = current_agent() else {
        return Ok(());
    };
    let syscall: i32 = tp_field(ctx, tp_offset!(sys_exit_nr));
    let Some(mut call) = call_of(syscall, &syscall_args())? else {
        return Ok(());
    };
    // Made nodes and execs are reported only when refused (a successful exec is an exec
    // event; what was made is judged when it is opened).
    if call.op == file_op::MAKE || call.op == file_op::EXEC {
        return Ok(());
    }
    let slot = agent.slot;
    let mut hflags = 0;
    #[expect(clippy::cast_sign_loss, reason = "ret >= 0")]
    let opened = if call.op == file_op::OPEN {
        fd_file(slot, ret as u64)
    } else {
        None
    };
    let identity = opened.as_ref().map(|o| o.key);
    if let Some(mode) = opened.as_ref().map(|o| o.mode) {
        // The access mode the file really has, not the flags the caller passed (openat2
        // reads them from memory the agent controls).
        let accmode = match (mode & FMODE_READ != 0, mode & FMODE_WRITE != 0) {
            (true, true) => O_RDWR,
            (false, true) => O_WRONLY,
            _ => 0,
        };
        call.open_flags = (call.open_flags & !O_ACCMODE) | accmode;
    }
    if let Some(cfg) = enforced(slot)
        && kills(&cfg)
    {
        if call.op == file_op::OPEN {
            judge_open(&mut hflags, call.open_flags, opened.as_ref(), &cfg);
        } else if (call.op == file_op::CONNECT_UNIX || call.op == file_op::LISTEN)
            && cfg.flags & config_flags::FILE_HOLD != 0
        {
            // Connected or listening, but not one byte moved yet: the daemon judges the
            // socket's path or port.
            hold();
            hflags |= flags::HELD;
        }
    }
    // Verdict first, then de-duplication: the same process opening the same file the same
    // way again within the window is counted, not re-reported (a kill or a hold never is).
    if hflags & (flags::KILLED | flags::HELD) == 0
        && let Some(key) = identity
        && repeated(agent.tgid, call.open_flags, key.dev, key.ino)
    {
        count(counter::DEDUPED);
        return Ok(());
    }
    send(&agent, &call, hflags, ret, identity)
}

/// A file syscall of an enforced agent that failed with EACCES, EPERM or EXDEV. For an
/// agent started under Landlock that is the kernel refusing it before any effect; the
/// daemon judges the path it named and records the refusal (no hold, no kill here: nothing
/// happened).
#[inline(always)]
fn refused(ctx: &TracePointContext, ret: i64) -> Result<(), i64> {
    let Some(agent) = current_agent() else {
        return Ok(());
    };
    if enforced(agent.slot).is_none() {
        return Ok(());
    }
    let syscall: i32 = tp_field(ctx, tp_offset!(sys_exit_nr));
    let Some(call) = call_of(syscall, &syscall_args())? else {
        return Ok(());
    };
    if call.op == file_op::CHDIR || call.op == file_op::LISTEN {
        return Ok(());
    }
    send(&agent, &call, flags::REFUSED, ret, None)
}

/// What a directory descriptor of the current task refers to, (0, 0) for `AT_FDCWD`.
#[inline(always)]
fn dir_identity(slot: u32, dirfd: i32) -> (u32, u64) {
    #[expect(clippy::cast_sign_loss, reason = "dirfd >= 0")]
    let found = if dirfd >= 0 {
        fd_file(slot, dirfd as u64)
    } else {
        None
    };
    found.map_or((0, 0), |o| (o.key.dev, o.key.ino))
}

/// Builds and emits the file event of `call`; `opened` is what an open's new descriptor
/// refers to.
#[inline(always)]
fn send(
    agent: &Agent,
    call: &Call,
    hflags: u32,
    ret: i64,
    opened: Option<InodeKey>,
) -> Result<(), i64> {
    let event = FILE_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch slot, exclusively ours while this program runs.
    let event = unsafe { &mut *event };
    // The header is built only now, for an event that is reported (not for a repeat).
    event.header = header(kind::FILE, agent);
    event.header.flags = hflags;
    event.op = call.op;
    event.open_flags = call.open_flags;
    event.resolve = call.resolve;
    event.dirfd = call.dirfd;
    event.dirfd2 = call.dirfd2;
    event.ret = ret;
    // The directories are named by what they are now, while the descriptors still exist:
    // by the time the daemon reads this event the process may have closed them.
    (event.dir_dev, event.dir_ino) = dir_identity(agent.slot, call.dirfd);
    (event.dir2_dev, event.dir2_ino) = dir_identity(agent.slot, call.dirfd2);
    (event.file_dev, event.file_ino) = opened.map_or((0, 0), |k| (k.dev, k.ino));
    copy_path(
        call.path_ptr as *const u8,
        &mut event.path,
        &mut event.header.flags,
    );
    copy_path(
        call.path2_ptr as *const u8,
        &mut event.path2,
        &mut event.header.flags,
    );
    let len = if call.path2_ptr != 0 {
        size_of::<FileEvent>()
    } else if call.path_ptr != 0 {
        FILE_EVENT_ONE_PATH
    } else {
        FILE_EVENT_NO_PATHS
    };
    emit_prefix(event, len);
    Ok(())
}
