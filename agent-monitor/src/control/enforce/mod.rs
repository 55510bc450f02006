//! Installs a task's scope into the kernel maps (so the kernel can refuse and kill on its
//! own), removes it when the task ends, and carries out the daemon's own actions: killing a
//! process or a whole agent, releasing a held exec.

mod compile;
mod dirs;
mod written;

use std::{
    collections::HashMap,
    os::fd::{AsRawFd as _, FromRawFd as _},
    sync::Arc,
    time::Instant,
};

use agent_monitor_common::{AgentConfig, HostRuleKey, InodeKey, NetKey, READ_TAG_BIT};
use aya::maps::{MapError, lpm_trie::Key};

use crate::kernel::maps::EnforceMaps;

pub(crate) use compile::{CompileError, compile, kernel_dev};
use written::{Pick, SlotKeys, Written};

#[derive(Debug, thiserror::Error)]
pub(crate) enum EnforceError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("writing {map} for slot {slot}: {source}")]
    Map {
        map: &'static str,
        slot: u32,
        #[source]
        source: MapError,
    },
}

/// Writes scopes into the kernel maps that carry enforcement.
pub(crate) struct Enforcer {
    maps: EnforceMaps,
    /// The keys written per slot: what `remove` and `switch` delete.
    written: Written,
    /// The scopes a slot is switched between (tool calls), compiled once: a switch does
    /// not walk the file globs again. Forgotten with the slot's rules.
    switched: HashMap<u32, Vec<Compiled>>,
    /// The task's own scope of each slot (its address): its `FILE_OK` keys carry the slot.
    installed: HashMap<u32, usize>,
    /// The last read tag given to a tool scope (`AgentConfig::read_tag`); never reused while
    /// the daemon runs. A restarted daemon deletes the tags it finds at start.
    last_tag: u32,
}

/// A scope a slot is switched to, its kernel form, and the read tag of its `FILE_OK` keys.
struct Compiled {
    scope: Arc<crate::scope::Scope>,
    kernel: Arc<compile::KernelScope>,
    read_tag: u32,
}

/// Where a scope lives, to know it again (the task's and the calls' scopes are shared `Arc`s).
fn address(scope: &crate::scope::Scope) -> usize {
    std::ptr::from_ref(scope) as usize
}

/// Scopes kept compiled per slot (an MCP server's tools).
const SWITCHED_KEPT: usize = 64;

impl Enforcer {
    /// The operation thread `tid` was held for is judged. Whether none of `threads` (the
    /// other threads of its process) is still held, so that the process may be resumed: a
    /// stop is process-wide, and a resume for one thread would release another's operation
    /// before its verdict.
    pub(crate) fn judged_hold(&mut self, tid: u32, threads: &[u32]) -> bool {
        let _ = self.maps.held.remove(&tid);
        !threads
            .iter()
            .any(|t| *t != tid && self.maps.held.get(t, 0).is_ok())
    }

    /// Threads the kernel holds now, with their agent's slot (a restarted daemon's look at
    /// what the previous one left held).
    pub(crate) fn held_threads(&self) -> Vec<(u32, u32)> {
        self.maps
            .held
            .keys()
            .filter_map(Result::ok)
            .filter_map(|tid| Some((tid, self.maps.pids.get(&tid, 0).ok()?.agent)))
            .collect()
    }

    pub(crate) fn new(mut maps: EnforceMaps) -> Self {
        let mut written = Written::new(&maps);
        // A previous daemon's read tags: this one gives the same numbers to other scopes.
        for tag in written.unknown_tags() {
            std::mem::take(written.keys_of(&maps, tag)).delete(&mut maps, tag);
            written.forget(tag);
        }
        Self {
            written,
            maps,
            switched: HashMap::new(),
            installed: HashMap::new(),
            last_tag: 0,
        }
    }

