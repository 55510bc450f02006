//! The kernel maps the daemon reads and writes, each named once: loading takes them out of
//! the eBPF object, a restarted daemon opens them from their pins, and both go through
//! [`Maps::open`].

use agent_monitor_common::{
    AgentConfig, BindKey, HostRuleKey, InodeKey, Learned, LearnedKey, NameKey, NetKey, NetRule,
    PidTag,
};
use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, RingBuf};

use super::loader::LoadError;

/// Declares a struct of typed maps and the constructor that opens each by its name in the
/// object (and under the pin directory).
macro_rules! map_set {
    ($(#[$meta:meta])* $set:ident { $($(#[$doc:meta])* $field:ident: $ty:ty = $name:literal,)* }) => {
        $(#[$meta])*
        pub(crate) struct $set {
            $($(#[$doc])* pub(crate) $field: $ty,)*
        }

        impl $set {
            fn open(
                source: &mut impl FnMut(&'static str) -> Result<Map, LoadError>,
            ) -> Result<Self, LoadError> {
                Ok(Self {
                    $($field: typed(source, $name)?,)*
                })
            }
        }
    };
}

fn typed<T>(
    source: &mut impl FnMut(&'static str) -> Result<Map, LoadError>,
    name: &'static str,
) -> Result<T, LoadError>
where
    T: TryFrom<Map, Error = MapError>,
{
    T::try_from(source(name)?).map_err(|source| LoadError::Map { name, source })
}

map_set! {
    /// What the daemon's shared state keeps of the kernel side, beside enforcement.
    StateMaps {
        /// cgroup id -> agent slot: the tagged cgroups.
        agent_cgroups: HashMap<MapData, u64, u32> = "AGENT_CGROUPS",
        /// How many cgroups are tagged, and the tag generation.
        tag_state: Array<MapData, u64> = "TAG_STATE",
        /// Per-CPU event counters (`agent_monitor_common::counter`).
        counters: PerCpuArray<MapData, u64> = "COUNTERS",
        /// What each agent's resolver learned (written by `dns`).
        dns_learned: HashMap<MapData, LearnedKey, Learned> = "DNS_LEARNED",
    }
}

map_set! {
    /// The maps that carry enforcement (written by `control::enforce`).
    EnforceMaps {
        config: HashMap<MapData, u32, AgentConfig> = "AGENT_CONFIG",
        /// Bumped after every change of `config`: the kernel's per-CPU copies are stale.
        config_version: Array<MapData, u64> = "CONFIG_VERSION",
        net: LpmTrie<MapData, NetKey, NetRule> = "NET_RULES",
        bind: HashMap<MapData, BindKey, u8> = "BIND_PORTS",
        exec_allow: HashMap<MapData, InodeKey, u8> = "EXEC_ALLOW",
        file_deny: HashMap<MapData, InodeKey, u8> = "FILE_DENY",
        pids: HashMap<MapData, u32, PidTag> = "AGENT_PIDS",
        drops: HashMap<MapData, u32, u64> = "AGENT_DROPS",
        /// Files found readable per agent (an LRU map: the kernel evicts the oldest).
        file_ok: HashMap<MapData, InodeKey, u8> = "FILE_OK",
        /// Directories every file of which was found readable per read tag (LRU), and the
        /// names (`NameKey`) such an entry does not cover.
        dir_ok: HashMap<MapData, InodeKey, u8> = "DIR_OK",
        dir_names: HashMap<MapData, NameKey, u8> = "DIR_NAMES",
        /// (slot, host rule index) -> ports and protocols of that `host:` rule.
        host: HashMap<MapData, HostRuleKey, NetRule> = "HOST_RULES",
        /// Thread id -> 1 while an operation of that thread waits for a verdict (an LRU map).
        held: HashMap<MapData, u32, u32> = "HELD",
    }
}

map_set! {
    /// The two ring buffers: ordinary events, and the verdicts a held process waits for.
    Rings {
        events: RingBuf<MapData> = "EVENTS",
        verdicts: RingBuf<MapData> = "VERDICTS",
    }
}

/// Every map the daemon uses.
pub(crate) struct Maps {
    pub(crate) rings: Rings,
    pub(crate) state: StateMaps,
    pub(crate) enforce: EnforceMaps,
}

impl Maps {
    /// Opens every map through `source`, which yields a map by its name.
    pub(crate) fn open(
        mut source: impl FnMut(&'static str) -> Result<Map, LoadError>,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            rings: Rings::open(&mut source)?,
            state: StateMaps::open(&mut source)?,
            enforce: EnforceMaps::open(&mut source)?,
        })
    }
}
