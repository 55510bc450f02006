//! What this daemon knows is in the enforcement maps for each slot: the keys it wrote, so
//! that a tool call's switch and a task's end delete exactly those instead of walking every
//! map key by key (a walk costs a syscall per key of every slot, milliseconds per switch).
//!
//! The maps are pinned and outlive the daemon: a restarted daemon adopts the previous one's
//! keys, which it never wrote. The slots found in the maps at start are therefore not
//! known; their keys are found by a walk of the maps the first time they are needed.

use std::collections::{HashMap, HashSet};

use agent_monitor_common::{BindKey, HostRuleKey, InodeKey, NameKey, NetKey};
use aya::maps::lpm_trie::Key;

use super::compile::KernelScope;
use crate::kernel::maps::EnforceMaps;

/// The most `FILE_OK` keys recorded for a slot: the map's size (an LRU map, so the kernel
/// may have evicted some of them). Past it the slot's keys are found by a walk again.
const FILE_OK_KEPT: usize = 65_536;
/// The same for `DIR_OK`.
const DIR_OK_KEPT: usize = 16_384;

/// One of the inode key sets of [`SlotKeys`] (a map's).
pub(super) type Pick = fn(&mut SlotKeys) -> &mut HashSet<InodeKey>;

/// The keys of one slot in the enforcement maps (`AGENT_CONFIG` and `AGENT_DROPS` are keyed
/// by the slot itself and need no record).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct SlotKeys {
    /// (prefix length, address) of `NET_RULES` keys.
    pub(super) net: HashSet<(u32, [u8; 16])>,
    pub(super) bind: HashSet<BindKey>,
    pub(super) host: HashSet<HostRuleKey>,
    pub(super) exec_allow: HashSet<InodeKey>,
    pub(super) file_deny: HashSet<InodeKey>,
    pub(super) file_ok: HashSet<InodeKey>,
    pub(super) dir_ok: HashSet<InodeKey>,
    pub(super) dir_names: HashSet<NameKey>,
}

impl SlotKeys {
    /// The keys a compiled scope's rules take for `slot` (no `FILE_OK` nor `DIR_OK`: reads
    /// are found readable one by one).
    pub(super) fn of(slot: u32, ks: &KernelScope) -> Self {
        let inode = |id: &super::compile::FileId| InodeKey {
            slot,
            dev: id.dev,
            ino: id.ino,
        };
        Self {
            net: ks
                .net
                .iter()
                .map(|(len, addr, _)| (32 + len, *addr))
                .collect(),
            bind: ks
                .bind
                .iter()
                .map(|p| BindKey {
                    slot,
                    port: u32::from(*p),
                })
                .collect(),
            host: (0u32..)
                .zip(&ks.host)
                .map(|(index, _)| HostRuleKey { slot, index })
                .collect(),
            exec_allow: ks.exec_allow.iter().map(inode).collect(),
            file_deny: ks.file_deny.iter().map(inode).collect(),
            ..Self::default()
        }
    }

    /// Takes out of the record the keys `keep` lacks: what a switch to `keep`'s scope
    /// deletes once that scope is written. `FILE_OK` and `DIR_OK` keys stay: they hold
    /// only under the read tag of the scope they were judged under.
    pub(super) fn split_stale(&mut self, keep: &Self) -> Self {
        fn split<T: Eq + std::hash::Hash + Copy>(
            have: &mut HashSet<T>,
            keep: &HashSet<T>,
        ) -> HashSet<T> {
            let stale: HashSet<T> = have.difference(keep).copied().collect();
            have.retain(|k| keep.contains(k));
            stale
        }
        Self {
            net: split(&mut self.net, &keep.net),
            bind: split(&mut self.bind, &keep.bind),
            host: split(&mut self.host, &keep.host),
            exec_allow: split(&mut self.exec_allow, &keep.exec_allow),
            file_deny: split(&mut self.file_deny, &keep.file_deny),
            ..Self::default()
        }
    }