    /// Writes a scope for a slot, replacing what the slot had. The settings go in last, so
    /// the kernel enforces only once every rule is in place. `dns` are the ports of the
    /// agent's resolver when the scope has host rules.
    pub(crate) fn install(
        &mut self,
        slot: u32,
        scope: &crate::scope::Scope,
        dns: crate::control::dns::DnsPorts,
    ) -> Result<(), EnforceError> {
        let ks = compile(scope)?;
        self.clear(slot);
        self.installed.insert(slot, address(scope));
        self.write(slot, &ks, dns, slot)
    }

    /// Writes a compiled scope's rules for a slot, then its settings. A rule the slot is
    /// known to have with the same value (a switch between scopes that share it) is not
    /// written again.
    fn write(
        &mut self,
        slot: u32,
        ks: &compile::KernelScope,
        dns: crate::control::dns::DnsPorts,
        read_tag: u32,
    ) -> Result<(), EnforceError> {
        let err = |map: &'static str| move |source| EnforceError::Map { map, slot, source };
        self.write_net(slot, ks)?;
        let keys = SlotKeys::of(slot, ks);
        for k in keys.bind {
            if self
                .written
                .record(slot)
                .is_some_and(|w| w.bind.contains(&k))
            {
                continue;
            }
            self.maps.bind.insert(k, 1, 0).map_err(err("BIND_PORTS"))?;
            if let Some(w) = self.written.record(slot) {
                w.bind.insert(k);
            }
        }
        for (map, name, new, pick) in [
            (
                &mut self.maps.exec_allow,
                "EXEC_ALLOW",
                keys.exec_allow,
                (|w| &mut w.exec_allow) as Pick,
            ),
            (&mut self.maps.file_deny, "FILE_DENY", keys.file_deny, |w| {
                &mut w.file_deny
            }),
        ] {
            for k in new {
                if self
                    .written
                    .record(slot)
                    .is_some_and(|w| pick(w).contains(&k))
                {
                    continue;
                }
                map.insert(k, 1, 0).map_err(err(name))?;
                if let Some(w) = self.written.record(slot) {
                    pick(w).insert(k);
                }
            }
        }
        for (index, rule) in (0u32..).zip(&ks.host) {
            let k = HostRuleKey { slot, index };
            self.maps
                .host
                .insert(k, rule, 0)
                .map_err(err("HOST_RULES"))?;
            if let Some(w) = self.written.record(slot) {
                w.host.insert(k);
            }
        }
        let cfg = AgentConfig {
            mode: ks.mode,
            on_violation: ks.on_violation,
            flags: ks.flags,
            host_rules: u32::try_from(ks.host.len()).unwrap_or(0),
            dns_port4: u32::from(dns.v4),
            dns_port6: u32::from(dns.v6),
            read_tag,
            pad0: 0,
        };
        self.maps
            .config
            .insert(slot, cfg, 0)
            .map_err(err("AGENT_CONFIG"))?;
        self.config_changed().map_err(err("CONFIG_VERSION"))
    }

    /// After every change of `AGENT_CONFIG`: the kernel programs keep each CPU's last
    /// settings while this version stays the same. Read from the map, so a daemon that
    /// adopted another's maps never writes a version already seen.
    fn config_changed(&mut self) -> Result<(), aya::maps::MapError> {
        let version = self.maps.config_version.get(&0, 0)?.wrapping_add(1);
        self.maps.config_version.set(0, version, 0)
    }

