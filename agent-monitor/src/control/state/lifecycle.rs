//! How tasks end: housekeeping (finished, expired, degraded), lifecycle records, and the
//! daemon's own shutdown.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Shared, TaskError, lock};
use crate::{control::tasks::Origin, host::cgroupfs::Cgroup2};

/// Tasks ended in one sweep from which their freed memory is given back to the system.
const TRIM_AFTER_ENDED: usize = 64;

impl Shared {
    /// Ends a task: kills what is left of it when `kill`, untags and removes its cgroup.
    /// `reason` is kept for `GET /v1/tasks/{id}`.
    pub(crate) fn end_task(&self, id: &str, kill: bool, reason: &str) -> Result<(), TaskError> {
        let task = self
            .registry()
            .finish(id, reason)
            .ok_or_else(|| TaskError::NotFound(id.to_string()))?;
        self.untag(task.cgroup_id, task.slot);
        self.call_task_ended(&task, reason);
        self.grants_revoked(
            crate::observe::record::AgentRef::of(&task.scope, &task.id),
            &task.grants,
            "with the task",
        );
        let generation = self.save(&self.registry());
        self.saved(generation);
        if task.origin == Origin::Exec {
            if kill {
                self.cgroup2.kill(&task.cgroup)?;
                wait_empty(&self.cgroup2, &task.cgroup, Duration::from_secs(5));
            }
            self.cgroup2.remove(&task.cgroup)?;
        }
        self.cgroup2.forget_kill_handle(&task.cgroup);
        tracing::info!(task = %id, killed = kill, %reason, "task ended");
        Ok(())
    }

