//! Escape hooks: syscalls that leave or weaken the agent's confinement (namespaces, mounts,
//! bpf, ptrace, io_uring, kernel modules, raw and packet sockets, signals to processes
//! outside the agent) and moves to another cgroup.
//!
//! A signal sent from a syscall hook lands after the syscall ran, so these hooks cannot
//! prevent a syscall's effect on their own. Agents started by `agent-monitor exec` carry a
//! seccomp filter that refuses the dangerous ones before they run; seccomp refuses them
//! before the `sys_enter` tracepoint, but the `sys_exit` tracepoint still fires (with
//! -EPERM), so the exit program reports those. Agents adopted by cgroup have no filter: the
//! exit program kills them (enforce mode), which stops everything after the syscall.
//!
//! Most of these syscalls are judged at exit only, from the arguments in the saved user
//! registers. The signal syscalls are also hooked at entry: their target must be judged
//! before the signal lands (a killed target leaves the agent's pid map).

use agent_monitor_common::{EscapeEntry, PATH_LEN, escape_op, flags, kind, syscalls::nr};
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    enforce::{SIGKILL, enforced, kills, signal},
    maps::{AGENT_CGROUPS, AGENT_PIDS, ESCAPE_SCRATCH, PENDING_ESCAPE, emit},
    process::{sys_arg, syscall_args, tp_field, tp_offset},
    tag::{Agent, current_agent, header, in_agent_cgroup},
};

// x86-64 syscall numbers the entry program looks at the arguments of.

const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const AF_PACKET: u64 = 17;
const SOCK_STREAM: u64 = 1;
const SOCK_DGRAM: u64 = 2;
const SOCK_TYPE_MASK: u64 = 0xf;
const EPERM: i64 = 1;

/// Attached to `sys_enter_*` of the signal syscalls (kill, tkill, tgkill, pidfd_open):
/// `int __syscall_nr` @8, args @16.
#[tracepoint]
pub fn sys_enter_escape(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter_escape(&ctx);
    0
}

fn try_sys_enter_escape(ctx: &TracePointContext) -> Result<(), i64> {
    let Some(agent) = current_agent() else {
        return Ok(());
    };
    let nr: i32 = tp_field(ctx, tp_offset!(sys_enter_nr));
    // Through the helper, not `tp_field`: a direct load past a short record (kill has two
    // arguments) makes the kernel refuse to attach the program to that tracepoint.
    // SAFETY: `read_at` goes through bpf_probe_read_kernel, which fails cleanly past the
    // record.
    let args: [u64; 3] = unsafe {
        [
            ctx.read_at(sys_arg(0)).map_err(i64::from)?,
            ctx.read_at(sys_arg(1)).map_err(i64::from)?,
            ctx.read_at(sys_arg(2)).map_err(i64::from)?,
        ]
    };
    // An ordinary socket, or a signal inside the agent: nothing to keep (the common case
    // of the syscalls here that depend on their arguments).
    if !is_escape(nr, &args, &agent) {
        return Ok(());
    }
    let mut entry = EscapeEntry {
        args,
        flags: 0,
        pad0: 0,
    };
    if let Some(cfg) = enforced(agent.slot)
        && kills(&cfg)
    {
        signal(SIGKILL);
        entry.flags = flags::KILLED;
    }
    PENDING_ESCAPE
        .insert(agent.pid, entry, 0)
        .map_err(i64::from)?;
    Ok(())
}

/// The syscalls with an entry hook (the loader's `EscapeSyscall::entry`).
fn judged_at_entry(nr: i32) -> bool {
    matches!(nr, nr::kill | nr::tkill | nr::tgkill | nr::pidfd_open)
}

