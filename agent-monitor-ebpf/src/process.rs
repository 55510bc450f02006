//! Process hooks: fork (tag inheritance), exec (what ran) and exit (cleanup).

use agent_monitor_common::{
    ARG_LEN, ExitEvent, MAX_ARGS, PATH_LEN, config_flags, flags, kind,
    layout::{SYSCALL_ARG_SIZE, TracepointLayout},
};
use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_probe_read_kernel_str_bytes, bpf_probe_read_user, bpf_probe_read_user_str_bytes,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    enforce::{SIGKILL, enforced, exe_identity, hold, kills, signal},
    maps::{AGENT_PIDS, ARGS_SCRATCH, EXEC_ALLOW, EXEC_SCRATCH, PENDING_EXEC, emit},
    tag::{current_agent, header, inherit, pid_tags_changed},
};

/// Where this kernel's tracepoint records keep the fields read here. The daemon writes it
/// at load from the tracepoints' tracefs `format` files (`kernel/tracefs.rs`); it is
/// read-only data, frozen before the programs load, so the verifier knows every offset as a
/// constant. Read it with [`tp_offset!`]. The `@N` offsets in the hooks' comments are the
/// Linux 6.18 formats (the default layout); on another kernel the fields the programs read
/// may sit elsewhere.
#[unsafe(no_mangle)]
pub static TRACEPOINT_LAYOUT: TracepointLayout = TracepointLayout::DEFAULT;

/// One offset of [`TRACEPOINT_LAYOUT`], e.g. `tp_offset!(fork_child_pid)`. A volatile
/// read: the compiler must not fold in the object's default value.
macro_rules! tp_offset {
    ($field:ident) => {
        // SAFETY: a field of a static, always initialised.
        unsafe { core::ptr::read_volatile(&raw const crate::process::TRACEPOINT_LAYOUT.$field) }
    };
}
pub(crate) use tp_offset;

/// Offset of syscall argument `n` in a `syscalls:sys_enter_*` record (common fields, then
/// `int __syscall_nr` padded to 8, then one 8-byte slot per argument on 6.18).
#[inline(always)]
pub fn sys_arg(n: u32) -> usize {
    tp_offset!(sys_enter_args) as usize + (SYSCALL_ARG_SIZE * n) as usize
}

/// A load of `$ty` from `$ptr + $off`, compiled once per offset in the list (each arm's
/// offset is an immediate in its instruction). The verifier knows `$off` (from
/// `TRACEPOINT_LAYOUT`), follows only the matching arm and removes the others, so the
/// program keeps one direct load. Verifier workaround: a tracepoint's context may only be
/// loaded at an offset written in the instruction, never through a pointer moved by a
/// register (`dereference of modified ctx ptr`); inline assembly keeps LLVM from folding
/// the arms back into one load at a computed address.
macro_rules! ctx_load {
    ($ptr:expr, $off:expr, $ty:literal, [$($o:literal),*]) => {{
        let ptr = $ptr;
        let mut v: u64 = 0;
        match $off {
            $(
                // SAFETY: a context load the verifier checks against the record's size.
                $o => unsafe {
                    core::arch::asm!(
                        concat!("{v} = *(", $ty, " *)({p} + ", stringify!($o), ")"),
                        v = out(reg) v,
                        p = in(reg) ptr,
                        options(nostack, readonly, preserves_flags),
                    );
                },
            )*
            // The daemon refuses a layout with an offset outside the list
            // (`MAX_FIELD_OFFSET`, alignment), so this is never taken.
            _ => {}
        }
        v
    }};
}

