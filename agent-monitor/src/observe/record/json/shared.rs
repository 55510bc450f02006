//! The JSON of the agent and process objects, kept across records: the records of one
//! process share one allocation of each object's names (see `AgentRef` and `ProcessRef`),
//! so their escaped text is made once and copied after that, one copy instead of a check
//! and copy per string.
//!
//! An entry holds a clone of the `Arc` it was made from. While it does, nothing else can be
//! allocated at its address, so a record whose names are the same allocation
//! (`Arc::ptr_eq`) has exactly the entry's text.

use std::sync::Arc;

use super::{number, optional, string};
use crate::observe::record::{AgentRef, ProcessNames, ProcessRef};

/// Agents (task and scope) remembered; a daemon's batches rarely mix more.
const AGENTS: usize = 4;
/// Threads remembered (with their process's names: name, image and cgroup).
const PROCESSES: usize = 16;

/// The text of recently written agent and process objects.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    agents: Ring<AgentRef>,
    /// A thread's numbers (pid, tid, ppid) and its process's names.
    processes: Ring<(u32, u32, u32, Arc<ProcessNames>)>,
}

/// Entries and their text, replaced oldest first.
#[derive(Debug)]
struct Ring<K> {
    entries: Vec<(K, Vec<u8>)>,
    next: usize,
}

impl<K> Default for Ring<K> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            next: 0,
        }
    }
}

impl<K> Ring<K> {
    /// Appends the text of the entry `same` picks, made by `make` (and kept) on a miss.
    fn write(
        &mut self,
        out: &mut Vec<u8>,
        cap: usize,
        same: impl Fn(&K) -> bool,
        key: impl FnOnce() -> K,
        make: impl FnOnce(&mut Vec<u8>),
    ) {
        if let Some((_, text)) = self.entries.iter().find(|(k, _)| same(k)) {
            out.extend_from_slice(text);
            return;
        }
        let mut text = Vec::new();
        make(&mut text);
        out.extend_from_slice(&text);
        if self.entries.len() < cap {
            self.entries.push((key(), text));
        } else {
            self.entries[self.next] = (key(), text);
            self.next = (self.next + 1) % cap;
        }
    }
}

impl Shared {
    /// The agent object, `{"scope":…}`.
    pub(super) fn agent(&mut self, out: &mut Vec<u8>, a: &AgentRef) {
        self.agents.write(
            out,
            AGENTS,
            |k| k.same(a),
            || a.clone(),
            |text| agent(text, a),
        );
    }

    /// The process object, `{"pid":…}`.
    pub(super) fn process(&mut self, out: &mut Vec<u8>, p: &ProcessRef) {
        self.processes.write(
            out,
            PROCESSES,
            |(pid, tid, ppid, names)| {
                (*pid, *tid, *ppid) == (p.pid, p.tid, p.ppid) && Arc::ptr_eq(names, &p.names)
            },
            || (p.pid, p.tid, p.ppid, Arc::clone(&p.names)),
            |text| process(text, p),
        );
    }
}

fn agent(out: &mut Vec<u8>, a: &AgentRef) {
    out.extend_from_slice(b"{\"scope\":");
    string(out, &a.scope);
    out.extend_from_slice(b",\"task\":");
    string(out, &a.task);
    out.extend_from_slice(b",\"owner\":");
    string(out, &a.owner);
    out.extend_from_slice(b",\"identity\":");
    optional(out, a.identity.as_deref());
    out.push(b'}');
}

fn process(out: &mut Vec<u8>, p: &ProcessRef) {
    out.extend_from_slice(b"{\"pid\":");
    number(out, u64::from(p.pid));
    out.extend_from_slice(b",\"tid\":");
    number(out, u64::from(p.tid));
    out.extend_from_slice(b",\"ppid\":");
    number(out, u64::from(p.ppid));
    out.extend_from_slice(b",\"comm\":");
    string(out, &p.comm);
    out.extend_from_slice(b",\"exe\":");
    optional(out, p.exe.as_deref());
    out.extend_from_slice(b",\"cgroup\":");
    optional(out, p.cgroup.as_deref());
    out.push(b'}');
}