    /// Replaces a running slot's scope with another without a moment unenforced (a tool
    /// call's switch, `control/state/calls.rs`): the new rules and settings are written over
    /// the old ones, and only then the old rules the new scope lacks removed. Meanwhile the
    /// slot is bound by the union of both, never by less than the wider. Reads judged under
    /// the old scope stay, under its read tag: the new settings name the new scope's tag,
    /// so the kernel takes none of them as judged under the new one.
    pub(crate) fn switch(
        &mut self,
        slot: u32,
        scope: &Arc<crate::scope::Scope>,
        dns: crate::control::dns::DnsPorts,
    ) -> Result<(), EnforceError> {
        let started = Instant::now();
        let (ks, read_tag) = self.compiled(slot, scope)?;
        self.write(slot, &ks, dns, read_tag)?;
        let keep = SlotKeys::of(slot, &ks);
        let stale = self.written.keys_of(&self.maps, slot).split_stale(&keep);
        stale.delete(&mut self.maps, slot);
        tracing::debug!(
            slot,
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "scope switched"
        );
        Ok(())
    }

    /// A scope's kernel form and read tag for a slot: compiled and tagged the first time
    /// the slot switches to it. The task's own scope reads under the slot itself. A scope
    /// pushed out of the slot's list takes its reads with it.
    fn compiled(
        &mut self,
        slot: u32,
        scope: &Arc<crate::scope::Scope>,
    ) -> Result<(Arc<compile::KernelScope>, u32), EnforceError> {
        let list = self.switched.entry(slot).or_default();
        if let Some(c) = list.iter().find(|c| Arc::ptr_eq(&c.scope, scope)) {
            return Ok((Arc::clone(&c.kernel), c.read_tag));
        }
        let kernel = Arc::new(compile(scope)?);
        let read_tag = if self.installed.get(&slot) == Some(&address(scope)) {
            slot
        } else {
            self.last_tag += 1;
            READ_TAG_BIT | self.last_tag
        };
        let list = self.switched.entry(slot).or_default();
        if list.len() >= SWITCHED_KEPT {
            let old = list.remove(0);
            if old.read_tag != slot {
                self.forget_reads(old.read_tag);
            }
        }
        self.switched.entry(slot).or_default().push(Compiled {
            scope: Arc::clone(scope),
            kernel: Arc::clone(&kernel),
            read_tag,
        });
        Ok((kernel, read_tag))
    }

    /// Deletes the `FILE_OK` keys of a tool scope's read tag.
    fn forget_reads(&mut self, read_tag: u32) {
        std::mem::take(self.written.keys_of(&self.maps, read_tag)).delete(&mut self.maps, read_tag);
        self.written.forget(read_tag);
    }

    /// Adds a widened scope's network rules to a slot without removing anything first (a
    /// just-in-time grant: the slot stays enforced throughout; every rule of the widened
    /// scope allows at least what the old one did at that prefix).
    pub(crate) fn widen_net(
        &mut self,
        slot: u32,
        scope: &crate::scope::Scope,
    ) -> Result<(), EnforceError> {
        self.write_net(slot, &compile(scope)?)
    }

    /// Writes (over what is there) a compiled scope's network rules for a slot.
    fn write_net(&mut self, slot: u32, ks: &compile::KernelScope) -> Result<(), EnforceError> {
        for (len, addr, rule) in &ks.net {
            let key = Key::new(
                32 + len,
                NetKey {
                    slot_be: slot.to_be_bytes(),
                    addr: *addr,
                },
            );
            self.maps
                .net
                .insert(&key, rule, 0)
                .map_err(|source| EnforceError::Map {
                    map: "NET_RULES",
                    slot,
                    source,
                })?;
            if let Some(w) = self.written.record(slot) {
                w.net.insert((32 + len, *addr));
            }
        }
        Ok(())
    }

    /// Allows one more binary for a slot (a held exec the daemon found in scope).
    pub(crate) fn allow_exec(&mut self, slot: u32, dev: u32, ino: u64) {
        let key = InodeKey { slot, dev, ino };
        if let Err(e) = self.maps.exec_allow.insert(key, 1, 0) {
            tracing::warn!(slot, error = %e, "cannot remember a released binary; it will be held again");
        } else if let Some(w) = self.written.record(slot) {
            w.exec_allow.insert(key);
        }
    }