/// A field of the tracepoint's record at `offset` (from [`tp_offset!`]), loaded from the
/// context directly: no `bpf_probe_read_kernel` call (which `TracePointContext::read_at`
/// makes). `T` is 1, 4 or 8 bytes; `offset` a multiple of its size, at most
/// `MAX_FIELD_OFFSET` (checked by the daemon).
#[inline(always)]
pub fn tp_field<T: Copy>(ctx: &TracePointContext, offset: u32) -> T {
    let ptr = ctx.as_ptr();
    let v: u64 = match size_of::<T>() {
        1 => ctx_load!(
            ptr,
            offset,
            "u8",
            [
                0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43,
                44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64
            ]
        ),
        4 => ctx_load!(
            ptr,
            offset,
            "u32",
            [
                0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 64
            ]
        ),
        8 => ctx_load!(ptr, offset, "u64", [0, 8, 16, 24, 32, 40, 48, 56, 64]),
        _ => 0,
    };
    // SAFETY: T is at most 8 bytes and plain data (integers); on little-endian BPF its
    // bytes are the low bytes of the loaded value.
    unsafe { core::ptr::read((&raw const v).cast::<T>()) }
}

/// Offsets in the x86-64 `struct pt_regs` of syscall arguments 1-5: di, si, dx, r10, r8.
const ARG_REGS: [usize; 5] = [112, 104, 96, 56, 72];

/// The syscall's arguments, from the user registers the kernel saved at entry: it does not
/// change them before the exit tracepoint runs.
#[inline(always)]
pub fn syscall_args() -> [u64; 5] {
    // SAFETY: `bpf_task_pt_regs` returns the current task's saved registers as a BTF-typed
    // pointer; the verifier checks each load against `struct pt_regs` and makes it
    // fault-safe (no helper call).
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        ARG_REGS.map(|off| core::ptr::read(regs.add(off).cast::<u64>()))
    }
}

/// sched:sched_process_fork (6.18 layout): `__data_loc char[] parent_comm` @8,
/// `pid_t parent_pid` @12, `__data_loc char[] child_comm` @16, `pid_t child_pid` @20.
/// Fires in the parent for every clone, threads included.
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let _ = try_sched_process_fork(&ctx);
    0
}

fn try_sched_process_fork(ctx: &TracePointContext) -> Result<(), i64> {
    let Some(agent) = current_agent() else {
        return Ok(());
    };
    let child: i32 = tp_field(ctx, tp_offset!(fork_child_pid));
    #[expect(clippy::cast_sign_loss, reason = "pids are positive")]
    inherit(child as u32, &agent);
    Ok(())
}

/// syscalls:sys_enter_execve: filename, argv, envp. argv is read here, while the old image's
/// memory still holds it; the event itself is sent at sched_process_exec, on success only.
#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    let _ = try_stash_argv(&ctx, sys_arg(1));
    0
}

/// syscalls:sys_enter_execveat: dfd, filename, argv, envp, flags.
#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    let _ = try_stash_argv(&ctx, sys_arg(2));
    0
}

fn try_stash_argv(ctx: &TracePointContext, argv_offset: usize) -> Result<(), i64> {
    let Some(agent) = current_agent() else {
        return Ok(());
    };
    // SAFETY: offset from the tracepoint format (`sys_arg`).
    // The helper: the offset differs between execve and execveat.
    let argv: *const *const u8 = unsafe { ctx.read_at(argv_offset) }.map_err(i64::from)?;
    let args = ARGS_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch slot, exclusively ours for the duration of this program.
    let args = unsafe { &mut *args };
    args.argc = 0;
    args.flags = 0;
    // Unrolled by the compiler: bounded, and each slot is a fixed-size buffer (verifier).
    for i in 0..MAX_ARGS {
        // SAFETY: reads user memory through the helper, which fails cleanly on bad pointers.
        let Ok(ptr) = (unsafe { bpf_probe_read_user(argv.wrapping_add(i)) }) else {
            break;
        };
        if ptr.is_null() {
            break;
        }
        let slot = &mut args.args[i];
        // SAFETY: user memory through the helper, at most `slot.len()` bytes.
        match unsafe { bpf_probe_read_user_str_bytes(ptr, slot) } {
            Ok(s) if s.len() + 1 >= ARG_LEN => args.flags |= flags::TRUNCATED,
            Ok(_) => {}
            Err(_) => slot[0] = 0,
        }
        #[expect(clippy::cast_possible_truncation, reason = "i < MAX_ARGS")]
        {
            args.argc = i as u32 + 1;
        }
    }
    // Verifier workaround: by reference, so the scratch value is not copied to the stack.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "keeps the copy off the stack"
    )]
    PENDING_EXEC
        .insert(agent.pid, &*args, 0)
        .map_err(i64::from)?;
    Ok(())
}

