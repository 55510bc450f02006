//! Maps shared by all hooks. Names are the contract with the daemon's loader.

use crate::enforce::{SIGKILL, signal};
use agent_monitor_common::{
    AgentConfig, BindKey, CgroupEvent, CgroupVerdict, DnsOrigin, EscapeEntry, EscapeEvent,
    EventHeader, ExecArgs, ExecEvent, ExitEvent, FileEvent, HostRuleKey, InodeKey, Learned,
    LearnedKey, MAX_HOST_RULES, NameKey, NetEvent, NetKey, NetRule, OpenKey, PidTag, counter,
    flags, tag_state,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};

/// All events, in order per CPU. Sized by the daemon at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Events that carry a verdict: a held process waiting for the daemon, a kill, a refusal.
/// Apart from EVENTS so that a flood of ordinary events cannot crowd them out (holds and
/// kills throttle themselves; when this one is full too, events fall back to EVENTS).
#[map]
pub static VERDICTS: RingBuf = RingBuf::with_byte_size(1 << 18, 0);

/// cgroup id -> agent slot, written by the daemon when it tags a task cgroup.
#[map]
pub static AGENT_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// `tag_state::TAGGED` and `tag_state::GENERATION`, written by the daemon.
#[map]
pub static TAG_STATE: Array<u64> = Array::with_max_entries(tag_state::COUNT, 0);

/// cgroup id -> its agent slot (0: none), cached per tag generation: the ancestor walk runs
/// once per cgroup, not on every syscall of every process on the host.
#[map]
pub static CGROUP_VERDICT: LruHashMap<u64, CgroupVerdict> = LruHashMap::with_max_entries(16384, 0);

/// thread id -> agent slot and parent: the tag follows a process that leaves its cgroup.
#[map]
pub static AGENT_PIDS: HashMap<u32, PidTag> = HashMap::with_max_entries(65536, 0);

/// The last thread found tagged on this CPU, as of a pid-tag generation (`tag_state::PIDS`):
/// a run of syscalls by one thread reads an array instead of hashing into `AGENT_PIDS`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LastAgent {
    pub pid_tgid: u64,
    pub generation: u64,
    pub slot: u32,
    pub ppid: u32,
}

#[map]
pub static LAST_AGENT: PerCpuArray<LastAgent> = PerCpuArray::with_max_entries(1, 0);

/// argv captured at execve entry, consumed at sched_process_exec (keyed by thread id).
#[map]
pub static PENDING_EXEC: LruHashMap<u32, ExecArgs> = LruHashMap::with_max_entries(4096, 0);