    /// Remembers that an agent may read a file under its own scope, so its next opens are
    /// not held.
    pub(crate) fn allow_read(&mut self, slot: u32, dev: u32, ino: u64) {
        self.insert_read(InodeKey { slot, dev, ino });
    }

    /// Remembers that an agent may read a file under `scope` (its own or a tool call's: the
    /// one the open was judged under), so its next opens under that scope are not held.
    /// Nothing is remembered for a scope the slot no longer knows.
    pub(crate) fn allow_read_under(
        &mut self,
        slot: u32,
        scope: &crate::scope::Scope,
        dev: u32,
        ino: u64,
    ) {
        if let Some(read_tag) = self.read_tag_of(slot, scope) {
            self.insert_read(InodeKey {
                slot: read_tag,
                dev,
                ino,
            });
        }
    }

    /// The read tag of `scope` in `slot`: the slot for its own scope, the tag given to a tool
    /// scope it switched to; None for a scope the slot no longer knows.
    fn read_tag_of(&self, slot: u32, scope: &crate::scope::Scope) -> Option<u32> {
        if self.installed.get(&slot) == Some(&address(scope)) {
            return Some(slot);
        }
        self.switched.get(&slot).and_then(|list| {
            list.iter()
                .find(|c| std::ptr::eq(Arc::as_ptr(&c.scope), scope))
                .map(|c| c.read_tag)
        })
    }

    fn insert_read(&mut self, key: InodeKey) {
        let slot = key.slot;
        if let Err(e) = self.maps.file_ok.insert(key, 1, 0) {
            tracing::debug!(slot, error = %e, "cannot remember a readable file; it will be held again");
        } else {
            self.written.record_read(key);
        }
    }

    /// Removes everything written for a slot (settings first: back to audit at once): the
    /// keys recorded as written, or, for a slot a previous daemon wrote, those a walk of the
    /// maps finds.
    pub(crate) fn remove(&mut self, slot: u32) {
        self.clear(slot);
        // Slots are never reused: nothing is written for this one again.
        self.written.forget(slot);
    }

    /// As [`Enforcer::remove`], but the slot stays known (without a key) for what is
    /// written next.
    fn clear(&mut self, slot: u32) {
        self.installed.remove(&slot);
        for c in self.switched.remove(&slot).unwrap_or_default() {
            if c.read_tag != slot {
                self.forget_reads(c.read_tag);
            }
        }
        if self.maps.config.remove(&slot).is_ok()
            && let Err(e) = self.config_changed()
        {
            tracing::error!(slot, error = %e, "the kernel may keep this slot's settings until the next change");
        }
        let _ = self.maps.drops.remove(&slot);
        let all = std::mem::take(self.written.keys_of(&self.maps, slot));
        all.delete(&mut self.maps, slot);
    }

    /// Events the kernel could not deliver, by slot: one walk of the map, which holds only
    /// slots that lost some.
    pub(crate) fn all_drops(&self) -> std::collections::HashMap<u32, u64> {
        self.maps.drops.iter().flatten().collect()
    }

    /// Whether a thread is tagged with this slot right now (the kill guard: a kill must only
    /// ever reach an agent's own processes).
    pub(crate) fn is_tagged(&self, pid: u32, slot: u32) -> bool {
        self.maps.pids.get(&pid, 0).is_ok_and(|t| t.agent == slot)
    }
}

/// Sends `sig` to `pid` through a pidfd, so a pid reused after the process died is never
/// hit. `check` runs after the pidfd is taken: it confirms the process is the agent's.
pub(crate) fn signal_process(pid: u32, sig: i32, check: impl FnOnce() -> bool) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: plain syscalls with integer arguments; the fd is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let Ok(fd) = i32::try_from(fd) else {
        return false;
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: a freshly opened descriptor that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    if !check() {
        return false;
    }
    // SAFETY: valid pidfd, no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<u8>(),
            0,
        )
    };
    rc == 0
}