/// sched:sched_process_exec: `__data_loc char[] filename` @8, `pid_t pid` @12,
/// `pid_t old_pid` @16. Runs in the new image after a successful exec; `old_pid` is the
/// thread that called exec (it differs from `pid` when a non-leader thread execs).
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let _ = try_sched_process_exec(&ctx);
    0
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let Some(agent) = current_agent() else {
        return Ok(());
    };
    let event = EXEC_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch slot.
    let event = unsafe { &mut *event };
    event.header = header(kind::EXEC, &agent);
    let loc: u32 = tp_field(ctx, tp_offset!(exec_filename));
    let old_pid: i32 = tp_field(ctx, tp_offset!(exec_old_pid));
    let name = unsafe { ctx.as_ptr().cast::<u8>().add((loc & 0xffff) as usize) };
    match unsafe { bpf_probe_read_kernel_str_bytes(name, &mut event.filename) } {
        Ok(s) if s.len() + 1 >= PATH_LEN => event.header.flags |= flags::TRUNCATED,
        Ok(_) => {}
        Err(_) => event.filename[0] = 0,
    }
    #[expect(clippy::cast_sign_loss, reason = "pids are positive")]
    let old_pid = old_pid as u32;
    event.argc = 0;
    // SAFETY: the value is copied out before the entry is removed.
    if let Some(args) = unsafe { PENDING_EXEC.get(old_pid) } {
        event.argc = args.argc;
        event.args = args.args;
        event.header.flags |= args.flags;
    }
    let _ = PENDING_EXEC.remove(old_pid);
    // The new image is judged by what it is (device and inode of mm->exe_file), so a
    // renamed or copied binary is not allowed by its name. This runs before the first
    // instruction of the new image: a killed process never runs it.
    if let Some(cfg) = enforced(agent.slot) {
        let allowed = exe_identity(agent.slot).is_some_and(|key| EXEC_ALLOW.get_ptr(key).is_some());
        if !allowed {
            if cfg.flags & config_flags::EXEC_DEFER != 0 {
                // A glob may match a file created after load: the daemon decides.
                hold();
                event.header.flags |= flags::HELD;
            } else if kills(&cfg) {
                signal(SIGKILL);
                event.header.flags |= flags::KILLED;
            }
        }
    }
    emit(event);
    Ok(())
}

/// sched:sched_process_exit (6.18 layout): `char comm[16]` @8, `pid_t pid` @24, `int prio`
/// @28, `bool group_dead` @32. Fires once per exiting thread; `group_dead` is set for the
/// last one.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let _ = try_sched_process_exit(&ctx);
    0
}

fn try_sched_process_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let Some(agent) = current_agent() else {
        return Ok(());
    };
    // The tag stays until the task is freed (`sched_process_free`): until its parent reaps
    // it, an exited child is still the agent's to signal or `pidfd_open`, and its pid
    // cannot be reused meanwhile.
    let _ = PENDING_EXEC.remove(agent.pid);
    let group_dead: u8 = tp_field(ctx, tp_offset!(exit_group_dead));
    if group_dead != 0 {
        emit(&ExitEvent {
            header: header(kind::EXIT, &agent),
        });
    }
    Ok(())
}

/// sched:sched_process_free: `__data_loc char[] comm` @8, `pid_t pid` @12. Fires when a
/// reaped task's last reference goes (from RCU, on any CPU, so the pid comes from the
/// record, not the current task): its pid may be reused from now on, so its tag goes.
#[tracepoint]
pub fn sched_process_free(ctx: TracePointContext) -> u32 {
    let pid: i32 = tp_field(&ctx, tp_offset!(free_pid));
    #[expect(clippy::cast_sign_loss, reason = "pids are positive")]
    if AGENT_PIDS.remove(pid as u32).is_ok() {
        pid_tags_changed();
    }
    0
}