/// Whether a syscall with these arguments is an escape attempt. Only a few syscalls of the
/// list depend on their arguments; the rest always are.
fn is_escape(nr: i32, args: &[u64; 3], agent: &Agent) -> bool {
    match nr {
        // Packet sockets, and inet sockets other than stream and datagram ones (raw,
        // SOCK_PACKET), reach the wire without the cgroup socket hooks.
        nr::socket => {
            let ty = args[1] & SOCK_TYPE_MASK;
            let inet = args[0] == AF_INET || args[0] == AF_INET6;
            args[0] == AF_PACKET || (inet && ty != SOCK_STREAM && ty != SOCK_DGRAM)
        }
        // kill(pid, sig): 0 probes; pid 0 is the caller's own process group.
        #[expect(clippy::cast_possible_truncation, reason = "pid_t and int arguments")]
        nr::kill => args[1] != 0 && !signal_target_ours(args[0] as i32, agent),
        #[expect(clippy::cast_possible_truncation, reason = "pid_t and int arguments")]
        nr::tkill => args[1] != 0 && !signal_target_ours(args[0] as i32, agent),
        #[expect(clippy::cast_possible_truncation, reason = "pid_t and int arguments")]
        nr::tgkill => args[2] != 0 && !signal_target_ours(args[0] as i32, agent),
        #[expect(clippy::cast_possible_truncation, reason = "pid_t argument")]
        nr::pidfd_open => !signal_target_ours(args[0] as i32, agent),
        _ => true,
    }
}

/// Whether a signal to `pid` stays inside the agent. -1 is every process on the machine;
/// -N is process group N, judged by its leader.
fn signal_target_ours(pid: i32, agent: &Agent) -> bool {
    if pid == 0 {
        return true;
    }
    if pid == -1 {
        return false;
    }
    let target = pid.unsigned_abs();
    if target == agent.tgid {
        return true;
    }
    // SAFETY: the value is copied out.
    unsafe { AGENT_PIDS.get(target) }.is_some_and(|t| t.agent == agent.slot)
}

/// Attached to `sys_exit_*` of every escape syscall: `int __syscall_nr` @8, `long ret` @16.
#[tracepoint]
pub fn sys_exit_escape(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_escape(&ctx);
    0
}

fn try_sys_exit_escape(ctx: &TracePointContext) -> Result<(), i64> {
    let Some(agent) = current_agent() else {
        return Ok(());
    };
    let nr: i32 = tp_field(ctx, tp_offset!(sys_exit_nr));
    let ret: i64 = tp_field(ctx, tp_offset!(sys_exit_ret));
    // SAFETY: the value is copied out before the entry is removed.
    let (args, entry_flags, seen) = if judged_at_entry(nr) {
        let entry = unsafe { PENDING_ESCAPE.get(agent.pid) }.copied();
        let _ = PENDING_ESCAPE.remove(agent.pid);
        match entry {
            Some(e) => (e.args, e.flags, 1),
            // No entry: the syscall never reached sys_enter (the agent's seccomp filter
            // refused it: -EPERM), or it was not an escape (a signal inside the agent).
            None if ret == -EPERM => ([0; 3], flags::BLOCKED, 0),
            None => return Ok(()),
        }
    } else {
        let all = syscall_args();
        let args = [all[0], all[1], all[2]];
        if ret == -EPERM {
            // Refused (by the agent's seccomp filter; a root agent's ordinary calls here do
            // not fail with EPERM).
            (args, flags::BLOCKED, 1)
        } else if is_escape(nr, &args, &agent) {
            // It ran: an enforced agent does not go on from here.
            let killed = if let Some(cfg) = enforced(agent.slot)
                && kills(&cfg)
            {
                signal(SIGKILL);
                flags::KILLED
            } else {
                0
            };
            (args, killed, 1)
        } else {
            return Ok(()); // an ordinary socket
        }
    };
    let mut hflags = entry_flags;
    if ret == -EPERM {
        hflags |= flags::BLOCKED;
    }
    emit_syscall(&agent, nr, args, ret, hflags, seen)
}

/// Attached to `sys_exit_*` of every other syscall the agents' seccomp allow-list refuses
/// (or allows with some arguments only): `int __syscall_nr` @8, `long ret` @16. A refusal
/// shows here as -EPERM and is reported; the syscall had no effect, so nothing is killed
/// (an agent without the filter, adopted by `select`, ran an ordinary syscall).
#[tracepoint]
pub fn sys_exit_refused(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_refused(&ctx);
    0
}

fn try_sys_exit_refused(ctx: &TracePointContext) -> Result<(), i64> {
    let ret: i64 = tp_field(ctx, tp_offset!(sys_exit_ret));
    if ret != -EPERM {
        return Ok(());
    }
    let Some(agent) = current_agent() else {
        return Ok(());
    };
    let nr: i32 = tp_field(ctx, tp_offset!(sys_exit_nr));
    let all = syscall_args();
    emit_syscall(&agent, nr, [all[0], all[1], all[2]], ret, flags::BLOCKED, 1)
}

