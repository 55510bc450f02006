//! File hooks. Each `sys_enter_*` stashes the call's arguments; the shared `sys_exit_file`
//! program judges it by what it opened, and emits it (reading its paths then) only when the
//! call succeeded and is not a repeat: a failed open touched nothing.

use agent_monitor_common::{
    AgentConfig, DEDUP_WINDOW_NS, FileEvent, FileStash, InodeKey, OpenKey, PATH_LEN, config_flags,
    counter, file_op, flags, kind,
};
use aya_ebpf::{
    helpers::{bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    enforce::{SIGKILL, SIGSTOP, enforced, fd_identity, kills, signal},
    maps::{
        FILE_DENY, FILE_OK, FILE_SCRATCH, PENDING_FILE, PROTECTED_DEVS, RECENT_OPENS, count, emit,
    },
    process::sys_arg,
    tag::{Agent, current_agent, header},
};

const AT_FDCWD: i32 = -100;
const O_ACCMODE: u32 = 0o3;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;

/// One syscall's arguments, as offsets into its `sys_enter_*` record (None: not present).
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

macro_rules! file_enter {
    ($name:ident, $layout:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            let _ = try_stash(&ctx, &$layout);
            0
        }
    };
}

// open(filename, flags, mode)
file_enter!(
    sys_enter_open,
    Layout {
        path: Some(sys_arg(0)),
        flags: Some(sys_arg(1)),
        ..layout(file_op::OPEN)
    }
);
// openat(dfd, filename, flags, mode)
file_enter!(
    sys_enter_openat,
    Layout {
        dirfd: Some(sys_arg(0)),
        path: Some(sys_arg(1)),
        flags: Some(sys_arg(2)),
        ..layout(file_op::OPEN)
    }
);
// openat2(dfd, filename, how, usize): flags are read from `how` in try_stash.
file_enter!(
    sys_enter_openat2,
    Layout {
        dirfd: Some(sys_arg(0)),
        path: Some(sys_arg(1)),
        ..layout(file_op::OPEN)
    }
);
// creat(pathname, mode) == open(pathname, O_CREAT|O_WRONLY|O_TRUNC)
file_enter!(
    sys_enter_creat,
    Layout {
        path: Some(sys_arg(0)),
        fixed_flags: 0o1101,
        ..layout(file_op::OPEN)
    }
);
// unlink(pathname), rmdir(pathname)
file_enter!(
    sys_enter_unlink,
    Layout {
        path: Some(sys_arg(0)),
        ..layout(file_op::UNLINK)
    }
);
file_enter!(
    sys_enter_rmdir,
    Layout {
        path: Some(sys_arg(0)),
        fixed_flags: 0x200,
        ..layout(file_op::UNLINK)
    }
);
// unlinkat(dfd, pathname, flag)
file_enter!(
    sys_enter_unlinkat,
    Layout {
        dirfd: Some(sys_arg(0)),
        path: Some(sys_arg(1)),
        flags: Some(sys_arg(2)),
        ..layout(file_op::UNLINK)
    }
);
// rename(oldname, newname)
file_enter!(
    sys_enter_rename,
    Layout {
        path: Some(sys_arg(0)),
        path2: Some(sys_arg(1)),
        ..layout(file_op::RENAME)
    }
);
// renameat(olddfd, oldname, newdfd, newname)
file_enter!(
    sys_enter_renameat,
    Layout {
        dirfd: Some(sys_arg(0)),
        path: Some(sys_arg(1)),
        dirfd2: Some(sys_arg(2)),
        path2: Some(sys_arg(3)),
        ..layout(file_op::RENAME)
    }
);
// renameat2(olddfd, oldname, newdfd, newname, flags)
file_enter!(
    sys_enter_renameat2,
    Layout {
        dirfd: Some(sys_arg(0)),
        path: Some(sys_arg(1)),
        dirfd2: Some(sys_arg(2)),
        path2: Some(sys_arg(3)),
        flags: Some(sys_arg(4)),
        ..layout(file_op::RENAME)
    }
);
// chdir(filename), fchdir(fd): keep the process table's cwd right for relative paths.
file_enter!(
    sys_enter_chdir,
    Layout {
        path: Some(sys_arg(0)),
        ..layout(file_op::CHDIR)
    }
);
file_enter!(
    sys_enter_fchdir,
    Layout {
        dirfd: Some(sys_arg(0)),
        ..layout(file_op::CHDIR)
    }
);

