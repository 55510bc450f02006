//! The kernel's tag map (`AGENT_CGROUPS`) with a count kept in memory.

use std::collections::HashSet;

use aya::maps::{HashMap, MapData};

/// The kernel's cgroup tags and, in memory, which ids they hold: counting the map's keys
/// is one syscall per key, and the count is published at every task start and end.
pub(super) struct Tagger {
    map: HashMap<MapData, u64, u32>,
    pub(super) ids: HashSet<u64>,
}

impl Tagger {
    /// The ids already tagged (a previous daemon's, adopted with its pinned map) are read
    /// once.
    pub(super) fn new(map: HashMap<MapData, u64, u32>) -> Self {
        let ids = map.keys().flatten().collect();
        Self { map, ids }
    }

    pub(super) fn insert(&mut self, cgroup_id: u64, slot: u32) -> Result<(), aya::maps::MapError> {
        self.map.insert(cgroup_id, slot, 0)?;
        self.ids.insert(cgroup_id);
        Ok(())
    }

    /// The kernel may have removed it already (`cgroup_rmdir`).
    pub(super) fn remove(&mut self, cgroup_id: u64) {
        let _ = self.map.remove(&cgroup_id);
        self.ids.remove(&cgroup_id);
    }
}