    /// Deletes these keys from the maps (the one deletion of `remove` and `switch`). A key
    /// already gone (evicted from `FILE_OK`) is no error.
    pub(super) fn delete(&self, maps: &mut EnforceMaps, slot: u32) {
        for (prefix, addr) in &self.net {
            let key = Key::new(
                *prefix,
                NetKey {
                    slot_be: slot.to_be_bytes(),
                    addr: *addr,
                },
            );
            let _ = maps.net.remove(&key);
        }
        for k in &self.bind {
            let _ = maps.bind.remove(k);
        }
        for k in &self.host {
            let _ = maps.host.remove(k);
        }
        for (map, keys) in [
            (&mut maps.exec_allow, &self.exec_allow),
            (&mut maps.file_deny, &self.file_deny),
            (&mut maps.file_ok, &self.file_ok),
            (&mut maps.dir_ok, &self.dir_ok),
        ] {
            for k in keys {
                let _ = map.remove(k);
            }
        }
        // The names last: no directory entry is left that needs them.
        for k in &self.dir_names {
            let _ = maps.dir_names.remove(k);
        }
    }
}

/// Walks every enforcement map and returns what it finds, by slot: at start, to learn which
/// slots a previous daemon left keys for, and for such a slot when its keys are needed.
fn walk(maps: &EnforceMaps, only: Option<u32>) -> HashMap<u32, SlotKeys> {
    let wanted = |slot: u32| only.is_none_or(|o| o == slot);
    let mut found: HashMap<u32, SlotKeys> = HashMap::new();
    for k in maps.net.keys().flatten() {
        let slot = u32::from_be_bytes(k.data().slot_be);
        if wanted(slot) {
            let data = k.data();
            found
                .entry(slot)
                .or_default()
                .net
                .insert((k.prefix_len(), data.addr));
        }
    }
    for k in maps.bind.keys().flatten().filter(|k| wanted(k.slot)) {
        found.entry(k.slot).or_default().bind.insert(k);
    }
    for k in maps.host.keys().flatten().filter(|k| wanted(k.slot)) {
        found.entry(k.slot).or_default().host.insert(k);
    }
    for (map, pick) in [
        (&maps.exec_allow, (|s| &mut s.exec_allow) as Pick),
        (&maps.file_deny, |s| &mut s.file_deny),
        (&maps.file_ok, |s| &mut s.file_ok),
        (&maps.dir_ok, |s| &mut s.dir_ok),
    ] {
        for k in map.keys().flatten().filter(|k| wanted(k.slot)) {
            pick(found.entry(k.slot).or_default()).insert(k);
        }
    }
    for k in maps.dir_names.keys().flatten().filter(|k| wanted(k.slot)) {
        found.entry(k.slot).or_default().dir_names.insert(k);
    }
    found
}

/// The record of every slot's keys.
pub(super) struct Written {
    known: HashMap<u32, SlotKeys>,
    /// Slots that may have keys not in `known`: those a previous daemon left in the pinned
    /// maps, and one whose `FILE_OK` record overflowed. Their keys are found by a walk of
    /// the maps (`keys_of`) the next time they are deleted. A slot neither known nor here
    /// has no key in the maps.
    unknown: HashSet<u32>,
}

impl Written {
    /// Learns which slots the maps already hold keys for (an adopted previous daemon's).
    pub(super) fn new(maps: &EnforceMaps) -> Self {
        let unknown: HashSet<u32> = walk(maps, None).into_keys().collect();
        if !unknown.is_empty() {
            tracing::debug!(
                slots = unknown.len(),
                "enforcement keys of a previous daemon found"
            );
        }
        Self {
            known: HashMap::new(),
            unknown,
        }
    }

    /// All of `slot`'s keys in the maps: the record, or, for a slot whose keys are not all
    /// recorded, a walk of the maps (after which they are).
    pub(super) fn keys_of(&mut self, maps: &EnforceMaps, slot: u32) -> &mut SlotKeys {
        if self.unknown.remove(&slot) {
            let found = walk(maps, Some(slot)).remove(&slot).unwrap_or_default();
            self.known.insert(slot, found);
        }
        self.known.entry(slot).or_default()
    }

    /// Where to record a key just written for `slot`: None for a slot not known (a walk
    /// finds it anyway).
    pub(super) fn record(&mut self, slot: u32) -> Option<&mut SlotKeys> {
        if self.unknown.contains(&slot) {
            return None;
        }
        Some(self.known.entry(slot).or_default())
    }

