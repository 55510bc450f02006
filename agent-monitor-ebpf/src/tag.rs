//! Is the current task an agent? The one question every hook asks first.

use agent_monitor_common::{
    COMM_LEN, CgroupVerdict, EventHeader, MAX_CGROUP_LEVEL, PidTag, counter, tag_state,
};
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid,
    generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns,
    },
};

use crate::maps::{
    AGENT_CGROUPS, AGENT_PIDS, CGROUP_VERDICT, LAST_AGENT, LastAgent, TAG_STATE, count,
};

/// The current task's agent, if it has one.
pub struct Agent {
    pub slot: u32,
    pub ppid: u32,
    pub pid: u32,
    pub tgid: u32,
}

/// Looks the current thread up by pid first (the tag is sticky), then by cgroup and its
/// ancestors (a task cgroup may have nested children). A thread found by cgroup is added to
/// the pid map so that it stays tagged if it later moves to another cgroup.
///
/// For tracepoint programs only: they run with preemption disabled and never nest on a CPU,
/// so this CPU's [`LAST_AGENT`] is theirs for the whole run.
#[inline(always)]
pub fn current_agent() -> Option<Agent> {
    agent_of::<true>()
}

/// [`current_agent`] without this CPU's cache, for the cgroup socket programs: they may be
/// preempted mid-run, and a tracepoint program running meanwhile on the same CPU could
/// tear an entry they read or write.
#[inline(always)]
pub fn current_agent_uncached() -> Option<Agent> {
    agent_of::<false>()
}

#[inline(always)]
fn agent_of<const CACHED: bool>() -> Option<Agent> {
    // No agent anywhere (the common case on most hosts): one array read and done. Unknown
    // (no entry) counts as "maybe", never as "none".
    if TAG_STATE.get(tag_state::TAGGED).copied().unwrap_or(1) == 0 {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    #[expect(clippy::cast_possible_truncation, reason = "low half is the thread id")]
    let pid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    // The generation is read before the pid map: a tag that changes after this read is
    // cached under the old generation, so found stale next time.
    let generation = TAG_STATE.get(tag_state::PIDS).copied().unwrap_or(0);
    let last = if CACHED {
        LAST_AGENT.get_ptr_mut(0)
    } else {
        None
    };
    if let Some(last) = last {
        // SAFETY: this CPU's slot, copied out.
        let seen = unsafe { *last };
        if seen.pid_tgid == pid_tgid && seen.generation == generation && seen.slot != 0 {
            return Some(Agent {
                slot: seen.slot,
                ppid: seen.ppid,
                pid,
                tgid,
            });
        }
    }
    // SAFETY: plain map lookup; the value is copied out.
    if let Some(tag) = unsafe { AGENT_PIDS.get(pid) } {
        let mut ppid = tag.ppid;
        // A thread records its creator's process as parent; report the process's parent.
        if ppid == tgid
            && let Some(leader) = unsafe { AGENT_PIDS.get(tgid) }
        {
            ppid = leader.ppid;
        }
        if let Some(last) = last {
            // SAFETY: this CPU's slot; programs on one CPU do not interleave within a run.
            unsafe {
                *last = LastAgent {
                    pid_tgid,
                    generation,
                    slot: tag.agent,
                    ppid,
                };
            }
        }
        return Some(Agent {
            slot: tag.agent,
            ppid,
            pid,
            tgid,
        });
    }
    let slot = cgroup_agent()?;
    let tag = PidTag {
        agent: slot,
        ppid: 0,
    };
    if AGENT_PIDS.insert(pid, tag, 0).is_err() {
        count(counter::PID_MAP_FULL);
    }
    Some(Agent {
        slot,
        ppid: 0,
        pid,
        tgid,
    })
}

/// The current cgroup's agent, from the per-generation cache or the ancestor walk.
#[inline(always)]
fn cgroup_agent() -> Option<u32> {
    // SAFETY: helper without arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    // Read the generation before walking: a walk that raced a tag change is cached under
    // the old generation and so recomputed next time.
    let generation = TAG_STATE.get(tag_state::GENERATION).copied().unwrap_or(0);
    // SAFETY: the value is copied out.
    if let Some(v) = unsafe { CGROUP_VERDICT.get(own) }.copied()
        && v.generation == generation
    {
        return (v.slot != 0).then_some(v.slot);
    }
    let slot = walk_cgroups(own);
    let verdict = CgroupVerdict {
        generation,
        slot: slot.unwrap_or(0),
        pad0: 0,
    };
    let _ = CGROUP_VERDICT.insert(own, verdict, 0);
    slot
}

#[inline(always)]
fn walk_cgroups(own: u64) -> Option<u32> {
    // SAFETY (the map lookups below): the value is copied out at once, before any update
    // of the map could free it.
    if let Some(slot) = unsafe { AGENT_CGROUPS.get(own) } {
        return Some(*slot);
    }
    // Level 0 is the root, never tagged. The helper returns 0 past the task's own level.
    let mut level = 1;
    while level < MAX_CGROUP_LEVEL {
        // SAFETY: a helper on the current task; any level is accepted (0 past its own).
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 || id == own {
            return None;
        }
        // SAFETY: as above, copied out at once.
        if let Some(slot) = unsafe { AGENT_CGROUPS.get(id) } {
            return Some(*slot);
        }
        level += 1;
    }
    None
}

/// Tags a new thread or process with its creator's agent (called at fork). The child's pid
/// may still carry a stale tag (its previous task not yet freed), so the pid-tag generation
/// moves on.
pub fn inherit(child: u32, parent: &Agent) {
    let tag = PidTag {
        agent: parent.slot,
        ppid: parent.tgid,
    };
    if AGENT_PIDS.insert(child, tag, 0).is_err() {
        count(counter::PID_MAP_FULL);
    }
    pid_tags_changed();
}

/// Moves the pid-tag generation on: every CPU's [`LAST_AGENT`] is stale. Called after a
/// tag is changed or removed (not after one is added for a thread that had none: no CPU
/// can have cached it).
#[inline(always)]
pub fn pid_tags_changed() {
    if let Some(generation) = TAG_STATE.get_ptr_mut(tag_state::PIDS) {
        // SAFETY: a map value that lives as long as the map. An atomic add (`BPF_ATOMIC`),
        // as other CPUs bump it too; this target's `core` has no atomic read-modify-write.
        unsafe {
            core::arch::asm!(
                "lock *(u64 *)({p} + 0) += {one}",
                p = in(reg) generation,
                one = in(reg) 1u64,
                options(nostack, preserves_flags),
            );
        }
    }
}

pub fn header(kind: u32, agent: &Agent) -> EventHeader {
    EventHeader {
        kind,
        agent: agent.slot,
        // SAFETY: helpers without pointer arguments.
        time_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid: agent.pid,
        tgid: agent.tgid,
        ppid: agent.ppid,
        flags: 0,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    }
}

/// Whether the current task's cgroup is the agent's own or below it (fresh walk, no cache:
/// called right after the task moved).
#[inline(always)]
pub fn in_agent_cgroup(slot: u32) -> bool {
    // SAFETY: helper without arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    walk_cgroups(own) == Some(slot)
}