// listen(fd, backlog): a socket never bound gets its port from the kernel here, where no
// bind hook runs; the daemon judges the port it got while the process is held.
file_enter!(
    sys_enter_listen,
    Layout {
        dirfd: Some(sys_arg(0)),
        ..layout(file_op::LISTEN)
    }
);

const AF_UNIX: u16 = 1;

/// syscalls:sys_enter_connect: fd, uservaddr, addrlen. Only Unix-domain addresses are
/// stashed: inet connects are judged by the cgroup `sock_addr` hooks, which can refuse them.
/// A Unix socket's path is judged like a file written to (connecting needs write permission
/// on the socket file), completed at exit by `sys_exit_file`.
#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = try_stash_connect(&ctx);
    0
}

fn try_stash_connect(ctx: &TracePointContext) -> Result<(), i64> {
    let Some(agent) = current_agent() else {
        return Ok(());
    };
    // SAFETY: offset from the tracepoint format; user memory through the helper.
    let addr: *const u8 = unsafe { ctx.read_at(sys_arg(1)) }.map_err(i64::from)?;
    let family: u16 = unsafe { bpf_probe_read_user(addr.cast::<u16>()) }.map_err(i64::from)?;
    if family != AF_UNIX {
        return Ok(());
    }
    // `struct sockaddr_un { sa_family_t; char sun_path[108]; }`: a leading NUL in sun_path
    // means an abstract name (no file), which follows it.
    let first: u8 = unsafe { bpf_probe_read_user(addr.wrapping_add(2)) }.map_err(i64::from)?;
    let start = if first == 0 {
        addr.wrapping_add(3)
    } else {
        addr.wrapping_add(2)
    };
    let stash = FileStash {
        agent: agent.slot,
        ppid: agent.ppid,
        op: file_op::CONNECT_UNIX,
        open_flags: u32::from(first == 0),
        dirfd: AT_FDCWD,
        dirfd2: AT_FDCWD,
        path_ptr: start as u64,
        path2_ptr: 0,
    };
    PENDING_FILE
        .insert(agent.pid, stash, 0)
        .map_err(i64::from)?;
    Ok(())
}

/// Keeps the call's arguments (not its paths: those are read at exit, and only when the
/// call is reported, so a repeated open costs no path copy).
#[inline(always)]
fn try_stash(ctx: &TracePointContext, l: &Layout) -> Result<(), i64> {
    let Some(agent) = current_agent() else {
        return Ok(());
    };
    // SAFETY (all read_at): offsets come from the syscall's tracepoint format.
    let arg = |off: Option<usize>| -> Result<u64, i64> {
        match off {
            Some(off) => unsafe { ctx.read_at::<u64>(off) }.map_err(i64::from),
            None => Ok(0),
        }
    };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "int arguments in 8-byte slots"
    )]
    let dirfd = |off: Option<usize>| -> Result<i32, i64> {
        Ok(if off.is_some() {
            arg(off)? as i32
        } else {
            AT_FDCWD
        })
    };
    #[expect(clippy::cast_possible_truncation, reason = "open flags are an int")]
    let mut open_flags = l.fixed_flags | arg(l.flags)? as u32;
    if l.flags.is_none() && l.op == file_op::OPEN && l.dirfd.is_some() && l.fixed_flags == 0 {
        // openat2: `struct open_how { u64 flags; u64 mode; u64 resolve; }` in user memory.
        let how = arg(Some(sys_arg(2)))? as *const u64;
        #[expect(clippy::cast_possible_truncation, reason = "open flags fit 32 bits")]
        {
            open_flags = unsafe { bpf_probe_read_user(how) }.unwrap_or(0) as u32;
        }
    }
    let stash = FileStash {
        agent: agent.slot,
        ppid: agent.ppid,
        op: l.op,
        open_flags,
        dirfd: dirfd(l.dirfd)?,
        dirfd2: dirfd(l.dirfd2)?,
        path_ptr: arg(l.path)?,
        path2_ptr: arg(l.path2)?,
    };
    PENDING_FILE
        .insert(agent.pid, stash, 0)
        .map_err(i64::from)?;
    Ok(())
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

/// Whether this open was reported within the window; records it as reported otherwise.
#[inline(always)]
fn repeated(tgid: u32, open_flags: u32, dev: u32, ino: u64) -> bool {
    let key = OpenKey {
        tgid,
        access: open_flags & (O_ACCMODE | O_CREAT | O_TRUNC),
        dev,
        pad0: 0,
        ino,
    };
    // SAFETY: helper without arguments.
    let now = unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_boot_ns() };
    // SAFETY: the value is copied out.
    if let Some(last) = unsafe { RECENT_OPENS.get(key) }.copied()
        && now.saturating_sub(last) < DEDUP_WINDOW_NS
    {
        return true;
    }
    let _ = RECENT_OPENS.insert(key, now, 0);
    false
}

