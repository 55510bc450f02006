//! Whole directories (`DIR_OK`): after a held open in a directory every file of which the
//! scope lets the agent read (or write), the kernel stops holding first opens there.

use std::{os::unix::fs::MetadataExt as _, path::Path};

use agent_monitor_common::{DIR_NAME_LEN, InodeKey, NameKey, dir_ok};

use super::{Enforcer, kernel_dev};

impl Enforcer {
    /// Remembers, when `scope` lets any process read (or write) every file directly in
    /// `dir` (a canonical path the daemon just named a held open by), that the kernel need
    /// not hold a first open there under that scope. `protected`: `dir` is on one of the
    /// monitor's own filesystems, where no write is let through. The directory is named by
    /// what is at `dir` now; names the scope excepts (`**/.env`) go in first, so the kernel
    /// never sees the entry without them.
    pub(crate) fn allow_dir_under(
        &mut self,
        slot: u32,
        scope: &crate::scope::Scope,
        dir: &Path,
        protected: bool,
    ) {
        let Some(read_tag) = self.read_tag_of(slot, scope) else {
            return;
        };
        let Some(grant) = dir.to_str().and_then(|d| scope.policy.dir_grant(d)) else {
            return;
        };
        let mut value = 0;
        if grant.read {
            value |= dir_ok::READ;
        }
        if grant.write && !protected {
            value |= dir_ok::WRITE;
        }
        if value == 0 {
            return;
        }
        if !grant.except.is_empty() {
            value |= dir_ok::NAMED;
        }
        let names = grant.except;
        let Ok(meta) = std::fs::metadata(dir) else {
            return;
        };
        if !meta.is_dir() {
            return;
        }
        let key = InodeKey {
            slot: read_tag,
            dev: kernel_dev(meta.dev()),
            ino: meta.ino(),
        };
        if self
            .written
            .record(read_tag)
            .is_some_and(|w| w.dir_ok.contains(&key))
        {
            return;
        }
        for n in &names {
            let mut name_key = NameKey {
                slot: read_tag,
                name: [0; DIR_NAME_LEN],
            };
            // The grant keeps only names shorter than the key (a NUL follows).
            let Some(room) = name_key.name.get_mut(..n.len()) else {
                return;
            };
            room.copy_from_slice(n.as_bytes());
            if self
                .written
                .record(read_tag)
                .is_some_and(|w| w.dir_names.contains(&name_key))
            {
                continue;
            }
            if let Err(e) = self.maps.dir_names.insert(name_key, 1, 0) {
                tracing::debug!(slot, error = %e, "cannot except a name; the directory stays held");
                return;
            }
            if let Some(w) = self.written.record(read_tag) {
                w.dir_names.insert(name_key);
            }
        }
        if let Err(e) = self.maps.dir_ok.insert(key, value, 0) {
            tracing::debug!(slot, error = %e, "cannot remember a readable directory");
        } else {
            self.written.record_dir(key);
        }
    }

    /// Forgets every directory granted whole for a slot, under each of its scopes: one of
    /// its processes renamed a directory, which may have moved one somewhere its scope
    /// does not cover.
    pub(crate) fn forget_dirs(&mut self, slot: u32) {
        let mut tags: Vec<u32> = self
            .switched
            .get(&slot)
            .map(|list| list.iter().map(|c| c.read_tag).collect())
            .unwrap_or_default();
        tags.push(slot);
        tags.sort_unstable();
        tags.dedup();
        for tag in tags {
            let keys = self.written.keys_of(&self.maps, tag);
            for k in std::mem::take(&mut keys.dir_ok) {
                let _ = self.maps.dir_ok.remove(&k);
            }
        }
    }
}
