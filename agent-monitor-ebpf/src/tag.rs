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

use crate::maps::{AGENT_CGROUPS, AGENT_PIDS, CGROUP_VERDICT, TAG_STATE, count};

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
#[inline(always)]
pub fn current_agent() -> Option<Agent> {
    // No agent anywhere (the common case on most hosts): one array read and done. Unknown
    // (no entry) counts as "maybe", never as "none".
    if TAG_STATE.get(tag_state::TAGGED).copied().unwrap_or(1) == 0 {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    #[expect(clippy::cast_possible_truncation, reason = "low half is the thread id")]
    let pid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: plain map lookup; the value is copied out.
    if let Some(tag) = unsafe { AGENT_PIDS.get(pid) } {
        let mut ppid = tag.ppid;
        // A thread records its creator's process as parent; report the process's parent.
        if ppid == tgid
            && let Some(leader) = unsafe { AGENT_PIDS.get(tgid) }
        {
            ppid = leader.ppid;
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

/// Tags a new thread or process with its creator's agent (called at fork).
pub fn inherit(child: u32, parent: &Agent) {
    let tag = PidTag {
        agent: parent.slot,
        ppid: parent.tgid,
    };
    if AGENT_PIDS.insert(child, tag, 0).is_err() {
        count(counter::PID_MAP_FULL);
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
