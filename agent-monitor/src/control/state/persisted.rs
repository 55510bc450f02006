//! The registry on disk: saved after every change, restored by a restarted daemon.
//!
//! The file is written by a thread of its own ([`StateWriter`]): a change takes a snapshot
//! of the registry under its lock (memory only) and hands it over; the newest snapshot
//! wins, so the file never goes back to an older registry. Changes made for the API (a
//! task created or ended) wait until their snapshot, or a newer one, is written; the
//! pipeline's (a cgroup adopted or gone) do not wait for the disk.

use std::{
    path::PathBuf,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, SystemTime},
};

use super::{Shared, lock};
use crate::{
    control::persist,
    control::tasks::{Registry, Task},
    scope,
};

/// How long a change made for the API waits for the state file at most.
const SAVE_WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Slot {
    /// The newest snapshot not yet taken by the thread, with its generation.
    queued: Option<(u64, persist::Saved)>,
    /// Generation of the last snapshot taken (queued or written).
    newest: u64,
    /// Generation of the last snapshot on disk (or that failed to be written).
    written: u64,
}

/// The state file's writer thread and the snapshot waiting for it.
pub(crate) struct StateWriter {
    slot: Mutex<Slot>,
    changed: Condvar,
}

impl StateWriter {
    /// Starts the thread that writes snapshots to `path`.
    pub(super) fn spawn(path: PathBuf) -> Arc<Self> {
        let writer = Arc::new(Self {
            slot: Mutex::new(Slot::default()),
            changed: Condvar::new(),
        });
        let thread = Arc::clone(&writer);
        let spawned = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || thread.run(&path));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the state file writer; task state is not saved");
        }
        writer
    }

    fn run(&self, path: &std::path::Path) {
        loop {
            let (generation, saved) = {
                let mut slot = lock(&self.slot);
                loop {
                    if let Some(next) = slot.queued.take() {
                        break next;
                    }
                    slot = self
                        .changed
                        .wait(slot)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            if let Err(e) = persist::save(path, &saved) {
                // Enforcement itself does not depend on it.
                tracing::error!(error = %e, "saving task state");
            }
            lock(&self.slot).written = generation;
            self.changed.notify_all();
        }
    }

    /// Hands a snapshot to the thread; returns its generation.
    fn queue(&self, saved: persist::Saved) -> u64 {
        let mut slot = lock(&self.slot);
        slot.newest += 1;
        let generation = slot.newest;
        slot.queued = Some((generation, saved));
        self.changed.notify_all();
        generation
    }

    /// Waits (bounded) until the snapshot `generation`, or a newer one, is written.
    fn wait(&self, generation: u64) {
        let slot = lock(&self.slot);
        let (_slot, timeout) = self
            .changed
            .wait_timeout_while(slot, SAVE_WAIT, |s| s.written < generation)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if timeout.timed_out() {
            tracing::warn!(
                "the state file was not written within {}s; going on",
                SAVE_WAIT.as_secs()
            );
        }
    }
}

impl Shared {
    /// Saves the registry for a restarted daemon without waiting for the disk: the
    /// snapshot is taken now (call with the registry locked, after the change), the file
    /// written by the state writer thread.
    pub(super) fn save(&self, registry: &Registry) -> u64 {
        self.state_writer.queue(snapshot(registry))
    }

    /// As [`Shared::save`], and waits (bounded) until the file has it. Call without the
    /// registry locked.
    pub(super) fn saved(&self, generation: u64) {
        self.state_writer.wait(generation);
    }

    /// Takes over the tasks a previous daemon saved: their kernel tags and rules are
    /// re-synced; tasks whose cgroup is gone are cleaned up. Returns how many were restored.
    pub(crate) fn restore(&self) -> usize {
        let saved = match persist::load(&self.config.state_file) {
            Ok(Some(s)) => s,
            Ok(None) => return 0,
            Err(e) => {
                tracing::error!(error = %e, "previous task state unreadable; starting without it");
                return 0;
            }
        };
        // Tagged and installed without the registry locked; inserted together after.
        let mut tasks = Vec::new();
        for t in saved.tasks {
            let scope = match &t.scope_yaml {
                Some(yaml) => scope::parse_str(yaml, scope::ScopeSource::Inline)
                    .ok()
                    .and_then(|mut v| v.pop())
                    .map(Arc::new),
                None => self.catalog().get(&t.scope),
            };
            let alive = self.cgroup2.id(&t.cgroup).is_ok_and(|id| id == t.cgroup_id);
            let Some(scope) = scope.filter(|_| alive) else {
                tracing::warn!(task = %t.id, "saved task's scope or cgroup is gone; cleaning up");
                self.untag(t.cgroup_id, t.slot);
                continue;
            };
            if let Err(e) = self.tag(t.cgroup_id, t.slot, &scope, &t.cgroup) {
                tracing::error!(task = %t.id, error = %e, "re-applying the saved task's scope");
            }
            let expires_wall = t.expires_unix_ms.map(persist::from_unix_ms);
            let ttl_left =
                expires_wall.map(|e| e.duration_since(SystemTime::now()).unwrap_or_default());
            let mut task = Task::new(
                t.id,
                t.slot,
                scope,
                t.cgroup,
                t.cgroup_id,
                t.origin,
                ttl_left,
            );
            task.started = persist::from_unix_ms(t.started_unix_ms);
            task.expires_wall = expires_wall;
            task.scope_yaml = t.scope_yaml;
            task.start_cwd = t.start_cwd;
            task.landlock_abi = t.landlock_abi;
            task.seen = true;
            tasks.push(task);
        }
        let restored = tasks.len();
        let generation = {
            let mut registry = self.registry();
            registry.restore_last_slot(saved.next_slot);
            for task in tasks {
                registry.insert(task);
            }
            self.save(&registry)
        };
        self.saved(generation);
        restored
    }
}

/// What the state file holds of the registry.
fn snapshot(registry: &Registry) -> persist::Saved {
    persist::Saved {
        next_slot: registry.last_slot(),
        tasks: registry
            .iter()
            // A call's narrowed scope has no name to restore it by: it is not saved (a
            // restarted daemon would bind its processes by the whole task's scope).
            .filter(|t| t.call_of.is_none())
            .map(|t| persist::SavedTask {
                id: t.id.clone(),
                slot: t.slot,
                scope: t.scope.name.clone(),
                scope_yaml: t.scope_yaml.clone(),
                cgroup: t.cgroup.clone(),
                cgroup_id: t.cgroup_id,
                origin: t.origin,
                started_unix_ms: persist::unix_ms(t.started),
                expires_unix_ms: t.expires_wall.map(persist::unix_ms),
                start_cwd: t.start_cwd.clone(),
                landlock_abi: t.landlock_abi,
            })
            .collect(),
    }
}