    /// Housekeeping: ends finished tasks, revokes expired ones, marks agents whose events
    /// were lost as degraded (and kills them with `--fail-closed`).
    pub(crate) fn sweep(&self) {
        self.tick_epoch();
        self.sweep_approvals();
        let now = Instant::now();
        let mut finished = Vec::new();
        let mut revoke: Vec<(String, &'static str)> = Vec::new();
        let mut degraded = Vec::new();
        // Exec tasks whose cgroup is to be looked at (without the registry locked), with
        // what was known of them before the look (see `Watch::after`). A cgroup found
        // populated and unchanged since (inotify on its `cgroup.events`) is not read again:
        // a sweep costs what changed, not one read per live task.
        let mut watched = Vec::new();
        let mut events = lock(&self.cgroup_events);
        events.begin_sweep();
        {
            // Lock order everywhere: registry, then enforcer.
            let mut registry = self.registry();
            // One read of the drop counters (usually empty), not one lookup per task.
            let drops = lock(&self.enforcer).all_drops();
            let mut live = HashSet::new();
            for task in registry.iter_mut() {
                let dropped = drops.get(&task.slot).copied().unwrap_or(0);
                if dropped > task.drops_seen {
                    task.drops_seen = dropped;
                    if !task.degraded {
                        task.degraded = true;
                        degraded.push(task.id.clone());
                    }
                }
                if task.expired(now) {
                    revoke.push((task.id.clone(), "revoked: ttl passed"));
                } else if task.degraded
                    && self.config.fail_closed
                    && task.scope.mode == crate::scope::Mode::Enforce
                {
                    revoke.push((task.id.clone(), "killed: events lost (fail-closed)"));
                } else if task.origin == Origin::Exec {
                    live.insert(task.slot);
                    if events.needs_look(task.slot) {
                        let before = Watch {
                            seen: task.seen,
                            abandoned: task.abandoned(now),
                        };
                        watched.push((task.slot, task.cgroup.clone(), before));
                    }
                }
            }
            events.retain(&live);
        }
        let populated = self.look(&mut events, watched);
        drop(events);
        {
            let mut registry = self.registry();
            for (slot, before, populated) in populated {
                let Some(task) = registry.by_slot_mut(slot) else {
                    continue;
                };
                match before.after(populated) {
                    Outcome::Seen => task.seen = true,
                    Outcome::Finished => finished.push(task.id.clone()),
                    Outcome::Wait => {}
                }
            }
        }
        for id in degraded {
            tracing::warn!(task = %id, "events lost for this agent: degraded");
            self.notify(
                &id,
                "degraded",
                "events for this agent were lost (ring buffer full)",
                crate::observe::record::Action::None,
            );
        }
        let ended = finished.len() + revoke.len();
        for id in &finished {
            // The task's last record: after it, the log holds everything the task did
            // (`scope propose --task` waits for it).
            self.notify(
                id,
                "ended",
                "finished: its processes are gone",
                crate::observe::record::Action::None,
            );
            if let Err(e) = self.end_task(id, false, "finished") {
                tracing::warn!(task = %id, error = %e, "ending finished task");
            }
        }
        for (id, reason) in revoke {
            tracing::warn!(task = %id, %reason, "task revoked");
            self.notify(
                &id,
                "revoked",
                reason,
                crate::observe::record::Action::KilledAgent,
            );
            if let Err(e) = self.end_task(&id, true, reason) {
                tracing::warn!(task = %id, error = %e, "revoking task");
            }
        }
        // Many tasks' state freed at once, or the last task's: glibc keeps the freed heap
        // (spread over its per-thread arenas) in the daemon's RSS until it is trimmed.
        if ended >= TRIM_AFTER_ENDED || (ended > 0 && self.registry().len() == 0) {
            crate::control::catalog::release_free_heap();
        }
    }

    /// Reads the `cgroup.events` of the tasks the sweep looks at, each watched before its
    /// read so that a change after the read is reported.
    fn look(
        &self,
        events: &mut crate::host::cgroup_events::CgroupEvents,
        watched: Vec<(u32, String, Watch)>,
    ) -> Vec<(u32, Watch, Option<bool>)> {
        watched
            .into_iter()
            .map(|(slot, cgroup, before)| {
                let was_watched = events.watched(slot)
                    || self
                        .cgroup2
                        .dir(&cgroup)
                        .ok()
                        .is_some_and(|dir| events.watch(slot, &dir).is_ok());
                let populated = self.cgroup2.populated(&cgroup).ok();
                if populated == Some(true) {
                    events.populated(slot, was_watched);
                }
                (slot, before, populated)
            })
            .collect()
    }

    /// Queues a task lifecycle record; the pipeline writes it with the activity records.
    pub(crate) fn notify(
        &self,
        task: &str,
        event: &'static str,
        reason: &str,
        action: crate::observe::record::Action,
    ) {
        let Some(t) = self.registry().lookup(task) else {
            return;
        };
        let scope = self.registry().get(task).map(|t| Arc::clone(&t.scope));
        let agent = crate::observe::record::AgentRef::new(crate::observe::record::AgentNames {
            scope: t.scope.into(),
            task: t.id.into(),
            owner: t.owner.into(),
            identity: scope.and_then(|s| s.identity.as_deref().map(Into::into)),
        });
        let record = crate::observe::record::Record::lifecycle(agent, event, reason, action);
        lock(&self.notices).push(record);
    }

    /// Queues a record made outside the pipeline (the DNS resolver's); written with the
    /// next batch. At most `NOTICES` wait (the pipeline takes them every 100 ms); more are
    /// dropped and counted.
    pub(crate) fn push_record(&self, record: crate::observe::record::Record) {
        let mut notices = lock(&self.notices);
        if notices.len() >= NOTICES {
            drop(notices);
            super::Stats::add(&self.stats.audit_records_dropped, 1);
            return;
        }
        notices.push(record);
    }

    /// Lifecycle records waiting to be written.
    pub(crate) fn take_notices(&self) -> Vec<crate::observe::record::Record> {
        std::mem::take(&mut *lock(&self.notices))
    }

    /// On daemon exit: no agent runs unwatched. Tasks we created are killed and removed;
    /// adopted cgroups are untagged.
    pub(crate) fn shutdown(&self) {
        let ids: Vec<String> = self.registry().iter().map(|t| t.id.clone()).collect();
        for id in ids {
            if let Err(e) = self.end_task(&id, true, "revoked: daemon stopped") {
                tracing::warn!(task = %id, error = %e, "ending task at shutdown");
            }
        }
        let parent = format!("/{}", self.config.cgroup_parent.trim_matches('/'));
        if let Err(e) = self.cgroup2.remove(&parent) {
            tracing::warn!(cgroup = %parent, error = %e, "removing the task cgroup parent");
        }
    }
}

/// What the sweep knew of an exec task before it read the task's `cgroup.events`.
///
/// Only that may be used to read an empty cgroup as a finished task: `seen` is also set by
/// the task's events, while the sweep reads the cgroups without the registry locked, and an
/// event of `exec`'s child joining the cgroup can mark the task seen right after the sweep
/// read it still empty. Judged by `seen` as it is after the read, such a task, just
/// starting, was ended and untagged with its first process running in it (several in 300
/// with 100 `exec` starting at once).
#[derive(Debug, Clone, Copy)]
struct Watch {
    seen: bool,
    abandoned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Populated: the task's processes are there.
    Seen,
    /// Its processes have all gone (or it never got one in time, or its cgroup is gone).
    Finished,
    /// Empty, but not known to have started before the look: look again next time.
    Wait,
}

impl Watch {
    fn after(self, populated: Option<bool>) -> Outcome {
        match populated {
            Some(true) => Outcome::Seen,
            Some(false) if self.seen || self.abandoned => Outcome::Finished,
            Some(false) => Outcome::Wait,
            // The cgroup is gone: nothing is left to watch.
            None => Outcome::Finished,
        }
    }
}

/// Records made outside the pipeline that may wait for it at most.
const NOTICES: usize = 4096;

/// Waits (bounded) for a killed cgroup to empty so that it can be removed.
fn wait_empty(cg: &Cgroup2, rel: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !cg.populated(rel).unwrap_or(false) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_cgroup_ends_a_task_only_if_it_was_seen_before_the_look() {
        let fresh = Watch {
            seen: false,
            abandoned: false,
        };
        // Empty when looked at, though its first event may mark it seen a moment later:
        // that event cannot make the look say it finished.
        assert_eq!(fresh.after(Some(false)), Outcome::Wait);
        assert_eq!(fresh.after(Some(true)), Outcome::Seen);
        assert_eq!(fresh.after(None), Outcome::Finished);
        let started = Watch {
            seen: true,
            abandoned: false,
        };
        assert_eq!(started.after(Some(false)), Outcome::Finished);
        assert_eq!(started.after(Some(true)), Outcome::Seen);
        let given_up = Watch {
            seen: false,
            abandoned: true,
        };
        assert_eq!(given_up.after(Some(false)), Outcome::Finished);
    }
}