// Verifier workaround: events are larger than the 512-byte BPF stack, so they are built in
// per-CPU scratch space.
#[map]
pub static FILE_SCRATCH: PerCpuArray<FileEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static ARGS_SCRATCH: PerCpuArray<ExecArgs> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counters, indexed by `agent_monitor_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; programs on one CPU do not run concurrently with each other
        // for the same map value in a way that matters for a statistics counter.
        unsafe { *slot += 1 };
    }
}

/// `bpf_ringbuf_output` flags and `bpf_ringbuf_query` questions (uapi bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;

/// At most one wakeup of the daemon per CPU per this interval for ordinary events. The
/// kernel's default wakes the reader whenever it has caught up, which under load is nearly
/// every event, and each wakeup is an interrupt on the producing CPU. The daemon drains
/// again `reader::FOLLOW_UP` (longer than this) after every drain that found records, so an
/// event written without a wakeup waits at most that long.
const WAKE_INTERVAL_NS: u64 = 1_000_000;

/// Per-CPU time of the last wakeup of the daemon through EVENTS.
#[map]
pub static LAST_WAKE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Wakes the daemon for this event when the interval has passed or the ring is a quarter
/// full; otherwise the event waits for the daemon's next drain. `now` is the event's own
/// time (one clock read per event, not two).
#[inline(always)]
fn events_wake_flag(now: u64) -> u64 {
    let Some(last) = LAST_WAKE.get_ptr_mut(0) else {
        return 0; // unreachable for a one-entry array; the kernel's default then
    };
    // SAFETY: per-CPU slot, ours while this program runs.
    unsafe {
        if now.wrapping_sub(*last) >= WAKE_INTERVAL_NS
            || EVENTS.query(BPF_RB_AVAIL_DATA) >= EVENTS.query(BPF_RB_RING_SIZE) / 4
        {
            *last = now;
            BPF_RB_FORCE_WAKEUP
        } else {
            BPF_RB_NO_WAKEUP
        }
    }
}

/// Writes one event to the ring buffer and counts it as emitted or dropped. A drop is also
/// charged to the agent (the header's slot) so the daemon can mark it degraded. Verdicts
/// are taken before this: a full ring buffer never weakens enforcement. An event that
/// carries a verdict (the header's flags) always wakes the daemon at once (a held process
/// waits for it); a hold that cannot be delivered at all kills instead (fail closed rather
/// than leave a process stopped that nobody will release).
pub fn emit<T: Event>(event: &T) {
    emit_prefix(event, core::mem::size_of::<T>());
}

/// Every event starts with an `EventHeader`.
pub trait Event {
    fn header(&self) -> &EventHeader;
}

macro_rules! events {
    ($($t:ty),*) => {
        $(impl Event for $t {
            fn header(&self) -> &EventHeader {
                &self.header
            }
        })*
    };
}
events!(
    ExecEvent,
    FileEvent,
    NetEvent,
    EscapeEvent,
    ExitEvent,
    CgroupEvent
);

/// `emit` for the first `len` bytes of the event (`len` at most its size): the fields
/// after them are unused (see `FILE_EVENT_ONE_PATH`).
#[inline(always)]
pub fn emit_prefix<T: Event>(event: &T, len: usize) {
    let header = event.header();
    let slot = header.agent;
    let len = len.min(core::mem::size_of::<T>());
    // SAFETY: `len` bytes of a live, plain-integer #[repr(C)] struct.
    let bytes = unsafe { core::slice::from_raw_parts((event as *const T).cast::<u8>(), len) };
    // A refusal is a verdict too: its record must not be lost in a flood of ordinary events.
    let verdict =
        header.flags & (flags::HELD | flags::KILLED | flags::BLOCKED | flags::REFUSED) != 0;
    if verdict && VERDICTS.output::<[u8]>(bytes, 0).is_ok() {
        count(counter::EMITTED);
        return;
    }
    let wake = if verdict {
        BPF_RB_FORCE_WAKEUP
    } else {
        events_wake_flag(header.time_ns)
    };
    if EVENTS.output::<[u8]>(bytes, wake).is_ok() {
        count(counter::EMITTED);
        return;
    }
    count(counter::DROPPED);
    if header.flags & flags::HELD != 0 {
        signal(SIGKILL);
    }
    if slot != 0 {
        match AGENT_DROPS.get_ptr_mut(slot) {
            // SAFETY: map value pointer; a statistics counter tolerates races.
            Some(n) => unsafe { *n += 1 },
            None => {
                let _ = AGENT_DROPS.insert(slot, 1, 0);
            }
        }
    }
}

/// slot -> enforcement settings; absent means audit.
#[map]
pub static AGENT_CONFIG: HashMap<u32, AgentConfig> = HashMap::with_max_entries(4096, 0);

/// Bumped by the daemon after every change of `AGENT_CONFIG`: each CPU's cached settings
/// ([`LAST_CONFIG`]) of an older version are stale.
#[map]
pub static CONFIG_VERSION: Array<u64> = Array::with_max_entries(1, 0);

/// The settings last looked up on this CPU (`present` 0: the slot had none), as of a
/// `CONFIG_VERSION`: a run of one agent's syscalls reads an array instead of hashing.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LastConfig {
    pub version: u64,
    pub slot: u32,
    pub present: u32,
    pub config: AgentConfig,
}

#[map]
pub static LAST_CONFIG: PerCpuArray<LastConfig> = PerCpuArray::with_max_entries(1, 0);

/// (slot, address prefix) -> allowed ports/protocols (the constructor adds BPF_F_NO_PREALLOC).
#[map]
pub static NET_RULES: LpmTrie<NetKey, NetRule> = LpmTrie::with_max_entries(16384, 0);

/// (slot, port) the agent may bind.
#[map]
pub static BIND_PORTS: HashMap<BindKey, u8> = HashMap::with_max_entries(16384, 0);

/// (slot, dev, inode) of binaries the agent may run.
#[map]
pub static EXEC_ALLOW: HashMap<InodeKey, u8> = HashMap::with_max_entries(65536, 0);

/// (slot, dev, inode) of files the agent must never open.
#[map]
pub static FILE_DENY: HashMap<InodeKey, u8> = HashMap::with_max_entries(65536, 0);

/// The second (`tag_state::EPOCH`) each (process, file, access) open was last reported in,
/// for de-duplication.
#[map]
pub static RECENT_OPENS: LruHashMap<OpenKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// One entry of [`RECENT_OPENS_CPU`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ReportedOpen {
    pub key: OpenKey,
    pub epoch: u64,
}

/// How many opens each CPU remembers (a power of two: the index is a hash's low bits).
pub const RECENT_OPENS_CPU_LEN: u32 = 64;

/// Per CPU, some of the opens `RECENT_OPENS` holds, each in the slot its key hashes to: a
/// repeat found here costs an array read instead of a hash lookup. An entry is written
/// only after `RECENT_OPENS` holds the same open in the same second, so a hit here is one
/// there: de-duplication stays machine-wide.
#[map]
pub static RECENT_OPENS_CPU: PerCpuArray<ReportedOpen> =
    PerCpuArray::with_max_entries(RECENT_OPENS_CPU_LEN, 0);

/// Thread id -> 1 while an operation of that thread is held (stopped) for the daemon's
/// verdict. A stop is process-wide and SIGCONT ends it for every thread, so the daemon
/// resumes a process only when no other thread of it is still held (two threads can be held
/// at once, and their events can reach the daemon in either order). The daemon removes a
/// thread's entry when it has judged its operation; LRU for threads killed meanwhile.
#[map]
pub static HELD: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

/// (read tag, dev, inode) of files the daemon judged readable for the agent under the scope
/// whose `AgentConfig::read_tag` that is: later read-only opens of them are not held. Reads only: a hard link gives a file another name, but
/// reading it under any name shows the content the allowed name already shows.
#[map]
pub static FILE_OK: LruHashMap<InodeKey, u8> = LruHashMap::with_max_entries(65536, 0);

/// (read tag, dev, inode) of directories every file of which the daemon judged readable
/// (`dir_ok::READ`) or writable (`dir_ok::WRITE`) for the agent under that read tag, or
/// every file but those named in `DIR_NAMES` (`dir_ok::NAMED`): a first open of a file found
/// in one is not held. Checked after the identity maps, by the parent of the dentry the
/// file was opened by.
#[map]
pub static DIR_OK: LruHashMap<InodeKey, u8> = LruHashMap::with_max_entries(16384, 0);

/// (read tag, file name) that a `dir_ok::NAMED` directory does not cover: names a
/// `files.deny` entry ends in (`**/.env`). Written before the `DIR_OK` entries that need it.
#[map]
pub static DIR_NAMES: HashMap<NameKey, u8> = HashMap::with_max_entries(4096, 0);

/// Devices (`s_dev`) of the filesystems that carry the monitor's own state and controls
/// (cgroup2 and cgroup v1, bpffs, tracefs, debugfs, securityfs): an agent opening a file
/// there for writing is an escape attempt. Written by the daemon at start-up.
#[map]
pub static PROTECTED_DEVS: HashMap<u32, u8> = HashMap::with_max_entries(64, 0);

/// Thread id -> an escape syscall seen at entry, completed at exit.
#[map]
pub static PENDING_ESCAPE: LruHashMap<u32, EscapeEntry> = LruHashMap::with_max_entries(4096, 0);

/// Per-CPU scratch for building an escape event (too big for the BPF stack).
#[map]
pub static ESCAPE_SCRATCH: PerCpuArray<EscapeEvent> = PerCpuArray::with_max_entries(1, 0);

/// slot -> events lost for that agent (ring buffer full): the daemon marks it degraded.
#[map]
pub static AGENT_DROPS: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

/// (slot, host rule index) -> the ports and protocols that `host:` rule allows.
#[map]
pub static HOST_RULES: HashMap<HostRuleKey, NetRule> =
    HashMap::with_max_entries(4096 * MAX_HOST_RULES, 0);

/// (slot, host rule index, address) -> expiry: what the agent's own resolver answered for a
/// name that rule allows. Written by the daemon before it sends the answer to the agent.
#[map]
pub static DNS_LEARNED: HashMap<LearnedKey, Learned> = HashMap::with_max_entries(65536, 0);

/// socket cookie -> the DNS server a redirected query was sent to. LRU: sockets are not
/// tracked to their close, old ones fall out.
#[map]
pub static DNS_ORIGIN: LruHashMap<u64, DnsOrigin> = LruHashMap::with_max_entries(16384, 0);