    /// Records a file found readable; a slot with more than the map holds is walked again.
    pub(super) fn record_read(&mut self, key: InodeKey) {
        self.record_kept(key, |s| &mut s.file_ok, FILE_OK_KEPT);
    }

    /// Records a directory found readable, as [`Written::record_read`].
    pub(super) fn record_dir(&mut self, key: InodeKey) {
        self.record_kept(key, |s| &mut s.dir_ok, DIR_OK_KEPT);
    }

    fn record_kept(&mut self, key: InodeKey, pick: Pick, kept: usize) {
        let Some(keys) = self.record(key.slot) else {
            return;
        };
        if pick(keys).len() >= kept {
            self.known.remove(&key.slot);
            self.unknown.insert(key.slot);
        } else {
            pick(keys).insert(key);
        }
    }

    /// Read tags (`READ_TAG_BIT`) with keys in the maps that this daemon did not give: a
    /// previous daemon's.
    pub(super) fn unknown_tags(&self) -> Vec<u32> {
        self.unknown
            .iter()
            .copied()
            .filter(|s| s & agent_monitor_common::READ_TAG_BIT != 0)
            .collect()
    }

    /// Forgets a slot whose keys were all deleted and that is not used again (slots are
    /// never reused).
    pub(super) fn forget(&mut self, slot: u32) {
        self.known.remove(&slot);
        self.unknown.remove(&slot);
    }
}

#[cfg(test)]
mod tests {
    use agent_monitor_common::NetRule;

    use super::{super::compile::FileId, *};

    fn scope(exec: &[u64], ports: &[u16], hosts: usize, nets: &[u32]) -> KernelScope {
        KernelScope {
            exec_allow: exec
                .iter()
                .map(|ino| FileId { dev: 8, ino: *ino })
                .collect(),
            bind: ports.to_vec(),
            host: vec![NetRule::default(); hosts],
            net: nets
                .iter()
                .map(|len| (*len, [0; 16], NetRule::default()))
                .collect(),
            ..KernelScope::default()
        }
    }

    #[test]
    fn a_switch_deletes_only_what_the_new_scope_lacks_and_keeps_the_reads() {
        let slot = 7;
        let mut have = SlotKeys::of(slot, &scope(&[1, 2, 3], &[80, 443], 3, &[96, 128]));
        have.file_ok.insert(InodeKey {
            slot,
            dev: 8,
            ino: 9,
        });
        have.dir_ok.insert(InodeKey {
            slot,
            dev: 8,
            ino: 10,
        });
        let keep = SlotKeys::of(slot, &scope(&[2, 4], &[443], 1, &[128]));
        let stale = have.split_stale(&keep);
        let ino = |s: &HashSet<InodeKey>| {
            let mut v: Vec<u64> = s.iter().map(|k| k.ino).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(ino(&stale.exec_allow), [1, 3]);
        // Reads hold under their own scope's read tag: a switch leaves them.
        assert!(stale.file_ok.is_empty() && stale.dir_ok.is_empty());
        assert_eq!(ino(&have.dir_ok), [10]);
        assert_eq!(stale.bind, HashSet::from([BindKey { slot, port: 80 }]));
        assert_eq!(
            stale.host,
            HashSet::from([
                HostRuleKey { slot, index: 1 },
                HostRuleKey { slot, index: 2 }
            ])
        );
        assert_eq!(stale.net, HashSet::from([(32 + 96, [0; 16])]));
        // What stays recorded is what both scopes have: the new scope's keys are added
        // when they are written.
        assert_eq!(ino(&have.exec_allow), [2]);
        assert_eq!(ino(&have.file_ok), [9]);
        assert_eq!(have.bind, HashSet::from([BindKey { slot, port: 443 }]));
    }

    #[test]
    fn keys_are_the_slots_own() {
        let keys = SlotKeys::of(3, &scope(&[1], &[22], 2, &[]));
        assert!(keys.exec_allow.iter().all(|k| k.slot == 3));
        assert!(keys.bind.iter().all(|k| k.slot == 3));
        assert_eq!(keys.host.len(), 2);
        assert!(keys.host.iter().all(|k| k.slot == 3 && k.index < 2));
    }
}