/// The kernel's verdict on a successful open by an enforced agent, before the caller sees
/// the descriptor. By what was opened (device and inode), whatever path led to it:
/// symlinks, hard links, relative paths, /proc/self/root, a dirfd.
#[inline(always)]
fn judge_open(hflags: &mut u32, open_flags: u32, identity: Option<InodeKey>, cfg: &AgentConfig) {
    let writes = open_flags & (O_ACCMODE | O_CREAT | O_TRUNC) != 0;
    if let Some(key) = identity {
        // A denied file, or a write into the monitor's own filesystems (cgroupfs, bpffs,
        // tracefs): killed before the first byte moves.
        if FILE_DENY.get_ptr(key).is_some() || (writes && PROTECTED_DEVS.get_ptr(key.dev).is_some())
        {
            signal(SIGKILL);
            *hflags |= flags::KILLED;
            return;
        }
        if !writes && FILE_OK.get_ptr(key).is_some() {
            return;
        }
    }
    // Only a path decides the rest (allow-list globs): the process waits, stopped, until
    // the daemon has judged the path of the descriptor it now holds.
    if cfg.flags & config_flags::FILE_HOLD != 0 {
        signal(SIGSTOP);
        *hflags |= flags::HELD;
    }
}

/// Attached to every `sys_exit_*` of the syscalls above: `long ret` @16.
#[tracepoint]
pub fn sys_exit_file(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_file(&ctx);
    0
}

fn try_sys_exit_file(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    #[expect(clippy::cast_possible_truncation, reason = "low half is the thread id")]
    let pid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    // Untagged threads never have a pending entry: this lookup is their whole cost here.
    // SAFETY: the value is copied out before the entry is removed.
    let Some(stash) = (unsafe { PENDING_FILE.get(pid) }).copied() else {
        return Ok(());
    };
    let _ = PENDING_FILE.remove(pid);
    // SAFETY: offset from the tracepoint format above.
    let ret: i64 = unsafe { ctx.read_at(16) }.map_err(i64::from)?;
    if ret < 0 {
        return Ok(()); // a failed call touched nothing
    }
    let slot = stash.agent;
    let mut hflags = 0;
    #[expect(clippy::cast_sign_loss, reason = "ret >= 0")]
    let identity = if stash.op == file_op::OPEN {
        fd_identity(slot, ret as u64)
    } else {
        None
    };
    if let Some(cfg) = enforced(slot)
        && kills(&cfg)
    {
        if stash.op == file_op::OPEN {
            judge_open(&mut hflags, stash.open_flags, identity, &cfg);
        } else if (stash.op == file_op::CONNECT_UNIX || stash.op == file_op::LISTEN)
            && cfg.flags & config_flags::FILE_HOLD != 0
        {
            // Connected or listening, but not one byte moved yet: the daemon judges the
            // socket's path or port.
            signal(SIGSTOP);
            hflags |= flags::HELD;
        }
    }
    // Verdict first, then de-duplication: the same process opening the same file the same
    // way again within the window is counted, not re-reported (a kill or a hold never is).
    if hflags & (flags::KILLED | flags::HELD) == 0
        && let Some(key) = identity
        && repeated(tgid, stash.open_flags, key.dev, key.ino)
    {
        count(counter::DEDUPED);
        return Ok(());
    }
    let event = FILE_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch slot, exclusively ours while this program runs.
    let event = unsafe { &mut *event };
    // The header is built only now, for an event that is reported (not for a repeat).
    event.header = header(
        kind::FILE,
        &Agent {
            slot,
            ppid: stash.ppid,
            pid,
            tgid,
        },
    );
    event.header.flags = hflags;
    event.op = stash.op;
    event.open_flags = stash.open_flags;
    event.dirfd = stash.dirfd;
    event.dirfd2 = stash.dirfd2;
    event.ret = ret;
    copy_path(
        stash.path_ptr as *const u8,
        &mut event.path,
        &mut event.header.flags,
    );
    copy_path(
        stash.path2_ptr as *const u8,
        &mut event.path2,
        &mut event.header.flags,
    );
    if !emit::<FileEvent>(event, slot, event.header.flags) && event.header.flags & flags::HELD != 0
    {
        // Nobody will hear of this hold: fail closed rather than leave it stopped.
        signal(SIGKILL);
    }
    Ok(())
}
