//! cgroup v2 discovery: scopes with `select.cgroup` adopt matching cgroups when they are
//! created, without the daemon polling the tree.

use agent_monitor_common::{CgroupEvent, EventHeader, PATH_LEN, kind};
use aya_ebpf::{
    EbpfContext as _, helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    maps::{AGENT_CGROUPS, emit},
    process::{tp_field, tp_offset},
};

/// cgroup:cgroup_mkdir / cgroup_rmdir: `int root` @8 (hierarchy id, 0 is the v2 default
/// hierarchy), `int level` @12, `u64 id` @16, `__data_loc char[] path` @24. Rare, so not
/// filtered by tag. The event is small enough for the stack.
#[tracepoint]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup(&ctx, kind::CGROUP_MKDIR);
    0
}

#[tracepoint]
pub fn cgroup_rmdir(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup(&ctx, kind::CGROUP_RMDIR);
    0
}

fn try_cgroup(ctx: &TracePointContext, kind: u32) -> Result<(), i64> {
    let root: i32 = tp_field(ctx, tp_offset!(cgroup_root));
    if root != 0 {
        return Ok(());
    }
    let level: i32 = tp_field(ctx, tp_offset!(cgroup_level));
    let id: u64 = tp_field(ctx, tp_offset!(cgroup_id));
    if kind == kind::CGROUP_RMDIR {
        // A removed cgroup's id is never reused, but its tag must not outlive it.
        let _ = AGENT_CGROUPS.remove(id);
    }
    let loc: u32 = tp_field(ctx, tp_offset!(cgroup_path));
    let mut event = CgroupEvent {
        header: EventHeader {
            kind,
            agent: 0,
            // SAFETY: a helper without arguments or preconditions.
            time_ns: unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_boot_ns() },
            pid: 0,
            tgid: 0,
            ppid: 0,
            flags: 0,
            cgroup_id: id,
            comm: [0; 16],
        },
        id,
        #[expect(clippy::cast_sign_loss, reason = "levels are non-negative")]
        level: level as u32,
        pad0: 0,
        path: [0; PATH_LEN],
    };
    // SAFETY: a `__data_loc` field: its low 16 bits are the string's offset in the record,
    // inside the record the kernel handed us; the helper checks what it reads.
    let src = unsafe { ctx.as_ptr().cast::<u8>().add((loc & 0xffff) as usize) };
    // SAFETY: the helper copies at most `event.path.len()` bytes and faults safely.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut event.path) };
    emit(&event);
    Ok(())
}