/// Emits an escape event for syscall `nr` of `agent`.
#[inline(always)]
fn emit_syscall(
    agent: &Agent,
    nr: i32,
    args: [u64; 3],
    ret: i64,
    hflags: u32,
    seen: u32,
) -> Result<(), i64> {
    let event = ESCAPE_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch slot, exclusively ours for the duration of this program.
    let event = unsafe { &mut *event };
    event.header = header(kind::ESCAPE, agent);
    event.header.flags |= hflags;
    event.op = escape_op::SYSCALL;
    #[expect(clippy::cast_sign_loss, reason = "syscall numbers are positive")]
    {
        event.nr = nr as u32;
    }
    event.args = args;
    event.ret = ret;
    event.target = seen;
    event.outside = 0;
    event.cgroup_id = 0;
    event.path[0] = 0;
    emit(event);
    Ok(())
}

/// cgroup:cgroup_attach_task (6.18 layout): `int dst_root` @8, `int dst_level` @12,
/// `u64 dst_id` @16, `int pid` @24, `__data_loc char[] dst_path` @28, `__data_loc char[]
/// comm` @32. Fires in the writer's context after the task moved.
#[tracepoint]
pub fn cgroup_attach_task(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup_attach_task(&ctx);
    0
}

fn try_cgroup_attach_task(ctx: &TracePointContext) -> Result<(), i64> {
    let moved: i32 = tp_field(ctx, tp_offset!(attach_pid));
    let dst_id: u64 = tp_field(ctx, tp_offset!(attach_dst_id));
    #[expect(clippy::cast_sign_loss, reason = "pids are positive")]
    let moved = moved as u32;
    // The moved thread's tag (sticky: it survives the move), else the writer's.
    // SAFETY: the value is copied out.
    let moved_slot = unsafe { AGENT_PIDS.get(moved) }.map(|t| t.agent);
    let writer = current_agent();
    let slot = match (moved_slot, &writer) {
        (Some(s), _) => s,
        (None, Some(w)) => w.slot,
        (None, None) => return Ok(()),
    };
    // SAFETY: the value is copied out.
    if unsafe { AGENT_CGROUPS.get(dst_id) }.is_some_and(|s| *s == slot) {
        return Ok(()); // into the agent's own cgroup
    }
    #[expect(clippy::cast_possible_truncation, reason = "low half is the thread id")]
    let self_move = moved == bpf_get_current_pid_tgid() as u32;
    // A task that moved itself is already in the new cgroup: its ancestors say whether
    // that is still inside the agent. Other moves are judged by the daemon from the path.
    let outside = self_move && !in_agent_cgroup(slot);
    if self_move && !outside {
        return Ok(());
    }
    let event = ESCAPE_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch slot.
    let event = unsafe { &mut *event };
    match &writer {
        Some(w) => event.header = header(kind::ESCAPE, w),
        None => {
            let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            event.header = header(
                kind::ESCAPE,
                &Agent {
                    slot,
                    ppid: 0,
                    pid: moved,
                    tgid,
                },
            );
        }
    }
    if outside
        && writer.is_some()
        && let Some(cfg) = enforced(slot)
        && kills(&cfg)
    {
        signal(SIGKILL);
        event.header.flags |= flags::KILLED;
    }
    event.op = escape_op::CGROUP_MOVE;
    event.nr = 0;
    event.args = [0; 3];
    event.ret = 0;
    event.target = moved;
    event.outside = u32::from(outside);
    event.cgroup_id = dst_id;
    let loc: u32 = tp_field(ctx, tp_offset!(attach_dst_path));
    // SAFETY: a `__data_loc` field: its low 16 bits are the string's offset in the record.
    let name = unsafe { ctx.as_ptr().cast::<u8>().add((loc & 0xffff) as usize) };
    // SAFETY: the helper copies at most `event.path.len()` bytes and faults safely.
    match unsafe { bpf_probe_read_kernel_str_bytes(name, &mut event.path) } {
        Ok(s) if s.len() + 1 >= PATH_LEN => event.header.flags |= flags::TRUNCATED,
        Ok(_) => {}
        Err(_) => event.path[0] = 0,
    }
    emit(event);
    Ok(())
}
