//! File hooks. Each `sys_enter_*` stashes the call (paths read while the caller's memory
//! still holds them); the shared `sys_exit_file` program completes it with the return value
//! and emits it only when the call succeeded: a failed open touched nothing.

use agent_monitor_common::{FileEvent, PATH_LEN, file_op, flags, kind};
use aya_ebpf::{
    helpers::bpf_probe_read_user_str_bytes, macros::tracepoint, programs::TracePointContext,
};

use crate::{
    enforce::{SIGKILL, enforced, fd_identity, kills, signal},
    maps::{FILE_DENY, FILE_SCRATCH, PENDING_FILE, emit},
    process::sys_arg,
    tag::{current_agent, header},
};

const AT_FDCWD: i32 = -100;

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

#[inline(always)]
fn try_stash(ctx: &TracePointContext, l: &Layout) -> Result<(), i64> {
    let Some(agent) = current_agent() else {
        return Ok(());
    };
    let event = FILE_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch slot, exclusively ours while this program runs.
    let event = unsafe { &mut *event };
    event.header = header(kind::FILE, &agent);
    event.op = l.op;
    event.ret = 0;
    // SAFETY (all read_at): offsets come from the syscall's tracepoint format.
    event.dirfd = match l.dirfd {
        Some(off) => unsafe { ctx.read_at::<i64>(off) }.map_err(i64::from)? as i32,
        None => AT_FDCWD,
    };
    event.dirfd2 = match l.dirfd2 {
        Some(off) => unsafe { ctx.read_at::<i64>(off) }.map_err(i64::from)? as i32,
        None => AT_FDCWD,
    };
    event.open_flags = l.fixed_flags;
    if let Some(off) = l.flags {
        event.open_flags |= unsafe { ctx.read_at::<u64>(off) }.map_err(i64::from)? as u32;
    } else if l.op == file_op::OPEN && l.dirfd.is_some() && l.fixed_flags == 0 {
        // openat2: `struct open_how { u64 flags; u64 mode; u64 resolve; }` in user memory.
        let how: *const u64 = unsafe { ctx.read_at(sys_arg(2)) }.map_err(i64::from)?;
        event.open_flags =
            unsafe { aya_ebpf::helpers::bpf_probe_read_user(how) }.unwrap_or(0) as u32;
    }
    read_path(ctx, l.path, &mut event.path, &mut event.header.flags)?;
    read_path(ctx, l.path2, &mut event.path2, &mut event.header.flags)?;
    // Verifier workaround: pass the scratch value by reference. By value, the ~600-byte
    // event would be copied onto the 512-byte BPF stack.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "keeps the copy off the stack"
    )]
    PENDING_FILE
        .insert(agent.pid, &*event, 0)
        .map_err(i64::from)?;
    Ok(())
}

#[inline(always)]
fn read_path(
    ctx: &TracePointContext,
    offset: Option<usize>,
    buf: &mut [u8; PATH_LEN],
    header_flags: &mut u32,
) -> Result<(), i64> {
    buf[0] = 0;
    let Some(off) = offset else { return Ok(()) };
    // SAFETY: offset from the tracepoint format; the helper copes with bad user pointers.
    let ptr: *const u8 = unsafe { ctx.read_at(off) }.map_err(i64::from)?;
    match unsafe { bpf_probe_read_user_str_bytes(ptr, buf) } {
        Ok(s) if s.len() + 1 >= PATH_LEN => *header_flags |= flags::TRUNCATED,
        Ok(_) => {}
        Err(_) => buf[0] = 0,
    }
    Ok(())
}

/// Attached to every `sys_exit_*` of the syscalls above: `long ret` @16.
#[tracepoint]
pub fn sys_exit_file(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_file(&ctx);
    0
}

fn try_sys_exit_file(ctx: &TracePointContext) -> Result<(), i64> {
    #[expect(clippy::cast_possible_truncation, reason = "low half is the thread id")]
    let pid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    // Untagged threads never have a pending entry: this lookup is their whole cost here.
    let Some(event) = PENDING_FILE.get_ptr_mut(pid) else {
        return Ok(());
    };
    // SAFETY: offset from the tracepoint format above.
    let ret: i64 = unsafe { ctx.read_at(16) }.map_err(i64::from)?;
    if ret >= 0 {
        // SAFETY: map value pointer from a successful lookup; removed only below.
        let event = unsafe { &mut *event };
        event.ret = ret;
        let slot = event.header.agent;
        // A denied file is recognised by what was opened (device and inode), whatever
        // path led to it: symlinks, hard links, relative paths, /proc/self/root.
        #[expect(clippy::cast_sign_loss, reason = "ret >= 0")]
        if event.op == file_op::OPEN
            && let Some(cfg) = enforced(slot)
            && let Some(key) = fd_identity(slot, ret as u64)
            && FILE_DENY.get_ptr(key).is_some()
            && kills(&cfg)
        {
            signal(SIGKILL);
            event.header.flags |= flags::KILLED;
        }
        emit::<FileEvent>(event, slot);
    }
    let _ = PENDING_FILE.remove(pid);
    Ok(())
}
